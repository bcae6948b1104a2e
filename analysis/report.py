"""The written outputs of the analysis: each suite's REPORT.md (verdicts with their pre-registration, rules, post-hoc
changes, missing runs, environment, tables, figures), the SCORECARD.md overview of every claim and check, and tables
as CSV and GitHub markdown.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import prereg
from analysis.claims import CHECK, CLAIM, CLAIMS, evaluate, kind, rule_key, rule_text
from analysis.claims.rules import INCONCLUSIVE, NOT_COVERED, NOT_REPRODUCED, REPRODUCED, fmt, interval_text
from analysis.load import CODE_VERSION, environment_notes, environment_summary, missing, run_provenance
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


# ------------------------------------------------------------------------------------------------ verdicts
def verdict_table(df: pd.DataFrame, suite: str | None = None, history: prereg.History | None = None) -> pd.DataFrame:
    """evaluate(df, suite, loo=True) plus the pre-registration of each row: rule_commit (prereg.rule_commit),
    run_commits (the code_version of each run of the claim's suite, in words) and changed (prereg.changed_after_runs:
    True, False or None for unknown)."""
    table = evaluate(df, suite, loo=True)
    history = history if history is not None else prereg.load_history()
    runs = run_provenance(df["run_dir"].unique() if "run_dir" in df else [])
    written = prereg.results_commits([Path(d) / "config.yaml" for d in runs["run_dir"]])
    runs["written_by"] = [written.get(str(Path(d) / "config.yaml")) for d in runs["run_dir"]]
    suite_of = df.groupby("run_dir")["suite"].first() if not df.empty else pd.Series(dtype=object)
    runs["suite"] = runs["run_dir"].map(suite_of)
    rule_commits, run_texts, changed = [], [], []
    for row in table.itertuples():
        commit = prereg.rule_commit(row.key, history)
        own = runs[runs["suite"] == row.suite]
        rule_commits.append(commit)
        run_texts.append(commits_text(own[CODE_VERSION].tolist()))
        changed.append(prereg.changed_after_runs(commit, own[CODE_VERSION].tolist(),
                                                 written_by=own["written_by"].tolist()))
    return table.assign(rule_commit=rule_commits, run_commits=run_texts, changed=changed)


def commits_text(versions: Sequence) -> str:
    """The runs' commits in short: "`af5acb6` ×18, unknown ×3" (unknown: runs that record no code_version)."""
    counts: dict[str, int] = {}
    for version in versions:
        key = prereg.short(version) if prereg.base_commit(version) is not None else "unknown"  # NaN, None: none
        counts[key] = counts.get(key, 0) + 1
    known = sorted((k for k in counts if k != "unknown"), key=lambda k: (-counts[k], k))
    shown = [f"`{k}` ×{counts[k]}" for k in known[:3]] + ([f"{len(known) - 3} more"] if len(known) > 3 else [])
    return ", ".join(shown + ([f"unknown ×{counts['unknown']}"] if "unknown" in counts else [])) or "–"


NOT_RUN = "not run"  # a claim whose suite has no runs
CHANGED_MARK = {True: "**rule changed after its runs**", False: "rule precedes its runs", None: "unknown"}


def _cells(row, suite: bool, explanation: bool) -> list[str]:
    """One verdict row's cells, in the column order of _HEADER."""
    value = f"{fmt(row.value)}{interval_text(row.ci_low, row.ci_high)}"
    same = round(row.stability * row.subsets) if row.subsets else 0
    loo = f"{row.stability:.2f} ({same}/{row.subsets})" if row.subsets else "–"
    commit = f"`{prereg.short(row.rule_commit)}`" if row.rule_commit not in (None, prereg.UNCOMMITTED) else (
        prereg.short(row.rule_commit))
    cells = [str(row.number), row.claim] + ([row.suite if isinstance(row.suite, str) else "–"] if suite else [])
    cells += [row.statistic, row.interval or "–", str(row.n) if row.n else "–", value, loo, commit, row.run_commits,
              CHANGED_MARK[bool(row.changed) if isinstance(row.changed, (bool, np.bool_)) else None],
              row.verdict if row.verdict == NOT_RUN else f"**{row.verdict}**"]
    return cells + ([row.explanation] if explanation else [])


def _header(suite: bool, explanation: bool) -> list[str]:
    cells = ["#", "claim"] + (["suite"] if suite else [])
    cells += ["statistic", "interval", "n seeds", "value [95% CI]", "leave-one-seed-out", "rule commit", "run commits",
              "pre-registered?", "verdict"]
    cells += ["explanation"] if explanation else []
    return ["| " + " | ".join(cells) + " |", "|" + "|".join("---" for _ in cells) + "|"]


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def verdict_lines(table: pd.DataFrame, suite: bool = False, explanation: bool = False) -> list[str]:
    """The claims table, then the sanity checks (kind check) in a table of their own."""
    lines = []
    for kind, title in ((CLAIM, None), (CHECK, "Sanity checks (true by construction; not counted)")):
        rows = table[table["kind"] == kind]
        if rows.empty:
            continue
        lines += (["", f"### {title}", ""] if title else []) + _header(suite, explanation)
        lines += [_row(_cells(row, suite, explanation)) for row in rows.itertuples()]
    return lines


def tally(table: pd.DataFrame) -> str:
    """"N reproduced, N not reproduced, N inconclusive, N not covered." over the claims only (checks not counted)."""
    counts = table.loc[table["kind"] == CLAIM, "verdict"].value_counts()
    return ", ".join(f"{counts.get(v, 0)} {v}" for v in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_COVERED)) + "."


def posthoc_lines(keys: Iterable | None = None, history: prereg.History | None = None) -> list[str]:
    """The post-hoc rule changes rules.yaml lists (all, or those concerning `keys`), one line each with its reason."""
    entries = [e for e in prereg.posthoc(history) if keys is None or prereg.concerns(e, keys)]
    if not entries:
        return ["None listed in analysis/claims/rules.yaml."]
    return [f"- claims {', '.join(map(str, e['claims']))} (`{prereg.short(e['commit'])}`): {e['what']}. "
            f"Why: {e['why']}." for e in entries]


PREREG_NOTE = ("rule commit: the commit at which the claim's block of analysis/claims/rules.yaml last changed; run "
               "commits: the code_version each run of its suite records (unknown: none recorded); **rule changed "
               "after its runs** where the rule commit is not an ancestor of every run's commit (a run recording "
               "none is judged by the commit that wrote its results). leave-one-seed-out: the fraction of subsets "
               "without one seed whose verdict (before the minimum-seed gate) equals all seeds' one.")


def report(df: pd.DataFrame, suite: str, figures: Sequence[str] = (),
           tables: dict[str, pd.DataFrame] | None = None, environment: Sequence[str] = (),
           verdicts: pd.DataFrame | None = None, history: prereg.History | None = None) -> str:
    """REPORT.md of a suite: the verdict table (with each claim's interval method, seeds, leave-one-seed-out
    stability and pre-registration), the sanity checks apart, the decision rules, the post-hoc changes concerning
    its claims, missing or unfinished runs, the environment the runs were made under (`environment`: lines of
    environment_lines), tables, and the `figures` drawn (relative links ../figures/<suite>/<name>.png, valid from
    <root>/<suite>/REPORT.md). `verdicts`: verdict_table's rows, when the caller has them already."""
    data = df[df["suite"] == suite] if "suite" in df and not df.empty else df
    n_runs = data["run_dir"].nunique() if not data.empty else 0
    n_complete = data.groupby("run_dir")["complete"].first().sum() if n_runs else 0
    seeds = sorted(data["seed"].dropna().unique().tolist(), key=str) if n_runs else []
    lines = [f"# {suite}: scorecard", "",
             f"{n_runs} runs ({int(n_complete)} complete), seeds {', '.join(map(str, seeds)) or '–'}. "
             "Verdicts are computed by `analysis.claims` from these runs with the rules listed below; each claim's "
             "interval is the method its rule states (the interval column).", ""]
    claims = [c for c in CLAIMS if c.suite == suite]
    if claims:
        history = history if history is not None else prereg.load_history()
        table = verdicts if verdicts is not None else verdict_table(data, suite, history)
        table = table[table["suite"] == suite]
        lines += verdict_lines(table, explanation=True)
        lines += ["", PREREG_NOTE, "", "## Decision rules", ""]
        lines += [f"- {c.number} ({kind(c)}). {rule_text(c).rstrip('.')}." for c in claims]
        lines += ["", "## Post-hoc changes to these rules", ""]
        lines += posthoc_lines([rule_key(c) for c in claims] + [c.number for c in claims], history)
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


def overview(df: pd.DataFrame, root=None, profile: str | None = None, environment: Sequence[str] = (),
             verdicts: pd.DataFrame | None = None, history: prereg.History | None = None) -> str:
    """SCORECARD.md: every claim of PAPERS.md with its suite, statistic, interval method, seeds, value [95% CI],
    leave-one-seed-out stability, rule commit vs run commits and verdict, over all the suites in `df` (claims of
    suites without runs are listed as not run); the sanity checks in a table apart; the tally (claims only); every
    post-hoc rule change. `root` and `profile` say where the runs were read from (as `gapstudy figures` read them);
    `environment`: lines on the environments they were made under; `verdicts`: verdict_table(df), if computed."""
    history = history if history is not None else prereg.load_history()
    table = verdicts if verdicts is not None else verdict_table(df, history=history)
    present = set(table["number"])
    absent = [{"number": c.number, "key": rule_key(c), "kind": kind(c), "claim": c.text, "suite": c.suite,
               "statistic": "–", "value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "verdict": NOT_RUN,
               "interval": "", "n": 0, "stability": math.nan, "subsets": 0, "run_commits": "–",
               "rule_commit": prereg.rule_commit(rule_key(c), history), "changed": None}
              for c in CLAIMS if c.number not in present]
    rows = pd.concat([table, pd.DataFrame(absent)], ignore_index=True) if absent else table
    order = {c.number: i for i, c in enumerate(CLAIMS)}
    rows = rows.sort_values("number", key=lambda numbers: numbers.map(order), kind="stable")
    lines = ["# Reproduction scorecard", "",
             f"Every claim of PAPERS.md, decided from the {_source(df, root, profile)} by `analysis/claims/` "
             "(regenerated by `gapstudy figures`; the rules and figures are in each suite's REPORT.md).", ""]
    lines += verdict_lines(rows, suite=True)
    lines += ["", tally(table), "", PREREG_NOTE, "", "## Post-hoc changes to the rules", ""]
    lines += posthoc_lines(None, history)
    if environment:
        lines += ["", "Environment:", ""] + [f"- {line}" for line in environment]
    return "\n".join(lines) + "\n"
