"""The verdicts: each claim of PAPERS.md ("Claims a reproduction tests") that a suite tests, decided from the data by
an explicit rule. No verdict is ever written by hand.

One module of claims per paper (tang, tajwar, lanchantin, xu), each claim's text, suite and decision function, its
rule a block of analysis/claims/rules.yaml (loaded by analysis.claims.rules). CLAIMS lists them in PAPERS.md's
numbering; sanity checks (rules of kind "check": true by construction) are in it too, and are told apart by `kind`.
Beside each verdict, evaluate can report its leave-one-seed-out stability.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from analysis.claims import lanchantin, tajwar, tang, xu
from analysis.claims.rules import NOT_COVERED, Claim, Decision, nan_decision

CLAIMS: list[Claim] = [*tang.CLAIMS, *tajwar.CLAIMS, *lanchantin.CLAIMS, *xu.CLAIMS]
CLAIMS_BY_NUMBER = {claim.number: claim for claim in CLAIMS}
CLAIM, CHECK = "claim", "check"
COLUMNS = ["number", "key", "kind", "claim", "suite", "statistic", "value", "ci_low", "ci_high", "verdict",
           "explanation", "interval", "n", "rule", "stability", "subsets"]


def kind(claim: Claim) -> str:
    """"claim" (counted in the tally) or "check" (true by construction, shown apart)."""
    return getattr(getattr(claim, "rule", None), "kind", CLAIM) or CLAIM


def rule_key(claim: Claim) -> str:
    """The claim's block key in rules.yaml: its number, or a check's key."""
    return str(getattr(claim, "key", claim.number))


def rule_text(claim: Claim) -> str:
    """The rule as REPORT.md prints it."""
    rule = getattr(claim, "rule", None)
    return str(getattr(rule, "text", rule) or "")


def decide(claim: Claim, df: pd.DataFrame, gated: bool = True) -> Decision:
    """The claim's decision on `df` (a suite's frame); an error in a rule is reported as inconclusive.
    `gated=False`: the rule alone, without its minimum-seed gate (decide.__wrapped__), as stability compares it."""
    if claim.decide is None:
        return Decision("—", math.nan, math.nan, math.nan, NOT_COVERED, "no suite tests this claim")
    function = claim.decide if gated else getattr(claim.decide, "__wrapped__", claim.decide)
    try:
        return function(df)
    except Exception as error:  # noqa: BLE001 — a broken rule must not hide the other verdicts
        warnings.warn(f"claim {claim.number}: {error!r}", stacklevel=2)
        return nan_decision("—", f"error while deciding: {error!r}")


def _gate_applied(claim: Claim, decision: Decision) -> bool:
    """Whether the minimum-seed gate may have changed this decision (fewer seeds than the rule's min_seeds)."""
    minimum = getattr(getattr(claim, "rule", None), "min_seeds", 0) or 0
    return getattr(claim.decide, "__wrapped__", None) is not None and getattr(decision, "n", 0) < minimum


def stability(claim: Claim, df: pd.DataFrame, decision: Decision | None = None) -> tuple[float, int]:
    """Leave-one-seed-out stability: for each seed in `df`, the claim decided without that seed's rows; returns (the
    fraction of those subsets whose verdict equals the all-seeds one, the number of subsets). Both sides are the rule
    before its minimum-seed gate (with one seed fewer the gate alone would turn every verdict inconclusive). Rows
    without a seed stay in every subset. (nan, 0) with fewer than 2 seeds or a claim no suite tests."""
    if claim.decide is None or df.empty or "seed" not in df:
        return math.nan, 0
    seeds = sorted(df["seed"].dropna().unique().tolist(), key=str)
    if len(seeds) < 2:
        return math.nan, 0
    if decision is None or _gate_applied(claim, decision):
        decision = decide(claim, df, gated=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a rule failing on a subset counts as a different verdict, quietly
        same = [decide(claim, df[df["seed"] != seed], gated=False).verdict == decision.verdict for seed in seeds]
    return float(np.mean(same)), len(seeds)


def evaluate(df: pd.DataFrame, suite: str | None = None, loo: bool = False) -> pd.DataFrame:
    """One row per claim and check (of `suite`, or of every suite present in df plus the uncovered ones): COLUMNS,
    i.e. number, key, kind, claim, suite, the decision (statistic, value, ci_low, ci_high, verdict, explanation,
    interval, n), the rule text, and with `loo` the leave-one-seed-out stability and its number of subsets (else
    NaN and 0)."""
    suites = [suite] if suite is not None else sorted({s for s in df.get("suite", pd.Series()).dropna().unique()})
    rows = []
    for claim in CLAIMS:
        if claim.suite is None and suite is None:
            data = df
        elif claim.suite in suites:
            data = df[df["suite"] == claim.suite] if "suite" in df else df
        else:
            continue
        decision = decide(claim, data)
        stable, subsets = stability(claim, data, decision) if loo else (math.nan, 0)
        rows.append({"number": claim.number, "key": rule_key(claim), "kind": kind(claim), "claim": claim.text,
                     "suite": claim.suite, "interval": "", "n": 0, **decision.__dict__, "rule": rule_text(claim),
                     "stability": stable, "subsets": subsets})
    return pd.DataFrame(rows, columns=COLUMNS)
