"""The claims of Lanchantin et al. 2025 [B] (claims 15–17 of PAPERS.md): semi-online DPO against online DPO, GRPO
and offline on verifiable math and non-verifiable chat, entropy and length over training (sync_period), and the
order of the two tasks (curriculum). Values per seed, intervals over seeds; thresholds from rules.yaml.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.claims.rules import (INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Decision, directional, fmt,
                                   interval_text, make_claim, missing_text, nan_decision, rule, seed_finals)
from analysis.load import final_points, initial_points, resolve_metric
from analysis.stats import T_PAIRED, contrast, paired_t_interval, t_interval
from experiments import SUITES

_TASK_FALLBACK = {"math": "eval/accuracy", "chat": "eval/win_rate"}


# ----------------------------------------------------------------------------------- sync_period: 15, 16
def _task_values(df: pd.DataFrame, arm: str, task: str, metric: str) -> pd.Series:
    values = seed_finals(df, arm, metric)
    return values if len(values) else seed_finals(df, arm, _TASK_FALLBACK[task])


def _seed_policy(df: pd.DataFrame, task: str, metric: str) -> pd.Series:
    """seed -> the step-0 evaluation of the task's arms (the seed policy), averaged over them."""
    initial = initial_points(df[df["arm"].astype(str).str.startswith(f"{task}_")]) if not df.empty else df
    initial = initial[initial["step"] == 0] if not initial.empty else initial
    key = (resolve_metric(initial, metric) or resolve_metric(initial, _TASK_FALLBACK[task])) if not initial.empty else None
    return initial.groupby("seed")[key].mean().dropna() if key else pd.Series(dtype=float)


def decide_semi_online(df: pd.DataFrame) -> Decision:
    """Claim 15, per task (math accuracy, chat win rate): every semi-online, online and GRPO arm above offline
    (paired t CI > 0 for each), offline above the seed policy (step-0 evaluation; paired t CI > 0), and the spread of
    the online-ish arms' means no larger than spread_fraction × their mean gain over offline."""
    r = rule(15)
    statistic, spread_fraction = r.statistic, r.thresholds["spread_fraction"]
    outcomes, texts, worst, n = [], [], None, []
    for task in ("math", "chat"):
        arms, metric = r.arms[task], r.metric[task]
        names = [*arms["semi"], arms["online"], arms["grpo"]]
        values = {arm: _task_values(df, arm, task, metric) for arm in [*names, arms["offline"]]}
        if not any(len(v) for v in values.values()):
            continue
        offline = values.pop(arms["offline"])
        others = {a: v for a, v in values.items() if len(v)}
        absent = [a for a, v in values.items() if not len(v)] + ([] if len(offline) else [arms["offline"]])
        if not len(offline) or arms["online"] not in others or arms["grpo"] not in others or \
                not any(a in others for a in arms["semi"]):
            outcomes.append(INCONCLUSIVE)
            texts.append(f"{task}: {missing_text(absent)}")
            continue
        gaps = {a: paired_t_interval(v, offline) for a, v in others.items()}
        smallest = min(gaps.values(), key=lambda g: g.value)
        seed_values = _seed_policy(df, task, metric)
        above_seed = paired_t_interval(offline, seed_values)
        means = {a: float(v.mean()) for a, v in others.items()}
        spread = max(means.values()) - min(means.values())
        mean_gain = float(np.mean(list(means.values()))) - float(offline.mean())
        worst = smallest if worst is None or smallest.value < worst.value else worst
        n += [g.n for g in gaps.values()] + [above_seed.n]
        if any(g.finite and g.high < 0 for g in gaps.values()) or (above_seed.finite and above_seed.high < 0) \
                or (mean_gain > 0 and spread > spread_fraction * mean_gain):
            outcomes.append(NOT_REPRODUCED)
        elif all(g.finite and g.low > 0 for g in gaps.values()) and above_seed.finite and above_seed.low > 0 \
                and spread <= spread_fraction * mean_gain:
            outcomes.append(REPRODUCED)
        else:
            outcomes.append(INCONCLUSIVE)
        texts.append(f"{task} ({outcomes[-1]}): smallest gap over offline {fmt(smallest.value)}"
                     f"{interval_text(smallest.low, smallest.high)}, offline − seed {fmt(above_seed.value)}"
                     f"{interval_text(above_seed.low, above_seed.high)}, spread of {', '.join(others)} {spread:.3f} vs "
                     f"mean gain {mean_gain:.3f}" + (f"; {missing_text(absent)}" if absent else ""))
    if not outcomes:
        return nan_decision(statistic, "no math_* or chat_* runs with final scores")
    verdict = (NOT_REPRODUCED if NOT_REPRODUCED in outcomes
               else REPRODUCED if all(o == REPRODUCED for o in outcomes) else INCONCLUSIVE)
    value, low, high = worst if worst is not None else (math.nan,) * 3
    return Decision(statistic, value, low, high, verdict, "; ".join(texts), T_PAIRED, min(n, default=0))


def _change(df: pd.DataFrame, arm: str, metric: str) -> pd.Series:
    """seed -> final − initial evaluation of `metric` (the arm's task key first), averaged over the seed's runs."""
    runs = df[df["arm"] == arm] if not df.empty else df
    key = resolve_metric(runs, metric, task=arm.split("_")[0]) if not runs.empty else None
    if key is None:
        return pd.Series(dtype=float)
    return (final_points(runs).groupby("seed")[key].mean() - initial_points(runs).groupby("seed")[key].mean()).dropna()


def decide_entropy_and_length(df: pd.DataFrame) -> Decision:
    """Claim 16: (a) final − initial entropy of every non-offline arm < 0 (t); (b) the offline exception: per task,
    offline's change − offline_fall_fraction × the mean change of that task's other arms > 0 (t); (c) the
    no-π_ref-sync math run ends >= length_fall below the seed policy's length (final − (1 − fall) × initial < 0, t)
    and below the synced run's (paired t). Statistic: the largest (least negative) entropy change."""
    r = rule(16)
    offline_arms, fall, cut = list(r.arms["offline"]), r.thresholds["offline_fall_fraction"], r.thresholds["length_fall"]
    entropy, length = r.metric["entropy"], r.metric["length"]
    arms = [arm.name for arm in SUITES["sync_period"].arms if arm.name not in offline_arms]
    changes = {arm: _change(df, arm, entropy) for arm in arms}
    changes = {arm: c for arm, c in changes.items() if len(c)}
    if not changes:
        return nan_decision(r.statistic, "no eval/entropy for non-offline arms")
    intervals = {arm: t_interval(c) for arm, c in changes.items()}
    worst_arm = max(intervals, key=lambda a: intervals[a].value)
    worst = intervals[worst_arm]
    exceptions = {}
    for offline in offline_arms:
        task = offline.split("_")[0]
        own = _change(df, offline, entropy)
        others = [c for arm, c in changes.items() if arm.startswith(f"{task}_")]
        if len(own) and others:
            mean_other = pd.concat(others, axis=1, join="inner").mean(axis=1)
            exceptions[offline] = t_interval(contrast({"off": own, "rest": mean_other}, {"off": 1.0, "rest": -fall}))
    no_sync, synced = r.arms["no_ref_sync"], r.arms["synced"]
    final_no_sync = seed_finals(df, no_sync, length, task="math")
    initial = initial_points(df[df["arm"] == no_sync]) if not df.empty else df
    key = resolve_metric(initial, length, task="math") if not initial.empty else None
    start = initial.groupby("seed")[key].mean() if key else pd.Series(dtype=float)
    shortened = t_interval(contrast({"end": final_no_sync, "start": start}, {"end": 1.0, "start": -(1 - cut)})) \
        if len(final_no_sync) and len(start) else t_interval([])
    shorter = paired_t_interval(final_no_sync, seed_finals(df, synced, length, task="math"))
    entropy_rises = [a for a, c in intervals.items() if c.finite and c.low > 0]
    offline_falls = [a for a, c in exceptions.items() if c.finite and c.high < 0]
    longer = (shortened.finite and shortened.low > 0) or (shorter.finite and shorter.low > 0)
    absent = [a for a in arms if a not in changes] + [a for a in offline_arms if a not in exceptions]
    if entropy_rises or offline_falls or longer:
        verdict = NOT_REPRODUCED
        reason = (f"entropy rises in {', '.join(entropy_rises)}" if entropy_rises else
                  f"offline entropy falls like the others ({', '.join(offline_falls)})" if offline_falls else
                  f"{no_sync} does not end {cut:.0%} below the seed policy's length or is longer than {synced}")
    elif all(c.finite and c.high < 0 for c in intervals.values()) and exceptions and \
            all(c.finite and c.low > 0 for c in exceptions.values()) and shortened.finite and shortened.high < 0 \
            and shorter.finite and shorter.high < 0 and not absent:
        verdict, reason = REPRODUCED, ("entropy falls in every non-offline arm, not offline, and the no-π_ref-sync "
                                       f"outputs end >= {cut:.0%} shorter than the seed policy's (CIs)")
    else:
        verdict, reason = INCONCLUSIVE, "a CI includes its threshold or an arm is missing"
    offline_text = ", ".join(f"{a} {fmt(c.value)}{interval_text(c.low, c.high)}" for a, c in exceptions.items())
    n = min([c.n for c in intervals.values()] + [c.n for c in exceptions.values()] + [shortened.n, shorter.n])
    return Decision(r.statistic, worst.value, worst.low, worst.high, verdict,
                    f"least-falling arm {worst_arm}; offline change − {fall:g} × others' {offline_text or '–'}; "
                    f"{no_sync} final − {1 - cut:g} × initial length {fmt(shortened.value)}"
                    f"{interval_text(shortened.low, shortened.high)}, − {synced}'s {fmt(shorter.value)}"
                    f"{interval_text(shorter.low, shorter.high)}" + (f"; {missing_text(absent)}" if absent else "")
                    + f"; {reason}", worst.method, n)


# ------------------------------------------------------------------------------------- curriculum: claim 17
def decide_curriculum(df: pd.DataFrame) -> Decision:
    """Claim 17: (a) score of NV→V − V→NV > 0 (paired t), score = mean of final math accuracy and chat win rate per
    seed; (b) mixed keeps >= mixed_retention of each specialist's gain: per seed mixed − other specialist − retention
    × (specialist − other specialist), on math (V is the specialist) and chat (NV)."""
    r = rule(17)
    retention = r.thresholds["mixed_retention"]
    math_metric, chat_metric = r.metric

    def scores(arm):
        finals = final_points(df[df["arm"] == arm]) if not df.empty else df
        if finals.empty:
            return pd.Series(dtype=float)
        keys = [resolve_metric(finals, math_metric), resolve_metric(finals, chat_metric)]
        if None in keys:
            return pd.Series(dtype=float)
        return finals.groupby("seed")[keys].mean().dropna().mean(axis=1)

    first, second = r.arms["order"]
    a, b = scores(first), scores(second)
    if not len(a) or not len(b):
        return nan_decision(r.statistic, missing_text([arm for arm, v in ((first, a), (second, b)) if not len(v)]))
    order = paired_t_interval(a, b)
    order_verdict, order_reason = directional(order.low, order.high, r.thresholds["equivalence"])
    kept = {}
    for task, metric in (("math", math_metric), ("chat", chat_metric)):
        specialist = r.arms["specialists"][task]
        other = next(s for t, s in r.arms["specialists"].items() if t != task)
        series = {name: seed_finals(df, name, metric) for name in (r.arms["mixed"], specialist, other)}
        if all(len(s) for s in series.values()):
            kept[task] = t_interval(contrast(series, {r.arms["mixed"]: 1.0, specialist: -retention,
                                                      other: retention - 1.0}))
    if order_verdict == NOT_REPRODUCED or any(k.finite and k.high < 0 for k in kept.values()):
        verdict, reason = NOT_REPRODUCED, (f"{second} not beaten" if order_verdict == NOT_REPRODUCED
                                           else f"mixed keeps < {retention:.0%} on a task (CI)")
    elif order_verdict == REPRODUCED and len(kept) == 2 and all(k.value >= 0 for k in kept.values()):
        verdict, reason = REPRODUCED, f"{first} > {second} (CI) and mixed keeps >= {retention:.0%} on both tasks"
    else:
        verdict, reason = INCONCLUSIVE, order_reason if order_verdict != REPRODUCED else "mixed retention not established"
    kept_text = ", ".join(f"{t} {fmt(k.value)}{interval_text(k.low, k.high)}" for t, k in kept.items()) or "–"
    return Decision(r.statistic, order.value, order.low, order.high, verdict,
                    f"{order.n} paired seeds; mixed − other − {retention:g} × (specialist − other): {kept_text}; {reason}",
                    order.method, min([order.n] + [k.n for k in kept.values()]))


CLAIMS = [
    make_claim(15, "Semi-online DPO (moderate s) ≈ online DPO ≈ GRPO, all well above offline, which beats the seed.",
               "sync_period", decide_semi_online),
    make_claim(16, "Entropy falls in every non-offline regime; without π_ref sync online DPO on math drifts to short "
                   "outputs.", "sync_period", decide_entropy_and_length),
    make_claim(17, "NV→V beats V→NV; V+NV mixed is good on both.", "curriculum", decide_curriculum),
]
