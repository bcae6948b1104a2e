"""The figures and tables of Lanchantin et al. 2025 [B]: the sync period's Tables 1–2 (seed, offline, each s, online,
GRPO on math and chat) and its curves over training (Figs. 2–3), and the curriculum's Table 3 with its bars.
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from analysis.figures.common import arms_of, bars_on, curves_vs_step
from analysis.load import final_points, initial_points, per_seed_final
from analysis.style import arm_label, arm_order, new_figure, styled

# --------------------------------------------------------------------------------------- sync period [B]
_SYNC_ROWS = (("seed", None), ("offline (s=∞)", "sinf"), ("s=100", "s100"), ("s=10", "s10"), ("s=5", "s5"),
              ("online (s=1)", "s1"), ("online (s=1), no π_ref sync", "s1_no_ref_sync"), ("GRPO", "grpo"))
_SYNC_COLUMNS = (("math accuracy", "math", ("eval/math/accuracy", "eval/accuracy")),
                 ("math KL", "math", ("eval/math/kl", "eval/kl")),
                 ("chat win rate", "chat", ("eval/chat/win_rate", "eval/win_rate")),
                 ("chat gold reward", "chat", ("eval/chat/gold_reward", "eval/gold_reward")),
                 ("chat KL", "chat", ("eval/chat/kl", "eval/kl")))


def _first_key(df: pd.DataFrame, keys: Sequence[str]) -> str | None:
    return next((k for k in keys if k in df and df[k].notna().any()), None)


def sync_period_table(df: pd.DataFrame) -> pd.DataFrame:
    """Lanchantin et al. Tables 1–2: rows seed (the step-0 evaluation of the task's runs), offline (s=∞),
    each s, online (s=1), GRPO; columns math accuracy, chat win rate and gold reward, final KL; cells are
    means over seeds of the last evaluation (NaN where the arm has no run)."""
    finals = final_points(df)
    initial = initial_points(df)
    initial = initial[initial["step"] == 0]
    table = pd.DataFrame(index=[name for name, _ in _SYNC_ROWS], columns=[c for c, _, _ in _SYNC_COLUMNS], dtype=float)
    table.index.name = "regime"
    counts = {}
    for column, task, keys in _SYNC_COLUMNS:
        for name, regime in _SYNC_ROWS:
            if regime is None:
                rows = initial[initial["arm"].astype(str).str.startswith(f"{task}_")]
            else:
                rows = finals[finals["arm"] == f"{task}_{regime}"]
            key = _first_key(rows, keys)
            if key is None:
                continue
            per_seed = rows.groupby("seed", dropna=False)[key].mean().dropna()
            table.loc[name, column] = per_seed.mean()
            counts[(name, task)] = len(per_seed)
    table["math seeds"] = [counts.get((name, "math"), 0) for name, _ in _SYNC_ROWS]
    table["chat seeds"] = [counts.get((name, "chat"), 0) for name, _ in _SYNC_ROWS]
    return table


def sync_curves_math(df: pd.DataFrame) -> Figure:
    """Lanchantin et al. Figs. 2–3 for the verifiable task: accuracy, response length and entropy over training."""
    arms = [a for a in arms_of(df) if a.startswith("math_")]
    return curves_vs_step(df[df["arm"].isin(arms)], metrics=("eval/accuracy", "eval/length", "eval/entropy"),
                          title="Math (verifiable): math prompts", task="math")


def sync_curves_chat(df: pd.DataFrame) -> Figure:
    """Lanchantin et al. Figs. 2–3 for the non-verifiable task: gold reward, length and entropy over training."""
    arms = [a for a in arms_of(df) if a.startswith("chat_")]
    return curves_vs_step(df[df["arm"].isin(arms)], metrics=("eval/gold_reward", "eval/length", "eval/entropy"),
                          title="Chat (non-verifiable): chat prompts", task="chat")


# ---------------------------------------------------------------------------------------- curriculum [B]
_CURRICULUM_METRICS = (("math accuracy", "eval/math/accuracy"), ("chat win rate", "eval/chat/win_rate"))


def curriculum_table(df: pd.DataFrame) -> pd.DataFrame:
    """Lanchantin et al. Table 3: per schedule, the mean over seeds of the final math accuracy and chat win rate."""
    columns = {}
    seeds = {}
    for name, metric in _CURRICULUM_METRICS:
        finals = per_seed_final(df, metric)
        columns[name] = finals.groupby("arm")["value"].mean()
        for arm, count in finals.groupby("arm")["seed"].nunique(dropna=False).items():
            seeds[arm] = max(seeds.get(arm, 0), count)
    table = pd.DataFrame(columns)
    if table.empty:
        return pd.DataFrame(columns=[n for n, _ in _CURRICULUM_METRICS] + ["n seeds"])
    table["n seeds"] = pd.Series(seeds)
    table = table.loc[arm_order(table.index)]
    table.index = [arm_label(a) for a in table.index]
    table.index.name = "schedule"
    return table


@styled
def curriculum_figure(df: pd.DataFrame) -> Figure:
    """Final math accuracy and chat win rate per schedule, side by side."""
    n = max(1, len(arms_of(df)))
    fig, axes = new_figure(ncols=2, width=max(3.6, 1.0 + 0.8 * n), height=4.2)
    for ax, (name, metric) in zip(axes[0], _CURRICULUM_METRICS):
        bars_on(ax, df, metric)
        ax.set_title(name)
    return fig


