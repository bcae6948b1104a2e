"""The claims of Tajwar et al. 2024 [C] (claims 13–14 of PAPERS.md) on the token bandit: on-policy sampling matters
where the optimum is unlikely under π_ref (R1) and not where it is π_ref's mode (R2), for several losses (bandit)
and under sample reuse at a fixed sample budget (sample_reuse).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.claims.rules import (EQUIVALENCE_WIN_RATE, FAR_RATIO, GENERIC_RULE, INCONCLUSIVE, NOT_REPRODUCED,
                                   R2_SMALL_FRACTION, REPRODUCED, Claim, Decision, arms_with_data, directional, fmt,
                                   interval_text, missing_text, nan_decision, seed_finals)
from analysis.kl_match import bootstrap_ci


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
            a, b = seed_finals(df, on, "eval/gold_reward"), seed_finals(df, off, "eval/gold_reward")
            if len(a) and len(b):
                samples.setdefault(reward, {})[algo] = (a, b)
    if "R1" not in samples:
        expected = [f"{a}_{r}_R1" for a in algos for r in ("onpolicy", "offline")]
        return nan_decision(statistic, missing_text(arms_with_data(df, expected)[1]))

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
    r1_verdict, _ = directional(low, high)
    if r1_verdict == NOT_REPRODUCED or (np.isfinite(inter_high) and inter_high < 0):
        verdict, reason = NOT_REPRODUCED, "no on-policy advantage on R1, or a larger one on R2"
    elif r1_verdict == REPRODUCED and np.isfinite(r2) and abs(r2) <= R2_SMALL_FRACTION * value and inter_low > 0:
        verdict, reason = REPRODUCED, f"R1 gap > 0 (CI), |R2 gap| <= {R2_SMALL_FRACTION:g} × R1 gap, R1 − R2 > 0 (CI)"
    else:
        verdict, reason = INCONCLUSIVE, "R1 gap, R2 gap or their difference not established"
    return Decision(statistic, value, low, high, verdict,
                    f"algorithms R1: {', '.join(samples['R1'])}; R2 gap {fmt(r2)}{interval_text(r2_low, r2_high)}; "
                    f"R1 − R2 {fmt(inter)}{interval_text(inter_low, inter_high)}; {reason}")


def decide_sample_reuse(df: pd.DataFrame) -> Decision:
    """Claim 14: drop of final gold reward from T=1 to the largest T, R1 minus R2 (> 0 by CI, and the R1
    drop at least twice the R2 drop)."""
    statistic = "R1 drop − R2 drop of final gold reward from T=1 to the largest T"
    reuse = {}
    for reward in ("R1", "R2"):
        for t in (1, 2, 4, 8):
            values = seed_finals(df, f"T{t}_{reward}", "eval/gold_reward")
            if len(values):
                reuse.setdefault(reward, {})[t] = values
    shared = sorted(set(reuse.get("R1", {})) & set(reuse.get("R2", {})))
    if 1 not in shared or len(shared) < 2:
        expected = [f"T{t}_{r}" for r in ("R1", "R2") for t in (1, 2, 4, 8)]
        return nan_decision(statistic, "need T=1 and a larger T for both rewards; "
                             + missing_text(arms_with_data(df, expected)[1]))
    top = shared[-1]
    samples = [reuse["R1"][1], reuse["R1"][top], reuse["R2"][1], reuse["R2"][top]]
    value, low, high = bootstrap_ci(samples, lambda a, b, c, d: (np.mean(a) - np.mean(b)) - (np.mean(c) - np.mean(d)))
    drop_r1 = np.mean(samples[0]) - np.mean(samples[1])
    drop_r2 = np.mean(samples[2]) - np.mean(samples[3])
    verdict, reason = directional(low, high)
    if verdict == REPRODUCED and not drop_r1 >= FAR_RATIO * max(drop_r2, 0.0):
        verdict, reason = INCONCLUSIVE, f"R1 drop not {FAR_RATIO:g}× the R2 drop"
    return Decision(statistic, value, low, high, verdict,
                    f"T=1→{top}: R1 drop {drop_r1:.3f}, R2 drop {drop_r2:.3f}; {reason}")




CLAIMS: list[Claim] = [
    Claim(13, "Bandit R1: on-policy DPO/IPO/Best-of-N far exceed offline; on R2 offline ≈ on-policy.", "bandit",
          decide_bandit,
          f"on-policy − offline final gold reward averaged over the three algorithms, CI over seeds: reproduced if R1 "
          f"CI > 0, |R2 gap| <= {R2_SMALL_FRACTION:g} × R1 gap and (R1 − R2) CI > 0; not reproduced if R1 CI < 0 "
          f"or inside ±{EQUIVALENCE_WIN_RATE:g}, or (R1 − R2) CI < 0"),
    Claim(14, "At a fixed sample budget, more reuse hurts R1 far more than R2.", "sample_reuse",
          decide_sample_reuse,
          f"(gold(T=1) − gold(T=max)) on R1 minus the same on R2, CI over seeds: {GENERIC_RULE}; reproduced also needs "
          f"the R1 drop >= {FAR_RATIO:g} × the R2 drop"),
]
