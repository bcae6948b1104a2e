"""The claim of Xu et al. 2024 [D] (claim 18 of PAPERS.md) on the 8×8 toy (toy8x8): DPO on a fixed dataset raises
the responses it never pairs above π_ref, while PPO with a KL penalty recovers the diagonal. The run selection by
KL strength (toy_runs, toy_betas) is shared with the toy's figures.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.claims.rules import (DIAGONAL_GAIN, DIAGONAL_RECOVERED, GENERIC_RULE, INCONCLUSIVE, NOT_REPRODUCED,
                                   REPRODUCED, TOY_BETA, TOY_TAIL, Claim, Decision, directional, interval_text,
                                   missing_text, nan_decision)
from analysis.kl_match import bootstrap_ci
from analysis.load import end_values


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
        return nan_decision(statistic, f"{missing_text(absent)} (runs at β = {TOY_BETA:g})")
    paired = pd.concat([dpo, dpo_ref], axis=1, join="inner").dropna().to_numpy()
    value, low, high = bootstrap_ci(paired[:, 0] - paired[:, 1])
    dpo_verdict, dpo_reason = directional(low, high)
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
             f"PPO+KL diagonal mass {diagonal:.3f}{interval_text(diagonal_low, diagonal_high)} vs π_ref "
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




CLAIMS: list[Claim] = [
    Claim(18, "On the 8×8 toy, DPO raises uncovered cells above π_ref; PPO with KL recovers the diagonal.", "toy8x8",
          decide_toy_coverage,
          f"at β = {TOY_BETA:g}, per run the mean over its last {TOY_TAIL:.0%} of evaluations; DPO-on-the-dataset − "
          f"π_ref mass on the uncovered responses, CI over seeds: {GENERIC_RULE}; and PPO-with-KL diagonal mass CI above "
          f"max({DIAGONAL_RECOVERED:g}, π_ref's + {DIAGONAL_GAIN:g}) (below it: not reproduced). Reproduced needs both; "
          f"either part not reproduced: not reproduced"),
]
