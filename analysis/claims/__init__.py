"""The verdicts: each claim of PAPERS.md ("Claims a reproduction tests") that a suite tests, decided from the data by
an explicit rule. No verdict is ever written by hand.

One module of claims per paper (tang, tajwar, lanchantin, xu), each claim's text, suite and rule as data beside its
decision function, over the shared rules and thresholds of analysis.claims.rules. CLAIMS lists them in PAPERS.md's
numbering.
"""
from __future__ import annotations

import math
import warnings

import pandas as pd

from analysis.claims import lanchantin, tajwar, tang, xu
from analysis.claims.rules import NOT_COVERED, Claim, Decision, nan_decision

CLAIMS: list[Claim] = [*tang.CLAIMS, *tajwar.CLAIMS, *lanchantin.CLAIMS, *xu.CLAIMS]
CLAIMS_BY_NUMBER = {claim.number: claim for claim in CLAIMS}


def decide(claim: Claim, df: pd.DataFrame) -> Decision:
    """The claim's decision on `df` (a suite's frame); an error in a rule is reported as inconclusive."""
    if claim.decide is None:
        return Decision("—", math.nan, math.nan, math.nan, NOT_COVERED, "no suite tests this claim")
    try:
        return claim.decide(df)
    except Exception as error:  # noqa: BLE001 — a broken rule must not hide the other verdicts
        warnings.warn(f"claim {claim.number}: {error!r}", stacklevel=2)
        return nan_decision("—", f"error while deciding: {error!r}")


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

