"""What the papers' figures share: axes (log KL ticks, "no data"), legends, seed-mean lines with their ±1 s.e. bands,
intervals and jitter, and the figures and tables every kind of suite draws (final-value bars, the final-metrics
table, metric curves against step or samples).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import ticker
from matplotlib.figure import Figure

from analysis.kl_match import bootstrap_ci
from analysis.load import per_seed_final, resolve_metric
from analysis.style import arm_color, arm_label, arm_linestyle, arm_order, metric_label, new_figure, styled

KL_LOG_LABEL = "KL(π‖π$_{\\mathrm{SFT}}$) (nats, log scale)"
WIN_RATE_LABEL = "win rate vs SFT (gold judge)"


# ------------------------------------------------------------------------------------------------ helpers
def no_data(ax, message: str = "no data") -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", fontsize=14, color="0.45")


def arms_of(df: pd.DataFrame) -> list[str]:
    return arm_order(df["arm"].dropna().unique()) if "arm" in df and not df.empty else []


def interval_error(mean: float, low: float, high: float):
    if not (np.isfinite(low) and np.isfinite(high)):
        return None
    return [[max(mean - low, 0.0)], [max(high - mean, 0.0)]]


def jitter(n: int, width: float = 0.28) -> np.ndarray:
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


def log_x(ax) -> None:
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


def arm_legend(fig: Figure, ax, handles=None, title: str | None = None) -> None:
    handles = handles if handles is not None else ax.get_legend_handles_labels()[0]
    if handles:
        fig.legend(handles=handles, loc="outside right upper", title=title, frameon=False)


def per_seed_means(df: pd.DataFrame, key: str, x: str) -> pd.DataFrame:
    """(seed, x, value): per seed and x value, the mean of `key` over the seed's runs (a swept arm has several runs
    per seed), so that each seed counts once in the mean and standard error over seeds."""
    return df.groupby(["seed", x], dropna=False)[key].mean().rename("value").reset_index()


def with_samples(df: pd.DataFrame) -> pd.DataFrame:
    """counters/samples carried forward within each run, so evaluation rows know how many samples preceded them."""
    if "counters/samples" not in df or df.empty:
        return df
    df = df.sort_values(["run_dir", "step"]).copy()
    samples = df.groupby("run_dir")["counters/samples"]
    logged = samples.transform(lambda s: s.notna().any())
    # evaluations before the first training step of a run that counts samples come after 0 samples
    df["counters/samples"] = samples.ffill().where(~logged, samples.ffill().fillna(0.0))
    return df


def mean_band(ax, per_seed: pd.DataFrame, x: str, arm: str, label: str, alpha: float):
    """An arm's line over `x` of the mean over seeds of `per_seed` (per_seed_means), with a ±1 standard-error band
    (seaborn's errorbar="se": std over seeds / √n) at the x values two or more seeds reached; returns the line and
    whether a band was drawn."""
    banded = bool((per_seed.groupby(x)["value"].count() >= 2).any())
    sns.lineplot(x=per_seed[x].to_numpy(), y=per_seed["value"].to_numpy(), estimator="mean",
                 errorbar="se" if banded else None, color=arm_color(arm), linestyle=arm_linestyle(arm), label=label,
                 legend=False, ax=ax, err_kws={"alpha": alpha, "linewidth": 0})
    return ax.get_lines()[-1], banded


def band_title(banded: bool) -> str:
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


# ---------------------------------------------------------------------------------------- final-value bars
def bars_on(ax, df: pd.DataFrame, metric: str, arms: Sequence[str] | None = None) -> bool:
    finals = per_seed_final(df, metric)
    arms = [a for a in (arms or arms_of(finals)) if (finals["arm"] == a).any()]
    ax.set_ylabel(WIN_RATE_LABEL if metric == "eval/win_rate" else metric_label(metric))
    if not arms:
        no_data(ax)
        return False
    for i, arm in enumerate(arms):
        values = finals.loc[finals["arm"] == arm, "value"].to_numpy()
        mean, low, high = bootstrap_ci(values)
        color = arm_color(arm)
        ax.bar(i, mean, color=color, alpha=0.8, width=0.7, hatch="//" if arm_linestyle(arm) == "--" else None,
               edgecolor="white")
        error = interval_error(mean, low, high)
        if error is not None:
            ax.errorbar(i, mean, yerr=error, color="black", capsize=4, linewidth=1.2)
        ax.scatter(i + jitter(len(values)), values, color="black", s=12, zorder=3)
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
    n = len(arms) if arms else max(1, len(arms_of(df)))
    fig, axes = new_figure(width=max(4.0, 1.0 + 0.9 * n), height=4.4)
    bars_on(axes[0, 0], df, metric, arms)
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


# ------------------------------------------------------------------------------------- curves over training
@styled
def curves_vs_step(df: pd.DataFrame, metrics: Sequence[str] = ("eval/gold_reward", "eval/length", "eval/entropy"),
                   x: str = "step", arms: Sequence[str] | None = None, title: str | None = None,
                   task: str | None = None) -> Figure:
    """One panel per metric, one line per arm: mean over seeds at each step, band = ±1 standard error over
    seeds (no band with one seed). With `task`, its per-task keys (eval/math/length) are preferred; a per-task
    key also stands in for a metric the runs did not log (eval/math/accuracy for eval/accuracy)."""
    metrics = list(metrics)
    fig, axes = new_figure(ncols=len(metrics), width=4.4, height=3.8)
    data = with_samples(df) if x == "counters/samples" else df
    arms = list(arms) if arms is not None else arms_of(data)
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
            per_seed = per_seed_means(runs, key, x)
            if per_seed.empty:
                continue
            line, with_band = mean_band(ax, per_seed, x, arm, arm_label(arm), alpha=0.18)
            handles.setdefault(arm, line)
            drawn, banded = True, banded or with_band
        ax.set_ylabel(metric_label(keys.pop() if len(keys) == 1 else metric))  # the key actually drawn
        if not drawn:
            no_data(ax)
    if title:
        fig.suptitle(title)
    arm_legend(fig, axes[0, 0], [handles[a] for a in arms if a in handles], title=band_title(banded))
    return fig

