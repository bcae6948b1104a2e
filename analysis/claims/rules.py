"""The rules every claim is decided by: the verdicts, the thresholds (gapstudy's numbers for the papers' words, as
data), the record of a claim and of a decision, and the statistics the per-paper modules share.

Every decision computes one deciding statistic with a 95% percentile-bootstrap interval over independent
units (seeds, or runs where a claim is about runs) and compares the interval with the thresholds below.
The generic rule for a claim "A is above B": not reproduced if the CI of A − B lies inside ±the equivalence band
(a difference too small to matter, even when the CI excludes 0); else reproduced if it lies above 0, not reproduced
if it lies below 0; inconclusive otherwise, and whenever an arm is missing or a CI cannot be formed (fewer than 2
units).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.kl_match import best_under_budget, common_budgets
from analysis.load import final_points, per_seed_final, resolve_metric

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
def nan_decision(statistic: str, explanation: str, value=math.nan, low=math.nan, high=math.nan) -> Decision:
    return Decision(statistic, value, low, high, INCONCLUSIVE, explanation)


def directional(low: float, high: float, band: float = EQUIVALENCE_WIN_RATE, sign: int = 1) -> tuple[str, str]:
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


def arms_with_data(df: pd.DataFrame, arms: Sequence[str]) -> tuple[list[str], list[str]]:
    present = set(final_points(df)["arm"]) if not df.empty else set()
    return [a for a in arms if a in present], [a for a in arms if a not in present]


def seed_finals(df: pd.DataFrame, arm: str, metric: str, task: str | None = None) -> np.ndarray:
    """One value per seed: the arm's final `metric`, averaged over the arm's runs of that seed."""
    finals = per_seed_final(df[df["arm"] == arm], metric, task) if not df.empty else pd.DataFrame(columns=["value"])
    return finals["value"].to_numpy(dtype=float)


def run_finals(df: pd.DataFrame, arms: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per run of `arms`: arm, seed and the final value of each metric (per-task keys resolved)."""
    finals = final_points(df[df["arm"].isin(arms)]) if not df.empty else df
    if finals.empty:
        return pd.DataFrame(columns=["arm", "seed", *metrics])
    out = finals[["arm", "seed", "run_dir"]].copy()
    for metric in metrics:
        key = resolve_metric(finals, metric)
        out[metric] = finals[key] if key is not None else np.nan
    return out


def mean_difference(a, b):
    return np.mean(a) - np.mean(b)


def fmt(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{value:.3g}"


def interval_text(low: float, high: float) -> str:
    return "" if not (np.isfinite(low) and np.isfinite(high)) else f" [{fmt(low)}, {fmt(high)}]"


def matched_per_seed(df: pd.DataFrame, arms: Sequence[str], metric: str = "eval/win_rate",
                     n_budgets: int = 8) -> tuple[dict[str, np.ndarray], dict]:
    """Per arm, one value per seed: the mean over KL budgets of the best `metric` under each budget (the area
    under the KL-matched curve). Budgets span the KL range all `arms` cover; budgets where some (arm, seed)
    has no checkpoint are dropped, so every value averages the same budgets. Falls back to the final value
    when the runs logged no KL. The second result describes the budgets and the per-budget arm means."""
    sub = df[df["arm"].isin(arms)] if not df.empty else df
    has_kl = not sub.empty and "eval/kl" in sub and (sub["eval/kl"] > 0).any()
    if not has_kl:
        return {arm: seed_finals(df, arm, metric) for arm in arms}, {"matched": False}
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


def budget_text(info: dict) -> str:
    if not info.get("matched"):
        return "final values (no eval/kl logged)"
    budgets = info.get("budgets", np.array([]))
    if len(budgets) == 0:
        return "no KL budget reached by every arm and seed"
    if len(budgets) == 1:
        return f"the arms' KL ranges do not overlap: best values at any KL (≤ {budgets[0]:.3g} nats)"
    return f"mean over {len(budgets)} KL budgets in [{budgets.min():.3g}, {budgets.max():.3g}] nats"


def spearman(a, b) -> float:
    a, b = stats.rankdata(a), stats.rankdata(b)
    if np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def fitted_slope(x, y) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0:
        return math.nan
    return float(np.polyfit(x, y, 1)[0])


def missing_text(absent: Sequence[str]) -> str:
    return "missing arms: " + ", ".join(absent)



GENERIC_RULE = ("not reproduced if CI inside ±%g or < 0; reproduced if CI > 0 (and not inside ±%g); else inconclusive"
            % (EQUIVALENCE_WIN_RATE, EQUIVALENCE_WIN_RATE))
