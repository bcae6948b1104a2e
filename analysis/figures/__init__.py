"""The papers' figures and tables as pure functions of the tidy frame of analysis.load, one module per paper (tang,
tajwar, lanchantin, xu) over the shared plotting helpers of `common`, and the registries that say which figures and
tables each suite draws (SUITE_FIGURES, SUITE_TABLES; `gapstudy figures` draws them, analysis.regenerate).

Every function takes whatever part of a suite exists: missing arms are skipped, one seed draws without
intervals, and a panel with nothing to show says "no data". Figures are pyplot-free `Figure` objects.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
from matplotlib.figure import Figure

from analysis.figures.common import bars, curves_vs_step, final_table
from analysis.figures.lanchantin import (curriculum_figure, curriculum_table, sync_curves_chat, sync_curves_math,
                                         sync_period_table)
from analysis.figures.limits import gold_vs_kl
from analysis.figures.tajwar import bandit_curves, sample_reuse
from analysis.figures.tang import (classification_vs_win_rate, kl_matched_figure, kl_matched_table, overoptimisation,
                                   shuffle_degree, win_rate_vs_kl)
from analysis.figures.xu import toy_beta, toy_masses, toy_table


def _curves(metrics: Sequence[str], x: str = "step", title: str | None = None) -> Callable[[pd.DataFrame], Figure]:
    def draw(df: pd.DataFrame) -> Figure:
        return curves_vs_step(df, metrics=metrics, x=x, title=title)
    return draw


def _bandit_vs_samples(df: pd.DataFrame) -> Figure:
    return bandit_curves(df, x="counters/samples")


SUITE_FIGURES: dict[str, list[Callable | tuple[str, Callable]]] = {
    "kl_budget": [
        win_rate_vs_kl,
        ("kl_matched", kl_matched_figure),
        overoptimisation,
        gold_vs_kl,
        classification_vs_win_rate,
        ("training_curves", _curves(("train/chosen_logratio", "eval/proxy_accuracy", "eval/kl"))),
    ],
    "data_coverage": [
        win_rate_vs_kl,
        ("final_win_rate", bars),
        ("training_curves", _curves(("train/loss", "train/margin", "eval/win_rate"))),
    ],
    "shuffle_degree": [shuffle_degree, win_rate_vs_kl],
    "suboptimal_data": [("final_win_rate", bars), win_rate_vs_kl],
    "best_of_2": [("final_win_rate", bars), win_rate_vs_kl],
    "sync_period": [("math_curves", sync_curves_math), ("chat_curves", sync_curves_chat)],
    "curriculum": [("curriculum", curriculum_figure)],
    "bandit": [("gold_reward_vs_step", bandit_curves), ("gold_reward_vs_samples", _bandit_vs_samples)],
    "sample_reuse": [sample_reuse, ("gold_reward_vs_samples", _bandit_vs_samples)],
    "toy8x8": [toy_masses, toy_beta, gold_vs_kl],
}
DEFAULT_FIGURES: list[Callable | tuple[str, Callable]] = [win_rate_vs_kl, ("final_win_rate", bars)]  # other suites

SUITE_TABLES: dict[str, list[tuple[str, Callable[[pd.DataFrame], pd.DataFrame]]]] = {
    "kl_budget": [("kl_matched", kl_matched_table)],
    "data_coverage": [("final_metrics", final_table)],
    "shuffle_degree": [("final_metrics", final_table)],
    "suboptimal_data": [("final_metrics", final_table)],
    "best_of_2": [("final_metrics", final_table)],
    "sync_period": [("sync_period", sync_period_table)],
    "curriculum": [("curriculum", curriculum_table)],
    "bandit": [("final_metrics", lambda df: final_table(df, metrics=("eval/gold_reward",)))],
    "sample_reuse": [("final_metrics", lambda df: final_table(df, metrics=("eval/gold_reward",)))],
    "toy8x8": [("end_masses", toy_table)],
}
DEFAULT_TABLES: list[tuple[str, Callable[[pd.DataFrame], pd.DataFrame]]] = [("final_metrics", final_table)]


def named(entries: Sequence[Callable | tuple[str, Callable]]) -> list[tuple[str, Callable]]:
    """SUITE_FIGURES entries as (name, function); a bare function is named by its __name__."""
    return [entry if isinstance(entry, tuple) else (entry.__name__, entry) for entry in entries]

