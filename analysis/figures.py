"""The papers' figures and tables as pure functions of the tidy frame of analysis.load, and `regenerate`,
which draws every figure of every suite found under a results root and writes each suite's REPORT.md.

Every function takes whatever part of a suite exists: missing arms are skipped, one seed draws without
intervals, and a panel with nothing to show says "no data". Figures are pyplot-free `Figure` objects.
"""
from __future__ import annotations

import math
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import optimize

from analysis import scorecard
from analysis.kl_match import bootstrap_ci, frontier, kl_matched
from analysis.load import (end_values, environment_notes, environment_summary, eval_points, final_points,
                           initial_points, load_runs, per_seed_final, resolve_metric, timings)
from analysis.style import (REWARD_COLORS, arm_color, arm_label, arm_linestyle, arm_order, metric_label,
                            new_figure, save, seed_marker, styled)

KL_LOG_LABEL = "KL(π‖π$_{\\mathrm{SFT}}$) (nats, log scale)"
WIN_RATE_LABEL = "win rate vs SFT (gold judge)"
_GOLD_COLOR, _PROXY_COLOR = "#b8860b", "#56b4e9"


# ------------------------------------------------------------------------------------------------ helpers
def _no_data(ax, message: str = "no data") -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", fontsize=14, color="0.45")


def _arms(df: pd.DataFrame) -> list[str]:
    return arm_order(df["arm"].dropna().unique()) if "arm" in df and not df.empty else []


def _interval_error(mean: float, low: float, high: float):
    if not (np.isfinite(low) and np.isfinite(high)):
        return None
    return [[max(mean - low, 0.0)], [max(high - mean, 0.0)]]


def _jitter(n: int, width: float = 0.28) -> np.ndarray:
    return np.zeros(1) if n == 1 else np.linspace(-width / 2, width / 2, n)


MIN_LOG_TICKS = 4  # a log KL axis shows at least this many labelled ticks (the papers' figures show 4-7)


def _log_subs(decades: float) -> tuple[float, ...]:
    """Mantissas of the labelled ticks of a log axis spanning `decades`: every digit under one decade (20, 30, 40,
    50), 1-2-5 up to 2.5 decades, 1-3 up to 4.5, decades beyond."""
    if decades <= 1.0:
        return tuple(float(m) for m in range(1, 10))
    if decades <= 2.5:
        return (1.0, 2.0, 5.0)
    if decades <= 4.5:
        return (1.0, 3.0)
    return (1.0,)


def _log_x(ax) -> None:
    """Log x axis labelled in plain numbers (0.2, 0.5, 1, 2, ...), with at least MIN_LOG_TICKS labels in view: the
    mantissas of _log_subs for the span shown, or evenly spaced round numbers when the span is too short for them
    (2.1 to 2.6 nats); minor ticks unlabelled, so labels never collide."""
    ax.set_xscale("log")
    low, high = ax.get_xlim()
    decades = math.log10(high / low) if low > 0 and high > low else 0.0
    locator = ticker.LogLocator(base=10, subs=_log_subs(decades))
    if low > 0 and high > low and sum(low <= t <= high for t in locator.tick_values(low, high)) < MIN_LOG_TICKS:
        locator = ticker.MaxNLocator(nbins=MIN_LOG_TICKS + 1, steps=[1, 2, 2.5, 5, 10], min_n_ticks=MIN_LOG_TICKS)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _arm_legend(fig: Figure, ax, handles=None, title: str | None = None) -> None:
    handles = handles if handles is not None else ax.get_legend_handles_labels()[0]
    if handles:
        fig.legend(handles=handles, loc="outside right upper", title=title, frameon=False)


def _seed_mean_band(df: pd.DataFrame, key: str, x: str) -> pd.DataFrame:
    """Per x value: mean over seeds (runs of a seed averaged first), and its standard error (NaN for one seed)."""
    per_seed = df.groupby(["seed", x], dropna=False)[key].mean().reset_index()
    summary = per_seed.groupby(x)[key].agg(["mean", "std", "count"])
    summary["sem"] = summary["std"] / np.sqrt(summary["count"])
    return summary.reset_index()


def _with_samples(df: pd.DataFrame) -> pd.DataFrame:
    """counters/samples carried forward within each run, so evaluation rows know how many samples preceded them."""
    if "counters/samples" not in df or df.empty:
        return df
    df = df.sort_values(["run_dir", "step"]).copy()
    samples = df.groupby("run_dir")["counters/samples"]
    logged = samples.transform(lambda s: s.notna().any())
    # evaluations before the first training step of a run that counts samples come after 0 samples
    df["counters/samples"] = samples.ffill().where(~logged, samples.ffill().fillna(0.0))
    return df


def _mean_band(ax, curve: pd.DataFrame, x: str, arm: str, label: str, alpha: float):
    """An arm's seed-mean line over `x` with a ±1 s.e. band where the s.e. is defined (>= 2 seeds); returns the line
    and whether a band was drawn."""
    color = arm_color(arm)
    (line,) = ax.plot(curve[x], curve["mean"], color=color, linestyle=arm_linestyle(arm), label=label)
    band = curve[np.isfinite(curve["sem"])]
    if not band.empty:
        ax.fill_between(band[x], band["mean"] - band["sem"], band["mean"] + band["sem"], color=color, alpha=alpha,
                        linewidth=0)
    return line, not band.empty


def _band_title(banded: bool) -> str:
    """The arm legend's title: it promises a band only where one was drawn (a band needs >= 2 seeds)."""
    return "arm (band = ±1 s.e. over seeds)" if banded else "arm (one seed: no band)"


def _smooth_train(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """Training metrics are logged every step and noisy: a per-run running mean over ~2% of the run."""
    if not key.startswith("train/"):
        return df
    df = df.sort_values(["run_dir", "step"]).copy()
    window = max(1, int(df.groupby("run_dir").size().median() // 50))
    df[key] = df.groupby("run_dir")[key].transform(lambda s: s.rolling(window, min_periods=1).mean())
    return df


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
        _no_data(ax)
        return fig
    seeds = list(points["seed"].unique())
    handles = []
    for arm in _arms(points):
        cloud = points[points["arm"] == arm]
        color = arm_color(arm)
        for seed, group in cloud.groupby("seed", dropna=False):
            ax.scatter(group[x], group[y], color=color, marker=seed_marker(seed, seeds), s=20, alpha=0.45,
                       linewidths=0)
        envelope = frontier(cloud, x=x, y=y, by=None)
        (line,) = ax.plot(envelope[x], envelope[y], drawstyle="steps-post", color=color,
                          linestyle=arm_linestyle(arm), label=arm_label(arm))
        handles.append(line)
    _log_x(ax)
    if y == "eval/win_rate":
        ax.axhline(0.5, color="0.4", linewidth=1, linestyle=":")
    _arm_legend(fig, ax, handles, title="arm (line = frontier)")
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
        _no_data(ax)
        return fig
    banded = False
    for arm in _arms(table):
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
    _log_x(ax)
    if (table["n_seeds"] <= 1).all():
        ax.text(0.02, 0.02, "one seed per arm: no intervals", transform=ax.transAxes, fontsize=9, color="0.4")
    _arm_legend(fig, ax, title="arm")
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
    wide = wide[[arm_label(a) for a in _arms(table)]]
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
    arms = (_arms(points[has_proxy.reindex(points.index)]) or _arms(points[has_gold.reindex(points.index)]))[:max_panels]
    ncols = min(2, max(1, len(arms)))
    fig, axes = new_figure(ncols=ncols, nrows=max(1, math.ceil(len(arms) / ncols)), width=4.6, height=3.8, sharey=True)
    for ax in axes.flat[max(1, len(arms)):]:
        ax.set_visible(False)
    if not arms:
        axes[0, 0].set_xlabel("√KL (√nats)")
        axes[0, 0].set_ylabel("reward − reward at first checkpoint")
        _no_data(axes[0, 0], "no data (no gold or proxy reward)")
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
    _arm_legend(fig, axes[0, 0], list(handles.values()))
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
        _no_data(ax)
        return fig
    finals = finals[finals[columns].notna().all(axis=1)]
    for arm in _arms(finals):
        rows = finals[finals["arm"] == arm]
        ax.scatter(rows[columns[0]], rows[columns[1]], color=arm_color(arm), s=36, alpha=0.8,
                   marker="s" if arm_linestyle(arm) == "--" else "o", label=arm_label(arm))
    _arm_legend(fig, ax, title="arm (one point per run)")
    return fig


# ---------------------------------------------------------------------------------------- final-value bars
def _bars_on(ax, df: pd.DataFrame, metric: str, arms: Sequence[str] | None = None) -> bool:
    finals = per_seed_final(df, metric)
    arms = [a for a in (arms or _arms(finals)) if (finals["arm"] == a).any()]
    ax.set_ylabel(WIN_RATE_LABEL if metric == "eval/win_rate" else metric_label(metric))
    if not arms:
        _no_data(ax)
        return False
    for i, arm in enumerate(arms):
        values = finals.loc[finals["arm"] == arm, "value"].to_numpy()
        mean, low, high = bootstrap_ci(values)
        color = arm_color(arm)
        ax.bar(i, mean, color=color, alpha=0.8, width=0.7, hatch="//" if arm_linestyle(arm) == "--" else None,
               edgecolor="white")
        error = _interval_error(mean, low, high)
        if error is not None:
            ax.errorbar(i, mean, yerr=error, color="black", capsize=4, linewidth=1.2)
        ax.scatter(i + _jitter(len(values)), values, color="black", s=12, zorder=3)
    ax.set_xticks(range(len(arms)))
    ax.set_xticklabels([arm_label(a) for a in arms], rotation=30 if len(arms) > 3 else 0,
                       ha="right" if len(arms) > 3 else "center")
    ax.grid(axis="x", visible=False)
    if metric.endswith("win_rate"):
        ax.axhline(0.5, color="0.3", linewidth=1, linestyle=":")
        ax.text(1.0, 0.5, " SFT", transform=ax.get_yaxis_transform(), va="center", ha="left", fontsize=8, color="0.3")
    return True


@styled
def bars(df: pd.DataFrame, metric: str = "eval/win_rate", arms: Sequence[str] | None = None,
         title: str | None = None) -> Figure:
    """Final value per arm: bar = mean over seeds, whisker = 95% bootstrap CI, dots = seeds (hatched = offline)."""
    n = len(arms) if arms else max(1, len(_arms(df)))
    fig, axes = new_figure(width=max(4.0, 1.0 + 0.9 * n), height=4.4)
    _bars_on(axes[0, 0], df, metric, arms)
    axes[0, 0].set_title(title or f"Final {metric_label(metric)}")
    return fig


def final_table(df: pd.DataFrame, metrics: Sequence[str] = ("eval/win_rate", "eval/kl", "eval/gold_reward")) -> pd.DataFrame:
    """Rows = arms, columns = the mean over seeds of each metric's final value, and the seed count."""
    table = {}
    seeds = {}
    for metric in metrics:
        finals = per_seed_final(df, metric)
        if finals.empty:
            continue
        means = finals.groupby("arm")["value"].mean()
        table[metric] = means
        for arm, count in finals.groupby("arm")["seed"].nunique(dropna=False).items():
            seeds[arm] = max(seeds.get(arm, 0), count)
    if not table:
        return pd.DataFrame()
    result = pd.DataFrame(table)
    result["n seeds"] = pd.Series(seeds)
    result = result.loc[arm_order(result.index)]
    result.index = [arm_label(a) for a in result.index]
    result.index.name = "arm"
    return result


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
        ax.errorbar(position, mean, yerr=_interval_error(mean, low, high), color=color, marker="o", markersize=8,
                    capsize=4, linestyle="none")
        ax.scatter(position + _jitter(len(values), 0.2), values, color=color, s=14, alpha=0.6, zorder=3)
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
        _no_data(ax)
    if handles:
        ax.legend(handles=handles, loc="best")
    return fig


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


@styled
def curves_vs_step(df: pd.DataFrame, metrics: Sequence[str] = ("eval/gold_reward", "eval/length", "eval/entropy"),
                   x: str = "step", arms: Sequence[str] | None = None, title: str | None = None,
                   task: str | None = None) -> Figure:
    """One panel per metric, one line per arm: mean over seeds at each step, band = ±1 standard error over
    seeds (no band with one seed). With `task`, its per-task keys (eval/math/length) are preferred; a per-task
    key also stands in for a metric the runs did not log (eval/math/accuracy for eval/accuracy)."""
    metrics = list(metrics)
    fig, axes = new_figure(ncols=len(metrics), width=4.4, height=3.8)
    data = _with_samples(df) if x == "counters/samples" else df
    arms = list(arms) if arms is not None else _arms(data)
    handles, banded = {}, False
    for ax, metric in zip(axes[0], metrics):
        ax.set_xlabel(metric_label(x))
        drawn, keys = False, set()
        for arm in arms:
            runs = data[data["arm"] == arm] if "arm" in data else data.iloc[0:0]
            key = resolve_metric(runs, metric, task)
            if key is None or x not in runs:
                continue
            keys.add(key)
            runs = _smooth_train(runs[runs[key].notna() & runs[x].notna()], key)
            curve = _seed_mean_band(runs, key, x)
            if curve.empty:
                continue
            line, with_band = _mean_band(ax, curve, x, arm, arm_label(arm), alpha=0.18)
            handles.setdefault(arm, line)
            drawn, banded = True, banded or with_band
        ax.set_ylabel(metric_label(keys.pop() if len(keys) == 1 else metric))  # the key actually drawn
        if not drawn:
            _no_data(ax)
    if title:
        fig.suptitle(title)
    _arm_legend(fig, axes[0, 0], [handles[a] for a in arms if a in handles], title=_band_title(banded))
    return fig


def sync_curves_math(df: pd.DataFrame) -> Figure:
    """Lanchantin et al. Figs. 2–3 for the verifiable task: accuracy, response length and entropy over training."""
    arms = [a for a in _arms(df) if a.startswith("math_")]
    return curves_vs_step(df[df["arm"].isin(arms)], metrics=("eval/accuracy", "eval/length", "eval/entropy"),
                          title="Math (verifiable): math prompts", task="math")


def sync_curves_chat(df: pd.DataFrame) -> Figure:
    """Lanchantin et al. Figs. 2–3 for the non-verifiable task: gold reward, length and entropy over training."""
    arms = [a for a in _arms(df) if a.startswith("chat_")]
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
    n = max(1, len(_arms(df)))
    fig, axes = new_figure(ncols=2, width=max(3.6, 1.0 + 0.8 * n), height=4.2)
    for ax, (name, metric) in zip(axes[0], _CURRICULUM_METRICS):
        _bars_on(ax, df, metric)
        ax.set_title(name)
    return fig


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
    data = _with_samples(df) if x == "counters/samples" else df
    rewards = ("R1", "R2")
    fig, axes = new_figure(ncols=2, width=4.8, height=4.0, sharey=True)
    handles, banded = {}, False
    for ax, reward in zip(axes[0], rewards):
        ax.set_title(f"reward {reward}")
        ax.set_xlabel(metric_label(x))
        drawn = False
        for arm in _arms(data):
            runs = data[data["arm"] == arm]
            if _reward_of(arm, runs) != reward:
                continue
            key = resolve_metric(runs, metric)
            if key is None or x not in runs:
                continue
            curve = _seed_mean_band(runs[runs[key].notna() & runs[x].notna()], key, x)
            if curve.empty:
                continue
            label = re.sub(r"\s*\(R\d\)$", "", arm_label(arm))
            line, with_band = _mean_band(ax, curve, x, arm, label, alpha=0.15)
            handles.setdefault(label, line)
            drawn, banded = True, banded or with_band
        if not drawn:
            _no_data(ax)
    axes[0, 0].set_ylabel(metric_label(metric))
    _arm_legend(fig, axes[0, 0], list(handles.values()), title=_band_title(banded))
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
    for arm in _arms(finals):
        reuse, reward = _reuse_of(arm, df[df["arm"] == arm])
        if reuse is not None and reward is not None:
            points.setdefault(reward, []).append((reuse, finals.loc[finals["arm"] == arm, "value"].to_numpy()))
    if not points:
        _no_data(ax)
        return fig
    for reward in sorted(points):
        series = sorted(points[reward], key=lambda p: p[0])
        color = REWARD_COLORS.get(reward, "0.3")
        summary = [(t, *bootstrap_ci(v)) for t, v in series]
        ts, means = [s[0] for s in summary], [s[1] for s in summary]
        ax.plot(ts, means, color=color, marker="o", label=f"reward {reward}")
        for (t, mean, low, high), (_, values) in zip(summary, series):
            error = _interval_error(mean, low, high)
            if error is not None:
                ax.errorbar(t, mean, yerr=error, color=color, capsize=4, linewidth=1.2)
            ax.scatter(t * np.exp(_jitter(len(values), 0.12)), values, color=color, s=12, alpha=0.5, zorder=3)
    ax.set_xscale("log", base=2)
    ticks = sorted({t for series in points.values() for t, _ in series})
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()
    ax.legend(loc="best")
    return fig


# ------------------------------------------------------------------------------------------ 8×8 toy [D]
_TOY_PANELS = (("eval/diagonal_mass", "eval/diagonal_mass_ref", "diagonal (optimal) responses"),
               ("eval/uncovered_mass", "eval/uncovered_mass_ref", "uncovered responses"))


def _reference_level(ax, df: pd.DataFrame, ref_key: str) -> Line2D | None:
    """π_ref's mass (the same in every evaluation of every run of a world) as a dashed grey line."""
    if ref_key not in df or df[ref_key].isna().all():
        return None
    return ax.axhline(float(df[ref_key].mean()), color="0.35", linestyle="--", linewidth=1.5, label="π$_{\\mathrm{ref}}$")


def _end_toy_panel(ax, df: pd.DataFrame, ref_key: str, handles: dict, drawn: bool) -> None:
    reference = _reference_level(ax, df, ref_key)
    if reference is not None:
        handles.setdefault("reference", reference)
    if not drawn:
        _no_data(ax)


def _end_toy_figure(fig: Figure, axes, handles: dict, ylabel: str, title: str, legend_title: str) -> Figure:
    axes[0, 0].set_ylabel(ylabel)
    axes[0, 0].set_ylim(-0.02, 1.02)
    fig.suptitle(title)
    _arm_legend(fig, axes[0, 0], list(handles.values()), title=legend_title)
    return fig


@styled
def toy_masses(df: pd.DataFrame, beta: float = scorecard.TOY_BETA) -> Figure:
    """Xu et al.'s 8×8 toy: π's exact mass on the diagonal and on the responses the dataset never pairs with the
    prompt, over training, one line per arm at KL strength β (band = ±1 s.e. over seeds); dashed = π_ref's mass."""
    fig, axes = new_figure(ncols=2, width=4.6, height=3.8, sharey=True)
    handles, banded = {}, False
    for ax, (key, ref_key, name) in zip(axes[0], _TOY_PANELS):
        ax.set_title(f"mass on the {name}")
        ax.set_xlabel("step")
        drawn = False
        for arm in _arms(df):
            runs = scorecard.toy_runs(df, arm, beta)
            runs = runs[runs[key].notna()] if key in runs else runs.iloc[0:0]
            curve = _seed_mean_band(runs, key, "step") if not runs.empty else pd.DataFrame()
            if curve.empty:
                continue
            line, with_band = _mean_band(ax, curve, "step", arm, arm_label(arm), alpha=0.18)
            handles.setdefault(arm, line)
            drawn, banded = True, banded or with_band
        _end_toy_panel(ax, df, ref_key, handles, drawn)
    return _end_toy_figure(fig, axes, handles, "probability mass (mean over the 8 prompts)", f"8×8 toy, β = {beta:g}",
                           _band_title(banded))


@styled
def toy_beta(df: pd.DataFrame) -> Figure:
    """End masses (mean over each run's last quarter of evaluations; mean over seeds, 95% CI, seeds as dots) on the
    diagonal and on the uncovered responses against the KL strength β shared by DPO and PPO; dashed = π_ref."""
    fig, axes = new_figure(ncols=2, width=4.4, height=3.8, sharey=True)
    handles = {}
    for ax, (key, ref_key, name) in zip(axes[0], _TOY_PANELS):
        ax.set_title(name)
        ax.set_xlabel("β (KL strength, DPO and PPO)")
        drawn = False
        for arm in _arms(df):
            betas = scorecard.toy_betas(df, arm) or [None]
            points = []
            for beta in betas:
                ends = end_values(scorecard.toy_runs(df, arm, beta), key, scorecard.TOY_TAIL)
                per_seed = ends.groupby("seed")["value"].mean().to_numpy()
                if len(per_seed) and beta is not None:
                    points.append((beta, per_seed))
            if not points:
                continue
            color = arm_color(arm)
            summary = [(beta, *bootstrap_ci(values)) for beta, values in points]
            (line,) = ax.plot([p[0] for p in summary], [p[1] for p in summary], color=color, marker="o",
                              linestyle=arm_linestyle(arm), label=arm_label(arm))
            for (beta, mean, low, high), (_, values) in zip(summary, points):
                error = _interval_error(mean, low, high)
                if error is not None:
                    ax.errorbar(beta, mean, yerr=error, color=color, capsize=4, linewidth=1.2)
                ax.scatter(beta + 0.004 * _jitter(len(values), 1.0), values, color=color, s=12, alpha=0.5, zorder=3)
            handles.setdefault(arm, line)
            drawn = True
        _end_toy_panel(ax, df, ref_key, handles, drawn)
    return _end_toy_figure(fig, axes, handles, "end probability mass (mean over the 8 prompts)",
                           "8×8 toy: end masses against β", "arm")


def toy_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows = π_ref and (arm, β); columns = end masses on the diagonal and the uncovered responses, the fraction of
    uncovered cells above π_ref, KL to π_ref (means over seeds of each run's last-quarter mean), and the seed count."""
    columns = {"diagonal mass": ("eval/diagonal_mass", "eval/diagonal_mass_ref"),
               "uncovered mass": ("eval/uncovered_mass", "eval/uncovered_mass_ref"),
               "uncovered cells raised": ("eval/uncovered_raised", None), "KL to π_ref": ("eval/kl", None)}
    rows, index = [], []
    if not df.empty and "eval/diagonal_mass_ref" in df and df["eval/diagonal_mass_ref"].notna().any():
        rows.append({name: (float(df[ref].mean()) if ref else (0.0 if key != "eval/uncovered_raised" else np.nan))
                     for name, (key, ref) in columns.items()} | {"n seeds": "–"})
        index.append("π_ref")
    for arm in _arms(df):
        for beta in scorecard.toy_betas(df, arm) or [None]:
            runs = scorecard.toy_runs(df, arm, beta)
            row, seeds = {}, 0
            for name, (key, _) in columns.items():
                per_seed = end_values(runs, key, scorecard.TOY_TAIL).groupby("seed")["value"].mean()
                row[name] = float(per_seed.mean()) if len(per_seed) else np.nan
                seeds = max(seeds, len(per_seed))
            if seeds:
                rows.append(row | {"n seeds": seeds})
                index.append(arm_label(arm) + ("" if beta is None else f", β = {beta:g}"))
    table = pd.DataFrame(rows, index=pd.Index(index, name="policy"))
    return table


# --------------------------------------------------------------------------------- suites and regenerate
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
    "toy8x8": [toy_masses, toy_beta],
}
DEFAULT_FIGURES: list[Callable | tuple[str, Callable]] = [win_rate_vs_kl, ("final_win_rate", bars)]

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


def named(entries: Sequence[Callable | tuple[str, Callable]]) -> list[tuple[str, Callable]]:
    """SUITE_FIGURES entries as (name, function); a bare function is named by its __name__."""
    return [entry if isinstance(entry, tuple) else (entry.__name__, entry) for entry in entries]


def write_table(table: pd.DataFrame, out_dir: str | Path, name: str) -> list[Path]:
    """`<out_dir>/<name>.csv` and `.md`; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.csv", out_dir / f"{name}.md"]
    table.to_csv(paths[0])
    paths[1].write_text(scorecard.markdown_table(table) + "\n", encoding="utf-8")
    return paths


def _environment_lines(df: pd.DataFrame) -> list[str]:
    """What REPORT.md and SCORECARD.md say about where the runs of `df` were made."""
    run_dirs = df["run_dir"].unique()
    notes = environment_notes(run_dirs)
    summary = environment_summary(run_dirs) if not notes else None
    return notes or ([summary] if summary else [])


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
    written: list[Path] = []
    for name in suites:
        data = df[df["suite"] == name]
        out_dir = root / "figures" / name
        drawn, tables = [], {}
        for figure_name, draw in named(SUITE_FIGURES.get(name, DEFAULT_FIGURES)):
            try:
                fig = draw(data)
            except Exception as error:  # noqa: BLE001 — report and keep drawing the rest
                warnings.warn(f"figure {name}/{figure_name} failed: {error!r}", stacklevel=2)
                continue
            written.extend(save(fig, out_dir, figure_name))
            drawn.append(figure_name)
        for table_name, build in SUITE_TABLES.get(name, [("final_metrics", final_table)]):
            try:
                table = build(data)
            except Exception as error:  # noqa: BLE001
                warnings.warn(f"table {name}/{table_name} failed: {error!r}", stacklevel=2)
                continue
            written.extend(write_table(table, out_dir, table_name))
            tables[table_name] = table
        report_path = root / name / "REPORT.md"
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(scorecard.report(data, name, figures=drawn, tables=tables,
                                                environment=_environment_lines(data)), encoding="utf-8")
        written.append(report_path)
    if suite is None:  # the whole picture: every claim, every suite
        deciding = df[df["suite"].isin({claim.suite for claim in scorecard.CLAIMS})]  # the demo decides nothing
        (root / "SCORECARD.md").write_text(scorecard.overview(df, root, profile, _environment_lines(deciding)),
                                           encoding="utf-8")
        written.append(root / "SCORECARD.md")
    timing = timings(root)
    if not timing.empty:
        written.extend(write_table(timing.set_index("suite"), root / "figures", "timings"))
    return written
