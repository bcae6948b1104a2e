"""The claim of Xu et al. 2024 [D] (claim 18 of PAPERS.md) on the 8×8 toy (toy8x8): DPO on a fixed dataset raises
the responses it never pairs above π_ref, while PPO with a KL penalty recovers the diagonal. The run selection by
KL strength (toy_runs, toy_betas) is shared with the toy's figures.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.claims.rules import (INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, TOY_BETA, TOY_TAIL, Decision,
                                   directional, interval_text, make_claim, missing_text, nan_decision, rule)
from analysis.load import end_values
from analysis.stats import paired_t_interval, t_interval


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
    """Claim 18 at the rule's β: DPO's end mass on the uncovered responses − π_ref's (paired t over seeds > 0), and
    PPO with KL's end diagonal mass above max(diagonal_recovered, π_ref's + diagonal_gain) (t over seeds)."""
    r = rule(18)
    band, recovered, gain = (r.thresholds[k] for k in ("equivalence", "diagonal_recovered", "diagonal_gain"))
    statistic = f"{r.statistic}, β = {TOY_BETA:g}"
    dpo = toy_seed_values(df, r.arms["dpo"], "eval/uncovered_mass")
    dpo_ref = toy_seed_values(df, r.arms["dpo"], "eval/uncovered_mass_ref")
    ppo = toy_seed_values(df, r.arms["ppo"], "eval/diagonal_mass")
    ppo_ref = toy_seed_values(df, r.arms["ppo"], "eval/diagonal_mass_ref")
    absent = [arm for arm, values in ((r.arms["dpo"], dpo), (r.arms["ppo"], ppo)) if values.empty]
    if absent:
        return nan_decision(statistic, f"{missing_text(absent)} (runs at β = {TOY_BETA:g})")
    rise = paired_t_interval(dpo, dpo_ref)
    dpo_verdict, dpo_reason = directional(rise.low, rise.high, band)
    threshold = max(recovered, float(ppo_ref.mean()) + gain)
    diagonal = t_interval(ppo)
    if not diagonal.finite:
        ppo_verdict, ppo_reason = INCONCLUSIVE, "PPO: no CI (one seed)"
    elif diagonal.low > threshold:
        ppo_verdict, ppo_reason = REPRODUCED, f"PPO diagonal CI above {threshold:.2f}"
    elif diagonal.high < threshold:
        ppo_verdict, ppo_reason = NOT_REPRODUCED, f"PPO diagonal CI below {threshold:.2f}"
    else:
        ppo_verdict, ppo_reason = INCONCLUSIVE, f"PPO diagonal CI includes {threshold:.2f}"
    if NOT_REPRODUCED in (dpo_verdict, ppo_verdict):
        verdict = NOT_REPRODUCED
    elif dpo_verdict == ppo_verdict == REPRODUCED:
        verdict = REPRODUCED
    else:
        verdict = INCONCLUSIVE
    parts = [f"DPO uncovered mass {dpo.mean():.3f} vs π_ref {dpo_ref.mean():.3f} ({rise.n} seeds; {dpo_reason})",
             f"PPO+KL diagonal mass {diagonal.value:.3f}{interval_text(diagonal.low, diagonal.high)} vs π_ref "
             f"{ppo_ref.mean():.3f}, threshold {threshold:.2f} ({ppo_reason})"]
    online_unc = toy_seed_values(df, "dpo_online", "eval/uncovered_mass")
    online_diag = toy_seed_values(df, "dpo_online", "eval/diagonal_mass")
    if not online_unc.empty:
        parts.append(f"online DPO: uncovered {online_unc.mean():.3f}, diagonal {online_diag.mean():.3f}")
    for beta in toy_betas(df, r.arms["dpo"]):
        if np.isclose(beta, TOY_BETA):
            continue
        unc = toy_seed_values(df, r.arms["dpo"], "eval/uncovered_mass", beta)
        diag = toy_seed_values(df, r.arms["ppo"], "eval/diagonal_mass", beta)
        parts.append(f"β = {beta:g} (not decisive): DPO uncovered {unc.mean():.3f}"
                     + (f", PPO diagonal {diag.mean():.3f}" if not diag.empty else ""))
    return Decision(statistic, rise.value, rise.low, rise.high, verdict, "; ".join(parts), rise.method,
                    min(rise.n, diagonal.n))


CLAIMS = [
    make_claim(18, "On the 8×8 toy, DPO raises uncovered cells above π_ref; PPO with KL recovers the diagonal.",
               "toy8x8", decide_toy_coverage),
]
