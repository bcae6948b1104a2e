"""The figures of Tang et al. 2024 [A]: win rate against KL with each arm's frontier (Fig. 1) and the KL-matched
comparison, gold and proxy reward against √KL with Gao et al.'s fit (over-optimisation), classification accuracy
against win rate (Fig. 7), and the shuffle window of the replayed online log (Fig. 13). win_rate_vs_kl and the
KL-matched figure and table also serve `gapstudy compare` for any runs.
"""
from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import optimize

from analysis.figures.common import (KL_LOG_LABEL, WIN_RATE_LABEL, arm_legend, arms_of, interval_error, jitter, log_x,
                                     no_data)
from analysis.kl_match import bootstrap_ci, frontier, kl_matched
from analysis.load import eval_points, final_points, per_seed_final
from analysis.style import arm_color, arm_label, arm_linestyle, metric_label, new_figure, seed_marker, styled

_GOLD_COLOR, _PROXY_COLOR = "#b8860b", "#56b4e9"


# ---------------------------------------------------------------------------------------- KL-budget plane
@styled
def win_rate_vs_kl(df: pd.DataFrame, x: str = "eval/kl", y: str = "eval/win_rate", title: str | None = None) -> Figure:
    """Tang et al. Fig. 1: every evaluation checkpoint a point (marker = seed), each arm's frontier (running
    best win rate over increasing KL) a line; KL on a log axis, so checkpoints at KL <= 0 are left out."""
    fig, axes = new_figure(width=6.4, height=4.6)
    ax = axes[0, 0]
    ax.set_xlabel(KL_LOG_LABEL)
    ax.set_ylabel(WIN_RATE_LABEL if y == "eval/win_rate" else metric_label(y))
    ax.set_title(title or "Win rate against KL from the SFT policy")
    points = eval_points(df, x)
    if y in points:
        points = points[points[y].notna() & (points[x] > 0)]
    if y not in points or points.empty:
        no_data(ax)
        return fig
    seeds = list(points["seed"].unique())
    handles = []
    for arm in arms_of(points):
        cloud = points[points["arm"] == arm]
        color = arm_color(arm)
        for seed, group in cloud.groupby("seed", dropna=False):
            ax.scatter(group[x], group[y], color=color, marker=seed_marker(seed, seeds), s=20, alpha=0.45,
                       linewidths=0)
        envelope = frontier(cloud, x=x, y=y, by=None)
        (line,) = ax.plot(envelope[x], envelope[y], drawstyle="steps-post", color=color,
                          linestyle=arm_linestyle(arm), label=arm_label(arm))
        handles.append(line)
    log_x(ax)
    if y == "eval/win_rate":
        ax.axhline(0.5, color="0.4", linewidth=1, linestyle=":")
    arm_legend(fig, ax, handles, title="arm (line = frontier)")
    if len(seeds) > 1:
        seed_handles = [Line2D([], [], color="0.35", marker=seed_marker(s, seeds), linestyle="none", label=f"seed {s}")
                        for s in sorted(seeds, key=str)]
        fig.legend(handles=seed_handles, loc="outside right lower", frameon=False, title="points")
    return fig


@styled
def kl_matched_figure(df: pd.DataFrame, budgets: Sequence[float] | None = None, x: str = "eval/kl",
                      y: str = "eval/win_rate") -> Figure:
    """Best win rate among checkpoints with KL <= K, against K: mean over seeds with a 95% bootstrap band."""
    fig, axes = new_figure(width=6.4, height=4.6)
    ax = axes[0, 0]
    ax.set_xlabel("KL budget K (nats, log scale)")
    ax.set_ylabel("best win rate with KL ≤ K" if y == "eval/win_rate" else f"best {metric_label(y)} with KL ≤ K")
    ax.set_title("KL-matched comparison")
    table = kl_matched(df, budgets, x=x, y=y)
    table = table[np.isfinite(table["mean"])] if not table.empty else table
    if table.empty:
        no_data(ax)
        return fig
    banded = False
    for arm in arms_of(table):
        rows = table[table["arm"] == arm].sort_values("budget")
        color = arm_color(arm)
        ax.plot(rows["budget"], rows["mean"], marker="o", markersize=4, color=color, linestyle=arm_linestyle(arm),
                label=arm_label(arm))
        band = rows[np.isfinite(rows["ci_low"])]
        if not band.empty:
            ax.fill_between(band["budget"], band["ci_low"], band["ci_high"], color=color, alpha=0.18, linewidth=0)
            banded = True
    if banded:
        ax.set_title("KL-matched comparison (band: 95% CI over seeds)")
    log_x(ax)
    if (table["n_seeds"] <= 1).all():
        ax.text(0.02, 0.02, "one seed per arm: no intervals", transform=ax.transAxes, fontsize=9, color="0.4")
    arm_legend(fig, ax, title="arm")
    return fig


def kl_matched_table(df: pd.DataFrame, budgets: Sequence[float] | None = None, x: str = "eval/kl",
                     y: str = "eval/win_rate") -> pd.DataFrame:
    """Rows = KL budgets, columns = arms, cells "mean [CI low, CI high] (n seeds)" of the best y under budget."""
    table = kl_matched(df, budgets, x=x, y=y)
    if table.empty:
        return pd.DataFrame()

    def cell(row) -> str:
        if not np.isfinite(row["mean"]):
            return "–"
        interval = f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" if np.isfinite(row["ci_low"]) else ""
        return f"{row['mean']:.3f}{interval} (n={row['n_seeds']})"

    table = table.assign(cell=table.apply(cell, axis=1), label=table["arm"].map(arm_label))
    wide = table.pivot(index="budget", columns="label", values="cell")
    wide = wide[[arm_label(a) for a in arms_of(table)]]
    wide.index = [f"{b:.3g}" for b in wide.index]
    wide.index.name = "KL budget (nats)"
    wide.columns.name = None
    return wide


@styled
def overoptimisation(df: pd.DataFrame, x: str = "eval/kl", max_panels: int = 4) -> Figure:
    """Gao et al. Fig. 1 / Tang Fig. 1: gold and proxy reward against d = √KL, each as its change from the
    run's first checkpoint, with the RL fit R(d) = d(α − β log d) (skipped with fewer than 4 points)."""
    points = eval_points(df, x)
    has_proxy = points["eval/proxy_reward"].notna() if "eval/proxy_reward" in points else pd.Series(False, points.index)
    has_gold = points["eval/gold_reward"].notna() if "eval/gold_reward" in points else pd.Series(False, points.index)
    if has_proxy.any():  # gold against proxy on the same runs: those whose labeller is the proxy
        points = points[points["run_dir"].isin(points.loc[has_proxy, "run_dir"])]
    arms = (arms_of(points[has_proxy.reindex(points.index)]) or arms_of(points[has_gold.reindex(points.index)]))[:max_panels]
    ncols = min(2, max(1, len(arms)))
    fig, axes = new_figure(ncols=ncols, nrows=max(1, math.ceil(len(arms) / ncols)), width=4.6, height=3.8, sharey=True)
    for ax in axes.flat[max(1, len(arms)):]:
        ax.set_visible(False)
    if not arms:
        axes[0, 0].set_xlabel("√KL (√nats)")
        axes[0, 0].set_ylabel("reward − reward at first checkpoint")
        no_data(axes[0, 0], "no data (no gold or proxy reward)")
        return fig
    handles = {}
    for ax, arm in zip(axes.flat, arms):
        cloud = points[points["arm"] == arm]
        ax.set_title(arm_label(arm))
        ax.set_xlabel("√KL (√nats)")
        for key, color, name in (("eval/gold_reward", _GOLD_COLOR, "gold"), ("eval/proxy_reward", _PROXY_COLOR, "proxy")):
            if key not in cloud or cloud[key].isna().all():
                continue
            d, change = _centred(cloud, x, key)
            handles[name] = ax.scatter(d, change, color=color, s=16, alpha=0.5, linewidths=0, label=f"{name} reward")
            fit = gao_rl_fit(d, change)
            if fit is not None:
                grid = np.linspace(0.0, d.max(), 200)
                (line,) = ax.plot(grid, gao_rl(grid, *fit), color=color,
                                  label=f"{name} fit d(α − β log d)")
                handles[f"{name} fit"] = line
                ax.text(0.03, 0.97 if name == "gold" else 0.88, f"{name}: α={fit[0]:.3g}, β={fit[1]:.3g}",
                        transform=ax.transAxes, fontsize=8, va="top", color=color)
            else:
                ax.text(0.03, 0.97 if name == "gold" else 0.88, f"{name}: too few points to fit",
                        transform=ax.transAxes, fontsize=8, va="top", color=color)
    for row in axes:
        row[0].set_ylabel("reward − reward at first checkpoint")
    arm_legend(fig, axes[0, 0], list(handles.values()))
    return fig


def _centred(cloud: pd.DataFrame, x: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(√KL, reward − the run's reward at its smallest-KL checkpoint) for the checkpoints that logged `key`."""
    rows = cloud[cloud[key].notna() & cloud[x].notna()]
    start = rows.sort_values(x).groupby("run_dir")[key].first()
    change = rows[key] - rows["run_dir"].map(start)
    return np.sqrt(np.clip(rows[x].to_numpy(dtype=float), 0, None)), change.to_numpy(dtype=float)


def gao_rl(d, alpha, beta):
    """Gao et al. 2022, RL form of the gold score: R(d) = d(α − β log d), with R(0) = 0."""
    d = np.asarray(d, dtype=float)
    safe = np.where(d > 0, d, 1.0)
    return np.where(d > 0, d * (alpha - beta * np.log(safe)), 0.0)


def gao_rl_fit(d, reward, min_points: int = 4) -> tuple[float, float] | None:
    """(α, β) of gao_rl fitted by least squares on the points with d > 0; None when fewer than `min_points`
    or the fit does not converge."""
    d, reward = np.asarray(d, dtype=float), np.asarray(reward, dtype=float)
    keep = np.isfinite(d) & np.isfinite(reward) & (d > 0)
    if keep.sum() < min_points or np.ptp(d[keep]) == 0:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = optimize.curve_fit(gao_rl, d[keep], reward[keep], p0=(1.0, 0.0), maxfev=5000)
    except (RuntimeError, ValueError, TypeError):
        return None
    return (float(params[0]), float(params[1])) if np.all(np.isfinite(params)) else None


@styled
def classification_vs_win_rate(df: pd.DataFrame) -> Figure:
    """Tang et al. Fig. 7: each run's final classification accuracy on gold-labelled pairs against its final
    win rate (does classifying better predict winning?)."""
    fig, axes = new_figure(width=6.0, height=4.4)
    ax = axes[0, 0]
    ax.set_xlabel(metric_label("eval/classification_accuracy"))
    ax.set_ylabel(WIN_RATE_LABEL)
    ax.set_title("Classifier accuracy vs win rate (final)")
    finals = final_points(df)
    columns = ["eval/classification_accuracy", "eval/win_rate"]
    if any(c not in finals for c in columns) or finals[columns].notna().all(axis=1).sum() == 0:
        no_data(ax)
        return fig
    finals = finals[finals[columns].notna().all(axis=1)]
    for arm in arms_of(finals):
        rows = finals[finals["arm"] == arm]
        ax.scatter(rows[columns[0]], rows[columns[1]], color=arm_color(arm), s=36, alpha=0.8,
                   marker="s" if arm_linestyle(arm) == "--" else "o", label=arm_label(arm))
    arm_legend(fig, ax, title="arm (one point per run)")
    return fig


def _window(arm: str):
    match = re.fullmatch(r"window_(\d+|all)", str(arm))
    if match is None:
        return None
    return math.inf if match.group(1) == "all" else int(match.group(1))


@styled
def shuffle_degree(df: pd.DataFrame, metric: str = "eval/win_rate") -> Figure:
    """Tang et al. Fig. 13: final win rate (mean, 95% CI, seeds as dots) against the shuffle window of the
    replayed online log; online and offline arms, when present, as horizontal reference lines."""
    fig, axes = new_figure(width=6.4, height=4.4)
    ax = axes[0, 0]
    ax.set_xlabel("shuffle window of the replayed online log (batches)")
    ax.set_ylabel(WIN_RATE_LABEL if metric == "eval/win_rate" else metric_label(metric))
    ax.set_title("Shuffle degree")
    finals = per_seed_final(df, metric)
    windows = sorted({w for w in map(_window, finals["arm"]) if w is not None} | {1, 4, 32, 256, math.inf})
    names = ["none (1)" if w == 1 else "all" if w == math.inf else str(w) for w in windows]
    ax.set_xticks(range(len(windows)))
    ax.set_xticklabels(names)
    ax.set_xlim(-0.5, len(windows) - 0.5)
    drawn = False
    means = []
    for position, window in enumerate(windows):
        arm = "window_all" if window == math.inf else f"window_{window}"
        values = finals.loc[finals["arm"] == arm, "value"].to_numpy()
        if len(values) == 0:
            continue
        mean, low, high = bootstrap_ci(values)
        color = arm_color(arm)
        ax.errorbar(position, mean, yerr=interval_error(mean, low, high), color=color, marker="o", markersize=8,
                    capsize=4, linestyle="none")
        ax.scatter(position + jitter(len(values), 0.2), values, color=color, s=14, alpha=0.6, zorder=3)
        means.append((position, mean))
        drawn = True
    if len(means) > 1:
        ax.plot(*zip(*means), color="0.5", linewidth=1, zorder=1)
    handles = []
    for arm in ("online", "offline_dataset", "offline"):
        values = finals.loc[finals["arm"] == arm, "value"].to_numpy()
        if len(values) == 0:
            continue
        mean, low, high = bootstrap_ci(values)
        color = arm_color(arm)
        handles.append(ax.axhline(mean, color=color, linestyle=arm_linestyle(arm), linewidth=1.5,
                                  label=f"{arm_label(arm)} (reference)"))
        if np.isfinite(low):
            ax.axhspan(low, high, color=color, alpha=0.12, linewidth=0)
        drawn = True
    if not drawn:
        no_data(ax)
    if handles:
        ax.legend(handles=handles, loc="best")
    return fig


