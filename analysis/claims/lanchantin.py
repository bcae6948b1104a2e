"""The claims of Lanchantin et al. 2025 [B] (claims 15–17 of PAPERS.md): semi-online DPO against online DPO, GRPO
and offline on verifiable math and non-verifiable chat, entropy and length over training (sync_period), and the
order of the two tasks (curriculum).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.claims.rules import (GENERIC_RULE, INCONCLUSIVE, MIXED_RETENTION, NOT_REPRODUCED, REPRODUCED,
                                   SPREAD_FRACTION, Claim, Decision, directional, fmt, interval_text,
                                   mean_difference, missing_text, nan_decision, seed_finals)
from analysis.kl_match import bootstrap_ci
from analysis.load import final_points, initial_points, resolve_metric
from experiments import SUITES


# ----------------------------------------------------------------------------------- sync_period: 15, 16
_TASK_METRICS = {"math": "eval/math/accuracy", "chat": "eval/chat/win_rate"}
_TASK_FALLBACK = {"math": "eval/accuracy", "chat": "eval/win_rate"}


def _task_values(df: pd.DataFrame, arm: str, task: str) -> np.ndarray:
    values = seed_finals(df, arm, _TASK_METRICS[task])
    return values if len(values) else seed_finals(df, arm, _TASK_FALLBACK[task])


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
            texts.append(f"{task}: {missing_text(absent)}")
            continue
        initial = initial_points(df[df["arm"].astype(str).str.startswith(f"{task}_")])
        initial = initial[initial["step"] == 0]
        key = resolve_metric(initial, _TASK_METRICS[task]) or resolve_metric(initial, _TASK_FALLBACK[task])
        seed_values = initial.groupby("seed")[key].mean().dropna().to_numpy() if key else np.array([])
        names = list(others)
        gap = bootstrap_ci([offline, *others.values()], lambda off, *xs: min(np.mean(x) for x in xs) - np.mean(off))
        above_seed = bootstrap_ci([offline, seed_values], mean_difference) if len(seed_values) else (math.nan,) * 3
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
        texts.append(f"{task} ({outcomes[-1]}): min gap over offline {fmt(gap[0])}{interval_text(gap[1], gap[2])}, "
                     f"offline − seed {fmt(above_seed[0])}{interval_text(above_seed[1], above_seed[2])}, spread of "
                     f"{', '.join(names)} {spread:.3f} vs mean gain {mean_gain:.3f}")
    if not outcomes:
        return nan_decision(statistic, "no math_* or chat_* runs with final scores")
    verdict = (NOT_REPRODUCED if NOT_REPRODUCED in outcomes
               else REPRODUCED if all(o == REPRODUCED for o in outcomes) else INCONCLUSIVE)
    return Decision(statistic, *worst, verdict, "; ".join(texts))


def decide_entropy_and_length(df: pd.DataFrame) -> Decision:
    """Claim 16: (a) final − initial eval entropy per non-offline arm, all < 0 (CI); (b) final length of
    math_s1_no_ref_sync − math_s1 < 0 (CI). Statistic: the largest (least negative) entropy change."""
    statistic = "largest entropy change (final − initial) among non-offline arms"
    arms = [arm.name for arm in SUITES["sync_period"].arms if not arm.name.endswith("_sinf")]
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
    length_a = seed_finals(df, "math_s1_no_ref_sync", "eval/length", task="math")
    length_b = seed_finals(df, "math_s1", "eval/length", task="math")
    length = bootstrap_ci([length_a, length_b], mean_difference) if len(length_a) and len(length_b) else (math.nan,) * 3
    if not changes:
        return nan_decision(statistic, "no eval/entropy for non-offline arms")
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
                    f"least-falling arm {worst_arm}; length no-sync − synced {fmt(length[0])}"
                    f"{interval_text(length[1], length[2])}" + (f"; {missing_text(absent)}" if absent else "")
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
        return nan_decision(statistic, missing_text([arm for arm, v in (("nv_then_v", a), ("v_then_nv", b)) if not len(v)]))
    value, low, high = bootstrap_ci([a, b], mean_difference)
    order_verdict, order_reason = directional(low, high)
    mixed = {task: [seed_finals(df, arm, metric) for arm in ("mixed", "nv", "v")]
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
                    f"mixed keeps (min over tasks) {fmt(retention[0])}{interval_text(retention[1], retention[2])}; {reason}")




CLAIMS: list[Claim] = [
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
          f"score(NV→V) − score(V→NV) CI over seeds ({GENERIC_RULE}) and mixed keeping >= {MIXED_RETENTION:.0%} of each "
          f"specialist's gain (point estimate; CI below it: not reproduced)"),
]
