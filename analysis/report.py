"""The written outputs of the analysis: each suite's REPORT.md (verdicts, rules, missing runs, environment, tables,
figures), the SCORECARD.md overview of every claim, and tables as CSV and GitHub markdown.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.claims import CLAIMS, decide, evaluate
from analysis.claims.rules import INCONCLUSIVE, NOT_COVERED, NOT_REPRODUCED, REPRODUCED, fmt, interval_text
from analysis.load import environment_notes, environment_summary, missing
from analysis.style import arm_label
from experiments import SUITES


# ------------------------------------------------------------------------------------------------ report
def markdown_table(table: pd.DataFrame, float_format: str = ".3f") -> str:
    """A GitHub-markdown table (index included when it is named or not a plain range); NaN shows as –."""
    if table is None or table.empty:
        return "_(empty)_"
    show_index = table.index.name is not None or not isinstance(table.index, pd.RangeIndex)
    frame = table.reset_index() if show_index else table

    def cell(value) -> str:
        if isinstance(value, (float, np.floating)):
            return "–" if not np.isfinite(value) and not np.isinf(value) else (
                "∞" if np.isinf(value) else format(value, float_format))
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = [str(c if c is not None else "") for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def write_table(table: pd.DataFrame, out_dir: str | Path, name: str) -> list[Path]:
    """`<out_dir>/<name>.csv` and `.md`; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.csv", out_dir / f"{name}.md"]
    table.to_csv(paths[0])
    paths[1].write_text(markdown_table(table) + "\n", encoding="utf-8")
    return paths


def environment_lines(run_dirs: Iterable[str | Path]) -> list[str]:
    """What REPORT.md and SCORECARD.md say about where the runs were made: environment_notes' lines when they differ
    or lack a record, else the one environment they share (none when there is nothing to say)."""
    run_dirs = list(run_dirs)
    notes = environment_notes(run_dirs)
    summary = environment_summary(run_dirs) if not notes else None
    return notes or ([summary] if summary else [])


def report(df: pd.DataFrame, suite: str, figures: Sequence[str] = (),
           tables: dict[str, pd.DataFrame] | None = None, environment: Sequence[str] = ()) -> str:
    """REPORT.md of a suite: the verdict table, the decision rules, missing or unfinished runs, the environment the
    runs were made under (`environment`: lines of environment_lines), tables, and the `figures` drawn (relative
    links ../figures/<suite>/<name>.png, valid from <root>/<suite>/REPORT.md)."""
    data = df[df["suite"] == suite] if "suite" in df and not df.empty else df
    n_runs = data["run_dir"].nunique() if not data.empty else 0
    n_complete = data.groupby("run_dir")["complete"].first().sum() if n_runs else 0
    seeds = sorted(data["seed"].dropna().unique().tolist(), key=str) if n_runs else []
    lines = [f"# {suite}: scorecard", "",
             f"{n_runs} runs ({int(n_complete)} complete), seeds {', '.join(map(str, seeds)) or '–'}. "
             "Verdicts are computed by `analysis.claims` from these runs with the rules listed below; "
             "CIs are 95% percentile bootstraps.", ""]
    claims = [c for c in CLAIMS if c.suite == suite]
    if claims:
        lines += ["| # | claim | statistic | value [95% CI] | verdict | explanation |", "|---|---|---|---|---|---|"]
        for claim in claims:
            d = decide(claim, data)
            value = f"{fmt(d.value)}{interval_text(d.ci_low, d.ci_high)}"
            cells = [str(claim.number), claim.text, d.statistic, value, f"**{d.verdict}**", d.explanation]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines += ["", "## Decision rules", ""]
        lines += [f"{c.number}. {c.rule}." for c in claims]
    else:
        lines.append("No claim of PAPERS.md is decided by this suite.")
    uncovered = [str(c.number) for c in CLAIMS if c.suite is None]
    lines += ["", f"Claims not covered by any suite: {', '.join(uncovered) or 'none'}.", "",
              "## Missing or unfinished runs", ""]
    if suite in SUITES:
        gaps = missing(data, {suite: [arm.name for arm in SUITES[suite].arms]}, seeds or [0])
        if n_runs == 0:
            lines.append("No runs found for this suite.")
        elif gaps.empty:
            lines.append("None: every arm has a finished run for every seed seen in this suite.")
        else:
            lines += [f"- {arm_label(r.arm)} (`{r.arm}`), seed {r.seed}: {r.status}" for r in gaps.itertuples()]
    else:
        lines.append("Unknown suite: no list of expected arms.")
    if environment:
        lines += ["", "## Environment", ""]
        lines += [f"- {line}" for line in environment]
    for name, table in (tables or {}).items():
        lines += ["", f"## Table: {name}", "", markdown_table(table)]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{name}](../figures/{suite}/{name}.png)" for name in figures]
    return "\n".join(lines) + "\n"


def _source(df: pd.DataFrame, root, profile: str | None) -> str:
    """Which runs the verdicts come from, in words: how many (of the suites that decide a claim: the demo's runs
    decide none), of which profile, under which results root."""
    deciding = {claim.suite for claim in CLAIMS if claim.suite is not None}
    n_runs = df.loc[df["suite"].isin(deciding), "run_dir"].nunique() if not df.empty else 0
    runs = f"{n_runs} run{'s' if n_runs != 1 else ''}"
    which = (f"{runs} of the {profile} profile (and runs made outside a profile)" if profile is not None
             else f"{runs} of every profile")
    return which + (f" under `{Path(root).as_posix()}`" if root is not None else "")


def overview(df: pd.DataFrame, root=None, profile: str | None = None, environment: Sequence[str] = ()) -> str:
    """SCORECARD.md: every claim of PAPERS.md with its suite, statistic, value [95% CI] and verdict, over all the
    suites in `df` (claims of suites without runs are listed as not run). `root` and `profile` say where the runs
    were read from (as `gapstudy figures` read them); `environment`: lines on the environments they were made under."""
    table = evaluate(df)
    present = set(table["number"])
    lines = ["# Reproduction scorecard", "",
             f"Every claim of PAPERS.md, decided from the {_source(df, root, profile)} by `analysis/claims/` "
             "(regenerated by `gapstudy figures`; the rules and figures are in each suite's REPORT.md).", "",
             "| # | claim | suite | statistic | value [95% CI] | verdict |", "|---|---|---|---|---|---|"]
    for claim in CLAIMS:
        if claim.number not in present:
            lines.append(f"| {claim.number} | {claim.text} | {claim.suite} | – | – | not run |")
            continue
        row = table[table["number"] == claim.number].iloc[0]
        value = "–" if not math.isfinite(row["value"]) else f"{row['value']:.3g}"
        if math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"]):
            value += f" [{row['ci_low']:.3g}, {row['ci_high']:.3g}]"
        suite = row["suite"] if isinstance(row["suite"], str) else "–"
        lines.append(f"| {claim.number} | {claim.text} | {suite} | {row['statistic']} | {value} | "
                     f"**{row['verdict']}** |")
    counts = table["verdict"].value_counts()
    lines += ["", ", ".join(f"{counts.get(v, 0)} {v}" for v in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE,
                                                                NOT_COVERED)) + "."]
    if environment:
        lines += ["", "Environment:", ""] + [f"- {line}" for line in environment]
    return "\n".join(lines) + "\n"
