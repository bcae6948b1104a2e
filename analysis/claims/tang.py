"""The claims of Tang et al. 2024 [A] (claims 1–12 of PAPERS.md): the online-offline gap at matched KL
(kl_budget), the replayed online log (data_coverage, shuffle_degree), suboptimal offline data (suboptimal_data) and
Best-of-2 (best_of_2). Each decision function reads a suite's frame; CLAIMS holds each claim's text, suite and rule.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.claims.rules import (BARELY_FRACTION, CORRELATION_EQUIVALENCE, EQUIVALENCE_WIN_RATE, FEW_BUDGETS,
                                   GENERIC_RULE, INCONCLUSIVE, MIN_CHECKPOINTS, MIN_RUNS_CORRELATION, MOST_BUDGETS,
                                   NEAR_RECOVERY, NO_PREDICTION_RHO, NOT_REPRODUCED, PREDICTS_RHO, REPLAY_DIVERGED,
                                   REPLAY_SCALE_FLOOR, REPLAY_TOLERANCE, REPRODUCED, TRAIN_TAIL, Claim, Decision,
                                   arms_with_data, budget_text, directional, fitted_slope, fmt, interval_text,
                                   matched_per_seed, mean_difference, missing_text, nan_decision, run_finals,
                                   seed_finals, spearman)
from analysis.kl_match import bootstrap_ci
from analysis.load import eval_points, final_points
from analysis.style import arm_label
from experiments import SUITES


# ------------------------------------------------------------------------------- kl_budget: claims 1, 2, 8-11
def decide_online_beats_offline(df: pd.DataFrame) -> Decision:
    """Claim 1: online − offline best win rate under matched KL budgets, mean over budgets and seeds. The first
    complete pair decides: offline IPO on D_golden is Tang et al.'s comparison (both regimes see the same gold
    labels: online through the proxy trained on them), then offline IPO on unbounded fresh gold-labelled SFT pairs,
    then DPO; the others are reported beside it."""
    statistic = "online − offline best win rate under KL budget (mean over budgets)"
    pairs = [("online_ipo", "offline_ipo_golden"), ("online_ipo", "offline_ipo"), ("online_dpo", "offline_dpo")]
    usable = [p for p in pairs if not arms_with_data(df, p)[1]]
    if not usable:
        absent = sorted({a for p in pairs for a in arms_with_data(df, p)[1]})
        return nan_decision(statistic, missing_text(absent))
    results = []
    for online, offline in usable:
        values, info = matched_per_seed(df, [online, offline])
        value, low, high = bootstrap_ci([values[online], values[offline]], mean_difference)
        per_budget = info.get("per_budget", pd.DataFrame())
        ahead = (per_budget.loc[online] > per_budget.loc[offline]).mean() if len(per_budget) == 2 else math.nan
        peaks = {arm: eval_points(df[df["arm"] == arm]).groupby("seed")["eval/win_rate"].max().mean()
                 for arm in (online, offline)}
        results.append((online, offline, value, low, high, ahead, peaks, info, len(values[online]), len(values[offline])))
    online, offline, value, low, high, ahead, peaks, info, n_on, n_off = results[0]
    if not np.isfinite(value):
        return nan_decision(statistic, f"{budget_text(info)}: no value for both arms")
    verdict, reason = directional(low, high)
    if verdict == REPRODUCED and not (np.isfinite(ahead) and ahead >= MOST_BUDGETS):
        verdict, reason = INCONCLUSIVE, f"CI above 0 but online ahead at only {ahead:.0%} of budgets"
    if np.isfinite(ahead) and ahead < FEW_BUDGETS and verdict != NOT_REPRODUCED:
        verdict, reason = NOT_REPRODUCED, f"online ahead at only {ahead:.0%} of budgets"
    parts = [f"{arm_label(online)} vs {arm_label(offline)}, {budget_text(info)}, seeds {n_on}/{n_off}; {reason}",
             f"online ahead at {ahead:.0%} of budgets" if np.isfinite(ahead) else "",
             f"peak win rate {peaks[online]:.3f} vs {peaks[offline]:.3f}"]
    for other in results[1:]:
        parts.append(f"{arm_label(other[0])} − {arm_label(other[1])}: {fmt(other[2])}{interval_text(other[3], other[4])}")
    return Decision(statistic, value, low, high, verdict, "; ".join(p for p in parts if p))


def decide_overoptimisation(df: pd.DataFrame) -> Decision:
    """Claim 2: over each proxy-labelled run's upper half of KL, the slope of gold reward against √KL
    (negative = falling after the peak) and of proxy reward (positive = still rising); unit = run."""
    statistic = "slope of gold reward vs √KL over each proxy run's upper half of KL"
    points = eval_points(df)
    needed = ["eval/gold_reward", "eval/proxy_reward", "eval/kl"]
    if points.empty or any(k not in points for k in needed):
        return nan_decision(statistic, "no evaluation data")
    points = points[points[needed].notna().all(axis=1)]
    gold_slopes, proxy_slopes, rises, arms = [], [], [], []
    for _, run in points.groupby("run_dir"):
        if len(run) < MIN_CHECKPOINTS:
            continue
        run = run.sort_values("eval/kl")
        d = np.sqrt(np.clip(run["eval/kl"].to_numpy(dtype=float), 0, None))
        tail = d >= np.median(d)
        gold, proxy = run["eval/gold_reward"].to_numpy(dtype=float), run["eval/proxy_reward"].to_numpy(dtype=float)
        gold_slopes.append(fitted_slope(d[tail], gold[tail]))
        proxy_slopes.append(fitted_slope(d[tail], proxy[tail]))
        rises.append(gold.max() - gold[0])
        arms.append(run["arm"].iloc[0])
    if not gold_slopes:
        return nan_decision(statistic, f"no labeller=proxy run with >= {MIN_CHECKPOINTS} checkpoints logging "
                                        "eval/proxy_reward")
    value, low, high = bootstrap_ci(np.array(gold_slopes))
    proxy, proxy_low, proxy_high = bootstrap_ci(np.array(proxy_slopes))
    rise = float(np.nanmean(rises))
    if not np.isfinite(low):
        verdict, reason = INCONCLUSIVE, "one proxy run: no CI"
    elif high < 0 and proxy_low > 0 and rise > 0:
        verdict, reason = REPRODUCED, "gold falls (CI < 0) while proxy rises (CI > 0) at high KL, after an initial rise"
    elif low > 0 or proxy_high < 0:
        verdict, reason = NOT_REPRODUCED, ("gold still rising at the highest KL" if low > 0 else "proxy falls at high KL")
    else:
        verdict, reason = INCONCLUSIVE, "CIs include 0"
    return Decision(statistic, value, low, high, verdict,
                    f"{len(gold_slopes)} proxy runs ({', '.join(sorted(set(map(str, arms))))}); proxy slope "
                    f"{fmt(proxy)}{interval_text(proxy_low, proxy_high)}; mean gold rise to peak {fmt(rise)}; {reason}")


def _families(df: pd.DataFrame) -> tuple[list[str], list[str]]:
    arms = [arm.name for arm in SUITES["kl_budget"].arms]
    return [a for a in arms if a.startswith("online_")], [a for a in arms if a.startswith("offline_")]


def decide_offline_classifies_better(df: pd.DataFrame) -> Decision:
    """Claim 8: offline − online final classification accuracy on gold-labelled pairs; unit = run."""
    statistic = "offline − online classification accuracy (final, per run)"
    online, offline = _families(df)
    runs = run_finals(df, online + offline, ["eval/classification_accuracy"]).dropna(subset=["eval/classification_accuracy"])
    a = runs.loc[runs["arm"].isin(offline), "eval/classification_accuracy"].to_numpy()
    b = runs.loc[runs["arm"].isin(online), "eval/classification_accuracy"].to_numpy()
    if len(a) == 0 or len(b) == 0:
        return nan_decision(statistic, "no eval/classification_accuracy for " + ("offline" if len(a) == 0 else "online") + " runs")
    value, low, high = bootstrap_ci([a, b], mean_difference)
    verdict, reason = directional(low, high)
    return Decision(statistic, value, low, high, verdict,
                    f"offline {np.mean(a):.3f} ({len(a)} runs) vs online {np.mean(b):.3f} ({len(b)} runs); {reason}")


def decide_accuracy_does_not_predict(df: pd.DataFrame) -> Decision:
    """Claim 9: Spearman rho of final classification accuracy vs final win rate across offline runs."""
    statistic = "Spearman ρ(classification accuracy, win rate) across offline runs"
    _, offline = _families(df)
    columns = ["eval/classification_accuracy", "eval/win_rate"]
    runs = run_finals(df, offline, columns).dropna(subset=columns)
    if len(runs) < MIN_RUNS_CORRELATION:
        return nan_decision(statistic, f"{len(runs)} offline runs with both metrics; need >= {MIN_RUNS_CORRELATION}")
    x, y = runs[columns[0]].to_numpy(), runs[columns[1]].to_numpy()
    value, low, high = bootstrap_ci([x, y], spearman, paired=True)
    if not np.isfinite(value):
        return nan_decision(statistic, "a metric is constant across runs: no correlation defined")
    if abs(value) <= NO_PREDICTION_RHO and (not np.isfinite(low) or low <= 0 <= high):
        verdict, reason = REPRODUCED, f"|ρ| <= {NO_PREDICTION_RHO} and CI includes 0"
    elif abs(value) >= PREDICTS_RHO and np.isfinite(low) and (low > 0 or high < 0):
        verdict, reason = NOT_REPRODUCED, f"|ρ| >= {PREDICTS_RHO} and CI excludes 0: accuracy predicts win rate"
    else:
        verdict, reason = INCONCLUSIVE, "moderate or uncertain correlation"
    return Decision(statistic, value, low, high, verdict, f"{len(runs)} offline runs; {reason}")


def decide_chosen_logratio_falls(df: pd.DataFrame) -> Decision:
    """Claim 10: each run's end value of train/chosen_logratio (mean over its last 10% of steps); both
    families must end below 0, and offline lower than online. Statistic: online − offline; unit = run."""
    statistic = "online − offline end-of-training log π(y_w) − log π_ref(y_w)"
    online, offline = _families(df)
    key = "train/chosen_logratio"
    if df.empty or key not in df:
        return nan_decision(statistic, f"no {key} logged")
    ends = {}
    for run_dir, run in df[df[key].notna()].groupby("run_dir"):
        run = run.sort_values("step")
        tail = run[key].to_numpy()[-max(1, int(math.ceil(TRAIN_TAIL * len(run)))):]
        ends[run_dir] = (run["arm"].iloc[0], float(np.mean(tail)))
    a = np.array([v for arm, v in ends.values() if arm in online])
    b = np.array([v for arm, v in ends.values() if arm in offline])
    if len(a) == 0 or len(b) == 0:
        return nan_decision(statistic, f"no {key} for " + ("online" if len(a) == 0 else "offline") + " runs")
    on, on_low, on_high = bootstrap_ci(a)
    off, off_low, off_high = bootstrap_ci(b)
    value, low, high = bootstrap_ci([a, b], mean_difference)
    if not (np.isfinite(low) and np.isfinite(on_high) and np.isfinite(off_high)):
        verdict, reason = INCONCLUSIVE, "fewer than 2 runs per family: no CI"
    elif on_high < 0 and off_high < 0 and low > 0:
        verdict, reason = REPRODUCED, "both families end below 0 (CI) and offline lower (CI of difference > 0)"
    elif on_low > 0 or off_low > 0 or high < 0:
        verdict, reason = NOT_REPRODUCED, "a family ends above 0, or online falls more than offline"
    else:
        verdict, reason = INCONCLUSIVE, "a CI includes 0"
    return Decision(statistic, value, low, high, verdict,
                    f"online end {fmt(on)}{interval_text(on_low, on_high)} ({len(a)} runs), offline end "
                    f"{fmt(off)}{interval_text(off_low, off_high)} ({len(b)} runs); {reason}")


def decide_proxy_accuracy_decays(df: pd.DataFrame) -> Decision:
    """Claim 11: change of eval/proxy_accuracy over training, from a least-squares line against step
    (slope × steps covered), per run with >= 4 evaluations; unit = run."""
    statistic = "fitted change of proxy accuracy over training"
    key = "eval/proxy_accuracy"
    if df.empty or key not in df:
        return nan_decision(statistic, f"no {key} logged")
    changes, arms = [], set()
    for _, run in df[df[key].notna()].groupby("run_dir"):
        if len(run) < MIN_CHECKPOINTS:
            continue
        slope = fitted_slope(run["step"], run[key])
        if np.isfinite(slope):
            changes.append(slope * float(np.ptp(run["step"])))
            arms.add(str(run["arm"].iloc[0]))
    if not changes:
        return nan_decision(statistic, f"no run with >= {MIN_CHECKPOINTS} evaluations of {key} (labeller=proxy)")
    value, low, high = bootstrap_ci(np.array(changes))
    verdict, reason = directional(low, high, sign=-1)  # the claim is a decrease
    return Decision(statistic, value, low, high, verdict, f"{len(changes)} runs ({', '.join(sorted(arms))}); {reason}")


# ------------------------------------------------------------------------------- data_coverage: claims 3, 4
def decide_replay_reproduces_online(df: pd.DataFrame) -> Decision:
    """Claim 3: largest relative difference, over seeds and metrics, between replay_original and the online
    run of the same seed: final evaluation metrics and training-metric means."""
    statistic = "max relative difference replay_original vs online"
    present, absent = arms_with_data(df, ["online", "replay_original"])
    if absent:
        return nan_decision(statistic, missing_text(absent))
    eval_keys = [c for c in df.columns if isinstance(c, str) and c.startswith("eval/")]
    train_keys = ["train/loss", "train/margin", "train/accuracy", "train/chosen_logratio"]
    summaries = {}
    for arm in present:
        runs = df[df["arm"] == arm]
        finals = final_points(runs).groupby("seed")[eval_keys].mean()
        means = runs.groupby("seed")[[k for k in train_keys if k in runs]].mean()
        summaries[arm] = finals.join(means, how="outer")
    online, replay = summaries["online"], summaries["replay_original"]
    seeds = online.index.intersection(replay.index)
    worst, where = -1.0, ""
    for seed in seeds:
        for key in online.columns.intersection(replay.columns):
            a, b = online.at[seed, key], replay.at[seed, key]
            if not (np.isfinite(a) and np.isfinite(b)):
                continue
            relative = abs(a - b) / max(abs(a), abs(b), REPLAY_SCALE_FLOOR)
            if relative > worst:
                worst, where = relative, f"{key}, seed {seed}"
    if worst < 0:
        return nan_decision(statistic, "no seed with both an online and a replay_original run and shared metrics")
    if worst <= REPLAY_TOLERANCE:
        verdict, reason = REPRODUCED, f"within {REPLAY_TOLERANCE:.0%}"
    elif worst > REPLAY_DIVERGED:
        verdict, reason = NOT_REPRODUCED, f"above {REPLAY_DIVERGED:.0%}"
    else:
        verdict, reason = INCONCLUSIVE, f"between {REPLAY_TOLERANCE:.0%} and {REPLAY_DIVERGED:.0%}"
    return Decision(statistic, worst, math.nan, math.nan, verdict,
                    f"{len(seeds)} paired seeds; largest at {where}; {reason}")


def _gap_decision(df: pd.DataFrame, better: str, worse: str, statistic: str) -> Decision:
    present, absent = arms_with_data(df, [better, worse])
    if absent:
        return nan_decision(statistic, missing_text(absent))
    values, info = matched_per_seed(df, [better, worse])
    value, low, high = bootstrap_ci([values[better], values[worse]], mean_difference)
    if not np.isfinite(value):
        return nan_decision(statistic, f"{budget_text(info)}: no value for both arms")
    verdict, reason = directional(low, high)
    return Decision(statistic, value, low, high, verdict,
                    f"{budget_text(info)}, seeds {len(values[better])}/{len(values[worse])}; {reason}")


def decide_shuffled_below_online(df: pd.DataFrame) -> Decision:
    """Claim 4: online − replay_shuffled KL-matched win rate."""
    return _gap_decision(df, "online", "replay_shuffled", "online − replay_shuffled KL-matched win rate")


# ------------------------------------------------------------------------------------ shuffle_degree: claim 5
_WINDOW_RANK = {"window_1": 0, "window_4": 1, "window_32": 2, "window_256": 3, "window_all": 4}


def decide_shuffle_window(df: pd.DataFrame) -> Decision:
    """Claim 5: Spearman rho between shuffle-window rank (1 < 4 < 32 < 256 < all) and final win rate,
    across runs (seeds) of the window arms."""
    statistic = "Spearman ρ(shuffle window, final win rate)"
    runs = run_finals(df, list(_WINDOW_RANK), ["eval/win_rate"]).dropna(subset=["eval/win_rate"])
    windows = sorted(set(runs["arm"]), key=_WINDOW_RANK.get)
    absent = [a for a in _WINDOW_RANK if a not in windows]
    if len(windows) < 3 or len(runs) < 5:
        return nan_decision(statistic, f"{len(windows)} windows / {len(runs)} runs with data; need >= 3 / 5"
                             + (f"; {missing_text(absent)}" if absent else ""))
    rank = runs["arm"].map(_WINDOW_RANK).to_numpy(dtype=float)
    value, low, high = bootstrap_ci([rank, runs["eval/win_rate"].to_numpy()], spearman, paired=True)
    if not np.isfinite(value):
        return nan_decision(statistic, "win rate constant across windows")
    verdict, reason = directional(low, high, band=CORRELATION_EQUIVALENCE, sign=-1)
    means = runs.groupby("arm")["eval/win_rate"].mean()
    listing = ", ".join(f"{a.removeprefix('window_')}: {means[a]:.3f}" for a in windows)
    return Decision(statistic, value, low, high, verdict,
                    f"mean final win rate by window {listing}" + (f"; {missing_text(absent)}" if absent else "")
                    + f"; {reason}")


# ---------------------------------------------------------------------------------- suboptimal_data: 6, 7
def decide_final_pairs_barely_beat_sft(df: pd.DataFrame) -> Decision:
    """Claim 6: fraction of online's gain over SFT that final_vs_final keeps:
    (win(final_vs_final) − 0.5) / (win(online) − 0.5), final win rates vs SFT."""
    statistic = "final_vs_final gain over SFT / online gain over SFT"
    present, absent = arms_with_data(df, ["online", "final_vs_final"])
    if absent:
        return nan_decision(statistic, missing_text(absent))
    online, final = seed_finals(df, "online", "eval/win_rate"), seed_finals(df, "final_vs_final", "eval/win_rate")
    gain, gain_low, _ = bootstrap_ci(online - 0.5)
    if len(online) == 0 or len(final) == 0:
        return nan_decision(statistic, "no final win rate for " + ("online" if len(online) == 0 else "final_vs_final"))
    if not (np.isfinite(gain_low) and gain_low > 0):
        return nan_decision(statistic, f"online gain over SFT {fmt(gain)} is not confidently positive: no scale")

    def kept(f, o):
        with np.errstate(divide="ignore", invalid="ignore"):
            return (np.mean(f) - 0.5) / (np.mean(o) - 0.5)

    value, low, high = bootstrap_ci([final, online], kept)
    if not np.isfinite(high):
        verdict, reason = INCONCLUSIVE, "no CI"
    elif high < BARELY_FRACTION:
        verdict, reason = REPRODUCED, f"CI below {BARELY_FRACTION:.2f} of online's gain"
    elif low > BARELY_FRACTION:
        verdict, reason = NOT_REPRODUCED, f"CI above {BARELY_FRACTION:.2f} of online's gain"
    else:
        verdict, reason = INCONCLUSIVE, f"CI includes {BARELY_FRACTION:.2f}"
    return Decision(statistic, value, low, high, verdict,
                    f"win rate final_vs_final {np.mean(final):.3f} ({len(final)} seeds), online {np.mean(online):.3f} "
                    f"({len(online)} seeds); {reason}")


def decide_one_sft_response_helps(df: pd.DataFrame) -> Decision:
    """Claim 7: mean final win rate of datasets with one SFT response (sft_vs_mid, sft_vs_final) minus that
    of datasets of two late-policy responses (mid_vs_final, final_vs_final); unit = (arm, seed)."""
    statistic = "one-SFT-response − two-late-response datasets, final win rate"
    with_sft, late = ["sft_vs_mid", "sft_vs_final"], ["mid_vs_final", "final_vs_final"]
    present_a, absent_a = arms_with_data(df, with_sft)
    present_b, absent_b = arms_with_data(df, late)
    if not present_a or not present_b:
        return nan_decision(statistic, missing_text(absent_a + absent_b))
    a = np.concatenate([seed_finals(df, arm, "eval/win_rate") for arm in present_a])
    b = np.concatenate([seed_finals(df, arm, "eval/win_rate") for arm in present_b])
    value, low, high = bootstrap_ci([a, b], mean_difference)
    verdict, reason = directional(low, high)
    absent = absent_a + absent_b
    return Decision(statistic, value, low, high, verdict,
                    f"{'+'.join(present_a)}: {np.mean(a):.3f} (n={len(a)}) vs {'+'.join(present_b)}: {np.mean(b):.3f} "
                    f"(n={len(b)})" + (f"; {missing_text(absent)}" if absent else "") + f"; {reason}")


# -------------------------------------------------------------------------------------- best_of_2: claim 12
def decide_best_of_2(df: pd.DataFrame) -> Decision:
    """Claim 12: (a) Best-of-2 online − offline KL-matched win rate > 0; (b) the shuffled online log recovers
    more than half of that gap: (shuffled − offline) / (online − offline)."""
    statistic = "fraction of the Best-of-2 online−offline gap recovered by the shuffled log"
    arms = ["bo2_online", "bo2_offline", "bo2_shuffled"]
    present, absent = arms_with_data(df, arms)
    if "bo2_online" not in present or "bo2_offline" not in present:
        return nan_decision(statistic, missing_text(absent))
    values, info = matched_per_seed(df, present)
    gap, gap_low, gap_high = bootstrap_ci([values["bo2_online"], values["bo2_offline"]], mean_difference)
    gap_verdict, gap_reason = directional(gap_low, gap_high)
    gap_text = (f"online − offline {fmt(gap)}{interval_text(gap_low, gap_high)} ({gap_verdict}); "
                f"{budget_text(info)}")
    if "bo2_shuffled" not in present:
        verdict = NOT_REPRODUCED if gap_verdict == NOT_REPRODUCED else INCONCLUSIVE
        return nan_decision(statistic, f"{gap_text}; {missing_text(absent)}") if verdict == INCONCLUSIVE else \
            Decision(statistic, math.nan, math.nan, math.nan, verdict, f"{gap_text}; {gap_reason}")

    def recovered(shuffled, online, offline):
        with np.errstate(divide="ignore", invalid="ignore"):
            return (np.mean(shuffled) - np.mean(offline)) / (np.mean(online) - np.mean(offline))

    value, low, high = bootstrap_ci([values["bo2_shuffled"], values["bo2_online"], values["bo2_offline"]], recovered)
    if gap_verdict == NOT_REPRODUCED:
        verdict, reason = NOT_REPRODUCED, f"online does not beat offline ({gap_reason})"
    elif gap_verdict != REPRODUCED or not np.isfinite(low):
        verdict, reason = INCONCLUSIVE, "online−offline gap not established" if gap_verdict != REPRODUCED else "no CI"
    elif low > NEAR_RECOVERY:
        verdict, reason = REPRODUCED, f"online > offline and the shuffled log recovers > {NEAR_RECOVERY:.0%} (CI)"
    elif high < NEAR_RECOVERY:
        verdict, reason = NOT_REPRODUCED, f"shuffled log recovers < {NEAR_RECOVERY:.0%} of the gap (CI)"
    else:
        verdict, reason = INCONCLUSIVE, f"recovered-fraction CI includes {NEAR_RECOVERY:.0%}"
    return Decision(statistic, value, low, high, verdict, f"{gap_text}; {reason}")




CLAIMS: list[Claim] = [
    Claim(1, "Online beats offline in win rate at almost every matched KL budget, with a higher peak.", "kl_budget",
          decide_online_beats_offline,
          f"online_ipo − offline_ipo_golden (else − offline_ipo, else the DPO pair) best win rate under KL budget, "
          f"averaged over 8 log-spaced shared "
          f"budgets, CI over seeds: {GENERIC_RULE}; reproduced also needs online ahead at >= {MOST_BUDGETS:.0%} of "
          f"budgets, and < {FEW_BUDGETS:.0%} means not reproduced"),
    Claim(2, "Gold score vs KL rises then falls (over-optimisation) while the proxy score keeps rising.", "kl_budget",
          decide_overoptimisation,
          "per labeller=proxy run, least-squares slopes vs √KL over its upper half of KL, CI over runs: reproduced if "
          "gold slope CI < 0, proxy slope CI > 0 and gold rose first; not reproduced if gold CI > 0 or proxy CI < 0"),
    Claim(3, "Offline training on the online pair log in original order reproduces the online run.", "data_coverage",
          decide_replay_reproduces_online,
          f"largest relative difference |a − b| / max(|a|, |b|, {REPLAY_SCALE_FLOOR:g}) over seeds of final eval "
          f"metrics and mean training metrics: reproduced if "
          f"<= {REPLAY_TOLERANCE:.0%}, not reproduced if > {REPLAY_DIVERGED:.0%}, else inconclusive"),
    Claim(4, "Offline training on the uniformly shuffled online log stays clearly below online.", "data_coverage",
          decide_shuffled_below_online, f"online − replay_shuffled KL-matched win rate, CI over seeds: {GENERIC_RULE}"),
    Claim(5, "Performance falls as the shuffle window grows: none ≈ small > large > uniform.", "shuffle_degree",
          decide_shuffle_window,
          f"Spearman ρ of window rank vs final win rate across runs: not reproduced if CI inside "
          f"±{CORRELATION_EQUIVALENCE:g} or > 0; reproduced if CI < 0 (and not inside); else inconclusive"),
    Claim(6, "Offline on gold-labelled pairs from the final online policy barely beats SFT.", "suboptimal_data",
          decide_final_pairs_barely_beat_sft,
          f"(win(final_vs_final) − 0.5) / (win(online) − 0.5), CI over seeds: reproduced if CI < {BARELY_FRACTION:.2f}, "
          f"not reproduced if CI > {BARELY_FRACTION:.2f}; inconclusive otherwise or when online does not beat SFT"),
    Claim(7, "Datasets with one SFT response beat datasets of two late-policy responses.", "suboptimal_data",
          decide_one_sft_response_helps,
          f"final win rate of sft_vs_mid+sft_vs_final − mid_vs_final+final_vs_final, CI over (arm, seed): {GENERIC_RULE}"),
    Claim(8, "Offline policies classify gold-labelled pairs better than online policies.", "kl_budget",
          decide_offline_classifies_better,
          f"offline_* − online_* final eval/classification_accuracy, CI over runs: {GENERIC_RULE}"),
    Claim(9, "Among offline runs, classification accuracy does not predict win rate.", "kl_budget",
          decide_accuracy_does_not_predict,
          f"Spearman ρ across >= {MIN_RUNS_CORRELATION} offline runs (final values), CI over runs: reproduced if "
          f"|ρ| <= {NO_PREDICTION_RHO} with CI containing 0; not reproduced if |ρ| >= {PREDICTS_RHO} with CI "
          f"excluding 0; else inconclusive"),
    Claim(10, "log πθ(y_w) − log π_ref(y_w) falls during training, most for offline.", "kl_budget",
          decide_chosen_logratio_falls,
          f"per run, mean train/chosen_logratio over the last {TRAIN_TAIL:.0%} of steps, CI over runs: reproduced if "
          f"both families' CI < 0 and online − offline CI > 0; not reproduced if a family's CI > 0 or the "
          f"difference's CI < 0"),
    Claim(11, "The proxy's accuracy on on-policy samples decays over training.", "kl_budget",
          decide_proxy_accuracy_decays,
          f"per run (>= {MIN_CHECKPOINTS} evals), least-squares change of eval/proxy_accuracy over training, CI over "
          f"runs: not reproduced if CI inside ±{EQUIVALENCE_WIN_RATE:g} or > 0; reproduced if CI < 0 (and not inside)"),
    Claim(12, "Best-of-2: online beats offline; on the shuffled online log it nearly matches online.", "best_of_2",
          decide_best_of_2,
          f"bo2_online − bo2_offline KL-matched CI > 0 and (shuffled − offline)/(online − offline) CI > "
          f"{NEAR_RECOVERY:g}: reproduced; gap CI < 0 or inside ±{EQUIVALENCE_WIN_RATE:g}, or fraction CI < "
          f"{NEAR_RECOVERY:g}: not reproduced"),
]
