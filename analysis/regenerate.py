"""`gapstudy figures`: every figure and table of every suite found under a results root, each suite's REPORT.md and
the SCORECARD.md of every claim, from the committed runs (or any root of runs)."""
from __future__ import annotations

import inspect
import sys
import warnings
from pathlib import Path

from analysis import prereg
from analysis.claims import CLAIMS
from analysis.figures import DEFAULT_FIGURES, DEFAULT_TABLES, SUITE_FIGURES, SUITE_TABLES, named
from analysis.load import environment_notes, load_runs, read_limits, timings
from analysis.report import environment_lines, overview, report, verdict_table, write_table
from analysis.style import save


def regenerate(root: str | Path = "results", suite: str | None = None, profile: str | None = "full") -> list[Path]:
    """Draw every figure and table of `suite` (or of every suite found under `root`) into
    `<root>/figures/<suite>/`, PNG + PDF and CSV + markdown, and write `<root>/<suite>/REPORT.md`.

    A figure that fails is skipped with a warning, so one broken panel never hides the others.
    `profile` keeps the registry runs of one profile (full: the committed reproduction); None keeps all.
    Runs pooled from different environments (or without a recorded one) are warned about on stderr, one line each,
    and noted in REPORT.md and SCORECARD.md. Re-running on unchanged runs rewrites every file byte for byte.
    Returns the written paths.
    """
    root = Path(root)
    df = load_runs(root, suite=suite, profile=profile)
    if df.empty:
        return []
    for note in environment_notes(df["run_dir"].unique()):
        print(f"gapstudy: warning: {note}", file=sys.stderr)
    suites = [suite] if suite is not None else sorted({s for s in df["suite"].dropna().unique() if isinstance(s, str)})
    history = prereg.load_history()  # rules.yaml's git history, read once for every report
    verdicts = verdict_table(df, suite, history)  # decided once (with leave-one-seed-out) for reports and scorecard
    written: list[Path] = []
    for name in suites:
        data = df[df["suite"] == name]
        out_dir = root / "figures" / name
        drawn, tables = [], {}
        limits = read_limits(root, name, profile)  # `gapstudy limits`: drawn by the figures that take it
        for figure_name, draw in named(SUITE_FIGURES.get(name, DEFAULT_FIGURES)):
            try:
                fig = draw(data, limits=limits) if "limits" in inspect.signature(draw).parameters else draw(data)
            except Exception as error:  # noqa: BLE001 — report and keep drawing the rest
                warnings.warn(f"figure {name}/{figure_name} failed: {error!r}", stacklevel=2)
                continue
            written.extend(save(fig, out_dir, figure_name))
            drawn.append(figure_name)
        for table_name, build in SUITE_TABLES.get(name, DEFAULT_TABLES):
            try:
                table = build(data)
            except Exception as error:  # noqa: BLE001
                warnings.warn(f"table {name}/{table_name} failed: {error!r}", stacklevel=2)
                continue
            written.extend(write_table(table, out_dir, table_name))
            tables[table_name] = table
        report_path = root / name / "REPORT.md"
        report_path.parent.mkdir(parents=True, exist_ok=True)
        text = report(data, name, figures=drawn, tables=tables, environment=environment_lines(data["run_dir"].unique()),
                      verdicts=verdicts[verdicts["suite"] == name], history=history)
        report_path.write_text(text, encoding="utf-8")
        written.append(report_path)
    if suite is None:  # the whole picture: every claim, every suite
        deciding = df[df["suite"].isin({claim.suite for claim in CLAIMS})]  # the demo decides nothing
        text = overview(df, root, profile, environment_lines(deciding["run_dir"].unique()), verdicts, history)
        (root / "SCORECARD.md").write_text(text, encoding="utf-8")
        written.append(root / "SCORECARD.md")
    timing = timings(root)
    if not timing.empty:
        written.extend(write_table(timing.set_index("suite"), root / "figures", "timings"))
    return written
