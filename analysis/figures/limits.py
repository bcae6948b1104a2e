"""Gold reward against KL with the limit drawn (issue 13): every evaluation checkpoint a point, and the best any
policy can reach in the suite's worlds as a black line: the exact KL-regularised frontier (toy8x8) or the gold
best-of-n frontier of the SFT policy (gapstudy limits, <suite>/limits-<profile>.json, read by analysis.load).
With several worlds (a world per build seed) the line is their joint frontier at one β (or one n): mean KL against
mean gold reward, above which the seeds' mean cannot lie (the exact case), or which best-of-n reaches (the other).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.figures.common import KL_LOG_LABEL, arm_legend, arms_of, log_x, no_data
from analysis.load import eval_points
from analysis.style import arm_color, arm_label, metric_label, new_figure, seed_marker, styled

LIMIT_LABELS = {"kl_optimal": "optimum π*_β (exact)", "best_of_n": "best of n SFT samples (n = 1 … 256)"}


def joint_limit(limits: dict | None) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(kind, KL, gold) of the worlds' joint frontier: at each β (or n) the mean over worlds of KL and of gold
    reward, in order of increasing KL; None without curves or when the worlds' grids differ."""
    curves = (limits or {}).get("curves") or []
    if not curves or len({c["kind"] for c in curves}) != 1 or len({len(c["kl"]) for c in curves}) != 1:
        return None
    kl = np.mean([c["kl"] for c in curves], axis=0)
    gold = np.mean([c["gold_reward"] for c in curves], axis=0)
    order = np.argsort(kl, kind="stable")
    return curves[0]["kind"], kl[order], gold[order]


def limit_excess(df: pd.DataFrame, limits: dict | None, y: str) -> float | None:
    """The largest amount by which a seed-mean checkpoint (each arm's mean over seeds at a step) rises above the
    exact joint frontier at its mean KL; None without an exact limit or points. Positive = above the optimum."""
    joint = joint_limit(limits)
    if joint is None or joint[0] != "kl_optimal" or y not in df:
        return None
    points = eval_points(df)
    points = points[points[y].notna()]
    if points.empty:
        return None
    means = points.groupby(["arm", "step"])[["eval/kl", y]].mean()
    _, kl, gold = joint
    return float((means[y] - np.interp(means["eval/kl"], kl, gold)).max())


@styled
def gold_vs_kl(df: pd.DataFrame, limits: dict | None = None, y: str | None = None) -> Figure:
    """Each arm's checkpoints (marker = seed) in the gold-reward-against-KL plane, the mean over seeds at each
    step as a line, and the limit of the suite's worlds when `limits` holds one."""
    y = y or ("eval/diagonal_mass" if "eval/diagonal_mass" in df and df["eval/diagonal_mass"].notna().any()
              else "eval/gold_reward")
    fig, axes = new_figure(width=6.4, height=4.6)
    ax = axes[0, 0]
    ax.set_xlabel(KL_LOG_LABEL)
    ax.set_ylabel(metric_label(y) if y != "eval/diagonal_mass" else "gold reward (exact: mass on the diagonal)")
    ax.set_title("Gold reward against KL, with the limit")
    points = eval_points(df)
    points = points[points[y].notna() & (points["eval/kl"] > 0)] if y in points else points.iloc[0:0]
    handles = []
    joint = joint_limit(limits)
    if joint is not None:
        kind, kl, gold = joint
        keep = kl > 0
        (line,) = ax.plot(kl[keep], gold[keep], color="black", linewidth=2.0, label=LIMIT_LABELS[kind])
        handles.append(line)
    if points.empty and joint is None:
        no_data(ax)
        return fig
    seeds = list(points["seed"].unique())
    for arm in arms_of(points):
        cloud = points[points["arm"] == arm]
        color = arm_color(arm)
        for seed, group in cloud.groupby("seed", dropna=False):
            ax.scatter(group["eval/kl"], group[y], color=color, marker=seed_marker(seed, seeds), s=14, alpha=0.35,
                       linewidths=0)
        mean = cloud.groupby("step")[["eval/kl", y]].mean().sort_values("eval/kl")
        (line,) = ax.plot(mean["eval/kl"], mean[y], color=color, linewidth=1.2, label=arm_label(arm))
        handles.append(line)
    log_x(ax)
    arm_legend(fig, ax, handles, title="arm (line: mean over seeds at each step)")
    return fig
