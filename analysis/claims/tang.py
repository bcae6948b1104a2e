"""The claims of Tang et al. 2024 [A] (claims 1–12 of PAPERS.md): the online-offline gap at matched KL
(kl_budget), the replayed online log (data_coverage, shuffle_degree), suboptimal offline data (suboptimal_data) and
Best-of-2 (best_of_2). Each decision function reads a suite's frame and its rule's block of rules.yaml; every value is
formed per seed and its interval is over seeds (analysis.stats). Claim 3 and window 1 of claim 5 are checks.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.claims.rules import (INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Decision, arms_with_data, budget_text,
                                   directional, equivalent, fmt, interval_text, make_claim, matched_per_seed,
                                   missing_text, nan_decision, rule, run_finals, seed_finals)
from analysis.load import eval_points, final_points, initial_points
from analysis.stats import (T_ONE, T_PAIRED, contrast, fitted_slope, paired_t_interval, partial_correlation,
                            spearman, t_interval)
from analysis.style import arm_label
from experiments import SUITES


# ------------------------------------------------------------------------------- kl_budget: claims 1, 2, 8-11
def decide_online_beats_offline(df: pd.DataFrame) -> Decision:
    """Claim 1: online − offline KL-matched win rate (mean over budgets), per seed, paired t over seeds. The first
    complete pair decides: offline IPO on D_golden is Tang et al.'s comparison (both regimes see the same gold
    labels: online through the proxy trained on them), then offline IPO on unbounded fresh gold-labelled SFT pairs,
    then DPO; the others are reported beside it."""
    r = rule(1)
    band, statistic = r.thresholds["equivalence"], r.statistic
    usable = [tuple(p) for p in r.arms["pairs"] if not arms_with_data(df, p)[1]]
    if not usable:
        absent = sorted({a for p in r.arms["pairs"] for a in arms_with_data(df, p)[1]})
        return nan_decision(statistic, missing_text(absent))
    results = []
    for online, offline in usable:
        values, info = matched_per_seed(df, [online, offline], r)
        gap = paired_t_interval(values[online], values[offline])
        per_budget = info.get("per_budget", pd.DataFrame())
        ahead = (per_budget.loc[online] > per_budget.loc[offline]).mean() if len(per_budget) == 2 else math.nan
        peaks = {arm: eval_points(df[df["arm"] == arm]).groupby("seed")[r.fallback].max().mean()
                 for arm in (online, offline)}
        results.append((online, offline, gap, ahead, peaks, info))
    online, offline, gap, ahead, peaks, info = results[0]
    if not np.isfinite(gap.value):
        return nan_decision(statistic, f"{budget_text(info)}: no value for both arms", interval=T_PAIRED)
    verdict, reason = directional(gap.low, gap.high, band)
    if verdict == REPRODUCED and not (np.isfinite(ahead) and ahead >= r.thresholds["most_budgets"]):
        verdict, reason = INCONCLUSIVE, f"CI above 0 but online ahead at only {ahead:.0%} of budgets"
    if np.isfinite(ahead) and ahead < r.thresholds["few_budgets"] and verdict != NOT_REPRODUCED:
        verdict, reason = NOT_REPRODUCED, f"online ahead at only {ahead:.0%} of budgets"
    parts = [f"{arm_label(online)} vs {arm_label(offline)}, {budget_text(info)}, {gap.n} paired seeds; {reason}",
             f"online ahead at {ahead:.0%} of budgets" if np.isfinite(ahead) else "",
             f"peak {r.fallback} {peaks[online]:.3f} vs {peaks[offline]:.3f}"]
    for other in results[1:]:
        parts.append(f"{arm_label(other[0])} − {arm_label(other[1])}: {fmt(other[2].value)}"
                     f"{interval_text(other[2].low, other[2].high)}")
    return Decision(statistic, gap.value, gap.low, gap.high, verdict, "; ".join(p for p in parts if p),
                    gap.method, gap.n)


def decide_overoptimisation(df: pd.DataFrame) -> Decision:
    """Claim 2: over each proxy-labelled run's upper half of KL, the slope of gold reward against √KL (negative =
    falling after the peak) and of proxy reward (positive = still rising), averaged within a seed; t over seeds."""
    r = rule(2)
    statistic, needed = r.statistic, list(r.metric)
    points = eval_points(df)
    if points.empty or any(k not in points for k in needed):
        return nan_decision(statistic, "no evaluation data")
    points = points[points[needed].notna().all(axis=1)]
    rows = []
    for _, run in points.groupby("run_dir"):
        if len(run) < r.thresholds["min_checkpoints"]:
            continue
        run = run.sort_values("eval/kl")
        d = np.sqrt(np.clip(run["eval/kl"].to_numpy(dtype=float), 0, None))
        tail = d >= np.median(d)
        gold, proxy = run["eval/gold_reward"].to_numpy(dtype=float), run["eval/proxy_reward"].to_numpy(dtype=float)
        rows.append((run["seed"].iloc[0], run["arm"].iloc[0], fitted_slope(d[tail], gold[tail]),
                     fitted_slope(d[tail], proxy[tail]), gold.max() - gold[0]))
    if not rows:
        return nan_decision(statistic, f"no labeller=proxy run with >= {r.thresholds['min_checkpoints']} "
                                       "checkpoints logging eval/proxy_reward")
    runs = pd.DataFrame(rows, columns=["seed", "arm", "gold", "proxy", "rise"])
    per_seed = runs.groupby("seed")[["gold", "proxy", "rise"]].mean()
    gold, proxy = t_interval(per_seed["gold"]), t_interval(per_seed["proxy"])
    rise = float(per_seed["rise"].mean())
    if not (gold.finite and proxy.finite):
        verdict, reason = INCONCLUSIVE, "one seed: no CI"
    elif gold.high < 0 and proxy.low > 0 and rise > 0:
        verdict, reason = REPRODUCED, "gold falls (CI < 0) while proxy rises (CI > 0) at high KL, after an initial rise"
    elif gold.low > 0 or proxy.high < 0:
        verdict, reason = NOT_REPRODUCED, ("gold still rising at the highest KL" if gold.low > 0 else "proxy falls at high KL")
    else:
        verdict, reason = INCONCLUSIVE, "CIs include 0"
    return Decision(statistic, gold.value, gold.low, gold.high, verdict,
                    f"{len(runs)} proxy runs ({', '.join(sorted(set(map(str, runs['arm']))))}) over {gold.n} seeds; "
                    f"proxy slope {fmt(proxy.value)}{interval_text(proxy.low, proxy.high)}; mean gold rise to peak "
                    f"{fmt(rise)}; {reason}", gold.method, min(gold.n, proxy.n))


def _families(df: pd.DataFrame) -> tuple[list[str], list[str]]:
    arms = [arm.name for arm in SUITES["kl_budget"].arms]
    return [a for a in arms if a.startswith("online_")], [a for a in arms if a.startswith("offline_")]


def decide_offline_classifies_better(df: pd.DataFrame) -> Decision:
    """Claim 8: offline − online final classification accuracy, each family averaged within a seed; paired t."""
    r = rule(8)
    online, offline = _families(df)
    a, b = seed_finals(df, offline, r.metric), seed_finals(df, online, r.metric)
    if a.empty or b.empty:
        return nan_decision(r.statistic, f"no {r.metric} for " + ("offline" if a.empty else "online") + " runs")
    gap = paired_t_interval(a, b)
    verdict, reason = directional(gap.low, gap.high, r.thresholds["equivalence"])
    return Decision(r.statistic, gap.value, gap.low, gap.high, verdict,
                    f"offline {a.mean():.3f} vs online {b.mean():.3f}, {gap.n} paired seeds; {reason}", gap.method, gap.n)


def decide_accuracy_does_not_predict(df: pd.DataFrame) -> Decision:
    """Claim 9: per seed, the partial correlation of final classification accuracy with final win rate given log
    final KL across that seed's offline runs (configurations); t over seeds; a null, decided by the band."""
    r = rule(9)
    _, offline = _families(df)
    accuracy, win_rate, kl = r.metric
    runs = run_finals(df, offline, list(r.metric)).dropna(subset=list(r.metric))
    per_seed, small = {}, []
    for seed, group in runs.groupby("seed"):
        if len(group) < r.thresholds["min_runs_per_seed"]:
            small.append(seed)
            continue
        log_kl = np.log(np.clip(group[kl].to_numpy(dtype=float), r.thresholds["kl_floor"], None))
        per_seed[seed] = partial_correlation(group[accuracy], group[win_rate], log_kl)
    values = pd.Series(per_seed, dtype=float).dropna()
    if values.empty:
        return nan_decision(r.statistic, f"no seed with >= {r.thresholds['min_runs_per_seed']} offline runs holding "
                                         f"{', '.join(r.metric)} and a defined partial correlation")
    ci = t_interval(values)
    verdict, reason = equivalent(ci.low, ci.high, r.thresholds["band"])
    return Decision(r.statistic, ci.value, ci.low, ci.high, verdict,
                    f"{ci.n} seeds, {len(runs) // max(1, len(runs['seed'].unique()))} offline runs per seed"
                    + (f"; seeds with too few runs: {small}" if small else "") + f"; {reason}", ci.method, ci.n)


def decide_chosen_logratio_falls(df: pd.DataFrame) -> Decision:
    """Claim 10: final − initial eval/heldout_chosen_logratio (fixed gold-labelled SFT pairs, the same for every
    arm), each family averaged within a seed: both families fall (t CI < 0), offline more (paired t CI > 0)."""
    r = rule(10)
    key, (online, offline) = r.metric, _families(df)
    if df.empty or key not in df or df[key].isna().all():
        return nan_decision(r.statistic, f"no {key} logged (runs made before it existed: train/chosen_logratio, on "
                                         f"the policy's own pairs, is not this statistic)")

    def change(arms):
        runs = df[df["arm"].isin(arms) & df[key].notna()]
        if runs.empty:
            return pd.Series(dtype=float)
        ordered = runs.sort_values("step").groupby("run_dir")
        per_run = pd.DataFrame({"seed": ordered["seed"].first(), "arm": ordered["arm"].first(),
                                "change": ordered[key].last() - ordered[key].first()})
        return per_run.groupby(["seed", "arm"])["change"].mean().groupby("seed").mean()

    a, b = change(online), change(offline)
    if a.empty or b.empty:
        return nan_decision(r.statistic, f"no {key} for " + ("online" if a.empty else "offline") + " runs")
    on, off, gap = t_interval(a), t_interval(b), paired_t_interval(a, b)
    if not (on.finite and off.finite and gap.finite):
        verdict, reason = INCONCLUSIVE, "fewer than 2 seeds per family: no CI"
    elif on.high < 0 and off.high < 0 and gap.low > 0:
        verdict, reason = REPRODUCED, "both families fall (CI < 0) and offline falls more (CI of difference > 0)"
    elif on.low > 0 or off.low > 0 or gap.high < 0:
        verdict, reason = NOT_REPRODUCED, "a family rises, or online falls more than offline"
    else:
        verdict, reason = INCONCLUSIVE, "a CI includes 0"
    return Decision(r.statistic, gap.value, gap.low, gap.high, verdict,
                    f"online change {fmt(on.value)}{interval_text(on.low, on.high)}, offline change "
                    f"{fmt(off.value)}{interval_text(off.low, off.high)} ({gap.n} paired seeds); {reason}",
                    gap.method, min(on.n, off.n, gap.n))


def decide_proxy_accuracy_decays(df: pd.DataFrame) -> Decision:
    """Claim 11: change of eval/proxy_accuracy over training (least-squares slope × steps covered) per run with >= 4
    evaluations, averaged within a seed; t over seeds."""
    r = rule(11)
    key = r.metric
    if df.empty or key not in df:
        return nan_decision(r.statistic, f"no {key} logged")
    rows = []
    for _, run in df[df[key].notna()].groupby("run_dir"):
        if len(run) < r.thresholds["min_checkpoints"]:
            continue
        slope = fitted_slope(run["step"], run[key])
        if np.isfinite(slope):
            rows.append((run["seed"].iloc[0], str(run["arm"].iloc[0]), slope * float(np.ptp(run["step"]))))
    if not rows:
        return nan_decision(r.statistic, f"no run with >= {r.thresholds['min_checkpoints']} evaluations of {key} "
                                         "(labeller=proxy)")
    runs = pd.DataFrame(rows, columns=["seed", "arm", "change"])
    ci = t_interval(runs.groupby("seed")["change"].mean())
    verdict, reason = directional(ci.low, ci.high, r.thresholds["equivalence"], sign=-1)  # the claim is a decrease
    return Decision(r.statistic, ci.value, ci.low, ci.high, verdict,
                    f"{len(runs)} runs ({', '.join(sorted(set(runs['arm'])))}) over {ci.n} seeds; {reason}",
                    ci.method, ci.n)


# ------------------------------------------------------------------------------- data_coverage: check 3, claim 4
def _same_run(df: pd.DataFrame, key: str) -> Decision:
    """A check that a replay is its online run: the largest relative difference, over seeds and metrics, of final
    evaluation metrics and training-metric means."""
    r = rule(key)
    online_arm, replay_arm = r.arms["online"], r.arms["replay"]
    present, absent = arms_with_data(df, [online_arm, replay_arm])
    if absent:
        return nan_decision(r.statistic, missing_text(absent))
    eval_keys = [c for c in df.columns if isinstance(c, str) and c.startswith("eval/")]
    train_keys = ["train/loss", "train/margin", "train/accuracy", "train/chosen_logratio"]
    summaries = {}
    for arm in present:
        runs = df[df["arm"] == arm]
        finals = final_points(runs).groupby("seed")[eval_keys].mean()
        summaries[arm] = finals.join(runs.groupby("seed")[[k for k in train_keys if k in runs]].mean(), how="outer")
    online, replay = summaries[online_arm], summaries[replay_arm]
    seeds = online.index.intersection(replay.index)
    worst, where = -1.0, ""
    for seed in seeds:
        for column in online.columns.intersection(replay.columns):
            a, b = online.at[seed, column], replay.at[seed, column]
            if not (np.isfinite(a) and np.isfinite(b)):
                continue
            relative = abs(a - b) / max(abs(a), abs(b), r.thresholds["scale_floor"])
            if relative > worst:
                worst, where = relative, f"{column}, seed {seed}"
    if worst < 0:
        return nan_decision(r.statistic, f"no seed with both an {online_arm} and a {replay_arm} run and shared metrics")
    tolerance, diverged = r.thresholds["tolerance"], r.thresholds["diverged"]
    if worst <= tolerance:
        verdict, reason = REPRODUCED, f"within {tolerance:.0%}"
    elif worst > diverged:
        verdict, reason = NOT_REPRODUCED, f"above {diverged:.0%}"
    else:
        verdict, reason = INCONCLUSIVE, f"between {tolerance:.0%} and {diverged:.0%}"
    return Decision(r.statistic, worst, math.nan, math.nan, verdict,
                    f"{len(seeds)} paired seeds; largest at {where}; {reason}", "", len(seeds))


def decide_replay_reproduces_online(df: pd.DataFrame) -> Decision:
    """Check of claim 3: replay_original is the online run (true by construction)."""
    return _same_run(df, "check_replay_original")


def decide_window_1_is_online(df: pd.DataFrame) -> Decision:
    """Check of claim 5: a shuffle window of one batch replays the online order (true by construction)."""
    return _same_run(df, "check_window_1")


def _gap_decision(df: pd.DataFrame, number: int) -> Decision:
    r = rule(number)
    better, worse = r.arms["better"], r.arms["worse"]
    present, absent = arms_with_data(df, [better, worse])
    if absent:
        return nan_decision(r.statistic, missing_text(absent))
    values, info = matched_per_seed(df, [better, worse], r)
    gap = paired_t_interval(values[better], values[worse])
    if not np.isfinite(gap.value):
        return nan_decision(r.statistic, f"{budget_text(info)}: no value for both arms", interval=T_PAIRED)
    verdict, reason = directional(gap.low, gap.high, r.thresholds["equivalence"])
    return Decision(r.statistic, gap.value, gap.low, gap.high, verdict,
                    f"{budget_text(info)}, {gap.n} paired seeds; {reason}", gap.method, gap.n)


def decide_shuffled_below_online(df: pd.DataFrame) -> Decision:
    """Claim 4: online − replay_shuffled KL-matched win rate, paired t over seeds."""
    return _gap_decision(df, 4)


# ------------------------------------------------------------------------------------ shuffle_degree: claim 5
def decide_shuffle_window(df: pd.DataFrame) -> Decision:
    """Claim 5: per seed, Spearman ρ between shuffle-window rank (4 < 32 < 256 < all) and final win rate across that
    seed's window arms (window 1 is the online order: check_window_1); t over seeds."""
    r = rule(5)
    windows = list(r.arms["windows"])
    runs = run_finals(df, windows, [r.metric]).dropna(subset=[r.metric])
    present = [w for w in windows if w in set(runs["arm"])]
    absent = [w for w in windows if w not in present]
    if len(present) < r.thresholds["min_windows"]:
        return nan_decision(r.statistic, f"{len(present)} windows with data; need >= {r.thresholds['min_windows']}"
                            + (f"; {missing_text(absent)}" if absent else ""))
    per_arm_seed = runs.groupby(["seed", "arm"])[r.metric].mean().reset_index()
    rho = {}
    for seed, group in per_arm_seed.groupby("seed"):
        if group["arm"].nunique() >= r.thresholds["min_windows"]:
            rho[seed] = spearman(group["arm"].map(windows.index), group[r.metric])
    ci = t_interval(pd.Series(rho, dtype=float))
    if not np.isfinite(ci.value):
        return nan_decision(r.statistic, "win rate constant across windows in every seed", interval=T_ONE)
    verdict, reason = directional(ci.low, ci.high, r.thresholds["equivalence"], sign=-1)
    means = per_arm_seed.groupby("arm")[r.metric].mean()
    listing = ", ".join(f"{a.removeprefix('window_')}: {means[a]:.3f}" for a in present)
    return Decision(r.statistic, ci.value, ci.low, ci.high, verdict,
                    f"{ci.n} seeds; mean final win rate by window {listing}"
                    + (f"; {missing_text(absent)}" if absent else "") + f"; {reason}", ci.method, ci.n)


# ---------------------------------------------------------------------------------- suboptimal_data: 6, 7
def decide_final_pairs_barely_beat_sft(df: pd.DataFrame) -> Decision:
    """Claim 6, two-sided: final_vs_final's gain over SFT (final win rate − 0.5) is above 0 and below 1/3 of online's,
    both by t-intervals over seeds (the second on the per-seed contrast gain − online gain / 3)."""
    r = rule(6)
    final_arm, online_arm = r.arms["final"], r.arms["online"]
    sft, barely = r.thresholds["sft"], r.thresholds["barely"]
    present, absent = arms_with_data(df, [online_arm, final_arm])
    if absent:
        return nan_decision(r.statistic, missing_text(absent))
    online, final = seed_finals(df, online_arm, r.metric), seed_finals(df, final_arm, r.metric)
    if online.empty or final.empty:
        return nan_decision(r.statistic, "no final win rate for " + (online_arm if online.empty else final_arm))
    online_gain = t_interval(online - sft)
    gain = t_interval(contrast({"final": final, "online": online}, {"final": 1.0, "online": 0.0}, -sft))
    keep = t_interval(contrast({"final": final, "online": online}, {"final": 1.0, "online": -barely},
                               -sft * (1 - barely)))
    n = min(gain.n, keep.n, online_gain.n)
    kept = (final.mean() - sft) / (online.mean() - sft) if online.mean() != sft else math.nan
    text = (f"win rate {final_arm} {final.mean():.3f}, {online_arm} {online.mean():.3f} ({n} paired seeds); kept "
            f"fraction of online's gain {fmt(kept)}; gain − {barely:.3g} × online gain {fmt(keep.value)}"
            f"{interval_text(keep.low, keep.high)}")
    if not (gain.finite and keep.finite):
        verdict, reason = INCONCLUSIVE, "no CI"
    elif gain.high < 0:
        verdict, reason = NOT_REPRODUCED, "below SFT (gain CI < 0)"
    elif keep.low > 0:
        verdict, reason = NOT_REPRODUCED, f"keeps more than {barely:.2f} of online's gain (CI)"
    elif not (online_gain.finite and online_gain.low > 0):
        verdict, reason = INCONCLUSIVE, f"online's own gain over SFT {fmt(online_gain.value)} is not confidently > 0"
    elif gain.low > 0 and keep.high < 0:
        verdict, reason = REPRODUCED, f"beats SFT (CI > 0) by less than {barely:.2f} of online's gain (CI)"
    else:
        verdict, reason = INCONCLUSIVE, "a CI includes its threshold"
    return Decision(r.statistic, gain.value, gain.low, gain.high, verdict, f"{text}; {reason}", T_PAIRED, n)


def decide_one_sft_response_helps(df: pd.DataFrame) -> Decision:
    """Claim 7: per seed, mean final win rate of the datasets with one SFT response minus that of the datasets of two
    late-policy responses (each family averaged over its arms within the seed); paired t over seeds."""
    r = rule(7)
    with_sft, late = list(r.arms["with_sft"]), list(r.arms["late"])
    present_a, absent_a = arms_with_data(df, with_sft)
    present_b, absent_b = arms_with_data(df, late)
    if not present_a or not present_b:
        return nan_decision(r.statistic, missing_text(absent_a + absent_b))
    a, b = seed_finals(df, present_a, r.metric), seed_finals(df, present_b, r.metric)
    gap = paired_t_interval(a, b)
    verdict, reason = directional(gap.low, gap.high, r.thresholds["equivalence"])
    absent = absent_a + absent_b
    return Decision(r.statistic, gap.value, gap.low, gap.high, verdict,
                    f"{'+'.join(present_a)}: {a.mean():.3f} vs {'+'.join(present_b)}: {b.mean():.3f} ({gap.n} paired "
                    f"seeds)" + (f"; {missing_text(absent)}" if absent else "") + f"; {reason}", gap.method, gap.n)


# -------------------------------------------------------------------------------------- best_of_2: claim 12
def decide_best_of_2(df: pd.DataFrame) -> Decision:
    """Claim 12: (a) Best-of-2 online − offline KL-matched win rate > 0 (paired t); (b) the shuffled online log
    recovers more than half of that gap: per seed, shuffled − offline − near × (online − offline) > 0 (t)."""
    r = rule(12)
    on, off, shuffled = r.arms["online"], r.arms["offline"], r.arms["shuffled"]
    band, near = r.thresholds["equivalence"], r.thresholds["near"]
    present, absent = arms_with_data(df, [on, off, shuffled])
    if on not in present or off not in present:
        return nan_decision(r.statistic, missing_text(absent))
    values, info = matched_per_seed(df, present, r)
    gap = paired_t_interval(values[on], values[off])
    gap_verdict, gap_reason = directional(gap.low, gap.high, band)
    gap_text = f"online − offline {fmt(gap.value)}{interval_text(gap.low, gap.high)} ({gap_verdict}); {budget_text(info)}"
    if shuffled not in present:
        if gap_verdict == NOT_REPRODUCED:
            return Decision(r.statistic, math.nan, math.nan, math.nan, NOT_REPRODUCED, f"{gap_text}; {gap_reason}",
                            gap.method, gap.n)
        return nan_decision(r.statistic, f"{gap_text}; {missing_text(absent)}")
    recovery = t_interval(contrast({"s": values[shuffled], "on": values[on], "off": values[off]},
                                   {"s": 1.0, "on": -near, "off": near - 1.0}))
    fraction = ((values[shuffled].mean() - values[off].mean()) / gap.value) if gap.value else math.nan
    n = min(gap.n, recovery.n)
    if gap_verdict == NOT_REPRODUCED:
        verdict, reason = NOT_REPRODUCED, f"online does not beat offline ({gap_reason})"
    elif gap_verdict != REPRODUCED or not recovery.finite:
        verdict, reason = INCONCLUSIVE, "online−offline gap not established" if gap_verdict != REPRODUCED else "no CI"
    elif recovery.low > 0:
        verdict, reason = REPRODUCED, f"online > offline and the shuffled log recovers > {near:.0%} of the gap (CI)"
    elif recovery.high < 0:
        verdict, reason = NOT_REPRODUCED, f"the shuffled log recovers < {near:.0%} of the gap (CI)"
    else:
        verdict, reason = INCONCLUSIVE, f"recovery CI includes {near:.0%} of the gap"
    return Decision(r.statistic, recovery.value, recovery.low, recovery.high, verdict,
                    f"{gap_text}; recovered fraction {fmt(fraction)}; {n} paired seeds; {reason}", T_PAIRED, n)


CLAIMS = [
    make_claim(1, "Online beats offline in win rate at almost every matched KL budget, with a higher peak.",
               "kl_budget", decide_online_beats_offline),
    make_claim(2, "Gold score vs KL rises then falls (over-optimisation) while the proxy score keeps rising.",
               "kl_budget", decide_overoptimisation),
    make_claim(3, "Offline training on the online pair log in original order reproduces the online run.",
               "data_coverage", decide_replay_reproduces_online, key="check_replay_original"),
    make_claim(4, "Offline training on the uniformly shuffled online log stays clearly below online.", "data_coverage",
               decide_shuffled_below_online),
    make_claim(5, "Performance falls as the shuffle window grows: none ≈ small > large > uniform.", "shuffle_degree",
               decide_shuffle_window),
    make_claim("check_window_1", "A shuffle window of one batch is the online order: window_1 reproduces online.",
               "shuffle_degree", decide_window_1_is_online),
    make_claim(6, "Offline on gold-labelled pairs from the final online policy barely beats SFT.", "suboptimal_data",
               decide_final_pairs_barely_beat_sft),
    make_claim(7, "Datasets with one SFT response beat datasets of two late-policy responses.", "suboptimal_data",
               decide_one_sft_response_helps),
    make_claim(8, "Offline policies classify gold-labelled pairs better than online policies.", "kl_budget",
               decide_offline_classifies_better),
    make_claim(9, "Among offline runs, classification accuracy does not predict win rate.", "kl_budget",
               decide_accuracy_does_not_predict),
    make_claim(10, "log πθ(y_w) − log π_ref(y_w) falls during training, most for offline.", "kl_budget",
               decide_chosen_logratio_falls),
    make_claim(11, "The proxy's accuracy on on-policy samples decays over training.", "kl_budget",
               decide_proxy_accuracy_decays),
    make_claim(12, "Best-of-2: online beats offline; on the shuffled online log it nearly matches online.",
               "best_of_2", decide_best_of_2),
]
# The sanity checks among them (rules of kind "check": claim 3, and window 1 of claim 5, keyed by its rule's key)
CHECKS = [claim for claim in CLAIMS if claim.rule.kind == "check"]
