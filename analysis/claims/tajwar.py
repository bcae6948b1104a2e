"""The claims of Tajwar et al. 2024 [C] (claims 13–14 of PAPERS.md) on the token bandit: on-policy sampling matters
where the optimum is unlikely under π_ref (R1) and not where it is π_ref's mode (R2), for several losses (bandit)
and under sample reuse at a fixed sample budget (sample_reuse). Values per seed, intervals over seeds; thresholds from
rules.yaml.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.claims.rules import (INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Decision, arms_with_data, directional,
                                   fmt, interval_text, make_claim, missing_text, nan_decision, rule, seed_finals)
from analysis.stats import T_PAIRED, contrast, paired_t_interval, t_interval


# ------------------------------------------------------------------------------ bandit, sample_reuse: 13, 14
def _algorithm_verdict(r1, r2, band: float, fraction: float) -> tuple[str, str, float]:
    """One algorithm of claim 13: (verdict, reason, the 'small' threshold = fraction × its R1 gap)."""
    small = fraction * abs(r1.value) if np.isfinite(r1.value) else math.nan
    r1_verdict, r1_reason = directional(r1.low, r1.high, band)
    if r1_verdict == NOT_REPRODUCED:
        return NOT_REPRODUCED, f"R1: {r1_reason}", small
    if not r2.finite:
        return INCONCLUSIVE, "no R2 CI", small
    if r2.low > small or r2.high < -small:
        return NOT_REPRODUCED, f"R2 gap CI beyond ±{small:.3g} (= {fraction:g} × R1 gap)", small
    if r1_verdict == REPRODUCED and -small <= r2.low and r2.high <= small:
        return REPRODUCED, f"R1 CI > 0, R2 CI inside ±{small:.3g}", small
    return INCONCLUSIVE, "R1 CI includes 0" if r1_verdict != REPRODUCED else f"R2 CI reaches beyond ±{small:.3g}", small


def decide_bandit(df: pd.DataFrame) -> Decision:
    """Claim 13, per algorithm (DPO, IPO, Best-of-N): on-policy − offline final gold reward, paired t over seeds, on
    R1 (> 0) and on R2 (inside ±small, small = a fraction of that algorithm's R1 gap; beyond it: not reproduced).
    Reproduced if every algorithm reproduces; not reproduced if any fails. The value shown is the R2 gap of the
    deciding algorithm (the first failing one, else the first unsure one, else the one with the largest |R2 gap|)."""
    r = rule(13)
    band, fraction = r.thresholds["equivalence"], r.thresholds["r2_small_fraction"]
    statistic = "R2 on-policy − offline final gold reward, per algorithm (shown: the deciding algorithm)"
    results, absent = {}, []
    for algo in r.arms["algorithms"]:
        names = {(reward, regime): r.arms[regime].format(algo=algo, reward=reward)
                 for reward in r.arms["rewards"] for regime in ("onpolicy", "offline")}
        missing = arms_with_data(df, list(names.values()))[1]
        if missing:
            absent += missing
            continue
        gaps = {reward: paired_t_interval(seed_finals(df, names[(reward, "onpolicy")], r.metric),
                                          seed_finals(df, names[(reward, "offline")], r.metric))
                for reward in ("R1", "R2")}
        results[algo] = (*_algorithm_verdict(gaps["R1"], gaps["R2"], band, fraction), gaps)
    if not results:
        return nan_decision(statistic, missing_text(absent))
    verdicts = [v[0] for v in results.values()]
    order = [a for a in results if results[a][0] == NOT_REPRODUCED] or \
            [a for a in results if results[a][0] == INCONCLUSIVE] or \
            sorted(results, key=lambda a: -abs(results[a][3]["R2"].value))
    decider = order[0]
    if NOT_REPRODUCED in verdicts:
        verdict = NOT_REPRODUCED
    elif all(v == REPRODUCED for v in verdicts) and not absent:
        verdict = REPRODUCED
    else:
        verdict = INCONCLUSIVE
    parts = []
    for algo, (algo_verdict, reason, small, gaps) in results.items():
        parts.append(f"{algo} ({algo_verdict}): R1 {fmt(gaps['R1'].value)}{interval_text(gaps['R1'].low, gaps['R1'].high)}"
                     f", R2 {fmt(gaps['R2'].value)}{interval_text(gaps['R2'].low, gaps['R2'].high)}; {reason}")
    if absent:
        parts.append(missing_text(absent))
    shown = results[decider][3]["R2"]
    n = min(min(g.n for g in res[3].values()) for res in results.values())
    return Decision(statistic, shown.value, shown.low, shown.high, verdict, f"decided by {decider}; " + "; ".join(parts),
                    T_PAIRED, n)


def decide_sample_reuse(df: pd.DataFrame) -> Decision:
    """Claim 14: per seed, drop of final gold reward from T=1 to the largest T on R1 minus that on R2; t over seeds
    (> 0), and the mean R1 drop at least far_ratio × the mean R2 drop."""
    r = rule(14)
    reuse = {}
    for reward in r.arms["rewards"]:
        for t in r.arms["reuse"]:
            values = seed_finals(df, r.arms["pattern"].format(t=t, reward=reward), r.metric)
            if len(values):
                reuse.setdefault(reward, {})[t] = values
    shared = sorted(set(reuse.get("R1", {})) & set(reuse.get("R2", {})))
    if 1 not in shared or len(shared) < 2:
        expected = [r.arms["pattern"].format(t=t, reward=w) for w in r.arms["rewards"] for t in r.arms["reuse"]]
        return nan_decision(r.statistic, "need T=1 and a larger T for both rewards; "
                            + missing_text(arms_with_data(df, expected)[1]))
    top = shared[-1]
    series = {"a": reuse["R1"][1], "b": reuse["R1"][top], "c": reuse["R2"][1], "d": reuse["R2"][top]}
    ci = t_interval(contrast(series, {"a": 1.0, "b": -1.0, "c": -1.0, "d": 1.0}))
    drop_r1 = float(series["a"].mean() - series["b"].mean())
    drop_r2 = float(series["c"].mean() - series["d"].mean())
    verdict, reason = directional(ci.low, ci.high, r.thresholds["equivalence"])
    far = r.thresholds["far_ratio"]
    if verdict == REPRODUCED and not drop_r1 >= far * max(drop_r2, 0.0):
        verdict, reason = INCONCLUSIVE, f"R1 drop not {far:g}× the R2 drop"
    return Decision(r.statistic, ci.value, ci.low, ci.high, verdict,
                    f"T=1→{top}: R1 drop {drop_r1:.3f}, R2 drop {drop_r2:.3f}, {ci.n} seeds; {reason}", ci.method, ci.n)


CLAIMS = [
    make_claim(13, "Bandit R1: on-policy DPO/IPO/Best-of-N far exceed offline; on R2 offline ≈ on-policy.", "bandit",
               decide_bandit),
    make_claim(14, "At a fixed sample budget, more reuse hurts R1 far more than R2.", "sample_reuse",
               decide_sample_reuse),
]
