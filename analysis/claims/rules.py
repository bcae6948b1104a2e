"""The rules every claim is decided by: rules.yaml (one block per claim and per sanity check: statistic, arms,
thresholds, KL budgets, windows, β, interval method, minimum seeds, null or not, kind, deciding function) loaded into
frozen Rules, the records of a claim and of a decision, and the helpers the per-paper modules share.

The replication unit is the seed: a decision forms one value per seed (averaging that seed's runs or configurations
of an arm family first) and an interval over seeds from analysis.stats (t, paired where arms share seeds). A claim
with fewer seeds than its rule's min_seeds is inconclusive, whatever its interval says (the explanation says what the
rule alone would give). The generic rules (directional, equivalent) are described at the top of rules.yaml.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
import yaml

from analysis.kl_match import best_under_budget, common_budgets
from analysis.load import eval_points, final_points, per_seed_final, resolve_metric

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_COVERED = "reproduced", "not reproduced", "inconclusive", "not covered"
CLAIM, CHECK = "claim", "check"
RULES_PATH = Path(__file__).with_name("rules.yaml")


# ------------------------------------------------------------------------------------------------ rules as data
def _frozen(value):
    if isinstance(value, Mapping):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _thawed(value):
    if isinstance(value, Mapping):
        return {str(k): _thawed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thawed(v) for v in value]
    return value


class _Shown(dict):
    """A block as rule texts format it: lists read "a, b", a list of pairs "a vs b, c vs d"; numbers stay numbers."""

    def __init__(self, block: Mapping):
        super().__init__({k: self._show(v) for k, v in block.items()})

    @classmethod
    def _show(cls, value):
        if isinstance(value, Mapping):
            return cls(value)
        if isinstance(value, (list, tuple)):
            return ", ".join(" vs ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for v in value)
        return value


@dataclass(frozen=True)
class Rule:
    key: str  # the block's key in rules.yaml: the claim number ("12") or the check's key ("check_window_1")
    kind: str  # claim (counted) | check (true by construction, shown apart)
    statistic: str  # what is computed, in words
    arms: Mapping  # the arms compared (their roles)
    thresholds: Mapping  # name -> number: gapstudy's numbers for the papers' words
    interval: str  # interval method: "paired t" | "t one-sample" | "none"
    min_seeds: int  # fewer seeds with a value: inconclusive
    null: bool  # rules.yaml's null_claim: a "≈" / "does not predict" claim, decided by an equivalence band
    decide: str  # name of the deciding function
    text: str  # the rule as REPORT.md prints it (the block's {fields} filled in)
    block: Mapping  # the whole block, as loaded (fingerprint() hashes it)
    kl_budgets: Mapping | None = None  # count, spacing, span of the KL budgets (KL-matched claims)
    window: object = None  # shuffle windows (claim 5) or the averaged tail of a run (claim 18)
    beta: float | None = None  # the β a claim is decided at (claim 18)
    metric: object = None  # the column(s) read
    select: str | None = None  # KL-matched: the column the best checkpoint is selected on ...
    report: str | None = None  # ... and the column reported at it (the other half of the held-out prompts)
    fallback: str | None = None  # ... or, for runs without the two halves, this column for both (stated)
    unit: str = ""  # how one seed's value is formed
    claim: int | None = None  # a check: the PAPERS.md claim it belongs to

    def fingerprint(self) -> str:
        """sha256 of the block's canonical JSON: equal fingerprints, equal rules."""
        canonical = json.dumps(_thawed(self.block), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def __str__(self) -> str:
        return self.text

    @property
    def counted(self) -> bool:
        return self.kind == CLAIM


def _rule(key, block: Mapping) -> Rule:
    missing = {"kind", "statistic", "arms", "thresholds", "interval", "min_seeds", "null_claim", "decide", "text"} - set(block)
    if missing:
        raise ValueError(f"rules.yaml block {key}: missing {sorted(missing)}")
    if block["kind"] not in (CLAIM, CHECK):
        raise ValueError(f"rules.yaml block {key}: kind {block['kind']!r} is neither {CLAIM} nor {CHECK}")
    text = " ".join(str(block["text"]).split()).format_map(_Shown(block))
    optional = {name: _frozen(block.get(name)) for name in
                ("kl_budgets", "window", "beta", "metric", "select", "report", "fallback", "claim")}
    return Rule(key=str(key), kind=block["kind"], statistic=block["statistic"], arms=_frozen(block["arms"]),
                thresholds=_frozen(block["thresholds"] or {}), interval=block["interval"],
                min_seeds=int(block["min_seeds"]), null=bool(block["null_claim"]), decide=block["decide"], text=text,
                block=_frozen(block), unit=block.get("unit", ""), **optional)


def load_rules(path: str | Path = RULES_PATH) -> tuple[dict[str, Rule], tuple[Mapping, ...]]:
    """(key -> Rule for every claim and check, the posthoc entries) of rules.yaml (yaml.safe_load)."""
    document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    blocks = {**(document.get("claims") or {}), **(document.get("checks") or {})}
    rules = {str(key): _rule(key, block) for key, block in blocks.items()}
    return rules, tuple(_frozen(entry) for entry in document.get("posthoc") or ())


RULES, POSTHOC = load_rules()


def rule(key) -> Rule:
    return RULES[str(key)]


# the toy's figures draw the β and tail claim 18 is decided at
TOY_BETA = float(rule(18).beta)
TOY_TAIL = float(rule(18).window["tail"])


@dataclass(frozen=True)
class Decision:
    statistic: str  # what was computed, in words
    value: float
    ci_low: float
    ci_high: float
    verdict: str  # reproduced | not reproduced | inconclusive (| not covered for a claim no suite tests)
    explanation: str
    interval: str = ""  # the interval method used ("paired t (over seeds)", ...; "" when none)
    n: int = 0  # seeds the decision used (the fewest of its parts)


@dataclass(frozen=True)
class Claim:
    number: int | str  # PAPERS.md's number; a check outside PAPERS.md's numbering: its key
    text: str
    suite: str | None  # None: no suite tests it
    decide: Callable[[pd.DataFrame], Decision] | None  # the suite's frame -> decision (min_seeds applied;
                                                       # decide.__wrapped__ is the rule without that gate)
    rule: Rule | None  # its block of rules.yaml

    @property
    def key(self) -> str:
        return self.rule.key if self.rule is not None else str(self.number)


def make_claim(number: int | str, text: str, suite: str | None, decide: Callable[[pd.DataFrame], Decision],
               key=None) -> Claim:
    """A Claim decided by `decide` under rules.yaml's block `key` (default: the number). The block must name
    `decide`; fewer seeds than its min_seeds turn any verdict into inconclusive."""
    found = rule(number if key is None else key)
    if found.decide != decide.__name__:
        raise ValueError(f"rules.yaml block {found.key} is decided by {found.decide}, not {decide.__name__}")

    @functools.wraps(decide)
    def gated(df: pd.DataFrame) -> Decision:
        decision = decide(df)
        if decision.verdict in (REPRODUCED, NOT_REPRODUCED) and decision.n < found.min_seeds:
            return replace(decision, verdict=INCONCLUSIVE,
                           explanation=f"{decision.n} seeds, the rule needs >= {found.min_seeds} (with these seeds "
                                       f"the rule alone says {decision.verdict}); {decision.explanation}")
        return decision

    return Claim(number, text, suite, gated, found)


# ------------------------------------------------------------------------------------------------ helpers
def nan_decision(statistic: str, explanation: str, value=math.nan, low=math.nan, high=math.nan, interval: str = "",
                 n: int = 0) -> Decision:
    return Decision(statistic, value, low, high, INCONCLUSIVE, explanation, interval, n)


def directional(low: float, high: float, band: float, sign: int = 1) -> tuple[str, str]:
    """The generic rule for "the statistic is above 0" (sign=-1: "below 0"; see rules.yaml's header)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE, "no confidence interval (fewer than 2 seeds)"
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


def equivalent(low: float, high: float, band: float) -> tuple[str, str]:
    """The generic rule for a null "the statistic ≈ 0": reproduced if the CI lies inside ±band; not reproduced if it
    excludes 0 and is not inside the band; inconclusive otherwise."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE, "no confidence interval (fewer than 2 seeds)"
    if -band <= low and high <= band:
        return REPRODUCED, f"CI inside ±{band:g}"
    if low > 0 or high < 0:
        return NOT_REPRODUCED, f"CI excludes 0 and reaches beyond ±{band:g}"
    return INCONCLUSIVE, f"CI includes 0 but reaches beyond ±{band:g}"


def arms_with_data(df: pd.DataFrame, arms: Sequence[str]) -> tuple[list[str], list[str]]:
    present = set(final_points(df)["arm"]) if not df.empty else set()
    return [a for a in arms if a in present], [a for a in arms if a not in present]


def seed_finals(df: pd.DataFrame, arms: str | Sequence[str], metric: str, task: str | None = None) -> pd.Series:
    """seed -> the final `metric` of `arms` (one arm, or a family), averaged over that seed's runs of each arm and
    then over the arms: a family's seed value weighs its arms equally, however many configurations each swept."""
    arms = [arms] if isinstance(arms, str) else list(arms)
    finals = per_seed_final(df[df["arm"].isin(arms)], metric, task) if not df.empty else pd.DataFrame()
    if finals.empty:
        return pd.Series(dtype=float, name=metric)
    return finals.groupby("seed")["value"].mean().rename(metric)


def run_finals(df: pd.DataFrame, arms: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per run of `arms`: arm, seed, run_dir and the final value of each metric (per-task keys resolved)."""
    finals = final_points(df[df["arm"].isin(arms)]) if not df.empty else df
    if finals.empty:
        return pd.DataFrame(columns=["arm", "seed", "run_dir", *metrics])
    out = finals[["arm", "seed", "run_dir"]].copy()
    for metric in metrics:
        key = resolve_metric(finals, metric)
        out[metric] = finals[key] if key is not None else np.nan
    return out


def fmt(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{value:.3g}"


def interval_text(low: float, high: float) -> str:
    return "" if not (np.isfinite(low) and np.isfinite(high)) else f" [{fmt(low)}, {fmt(high)}]"


def missing_text(absent: Sequence[str]) -> str:
    return "missing arms: " + ", ".join(absent)


# ------------------------------------------------------------------------------------------------ KL matching
def _has_halves(sub: pd.DataFrame, rule_: Rule) -> bool:
    points = eval_points(sub)
    return (rule_.select in points and rule_.report in points
            and points[[rule_.select, rule_.report]].notna().all(axis=1).any()
            and all(points.loc[points["arm"] == arm, rule_.report].notna().any() for arm in points["arm"].unique()))


def matched_per_seed(df: pd.DataFrame, arms: Sequence[str], rule_: Rule) -> tuple[dict[str, pd.Series], dict]:
    """Per arm, seed -> the mean over KL budgets of the best checkpoint under each budget (the area under the
    KL-matched curve). The checkpoint is selected on rule_.select and scored on rule_.report (two disjoint halves of
    the held-out prompts); runs without those columns use rule_.fallback for both, and info["note"] says so. Budgets
    span the KL range all `arms` cover (rule_.kl_budgets["count"], log-spaced); budgets where some (arm, seed) has no
    checkpoint are dropped, so every value averages the same budgets. Falls back to final values without eval/kl."""
    sub = df[df["arm"].isin(arms)] if not df.empty else df
    halves = not sub.empty and _has_halves(sub, rule_)
    y, report = (rule_.select, rule_.report) if halves else (rule_.fallback, None)
    note = (f"checkpoints selected on {rule_.select}, scored on {rule_.report}" if halves else
            f"runs lack {rule_.select}/{rule_.report}: checkpoints selected and scored on {rule_.fallback} (winner's "
            f"curse not removed)")
    has_kl = not sub.empty and "eval/kl" in sub and (sub["eval/kl"] > 0).any()
    if not has_kl:
        return {arm: seed_finals(df, arm, rule_.fallback) for arm in arms}, {"matched": False, "note": note}
    budgets = common_budgets(sub, arms, n=int(rule_.kl_budgets["count"]))
    best = best_under_budget(sub, budgets, y=y, report=report) if report else best_under_budget(sub, budgets, y=y)
    empty = {arm: pd.Series(dtype=float) for arm in arms}
    if best.empty:
        return empty, {"matched": True, "budgets": np.array([]), "note": note}
    wide = best.set_index(["arm", "seed", "budget"])["best"].unstack("budget")
    wide = wide.loc[:, wide.notna().all(axis=0)]
    if not wide.shape[1]:
        return empty, {"matched": True, "budgets": np.array([]), "note": note}
    arm_index = wide.index.get_level_values("arm")
    values = {arm: wide[arm_index == arm].mean(axis=1).droplevel("arm") for arm in arms}
    per_budget = wide.groupby(level="arm").mean()
    return values, {"matched": True, "budgets": np.asarray(wide.columns, dtype=float), "per_budget": per_budget,
                    "note": note}


def budget_text(info: dict) -> str:
    note = f" ({info['note']})" if info.get("note") else ""
    if not info.get("matched"):
        return "final values (no eval/kl logged)" + note
    budgets = info.get("budgets", np.array([]))
    if len(budgets) == 0:
        return "no KL budget reached by every arm and seed" + note
    if len(budgets) == 1:
        return f"the arms' KL ranges do not overlap: best values at any KL (≤ {budgets[0]:.3g} nats)" + note
    return f"mean over {len(budgets)} KL budgets in [{budgets.min():.3g}, {budgets.max():.3g}] nats" + note
