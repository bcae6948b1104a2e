"""Analysis: the last stage of the flow. Reads run directories from disk into one tidy DataFrame, draws the
papers' figures as pure functions of it, and decides each claim of PAPERS.md from the data.

Never imports torch or the training code; importing any module of this package runs nothing.
Modules: load (files -> DataFrame), kl_match (frontiers and KL-matched statistics), style (arm colours,
labels, rcParams, saving), figures (df -> Figure, tables, `regenerate`), scorecard (claims -> verdicts, REPORT.md),
synthetic (fake run directories for tests and previews).
"""
