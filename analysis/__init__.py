"""Analysis: the last stage of the flow. Reads run directories from disk into one tidy DataFrame, draws the
papers' figures as pure functions of it, and decides each claim of PAPERS.md from the data.

Never imports torch or the training code (only the registry, experiments.SUITES, and the metric vocabulary,
gapstudy.metrics.KEYS); importing any module of this package runs nothing. Modules: load (files -> DataFrame),
kl_match (frontiers and KL-matched statistics), style (arm colours, labels, rcParams, saving), claims/ (the rules
and thresholds, one module of claims per paper), figures/ (df -> Figure and tables, one module per paper, and the
registries of what each suite draws), report (REPORT.md, SCORECARD.md, tables), regenerate (`gapstudy figures`),
compare (`gapstudy compare`), synthetic (fake run directories for tests and previews).
"""
