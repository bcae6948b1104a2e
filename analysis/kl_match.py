"""KL-matched comparison (Tang et al. 2024, Fig. 1): a policy is only better than another at the same
divergence from the SFT policy, so arms are compared by the best win rate they reach under a KL budget.

Every evaluation checkpoint of every run of an arm is a point (KL, win rate) of that arm's cloud; the
frontier is the cloud's upper envelope; the KL-matched statistic is the best checkpoint under budget K,
per seed, then averaged over seeds with a bootstrap confidence interval. To avoid a winner's curse the best
checkpoint can be selected on one half of the held-out prompts (eval/win_rate_a) and reported on the other
(eval/win_rate_b): `report=`.
"""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.load import eval_points

N_BOOT = 2000  # bootstrap resamples; percentile intervals are stable to ~0.01 at this count
BUDGET_FLOOR = 1e-3  # lowest budget as a fraction of the largest KL: below it the exact KL is float noise
_RNG_KEYWORD = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


def bootstrap_ci(samples, statistic: Callable | None = None, n_boot: int = N_BOOT, confidence: float = 0.95,
                 seed: int = 0, paired: bool = False) -> tuple[float, float, float]:
    """(statistic on the data, percentile-bootstrap CI low, high).

    `samples`: one 1-d array, or a list of arrays resampled independently (paired=False) or together
    (paired=True, equal lengths). `statistic(*samples)` defaults to the mean of a single sample. The CI is
    NaN when any sample has fewer than 2 values: one seed says nothing about seed-to-seed spread.
    """
    single = not isinstance(samples, (list, tuple))
    arrays = [np.asarray(s, dtype=float) for s in ([samples] if single else samples)]
    arrays = [a[np.isfinite(a)] for a in arrays] if not paired else _finite_rows(arrays)
    if statistic is None:
        if len(arrays) != 1:
            raise ValueError("a statistic is needed for several samples")
        statistic = np.mean
    if any(len(a) == 0 for a in arrays):
        return np.nan, np.nan, np.nan
    value = float(statistic(*arrays))
    if any(len(a) < 2 for a in arrays) or not np.isfinite(value):
        return value, np.nan, np.nan
    vectorized = statistic is np.mean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate (all equal) resamples give a zero-width interval: fine
        result = stats.bootstrap(
            tuple(arrays), statistic, n_resamples=n_boot, confidence_level=confidence, method="percentile",
            paired=paired, vectorized=vectorized, **{_RNG_KEYWORD: np.random.default_rng(seed)},
        )
    return value, float(result.confidence_interval.low), float(result.confidence_interval.high)


def _finite_rows(arrays: list[np.ndarray]) -> list[np.ndarray]:
    keep = np.all([np.isfinite(a) for a in arrays], axis=0)
    return [a[keep] for a in arrays]


def frontier(points: pd.DataFrame, x: str = "eval/kl", y: str = "eval/win_rate", by: str | None = "arm") -> pd.DataFrame:
    """Upper envelope of each arm's cloud: points sorted by x, y replaced by its running maximum.

    Returns columns [by, x, y] (draw it with drawstyle="steps-post"); points with x or y missing are dropped.
    """
    columns = [c for c in (by, x, y) if c is not None]
    if points.empty or x not in points or y not in points:
        return pd.DataFrame(columns=columns)
    data = points[points[x].notna() & points[y].notna()]
    groups = data.groupby(by, sort=False, dropna=False) if by is not None else [(None, data)]
    parts = []
    for _, group in groups:
        group = group.sort_values([x, y], kind="mergesort")[columns].copy()
        group[y] = group[y].cummax()
        parts.append(group)
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)


def best_under_budget(df: pd.DataFrame, budgets: Sequence[float], x: str = "eval/kl", y: str = "eval/win_rate",
                      by: Sequence[str] = ("arm", "seed"), report: str | None = None) -> pd.DataFrame:
    """For each (arm, seed) and budget K: the best y among all checkpoints (of all the arm's runs with that
    seed) whose x <= K; NaN when none is that close to the SFT policy.

    With `report` (e.g. y="eval/win_rate_a", report="eval/win_rate_b"), y only selects the checkpoint and `best`
    is the report column at that checkpoint: the best of many noisy checkpoints is then scored on prompts the
    selection never saw, with no winner's curse. Ties in y go to the first checkpoint in x order; a selected
    checkpoint without a report value gives NaN.

    Returns columns [*by, budget, best, n_points] (n_points = checkpoints within the budget).
    """
    by = list(by)
    budgets = np.asarray(budgets, dtype=float)
    columns = [*by, "budget", "best", "n_points"]
    if df.empty or x not in df or y not in df or (report is not None and report not in df):
        return pd.DataFrame(columns=columns)
    points = eval_points(df, x)
    points = points[points[y].notna()]
    rows = []
    for key, group in points.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        order = np.argsort(group[x].to_numpy(), kind="mergesort")
        xs = group[x].to_numpy()[order]
        chosen = _running_argmax(group[y].to_numpy(dtype=float)[order])  # the selected checkpoint of each prefix
        values = group[y if report is None else report].to_numpy(dtype=float)[order][chosen]
        counts = np.searchsorted(xs, budgets, side="right")
        for budget, count in zip(budgets, counts):
            rows.append((*key, budget, values[count - 1] if count > 0 else np.nan, int(count)))
    return pd.DataFrame(rows, columns=columns)


def _running_argmax(values: np.ndarray) -> np.ndarray:
    """For each prefix values[:i+1], the index of its maximum; ties keep the earliest."""
    chosen = np.zeros(len(values), dtype=int)
    for i in range(1, len(values)):
        chosen[i] = i if values[i] > values[chosen[i - 1]] else chosen[i - 1]
    return chosen


def kl_matched(df: pd.DataFrame, budgets: Sequence[float] | None = None, x: str = "eval/kl",
               y: str = "eval/win_rate", n_boot: int = N_BOOT, confidence: float = 0.95, seed: int = 0,
               report: str | None = None) -> pd.DataFrame:
    """Per arm and budget: the mean over seeds of the best y under the budget (with `report`, the report column
    at the checkpoint y selects: see best_under_budget), with a percentile bootstrap CI over seeds. Returns
    columns arm, budget, mean, ci_low, ci_high, n_seeds, note (why a CI is missing)."""
    if budgets is None:
        budgets = default_budgets(df, x=x)
    best = best_under_budget(df, budgets, x=x, y=y, report=report)
    rows = []
    for (arm, budget), group in best.groupby(["arm", "budget"], sort=False, dropna=False):
        values = group["best"].dropna().to_numpy(dtype=float)
        mean, low, high = bootstrap_ci(values, n_boot=n_boot, confidence=confidence, seed=seed)
        note = ("no checkpoint within budget" if len(values) == 0
                else "single seed: no CI" if len(values) == 1 else "")
        rows.append((arm, budget, mean, low, high, len(values), note))
    return pd.DataFrame(rows, columns=["arm", "budget", "mean", "ci_low", "ci_high", "n_seeds", "note"])


def default_budgets(df: pd.DataFrame, n: int = 8, x: str = "eval/kl") -> np.ndarray:
    """n budgets log-spaced from the smallest to the largest positive KL observed. The low end is raised to
    BUDGET_FLOOR x the largest (the step-0 checkpoint's KL is 0 up to float noise). Empty without data."""
    if df.empty or x not in df:
        return np.array([])
    values = df[x].to_numpy(dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) == 0:
        return np.array([])
    high = values.max()
    low = max(values.min(), BUDGET_FLOOR * high)
    return np.array([high]) if low >= high else np.geomspace(low, high, n)


def common_budgets(df: pd.DataFrame, arms: Sequence[str], n: int = 8, x: str = "eval/kl") -> np.ndarray:
    """Budgets over the KL range every one of `arms` covers: from the largest of the arms' smallest positive
    KL to the smallest of their largest. When the ranges do not overlap there is no matched budget: a single
    budget at the largest KL of all compares each arm's best value at any KL (its peak)."""
    sub = df[df["arm"].isin(arms)] if "arm" in df else df.iloc[0:0]
    lows, highs = [], []
    for arm in arms:
        values = sub.loc[sub["arm"] == arm, x].to_numpy(dtype=float) if x in sub else np.array([])
        values = values[np.isfinite(values) & (values > 0)]
        if len(values) == 0:
            return default_budgets(sub, n=n, x=x)
        lows.append(max(values.min(), BUDGET_FLOOR * values.max()))
        highs.append(values.max())
    low, high = max(lows, default=np.nan), min(highs, default=np.nan)
    if not (np.isfinite(low) and np.isfinite(high)):
        return default_budgets(sub, n=n, x=x)
    if low >= high:  # disjoint KL ranges: compare peaks
        return np.array([max(highs)])
    return np.geomspace(low, high, n)
