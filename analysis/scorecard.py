"""The verdicts: each claim of PAPERS.md ("Claims a reproduction tests") that a suite tests, decided from the
data by an explicit rule, and the suite's REPORT.md built from them. No verdict is ever written by hand.

Every decision computes one deciding statistic with a 95% percentile-bootstrap interval over independent
units (seeds, or runs where a claim is about runs) and compares the interval with thresholds named below.
The generic rule for a claim "A is above B": not reproduced if the CI of A − B lies inside ±the equivalence band
(a difference too small to matter, even when the CI excludes 0); else reproduced if it lies above 0, not reproduced
if it lies below 0; inconclusive otherwise, and whenever an arm is missing or a CI cannot be formed (fewer than 2
units).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis.kl_match import best_under_budget, bootstrap_ci, common_budgets
from analysis.load import (end_values, eval_points, final_points, initial_points, missing, per_seed_final,
                           resolve_metric)
from analysis.style import SUITE_ARMS, arm_label

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_COVERED = "reproduced", "not reproduced", "inconclusive", "not covered"

# Thresholds. The papers give no numbers for "clearly", "barely", "nearly"; these are gapstudy's choices.
EQUIVALENCE_WIN_RATE = 0.02  # win-rate / accuracy / reward differences inside ±0.02 count as "no difference"
MOST_BUDGETS = 0.75  # claim 1 "at almost every budget": online ahead at >= 75% of the matched KL budgets
FEW_BUDGETS = 0.5  # claim 1: online ahead at fewer than half of the budgets contradicts the claim
REPLAY_TOLERANCE = 0.01  # claim 3: largest relative difference <= 1% = the same run (Tang: ~0.1% on TPU)
REPLAY_DIVERGED = 0.05  # claim 3: above 5% the replay is a different run
REPLAY_SCALE_FLOOR = 0.01  # claim 3: values smaller than this are compared on this scale (0 vs 1e-6 is a match)
BARELY_FRACTION = 1 / 3  # claim 6: "barely beats SFT" = keeps < 1/3 of online's gain over SFT
NO_PREDICTION_RHO = 0.3  # claim 9: |Spearman rho| <= 0.3 with a CI containing 0 = "does not predict"
PREDICTS_RHO = 0.5  # claim 9: |rho| >= 0.5 with a CI excluding 0 = accuracy does predict win rate
MIN_RUNS_CORRELATION = 6  # claim 9: fewer offline runs than this cannot say anything about a correlation
MIN_CHECKPOINTS = 4  # claims 2, 11: a trend needs at least this many evaluations of a run
TRAIN_TAIL = 0.1  # claim 10: a run's end value = mean over its last 10% of logged training steps
NEAR_RECOVERY = 0.5  # claim 12 "nearly matches": shuffled Best-of-2 recovers > half of the online-offline gap
R2_SMALL_FRACTION = 0.25  # claim 13 "offline ≈ on-policy on R2": R2 gap <= 1/4 of the R1 gap
FAR_RATIO = 2.0  # claim 14 "far more": the R1 drop is at least twice the R2 drop
SPREAD_FRACTION = 1.0  # claim 15 "≈": online-ish arms differ by no more than their mean gain over offline
MIXED_RETENTION = 0.5  # claim 17 "good on both": mixed keeps >= half of each specialist's gain
CORRELATION_EQUIVALENCE = 0.3  # claim 5: a window-vs-win-rate rho CI inside ±0.3 = no trend
TOY_BETA = 0.1  # claim 18 is decided at DPO's usual β, the first value of the toy8x8 suite's β sweep
TOY_TAIL = 0.25  # claim 18: a run's end value = mean of its evaluations over the last 25% of steps (DPO on a fixed
                 # dataset settles at a fixed point and then jitters with the minibatch order)
DIAGONAL_RECOVERED = 0.5  # claim 18 "recovers the diagonal": more than half the mass on the optimal response (more
                          # than the 7 others together) ...
DIAGONAL_GAIN = 0.2  # ... and at least 0.2 above π_ref's own diagonal mass, so a π_ref that already likes the
                     # diagonal does not count as recovering it


@dataclass(frozen=True)
class Decision:
    statistic: str  # what was computed, in words
    value: float
    ci_low: float
    ci_high: float
    verdict: str  # reproduced | not reproduced | inconclusive (| not covered for a claim no suite tests)
    explanation: str


@dataclass(frozen=True)
class Claim:
    number: int
    text: str
    suite: str | None  # None: no suite tests it
    decide: Callable[[pd.DataFrame], Decision] | None  # the suite's frame -> decision
    rule: str  # the decision rule, as printed in REPORT.md


# ------------------------------------------------------------------------------------------------ helpers
def _nan_decision(statistic: str, explanation: str, value=math.nan, low=math.nan, high=math.nan) -> Decision:
    return Decision(statistic, value, low, high, INCONCLUSIVE, explanation)


def _directional(low: float, high: float, band: float = EQUIVALENCE_WIN_RATE, sign: int = 1) -> tuple[str, str]:
    """The generic rule for "the statistic is above 0" (sign=-1: "below 0"; see the module docstring)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE, "no confidence interval (fewer than 2 seeds or runs per arm)"
    claimed, opposite = ("above", "below") if sign > 0 else ("below", "above")
    if sign < 0:
        low, high = -high, -low
    if -band <= low and high <= band:  # first: a CI narrow enough to exclude 0 can still hold only tiny effects
        return NOT_REPRODUCED, f"CI inside ±{band:g}: no meaningful difference"
    if low > 0:
        return REPRODUCED, f"CI {claimed} 0"
    if high < 0:
        return NOT_REPRODUCED, f"CI {opposite} 0"
    return INCONCLUSIVE, "CI includes 0"


def _arms_with_data(df: pd.DataFrame, arms: Sequence[str]) -> tuple[list[str], list[str]]:
    present = set(final_points(df)["arm"]) if not df.empty else set()
    return [a for a in arms if a in present], [a for a in arms if a not in present]


def _seed_values(df: pd.DataFrame, arm: str, metric: str, task: str | None = None) -> np.ndarray:
    """One value per seed: the arm's final `metric`, averaged over the arm's runs of that seed."""
    finals = per_seed_final(df[df["arm"] == arm], metric, task) if not df.empty else pd.DataFrame(columns=["value"])
    return finals["value"].to_numpy(dtype=float)


def _run_finals(df: pd.DataFrame, arms: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per run of `arms`: arm, seed and the final value of each metric (per-task keys resolved)."""
    finals = final_points(df[df["arm"].isin(arms)]) if not df.empty else df
    if finals.empty:
        return pd.DataFrame(columns=["arm", "seed", *metrics])
    out = finals[["arm", "seed", "run_dir"]].copy()
    for metric in metrics:
        key = resolve_metric(finals, metric)
        out[metric] = finals[key] if key is not None else np.nan
    return out


def _diff(a, b):
    return np.mean(a) - np.mean(b)


def _fmt(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{value:.3g}"


def _interval(low: float, high: float) -> str:
    return "" if not (np.isfinite(low) and np.isfinite(high)) else f" [{_fmt(low)}, {_fmt(high)}]"


def matched_per_seed(df: pd.DataFrame, arms: Sequence[str], metric: str = "eval/win_rate",
                     n_budgets: int = 8) -> tuple[dict[str, np.ndarray], dict]:
    """Per arm, one value per seed: the mean over KL budgets of the best `metric` under each budget (the area
    under the KL-matched curve). Budgets span the KL range all `arms` cover; budgets where some (arm, seed)
    has no checkpoint are dropped, so every value averages the same budgets. Falls back to the final value
    when the runs logged no KL. The second result describes the budgets and the per-budget arm means."""
    sub = df[df["arm"].isin(arms)] if not df.empty else df
    has_kl = not sub.empty and "eval/kl" in sub and (sub["eval/kl"] > 0).any()
    if not has_kl:
        return {arm: _seed_values(df, arm, metric) for arm in arms}, {"matched": False}
    budgets = common_budgets(sub, arms)
    best = best_under_budget(sub, budgets, y=metric)
    if best.empty:
        return {arm: np.array([]) for arm in arms}, {"matched": True, "budgets": np.array([])}
    wide = best.set_index(["arm", "seed", "budget"])["best"].unstack("budget")
    wide = wide.loc[:, wide.notna().all(axis=0)]
    arm_index = wide.index.get_level_values("arm")
    values = {arm: wide[arm_index == arm].mean(axis=1).to_numpy(dtype=float) if wide.shape[1] else np.array([])
              for arm in arms}
    per_budget = wide.groupby(level="arm").mean() if wide.shape[1] else pd.DataFrame()
    return values, {"matched": True, "budgets": np.asarray(wide.columns, dtype=float), "per_budget": per_budget}


def _budget_text(info: dict) -> str:
    if not info.get("matched"):
        return "final values (no eval/kl logged)"
    budgets = info.get("budgets", np.array([]))
    if len(budgets) == 0:
        return "no KL budget reached by every arm and seed"
    if len(budgets) == 1:
        return f"the arms' KL ranges do not overlap: best values at any KL (≤ {budgets[0]:.3g} nats)"
    return f"mean over {len(budgets)} KL budgets in [{budgets.min():.3g}, {budgets.max():.3g}] nats"


def _spearman(a, b) -> float:
    a, b = stats.rankdata(a), stats.rankdata(b)
    if np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def _slope(x, y) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0:
        return math.nan
    return float(np.polyfit(x, y, 1)[0])


def _missing_text(absent: Sequence[str]) -> str:
    return "missing arms: " + ", ".join(absent)


# ------------------------------------------------------------------------------- kl_budget: claims 1, 2, 8-11
def decide_online_beats_offline(df: pd.DataFrame) -> Decision:
    """Claim 1: online − offline best win rate under matched KL budgets, mean over budgets and seeds. The first
    complete pair decides: offline IPO on D_golden is Tang et al.'s comparison (both regimes see the same gold
    labels: online through the proxy trained on them), then offline IPO on unbounded fresh gold-labelled SFT pairs,
    then DPO; the others are reported beside it."""
    statistic = "online − offline best win rate under KL budget (mean over budgets)"
    pairs = [("online_ipo", "offline_ipo_golden"), ("online_ipo", "offline_ipo"), ("online_dpo", "offline_dpo")]
    usable = [p for p in pairs if not _arms_with_data(df, p)[1]]
    if not usable:
        absent = sorted({a for p in pairs for a in _arms_with_data(df, p)[1]})
        return _nan_decision(statistic, _missing_text(absent))
    results = []
    for online, offline in usable:
        values, info = matched_per_seed(df, [online, offline])
        value, low, high = bootstrap_ci([values[online], values[offline]], _diff)
        per_budget = info.get("per_budget", pd.DataFrame())
        ahead = (per_budget.loc[online] > per_budget.loc[offline]).mean() if len(per_budget) == 2 else math.nan
        peaks = {arm: eval_points(df[df["arm"] == arm]).groupby("seed")["eval/win_rate"].max().mean()
                 for arm in (online, offline)}
        results.append((online, offline, value, low, high, ahead, peaks, info, len(values[online]), len(values[offline])))
    online, offline, value, low, high, ahead, peaks, info, n_on, n_off = results[0]
    if not np.isfinite(value):
        return _nan_decision(statistic, f"{_budget_text(info)}: no value for both arms")
    verdict, reason = _directional(low, high)
    if verdict == REPRODUCED and not (np.isfinite(ahead) and ahead >= MOST_BUDGETS):
        verdict, reason = INCONCLUSIVE, f"CI above 0 but online ahead at only {ahead:.0%} of budgets"
    if np.isfinite(ahead) and ahead < FEW_BUDGETS and verdict != NOT_REPRODUCED:
        verdict, reason = NOT_REPRODUCED, f"online ahead at only {ahead:.0%} of budgets"
    parts = [f"{arm_label(online)} vs {arm_label(offline)}, {_budget_text(info)}, seeds {n_on}/{n_off}; {reason}",
             f"online ahead at {ahead:.0%} of budgets" if np.isfinite(ahead) else "",
             f"peak win rate {peaks[online]:.3f} vs {peaks[offline]:.3f}"]
    for other in results[1:]:
        parts.append(f"{arm_label(other[0])} − {arm_label(other[1])}: {_fmt(other[2])}{_interval(other[3], other[4])}")
    return Decision(statistic, value, low, high, verdict, "; ".join(p for p in parts if p))


def decide_overoptimisation(df: pd.DataFrame) -> Decision:
    """Claim 2: over each proxy-labelled run's upper half of KL, the slope of gold reward against √KL
    (negative = falling after the peak) and of proxy reward (positive = still rising); unit = run."""
    statistic = "slope of gold reward vs √KL over each proxy run's upper half of KL"
    points = eval_points(df)
    needed = ["eval/gold_reward", "eval/proxy_reward", "eval/kl"]
    if points.empty or any(k not in points for k in needed):
        return _nan_decision(statistic, "no evaluation data")
    points = points[points[needed].notna().all(axis=1)]
    gold_slopes, proxy_slopes, rises, arms = [], [], [], []
    for _, run in points.groupby("run_dir"):
        if len(run) < MIN_CHECKPOINTS:
            continue
        run = run.sort_values("eval/kl")
        d = np.sqrt(np.clip(run["eval/kl"].to_numpy(dtype=float), 0, None))
        tail = d >= np.median(d)
        gold, proxy = run["eval/gold_reward"].to_numpy(dtype=float), run["eval/proxy_reward"].to_numpy(dtype=float)
        gold_slopes.append(_slope(d[tail], gold[tail]))
        proxy_slopes.append(_slope(d[tail], proxy[tail]))
        rises.append(gold.max() - gold[0])
        arms.append(run["arm"].iloc[0])
    if not gold_slopes:
        return _nan_decision(statistic, f"no labeller=proxy run with >= {MIN_CHECKPOINTS} checkpoints logging "
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
                    f"{_fmt(proxy)}{_interval(proxy_low, proxy_high)}; mean gold rise to peak {_fmt(rise)}; {reason}")


def _families(df: pd.DataFrame) -> tuple[list[str], list[str]]:
    arms = SUITE_ARMS["kl_budget"]
    return [a for a in arms if a.startswith("online_")], [a for a in arms if a.startswith("offline_")]


def decide_offline_classifies_better(df: pd.DataFrame) -> Decision:
    """Claim 8: offline − online final classification accuracy on gold-labelled pairs; unit = run."""
    statistic = "offline − online classification accuracy (final, per run)"
    online, offline = _families(df)
    runs = _run_finals(df, online + offline, ["eval/classification_accuracy"]).dropna(subset=["eval/classification_accuracy"])
    a = runs.loc[runs["arm"].isin(offline), "eval/classification_accuracy"].to_numpy()
    b = runs.loc[runs["arm"].isin(online), "eval/classification_accuracy"].to_numpy()
    if len(a) == 0 or len(b) == 0:
        return _nan_decision(statistic, "no eval/classification_accuracy for " + ("offline" if len(a) == 0 else "online") + " runs")
    value, low, high = bootstrap_ci([a, b], _diff)
    verdict, reason = _directional(low, high)
    return Decision(statistic, value, low, high, verdict,
                    f"offline {np.mean(a):.3f} ({len(a)} runs) vs online {np.mean(b):.3f} ({len(b)} runs); {reason}")


def decide_accuracy_does_not_predict(df: pd.DataFrame) -> Decision:
    """Claim 9: Spearman rho of final classification accuracy vs final win rate across offline runs."""
    statistic = "Spearman ρ(classification accuracy, win rate) across offline runs"
    _, offline = _families(df)
    columns = ["eval/classification_accuracy", "eval/win_rate"]
    runs = _run_finals(df, offline, columns).dropna(subset=columns)
    if len(runs) < MIN_RUNS_CORRELATION:
        return _nan_decision(statistic, f"{len(runs)} offline runs with both metrics; need >= {MIN_RUNS_CORRELATION}")
    x, y = runs[columns[0]].to_numpy(), runs[columns[1]].to_numpy()
    value, low, high = bootstrap_ci([x, y], _spearman, paired=True)
    if not np.isfinite(value):
        return _nan_decision(statistic, "a metric is constant across runs: no correlation defined")
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
        return _nan_decision(statistic, f"no {key} logged")
    ends = {}
    for run_dir, run in df[df[key].notna()].groupby("run_dir"):
        run = run.sort_values("step")
        tail = run[key].to_numpy()[-max(1, int(math.ceil(TRAIN_TAIL * len(run)))):]
        ends[run_dir] = (run["arm"].iloc[0], float(np.mean(tail)))
    a = np.array([v for arm, v in ends.values() if arm in online])
    b = np.array([v for arm, v in ends.values() if arm in offline])
    if len(a) == 0 or len(b) == 0:
        return _nan_decision(statistic, f"no {key} for " + ("online" if len(a) == 0 else "offline") + " runs")
    on, on_low, on_high = bootstrap_ci(a)
    off, off_low, off_high = bootstrap_ci(b)
    value, low, high = bootstrap_ci([a, b], _diff)
    if not (np.isfinite(low) and np.isfinite(on_high) and np.isfinite(off_high)):
        verdict, reason = INCONCLUSIVE, "fewer than 2 runs per family: no CI"
    elif on_high < 0 and off_high < 0 and low > 0:
        verdict, reason = REPRODUCED, "both families end below 0 (CI) and offline lower (CI of difference > 0)"
    elif on_low > 0 or off_low > 0 or high < 0:
        verdict, reason = NOT_REPRODUCED, "a family ends above 0, or online falls more than offline"
    else:
        verdict, reason = INCONCLUSIVE, "a CI includes 0"
    return Decision(statistic, value, low, high, verdict,
                    f"online end {_fmt(on)}{_interval(on_low, on_high)} ({len(a)} runs), offline end "
                    f"{_fmt(off)}{_interval(off_low, off_high)} ({len(b)} runs); {reason}")


def decide_proxy_accuracy_decays(df: pd.DataFrame) -> Decision:
    """Claim 11: change of eval/proxy_accuracy over training, from a least-squares line against step
    (slope × steps covered), per run with >= 4 evaluations; unit = run."""
    statistic = "fitted change of proxy accuracy over training"
    key = "eval/proxy_accuracy"
    if df.empty or key not in df:
        return _nan_decision(statistic, f"no {key} logged")
    changes, arms = [], set()
    for _, run in df[df[key].notna()].groupby("run_dir"):
        if len(run) < MIN_CHECKPOINTS:
            continue
        slope = _slope(run["step"], run[key])
        if np.isfinite(slope):
            changes.append(slope * float(np.ptp(run["step"])))
            arms.add(str(run["arm"].iloc[0]))
    if not changes:
        return _nan_decision(statistic, f"no run with >= {MIN_CHECKPOINTS} evaluations of {key} (labeller=proxy)")
    value, low, high = bootstrap_ci(np.array(changes))
    verdict, reason = _directional(low, high, sign=-1)  # the claim is a decrease
    return Decision(statistic, value, low, high, verdict, f"{len(changes)} runs ({', '.join(sorted(arms))}); {reason}")


# ------------------------------------------------------------------------------- data_coverage: claims 3, 4
def decide_replay_reproduces_online(df: pd.DataFrame) -> Decision:
    """Claim 3: largest relative difference, over seeds and metrics, between replay_original and the online
    run of the same seed: final evaluation metrics and training-metric means."""
    statistic = "max relative difference replay_original vs online"
    present, absent = _arms_with_data(df, ["online", "replay_original"])
    if absent:
        return _nan_decision(statistic, _missing_text(absent))
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
        return _nan_decision(statistic, "no seed with both an online and a replay_original run and shared metrics")
    if worst <= REPLAY_TOLERANCE:
        verdict, reason = REPRODUCED, f"within {REPLAY_TOLERANCE:.0%}"
    elif worst > REPLAY_DIVERGED:
        verdict, reason = NOT_REPRODUCED, f"above {REPLAY_DIVERGED:.0%}"
    else:
        verdict, reason = INCONCLUSIVE, f"between {REPLAY_TOLERANCE:.0%} and {REPLAY_DIVERGED:.0%}"
    return Decision(statistic, worst, math.nan, math.nan, verdict,
                    f"{len(seeds)} paired seeds; largest at {where}; {reason}")


def _gap_decision(df: pd.DataFrame, better: str, worse: str, statistic: str) -> Decision:
    present, absent = _arms_with_data(df, [better, worse])
    if absent:
        return _nan_decision(statistic, _missing_text(absent))
    values, info = matched_per_seed(df, [better, worse])
    value, low, high = bootstrap_ci([values[better], values[worse]], _diff)
    if not np.isfinite(value):
        return _nan_decision(statistic, f"{_budget_text(info)}: no value for both arms")
    verdict, reason = _directional(low, high)
    return Decision(statistic, value, low, high, verdict,
                    f"{_budget_text(info)}, seeds {len(values[better])}/{len(values[worse])}; {reason}")


def decide_shuffled_below_online(df: pd.DataFrame) -> Decision:
    """Claim 4: online − replay_shuffled KL-matched win rate."""
    return _gap_decision(df, "online", "replay_shuffled", "online − replay_shuffled KL-matched win rate")


# ------------------------------------------------------------------------------------ shuffle_degree: claim 5
_WINDOW_RANK = {"window_1": 0, "window_4": 1, "window_32": 2, "window_256": 3, "window_all": 4}


def decide_shuffle_window(df: pd.DataFrame) -> Decision:
    """Claim 5: Spearman rho between shuffle-window rank (1 < 4 < 32 < 256 < all) and final win rate,
    across runs (seeds) of the window arms."""
    statistic = "Spearman ρ(shuffle window, final win rate)"
    runs = _run_finals(df, list(_WINDOW_RANK), ["eval/win_rate"]).dropna(subset=["eval/win_rate"])
    windows = sorted(set(runs["arm"]), key=_WINDOW_RANK.get)
    absent = [a for a in _WINDOW_RANK if a not in windows]
    if len(windows) < 3 or len(runs) < 5:
        return _nan_decision(statistic, f"{len(windows)} windows / {len(runs)} runs with data; need >= 3 / 5"
                             + (f"; {_missing_text(absent)}" if absent else ""))
    rank = runs["arm"].map(_WINDOW_RANK).to_numpy(dtype=float)
    value, low, high = bootstrap_ci([rank, runs["eval/win_rate"].to_numpy()], _spearman, paired=True)
    if not np.isfinite(value):
        return _nan_decision(statistic, "win rate constant across windows")
    verdict, reason = _directional(low, high, band=CORRELATION_EQUIVALENCE, sign=-1)
    means = runs.groupby("arm")["eval/win_rate"].mean()
    listing = ", ".join(f"{a.removeprefix('window_')}: {means[a]:.3f}" for a in windows)
    return Decision(statistic, value, low, high, verdict,
                    f"mean final win rate by window {listing}" + (f"; {_missing_text(absent)}" if absent else "")
                    + f"; {reason}")


# ---------------------------------------------------------------------------------- suboptimal_data: 6, 7
def decide_final_pairs_barely_beat_sft(df: pd.DataFrame) -> Decision:
    """Claim 6: fraction of online's gain over SFT that final_vs_final keeps:
    (win(final_vs_final) − 0.5) / (win(online) − 0.5), final win rates vs SFT."""
    statistic = "final_vs_final gain over SFT / online gain over SFT"
    present, absent = _arms_with_data(df, ["online", "final_vs_final"])
    if absent:
        return _nan_decision(statistic, _missing_text(absent))
    online, final = _seed_values(df, "online", "eval/win_rate"), _seed_values(df, "final_vs_final", "eval/win_rate")
    gain, gain_low, _ = bootstrap_ci(online - 0.5)
    if len(online) == 0 or len(final) == 0:
        return _nan_decision(statistic, "no final win rate for " + ("online" if len(online) == 0 else "final_vs_final"))
    if not (np.isfinite(gain_low) and gain_low > 0):
        return _nan_decision(statistic, f"online gain over SFT {_fmt(gain)} is not confidently positive: no scale")

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
    present_a, absent_a = _arms_with_data(df, with_sft)
    present_b, absent_b = _arms_with_data(df, late)
    if not present_a or not present_b:
        return _nan_decision(statistic, _missing_text(absent_a + absent_b))
    a = np.concatenate([_seed_values(df, arm, "eval/win_rate") for arm in present_a])
    b = np.concatenate([_seed_values(df, arm, "eval/win_rate") for arm in present_b])
    value, low, high = bootstrap_ci([a, b], _diff)
    verdict, reason = _directional(low, high)
    absent = absent_a + absent_b
    return Decision(statistic, value, low, high, verdict,
                    f"{'+'.join(present_a)}: {np.mean(a):.3f} (n={len(a)}) vs {'+'.join(present_b)}: {np.mean(b):.3f} "
                    f"(n={len(b)})" + (f"; {_missing_text(absent)}" if absent else "") + f"; {reason}")


# -------------------------------------------------------------------------------------- best_of_2: claim 12
def decide_best_of_2(df: pd.DataFrame) -> Decision:
    """Claim 12: (a) Best-of-2 online − offline KL-matched win rate > 0; (b) the shuffled online log recovers
    more than half of that gap: (shuffled − offline) / (online − offline)."""
    statistic = "fraction of the Best-of-2 online−offline gap recovered by the shuffled log"
    arms = ["bo2_online", "bo2_offline", "bo2_shuffled"]
    present, absent = _arms_with_data(df, arms)
    if "bo2_online" not in present or "bo2_offline" not in present:
        return _nan_decision(statistic, _missing_text(absent))
    values, info = matched_per_seed(df, present)
    gap, gap_low, gap_high = bootstrap_ci([values["bo2_online"], values["bo2_offline"]], _diff)
    gap_verdict, gap_reason = _directional(gap_low, gap_high)
    gap_text = (f"online − offline {_fmt(gap)}{_interval(gap_low, gap_high)} ({gap_verdict}); "
                f"{_budget_text(info)}")
    if "bo2_shuffled" not in present:
        verdict = NOT_REPRODUCED if gap_verdict == NOT_REPRODUCED else INCONCLUSIVE
        return _nan_decision(statistic, f"{gap_text}; {_missing_text(absent)}") if verdict == INCONCLUSIVE else \
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


# ------------------------------------------------------------------------------ bandit, sample_reuse: 13, 14
def decide_bandit(df: pd.DataFrame) -> Decision:
    """Claim 13: on-policy − offline final gold reward averaged over DPO, IPO, Best-of-N, per reward; R1 gap
    > 0 (CI), R2 gap <= 1/4 of the R1 gap, and R1 gap − R2 gap > 0 (CI)."""
    statistic = "R1: on-policy − offline final gold reward (mean over DPO, IPO, Best-of-N)"
    algos = ["dpo", "ipo", "best_of_n"]
    samples = {}
    for reward in ("R1", "R2"):
        for algo in algos:
            on, off = f"{algo}_onpolicy_{reward}", f"{algo}_offline_{reward}"
            a, b = _seed_values(df, on, "eval/gold_reward"), _seed_values(df, off, "eval/gold_reward")
            if len(a) and len(b):
                samples.setdefault(reward, {})[algo] = (a, b)
    if "R1" not in samples:
        expected = [f"{a}_{r}_R1" for a in algos for r in ("onpolicy", "offline")]
        return _nan_decision(statistic, _missing_text(_arms_with_data(df, expected)[1]))

    def gap_of(reward):
        pairs = samples.get(reward, {})
        flat = [x for algo in pairs for x in pairs[algo]]
        return bootstrap_ci(flat, lambda *xs: np.mean([np.mean(xs[i]) - np.mean(xs[i + 1]) for i in range(0, len(xs), 2)])) \
            if flat else (math.nan, math.nan, math.nan)

    value, low, high = gap_of("R1")
    r2, r2_low, r2_high = gap_of("R2")
    shared = [a for a in algos if a in samples.get("R1", {}) and a in samples.get("R2", {})]
    if shared:
        flat = [x for a in shared for x in (*samples["R1"][a], *samples["R2"][a])]

        def interaction(*xs):
            gaps = [np.mean(xs[i]) - np.mean(xs[i + 1]) for i in range(0, len(xs), 2)]
            return np.mean(gaps[0::2]) - np.mean(gaps[1::2])

        inter, inter_low, inter_high = bootstrap_ci(flat, interaction)
    else:
        inter = inter_low = inter_high = math.nan
    r1_verdict, _ = _directional(low, high)
    if r1_verdict == NOT_REPRODUCED or (np.isfinite(inter_high) and inter_high < 0):
        verdict, reason = NOT_REPRODUCED, "no on-policy advantage on R1, or a larger one on R2"
    elif r1_verdict == REPRODUCED and np.isfinite(r2) and abs(r2) <= R2_SMALL_FRACTION * value and inter_low > 0:
        verdict, reason = REPRODUCED, f"R1 gap > 0 (CI), |R2 gap| <= {R2_SMALL_FRACTION:g} × R1 gap, R1 − R2 > 0 (CI)"
    else:
        verdict, reason = INCONCLUSIVE, "R1 gap, R2 gap or their difference not established"
    return Decision(statistic, value, low, high, verdict,
                    f"algorithms R1: {', '.join(samples['R1'])}; R2 gap {_fmt(r2)}{_interval(r2_low, r2_high)}; "
                    f"R1 − R2 {_fmt(inter)}{_interval(inter_low, inter_high)}; {reason}")


def decide_sample_reuse(df: pd.DataFrame) -> Decision:
    """Claim 14: drop of final gold reward from T=1 to the largest T, R1 minus R2 (> 0 by CI, and the R1
    drop at least twice the R2 drop)."""
    statistic = "R1 drop − R2 drop of final gold reward from T=1 to the largest T"
    reuse = {}
    for reward in ("R1", "R2"):
        for t in (1, 2, 4, 8):
            values = _seed_values(df, f"T{t}_{reward}", "eval/gold_reward")
            if len(values):
                reuse.setdefault(reward, {})[t] = values
    shared = sorted(set(reuse.get("R1", {})) & set(reuse.get("R2", {})))
    if 1 not in shared or len(shared) < 2:
        expected = [f"T{t}_{r}" for r in ("R1", "R2") for t in (1, 2, 4, 8)]
        return _nan_decision(statistic, "need T=1 and a larger T for both rewards; "
                             + _missing_text(_arms_with_data(df, expected)[1]))
    top = shared[-1]
    samples = [reuse["R1"][1], reuse["R1"][top], reuse["R2"][1], reuse["R2"][top]]
    value, low, high = bootstrap_ci(samples, lambda a, b, c, d: (np.mean(a) - np.mean(b)) - (np.mean(c) - np.mean(d)))
    drop_r1 = np.mean(samples[0]) - np.mean(samples[1])
    drop_r2 = np.mean(samples[2]) - np.mean(samples[3])
    verdict, reason = _directional(low, high)
    if verdict == REPRODUCED and not drop_r1 >= FAR_RATIO * max(drop_r2, 0.0):
        verdict, reason = INCONCLUSIVE, f"R1 drop not {FAR_RATIO:g}× the R2 drop"
    return Decision(statistic, value, low, high, verdict,
                    f"T=1→{top}: R1 drop {drop_r1:.3f}, R2 drop {drop_r2:.3f}; {reason}")


# ----------------------------------------------------------------------------------- sync_period: 15, 16
_TASK_METRICS = {"math": "eval/math/accuracy", "chat": "eval/chat/win_rate"}
_TASK_FALLBACK = {"math": "eval/accuracy", "chat": "eval/win_rate"}


def _task_values(df: pd.DataFrame, arm: str, task: str) -> np.ndarray:
    values = _seed_values(df, arm, _TASK_METRICS[task])
    return values if len(values) else _seed_values(df, arm, _TASK_FALLBACK[task])


def decide_semi_online(df: pd.DataFrame) -> Decision:
    """Claim 15, per task (math accuracy, chat win rate): every semi-online, online and GRPO arm above offline
    (CI of the smallest difference > 0), offline above the seed (step-0 evaluation; CI > 0), and the spread
    of the online-ish arms' means no larger than their mean gain over offline."""
    statistic = "smallest (semi-online | online | GRPO) − offline final score, over tasks"
    semi = {"math": ["math_s10", "math_s100"], "chat": ["chat_s5", "chat_s10"]}
    outcomes, texts = [], []
    worst = (math.nan, math.nan, math.nan)
    for task in ("math", "chat"):
        arms = {arm: _task_values(df, arm, task) for arm in [*semi[task], f"{task}_s1", f"{task}_grpo", f"{task}_sinf"]}
        if not any(len(v) for v in arms.values()):
            continue
        offline = arms.pop(f"{task}_sinf")
        others = {a: v for a, v in arms.items() if len(v)}
        absent = [a for a, v in arms.items() if not len(v)] + ([] if len(offline) else [f"{task}_sinf"])
        has_semi = any(a in others for a in semi[task])
        if not len(offline) or f"{task}_s1" not in others or f"{task}_grpo" not in others or not has_semi:
            outcomes.append(INCONCLUSIVE)
            texts.append(f"{task}: {_missing_text(absent)}")
            continue
        initial = initial_points(df[df["arm"].astype(str).str.startswith(f"{task}_")])
        initial = initial[initial["step"] == 0]
        key = resolve_metric(initial, _TASK_METRICS[task]) or resolve_metric(initial, _TASK_FALLBACK[task])
        seed_values = initial.groupby("seed")[key].mean().dropna().to_numpy() if key else np.array([])
        names = list(others)
        gap = bootstrap_ci([offline, *others.values()], lambda off, *xs: min(np.mean(x) for x in xs) - np.mean(off))
        above_seed = bootstrap_ci([offline, seed_values], _diff) if len(seed_values) else (math.nan,) * 3
        means = {a: float(np.mean(v)) for a, v in others.items()}
        spread = max(means.values()) - min(means.values())
        mean_gain = float(np.mean(list(means.values()))) - float(np.mean(offline))
        if not np.isfinite(worst[0]) or gap[0] < worst[0]:
            worst = gap
        if (np.isfinite(gap[2]) and gap[2] < 0) or (np.isfinite(above_seed[2]) and above_seed[2] < 0) \
                or (mean_gain > 0 and spread > SPREAD_FRACTION * mean_gain):
            outcomes.append(NOT_REPRODUCED)
        elif np.isfinite(gap[1]) and gap[1] > 0 and np.isfinite(above_seed[1]) and above_seed[1] > 0 \
                and spread <= SPREAD_FRACTION * mean_gain:
            outcomes.append(REPRODUCED)
        else:
            outcomes.append(INCONCLUSIVE)
        texts.append(f"{task} ({outcomes[-1]}): min gap over offline {_fmt(gap[0])}{_interval(gap[1], gap[2])}, "
                     f"offline − seed {_fmt(above_seed[0])}{_interval(above_seed[1], above_seed[2])}, spread of "
                     f"{', '.join(names)} {spread:.3f} vs mean gain {mean_gain:.3f}")
    if not outcomes:
        return _nan_decision(statistic, "no math_* or chat_* runs with final scores")
    verdict = (NOT_REPRODUCED if NOT_REPRODUCED in outcomes
               else REPRODUCED if all(o == REPRODUCED for o in outcomes) else INCONCLUSIVE)
    return Decision(statistic, *worst, verdict, "; ".join(texts))


def decide_entropy_and_length(df: pd.DataFrame) -> Decision:
    """Claim 16: (a) final − initial eval entropy per non-offline arm, all < 0 (CI); (b) final length of
    math_s1_no_ref_sync − math_s1 < 0 (CI). Statistic: the largest (least negative) entropy change."""
    statistic = "largest entropy change (final − initial) among non-offline arms"
    arms = [a for a in SUITE_ARMS["sync_period"] if not a.endswith("_sinf")]
    changes = {}
    for arm in arms:
        runs = df[df["arm"] == arm] if not df.empty else df
        key = resolve_metric(runs, "eval/entropy", task=arm.split("_")[0]) if not runs.empty else None
        if key is None:
            continue
        first, last = initial_points(runs), final_points(runs)
        per_seed = (last.groupby("seed")[key].mean() - first.groupby("seed")[key].mean()).dropna()
        if len(per_seed):
            changes[arm] = bootstrap_ci(per_seed.to_numpy())
    length_a = _seed_values(df, "math_s1_no_ref_sync", "eval/length", task="math")
    length_b = _seed_values(df, "math_s1", "eval/length", task="math")
    length = bootstrap_ci([length_a, length_b], _diff) if len(length_a) and len(length_b) else (math.nan,) * 3
    if not changes:
        return _nan_decision(statistic, "no eval/entropy for non-offline arms")
    worst_arm = max(changes, key=lambda a: changes[a][0])
    value, low, high = changes[worst_arm]
    entropy_falls = all(np.isfinite(c[2]) and c[2] < 0 for c in changes.values())
    entropy_rises = any(np.isfinite(c[1]) and c[1] > 0 for c in changes.values())
    shorter = np.isfinite(length[2]) and length[2] < 0
    longer = np.isfinite(length[1]) and length[1] > 0
    absent = [a for a in arms if a not in changes]
    if entropy_rises or longer:
        verdict, reason = NOT_REPRODUCED, "entropy rises in some non-offline arm" if entropy_rises else \
            "no-π_ref-sync run is longer than synced online"
    elif entropy_falls and shorter and not absent:
        verdict, reason = REPRODUCED, "entropy falls in every non-offline arm and no-π_ref-sync outputs are shorter (CIs)"
    else:
        verdict, reason = INCONCLUSIVE, "a CI includes 0 or an arm is missing"
    return Decision(statistic, value, low, high, verdict,
                    f"least-falling arm {worst_arm}; length no-sync − synced {_fmt(length[0])}"
                    f"{_interval(length[1], length[2])}" + (f"; {_missing_text(absent)}" if absent else "")
                    + f"; {reason}")


# ------------------------------------------------------------------------------------- curriculum: claim 17
def decide_curriculum(df: pd.DataFrame) -> Decision:
    """Claim 17: (a) score of NV→V − V→NV > 0 (CI), score = mean of final math accuracy and chat win rate
    per seed; (b) mixed keeps >= half of each specialist's gain: (mixed − other specialist) / (specialist −
    other specialist) on math (V is the specialist) and chat (NV), the smaller of the two."""
    statistic = "score(NV→V) − score(V→NV), score = mean(math accuracy, chat win rate)"

    def scores(arm):
        finals = final_points(df[df["arm"] == arm]) if not df.empty else df
        if finals.empty:
            return np.array([])
        math_key = resolve_metric(finals, "eval/math/accuracy")
        chat_key = resolve_metric(finals, "eval/chat/win_rate")
        if math_key is None or chat_key is None:
            return np.array([])
        per_seed = finals.groupby("seed")[[math_key, chat_key]].mean().dropna()
        return per_seed.mean(axis=1).to_numpy()

    a, b = scores("nv_then_v"), scores("v_then_nv")
    if not len(a) or not len(b):
        return _nan_decision(statistic, _missing_text([arm for arm, v in (("nv_then_v", a), ("v_then_nv", b)) if not len(v)]))
    value, low, high = bootstrap_ci([a, b], _diff)
    order_verdict, order_reason = _directional(low, high)
    mixed = {task: [_seed_values(df, arm, metric) for arm in ("mixed", "nv", "v")]
             for task, metric in (("math", "eval/math/accuracy"), ("chat", "eval/chat/win_rate"))}
    retention = (math.nan,) * 3
    if all(len(x) for xs in mixed.values() for x in xs):
        def kept(m_mixed, m_nv, m_v, c_mixed, c_nv, c_v):
            with np.errstate(divide="ignore", invalid="ignore"):
                math_kept = (np.mean(m_mixed) - np.mean(m_nv)) / (np.mean(m_v) - np.mean(m_nv))
                chat_kept = (np.mean(c_mixed) - np.mean(c_v)) / (np.mean(c_nv) - np.mean(c_v))
            return min(math_kept, chat_kept)
        retention = bootstrap_ci([*mixed["math"], *mixed["chat"]], kept)
    if order_verdict == NOT_REPRODUCED or (np.isfinite(retention[2]) and retention[2] < MIXED_RETENTION):
        verdict, reason = NOT_REPRODUCED, ("V→NV not beaten" if order_verdict == NOT_REPRODUCED
                                           else f"mixed keeps < {MIXED_RETENTION:.0%} on a task (CI)")
    elif order_verdict == REPRODUCED and np.isfinite(retention[0]) and retention[0] >= MIXED_RETENTION:
        verdict, reason = REPRODUCED, f"NV→V > V→NV (CI) and mixed keeps >= {MIXED_RETENTION:.0%} on both tasks"
    else:
        verdict, reason = INCONCLUSIVE, order_reason if order_verdict != REPRODUCED else "mixed retention not established"
    return Decision(statistic, value, low, high, verdict,
                    f"mixed keeps (min over tasks) {_fmt(retention[0])}{_interval(retention[1], retention[2])}; {reason}")


# ------------------------------------------------------------------------------------------------ toy8x8: 18
def toy_runs(df: pd.DataFrame, arm: str, beta: float | None = TOY_BETA) -> pd.DataFrame:
    """The rows of `arm`'s runs at KL strength `beta` (all of them when the frame has no algo.beta column: one β)."""
    runs = df[df["arm"] == arm] if not df.empty else df
    if beta is not None and "algo.beta" in runs and runs["algo.beta"].notna().any():
        runs = runs[np.isclose(pd.to_numeric(runs["algo.beta"], errors="coerce"), beta)]
    return runs


def toy_betas(df: pd.DataFrame, arm: str) -> list[float]:
    runs = toy_runs(df, arm, None)
    if "algo.beta" not in runs or runs["algo.beta"].isna().all():
        return []
    return sorted(pd.to_numeric(runs["algo.beta"], errors="coerce").dropna().unique().tolist())


def toy_seed_values(df: pd.DataFrame, arm: str, metric: str, beta: float | None = TOY_BETA) -> pd.Series:
    """seed -> the run's end value of `metric` (mean over the last TOY_TAIL of its evaluations)."""
    ends = end_values(toy_runs(df, arm, beta), metric, TOY_TAIL)
    return ends.groupby("seed")["value"].mean()


def decide_toy_coverage(df: pd.DataFrame) -> Decision:
    """Claim 18 at β = TOY_BETA: DPO's end mass on the uncovered responses − π_ref's (CI over seeds > 0), and PPO
    with KL's end diagonal mass above max(DIAGONAL_RECOVERED, π_ref's + DIAGONAL_GAIN) (CI over seeds)."""
    statistic = f"DPO (fixed dataset) − π_ref mass on uncovered responses, β = {TOY_BETA:g}"
    dpo = toy_seed_values(df, "dpo_offline", "eval/uncovered_mass")
    dpo_ref = toy_seed_values(df, "dpo_offline", "eval/uncovered_mass_ref")
    ppo = toy_seed_values(df, "ppo_kl", "eval/diagonal_mass")
    ppo_ref = toy_seed_values(df, "ppo_kl", "eval/diagonal_mass_ref")
    absent = [arm for arm, values in (("dpo_offline", dpo), ("ppo_kl", ppo)) if values.empty]
    if absent:
        return _nan_decision(statistic, f"{_missing_text(absent)} (runs at β = {TOY_BETA:g})")
    paired = pd.concat([dpo, dpo_ref], axis=1, join="inner").dropna().to_numpy()
    value, low, high = bootstrap_ci(paired[:, 0] - paired[:, 1])
    dpo_verdict, dpo_reason = _directional(low, high)
    threshold = max(DIAGONAL_RECOVERED, float(ppo_ref.mean()) + DIAGONAL_GAIN)
    diagonal, diagonal_low, diagonal_high = bootstrap_ci(ppo.to_numpy())
    if not np.isfinite(diagonal_low):
        ppo_verdict, ppo_reason = INCONCLUSIVE, "PPO: no CI (one seed)"
    elif diagonal_low > threshold:
        ppo_verdict, ppo_reason = REPRODUCED, f"PPO diagonal CI above {threshold:.2f}"
    elif diagonal_high < threshold:
        ppo_verdict, ppo_reason = NOT_REPRODUCED, f"PPO diagonal CI below {threshold:.2f}"
    else:
        ppo_verdict, ppo_reason = INCONCLUSIVE, f"PPO diagonal CI includes {threshold:.2f}"
    if NOT_REPRODUCED in (dpo_verdict, ppo_verdict):
        verdict = NOT_REPRODUCED
    elif dpo_verdict == ppo_verdict == REPRODUCED:
        verdict = REPRODUCED
    else:
        verdict = INCONCLUSIVE
    parts = [f"DPO uncovered mass {dpo.mean():.3f} vs π_ref {dpo_ref.mean():.3f} ({len(paired)} seeds; {dpo_reason})",
             f"PPO+KL diagonal mass {diagonal:.3f}{_interval(diagonal_low, diagonal_high)} vs π_ref "
             f"{ppo_ref.mean():.3f}, threshold {threshold:.2f} ({ppo_reason})"]
    online_unc = toy_seed_values(df, "dpo_online", "eval/uncovered_mass")
    online_diag = toy_seed_values(df, "dpo_online", "eval/diagonal_mass")
    if not online_unc.empty:
        parts.append(f"online DPO: uncovered {online_unc.mean():.3f}, diagonal {online_diag.mean():.3f}")
    for beta in toy_betas(df, "dpo_offline"):
        if np.isclose(beta, TOY_BETA):
            continue
        unc = toy_seed_values(df, "dpo_offline", "eval/uncovered_mass", beta)
        diag = toy_seed_values(df, "ppo_kl", "eval/diagonal_mass", beta)
        parts.append(f"β = {beta:g} (not decisive): DPO uncovered {unc.mean():.3f}"
                     + (f", PPO diagonal {diag.mean():.3f}" if not diag.empty else ""))
    return Decision(statistic, value, low, high, verdict, "; ".join(parts))


# ------------------------------------------------------------------------------------------------ claims
_GENERIC = ("not reproduced if CI inside ±%g or < 0; reproduced if CI > 0 (and not inside ±%g); else inconclusive"
            % (EQUIVALENCE_WIN_RATE, EQUIVALENCE_WIN_RATE))
CLAIMS: list[Claim] = [
    Claim(1, "Online beats offline in win rate at almost every matched KL budget, with a higher peak.", "kl_budget",
          decide_online_beats_offline,
          f"online_ipo − offline_ipo_golden (else − offline_ipo, else the DPO pair) best win rate under KL budget, "
          f"averaged over 8 log-spaced shared "
          f"budgets, CI over seeds: {_GENERIC}; reproduced also needs online ahead at >= {MOST_BUDGETS:.0%} of "
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
          decide_shuffled_below_online, f"online − replay_shuffled KL-matched win rate, CI over seeds: {_GENERIC}"),
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
          f"final win rate of sft_vs_mid+sft_vs_final − mid_vs_final+final_vs_final, CI over (arm, seed): {_GENERIC}"),
    Claim(8, "Offline policies classify gold-labelled pairs better than online policies.", "kl_budget",
          decide_offline_classifies_better,
          f"offline_* − online_* final eval/classification_accuracy, CI over runs: {_GENERIC}"),
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
    Claim(13, "Bandit R1: on-policy DPO/IPO/Best-of-N far exceed offline; on R2 offline ≈ on-policy.", "bandit",
          decide_bandit,
          f"on-policy − offline final gold reward averaged over the three algorithms, CI over seeds: reproduced if R1 "
          f"CI > 0, |R2 gap| <= {R2_SMALL_FRACTION:g} × R1 gap and (R1 − R2) CI > 0; not reproduced if R1 CI < 0 "
          f"or inside ±{EQUIVALENCE_WIN_RATE:g}, or (R1 − R2) CI < 0"),
    Claim(14, "At a fixed sample budget, more reuse hurts R1 far more than R2.", "sample_reuse",
          decide_sample_reuse,
          f"(gold(T=1) − gold(T=max)) on R1 minus the same on R2, CI over seeds: {_GENERIC}; reproduced also needs "
          f"the R1 drop >= {FAR_RATIO:g} × the R2 drop"),
    Claim(15, "Semi-online DPO (moderate s) ≈ online DPO ≈ GRPO, all well above offline, which beats the seed.",
          "sync_period", decide_semi_online,
          f"per task: min over semi-online/online/GRPO of (arm − offline) CI > 0, offline − seed (step 0) CI > 0, and "
          f"spread of those arms <= {SPREAD_FRACTION:g} × their mean gain: reproduced on every task; a CI < 0 or a "
          f"larger spread: not reproduced"),
    Claim(16, "Entropy falls in every non-offline regime; without π_ref sync online DPO on math drifts to short "
              "outputs.", "sync_period", decide_entropy_and_length,
          "final − initial eval entropy CI < 0 for every non-offline arm and final length math_s1_no_ref_sync − "
          "math_s1 CI < 0: reproduced; an entropy CI > 0 or length CI > 0: not reproduced"),
    Claim(17, "NV→V beats V→NV; V+NV mixed is good on both.", "curriculum", decide_curriculum,
          f"score(NV→V) − score(V→NV) CI over seeds ({_GENERIC}) and mixed keeping >= {MIXED_RETENTION:.0%} of each "
          f"specialist's gain (point estimate; CI below it: not reproduced)"),
    Claim(18, "On the 8×8 toy, DPO raises uncovered cells above π_ref; PPO with KL recovers the diagonal.", "toy8x8",
          decide_toy_coverage,
          f"at β = {TOY_BETA:g}, per run the mean over its last {TOY_TAIL:.0%} of evaluations; DPO-on-the-dataset − "
          f"π_ref mass on the uncovered responses, CI over seeds: {_GENERIC}; and PPO-with-KL diagonal mass CI above "
          f"max({DIAGONAL_RECOVERED:g}, π_ref's + {DIAGONAL_GAIN:g}) (below it: not reproduced). Reproduced needs both; "
          f"either part not reproduced: not reproduced"),
]
CLAIMS_BY_NUMBER = {claim.number: claim for claim in CLAIMS}


def decide(claim: Claim, df: pd.DataFrame) -> Decision:
    """The claim's decision on `df` (a suite's frame); an error in a rule is reported as inconclusive."""
    if claim.decide is None:
        return Decision("—", math.nan, math.nan, math.nan, NOT_COVERED, "no suite tests this claim")
    try:
        return claim.decide(df)
    except Exception as error:  # noqa: BLE001 — a broken rule must not hide the other verdicts
        warnings.warn(f"claim {claim.number}: {error!r}", stacklevel=2)
        return _nan_decision("—", f"error while deciding: {error!r}")


def evaluate(df: pd.DataFrame, suite: str | None = None) -> pd.DataFrame:
    """One row per claim (of `suite`, or of every suite present in df plus the uncovered ones): number, claim,
    suite, statistic, value, ci_low, ci_high, verdict, explanation."""
    suites = [suite] if suite is not None else sorted({s for s in df.get("suite", pd.Series()).dropna().unique()})
    rows = []
    for claim in CLAIMS:
        if claim.suite is None and suite is None:
            decision = decide(claim, df)
        elif claim.suite in suites:
            data = df[df["suite"] == claim.suite] if "suite" in df else df
            decision = decide(claim, data)
        else:
            continue
        rows.append({"number": claim.number, "claim": claim.text, "suite": claim.suite, **decision.__dict__})
    return pd.DataFrame(rows, columns=["number", "claim", "suite", "statistic", "value", "ci_low", "ci_high",
                                       "verdict", "explanation"])


# ------------------------------------------------------------------------------------------------ report
def markdown_table(table: pd.DataFrame, float_format: str = ".3f") -> str:
    """A GitHub-markdown table (index included when it is named or not a plain range); NaN shows as –."""
    if table is None or table.empty:
        return "_(empty)_"
    show_index = table.index.name is not None or not isinstance(table.index, pd.RangeIndex)
    frame = table.reset_index() if show_index else table

    def cell(value) -> str:
        if isinstance(value, (float, np.floating)):
            return "–" if not np.isfinite(value) and not np.isinf(value) else (
                "∞" if np.isinf(value) else format(value, float_format))
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = [str(c if c is not None else "") for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def report(df: pd.DataFrame, suite: str, figures: Sequence[str] | None = None,
           tables: dict[str, pd.DataFrame] | None = None, environment: Sequence[str] = ()) -> str:
    """REPORT.md of a suite: the verdict table, the decision rules, missing or unfinished runs, the environment the
    runs were made under (`environment`: lines of analysis.load's environment_notes or environment_summary), tables,
    and the figures (relative links ../figures/<suite>/<name>.png, valid from <root>/<suite>/REPORT.md)."""
    if figures is None:
        from analysis.figures import SUITE_FIGURES, DEFAULT_FIGURES, named  # lazy: figures imports this module
        figures = [name for name, _ in named(SUITE_FIGURES.get(suite, DEFAULT_FIGURES))]
    data = df[df["suite"] == suite] if "suite" in df and not df.empty else df
    n_runs = data["run_dir"].nunique() if not data.empty else 0
    n_complete = data.groupby("run_dir")["complete"].first().sum() if n_runs else 0
    seeds = sorted(data["seed"].dropna().unique().tolist(), key=str) if n_runs else []
    lines = [f"# {suite}: scorecard", "",
             f"{n_runs} runs ({int(n_complete)} complete), seeds {', '.join(map(str, seeds)) or '–'}. "
             "Verdicts are computed by `analysis.scorecard` from these runs with the rules listed below; "
             "CIs are 95% percentile bootstraps.", ""]
    claims = [c for c in CLAIMS if c.suite == suite]
    if claims:
        lines += ["| # | claim | statistic | value [95% CI] | verdict | explanation |", "|---|---|---|---|---|---|"]
        for claim in claims:
            d = decide(claim, data)
            value = f"{_fmt(d.value)}{_interval(d.ci_low, d.ci_high)}"
            cells = [str(claim.number), claim.text, d.statistic, value, f"**{d.verdict}**", d.explanation]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines += ["", "## Decision rules", ""]
        lines += [f"{c.number}. {c.rule}." for c in claims]
    else:
        lines.append("No claim of PAPERS.md is decided by this suite.")
    uncovered = [str(c.number) for c in CLAIMS if c.suite is None]
    lines += ["", f"Claims not covered by any suite: {', '.join(uncovered) or 'none'}.", "",
              "## Missing or unfinished runs", ""]
    if suite in SUITE_ARMS:
        gaps = missing(data, {suite: SUITE_ARMS[suite]}, seeds or [0])
        if n_runs == 0:
            lines.append("No runs found for this suite.")
        elif gaps.empty:
            lines.append("None: every arm has a finished run for every seed seen in this suite.")
        else:
            lines += [f"- {arm_label(r.arm)} (`{r.arm}`), seed {r.seed}: {r.status}" for r in gaps.itertuples()]
    else:
        lines.append("Unknown suite: no list of expected arms.")
    if environment:
        lines += ["", "## Environment", ""]
        lines += [f"- {line}" for line in environment]
    for name, table in (tables or {}).items():
        lines += ["", f"## Table: {name}", "", markdown_table(table)]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{name}](../figures/{suite}/{name}.png)" for name in figures]
    return "\n".join(lines) + "\n"


def _source(df: pd.DataFrame, root, profile: str | None) -> str:
    """Which runs the verdicts come from, in words: how many (of the suites that decide a claim: the demo's runs
    decide none), of which profile, under which results root."""
    deciding = {claim.suite for claim in CLAIMS if claim.suite is not None}
    n_runs = df.loc[df["suite"].isin(deciding), "run_dir"].nunique() if not df.empty else 0
    runs = f"{n_runs} run{'s' if n_runs != 1 else ''}"
    which = (f"{runs} of the {profile} profile (and runs made outside a profile)" if profile is not None
             else f"{runs} of every profile")
    return which + (f" under `{Path(root).as_posix()}`" if root is not None else "")


def overview(df: pd.DataFrame, root=None, profile: str | None = None, environment: Sequence[str] = ()) -> str:
    """SCORECARD.md: every claim of PAPERS.md with its suite, statistic, value [95% CI] and verdict, over all the
    suites in `df` (claims of suites without runs are listed as not run). `root` and `profile` say where the runs
    were read from (as `gapstudy figures` read them); `environment`: lines on the environments they were made under."""
    table = evaluate(df)
    present = set(table["number"])
    lines = ["# Reproduction scorecard", "",
             f"Every claim of PAPERS.md, decided from the {_source(df, root, profile)} by `analysis/scorecard.py` "
             "(regenerated by `gapstudy figures`; the rules and figures are in each suite's REPORT.md).", "",
             "| # | claim | suite | statistic | value [95% CI] | verdict |", "|---|---|---|---|---|---|"]
    for claim in CLAIMS:
        if claim.number not in present:
            lines.append(f"| {claim.number} | {claim.text} | {claim.suite} | – | – | not run |")
            continue
        row = table[table["number"] == claim.number].iloc[0]
        value = "–" if not math.isfinite(row["value"]) else f"{row['value']:.3g}"
        if math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"]):
            value += f" [{row['ci_low']:.3g}, {row['ci_high']:.3g}]"
        suite = row["suite"] if isinstance(row["suite"], str) else "–"
        lines.append(f"| {claim.number} | {claim.text} | {suite} | {row['statistic']} | {value} | "
                     f"**{row['verdict']}** |")
    counts = table["verdict"].value_counts()
    lines += ["", ", ".join(f"{counts.get(v, 0)} {v}" for v in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE,
                                                                NOT_COVERED)) + "."]
    if environment:
        lines += ["", "Environment:", ""] + [f"- {line}" for line in environment]
    return "\n".join(lines) + "\n"
