"""The figures of Tajwar et al. 2024 [C] on the token bandit: gold reward over training (or samples) per reward, one
line per algorithm and regime, and the final gold reward against sample reuse T at a fixed sample budget.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.figures.common import (arm_legend, arms_of, band_title, interval_error, jitter, mean_band, no_data,
                                     per_seed_means, with_samples)
from analysis.kl_match import bootstrap_ci
from analysis.load import per_seed_final, resolve_metric
from analysis.style import REWARD_COLORS, arm_label, metric_label, new_figure, styled

# ------------------------------------------------------------------------------------------- bandits [C]
def _reward_of(arm: str, runs: pd.DataFrame) -> str | None:
    match = re.search(r"_(R\d)$", str(arm))
    if match:
        return match.group(1)
    if "reward" in runs and runs["reward"].notna().any():
        return str(runs["reward"].dropna().iloc[0])
    return None


@styled
def bandit_curves(df: pd.DataFrame, metric: str = "eval/gold_reward", x: str = "step") -> Figure:
    """Tajwar et al.: gold reward against training steps (or samples, x="counters/samples"), one panel per
    reward (R1: optimum unlikely under π_ref; R2: optimum at its mode), colour = algorithm, dashed = offline."""
    data = with_samples(df) if x == "counters/samples" else df
    rewards = ("R1", "R2")
    fig, axes = new_figure(ncols=2, width=4.8, height=4.0, sharey=True)
    handles, banded = {}, False
    for ax, reward in zip(axes[0], rewards):
        ax.set_title(f"reward {reward}")
        ax.set_xlabel(metric_label(x))
        drawn = False
        for arm in arms_of(data):
            runs = data[data["arm"] == arm]
            if _reward_of(arm, runs) != reward:
                continue
            key = resolve_metric(runs, metric)
            if key is None or x not in runs:
                continue
            per_seed = per_seed_means(runs[runs[key].notna() & runs[x].notna()], key, x)
            if per_seed.empty:
                continue
            label = re.sub(r"\s*\(R\d\)$", "", arm_label(arm))
            line, with_band = mean_band(ax, per_seed, x, arm, label, alpha=0.15)
            handles.setdefault(label, line)
            drawn, banded = True, banded or with_band
        if not drawn:
            no_data(ax)
    axes[0, 0].set_ylabel(metric_label(metric))
    arm_legend(fig, axes[0, 0], list(handles.values()), title=band_title(banded))
    return fig


def _reuse_of(arm: str, runs: pd.DataFrame):
    match = re.fullmatch(r"T(\d+)_(R\d)", str(arm))
    if match:
        return int(match.group(1)), match.group(2)
    if "reuse" in runs and runs["reuse"].notna().any():
        return int(runs["reuse"].dropna().iloc[0]), _reward_of(arm, runs)
    return None, None


@styled
def sample_reuse(df: pd.DataFrame, metric: str = "eval/gold_reward") -> Figure:
    """Tajwar et al.: final gold reward (mean, 95% CI, seeds as dots) against T, the gradient steps per
    collected batch at a fixed sample budget, one line per reward."""
    fig, axes = new_figure(width=5.6, height=4.2)
    ax = axes[0, 0]
    ax.set_xlabel("gradient steps per batch T (log scale)")
    ax.set_ylabel(f"final {metric_label(metric)}")
    ax.set_title("Sample reuse at a fixed sample budget")
    finals = per_seed_final(df, metric)
    points = {}
    for arm in arms_of(finals):
        reuse, reward = _reuse_of(arm, df[df["arm"] == arm])
        if reuse is not None and reward is not None:
            points.setdefault(reward, []).append((reuse, finals.loc[finals["arm"] == arm, "value"].to_numpy()))
    if not points:
        no_data(ax)
        return fig
    for reward in sorted(points):
        series = sorted(points[reward], key=lambda p: p[0])
        color = REWARD_COLORS.get(reward, "0.3")
        summary = [(t, *bootstrap_ci(v)) for t, v in series]
        ts, means = [s[0] for s in summary], [s[1] for s in summary]
        ax.plot(ts, means, color=color, marker="o", label=f"reward {reward}")
        for (t, mean, low, high), (_, values) in zip(summary, series):
            error = interval_error(mean, low, high)
            if error is not None:
                ax.errorbar(t, mean, yerr=error, color=color, capsize=4, linewidth=1.2)
            ax.scatter(t * np.exp(jitter(len(values), 0.12)), values, color=color, s=12, alpha=0.5, zorder=3)
    ax.set_xscale("log", base=2)
    ticks = sorted({t for series in points.values() for t, _ in series})
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()
    ax.legend(loc="best")
    return fig


