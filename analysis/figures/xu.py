"""The figures and table of Xu et al. 2024 [D] on the 8×8 toy: π's exact masses on the diagonal and on the uncovered
responses over training, their end values against the KL strength β, and the end-mass table beside π_ref's.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.claims.rules import TOY_BETA, TOY_TAIL
from analysis.claims.xu import toy_betas, toy_runs
from analysis.figures.common import (arm_legend, arms_of, band_title, interval_error, jitter, mean_band, no_data,
                                     per_seed_means)
from analysis.kl_match import bootstrap_ci
from analysis.load import end_values
from analysis.style import arm_color, arm_label, arm_linestyle, new_figure, styled

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
        no_data(ax)


def _end_toy_figure(fig: Figure, axes, handles: dict, ylabel: str, title: str, legend_title: str) -> Figure:
    axes[0, 0].set_ylabel(ylabel)
    axes[0, 0].set_ylim(-0.02, 1.02)
    fig.suptitle(title)
    arm_legend(fig, axes[0, 0], list(handles.values()), title=legend_title)
    return fig


@styled
def toy_masses(df: pd.DataFrame, beta: float = TOY_BETA) -> Figure:
    """Xu et al.'s 8×8 toy: π's exact mass on the diagonal and on the responses the dataset never pairs with the
    prompt, over training, one line per arm at KL strength β (band = ±1 s.e. over seeds); dashed = π_ref's mass."""
    fig, axes = new_figure(ncols=2, width=4.6, height=3.8, sharey=True)
    handles, banded = {}, False
    for ax, (key, ref_key, name) in zip(axes[0], _TOY_PANELS):
        ax.set_title(f"mass on the {name}")
        ax.set_xlabel("step")
        drawn = False
        for arm in arms_of(df):
            runs = toy_runs(df, arm, beta)
            runs = runs[runs[key].notna()] if key in runs else runs.iloc[0:0]
            per_seed = per_seed_means(runs, key, "step") if not runs.empty else pd.DataFrame()
            if per_seed.empty:
                continue
            line, with_band = mean_band(ax, per_seed, "step", arm, arm_label(arm), alpha=0.18)
            handles.setdefault(arm, line)
            drawn, banded = True, banded or with_band
        _end_toy_panel(ax, df, ref_key, handles, drawn)
    return _end_toy_figure(fig, axes, handles, "probability mass (mean over the 8 prompts)", f"8×8 toy, β = {beta:g}",
                           band_title(banded))


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
        for arm in arms_of(df):
            betas = toy_betas(df, arm) or [None]
            points = []
            for beta in betas:
                ends = end_values(toy_runs(df, arm, beta), key, TOY_TAIL)
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
                error = interval_error(mean, low, high)
                if error is not None:
                    ax.errorbar(beta, mean, yerr=error, color=color, capsize=4, linewidth=1.2)
                ax.scatter(beta + 0.004 * jitter(len(values), 1.0), values, color=color, s=12, alpha=0.5, zorder=3)
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
    for arm in arms_of(df):
        for beta in toy_betas(df, arm) or [None]:
            runs = toy_runs(df, arm, beta)
            row, seeds = {}, 0
            for name, (key, _) in columns.items():
                per_seed = end_values(runs, key, TOY_TAIL).groupby("seed")["value"].mean()
                row[name] = float(per_seed.mean()) if len(per_seed) else np.nan
                seeds = max(seeds, len(per_seed))
            if seeds:
                rows.append(row | {"n seeds": seeds})
                index.append(arm_label(arm) + ("" if beta is None else f", β = {beta:g}"))
    table = pd.DataFrame(rows, index=pd.Index(index, name="policy"))
    return table


