"""The intervals the claims are decided by, over seeds (the replication unit): one-sample and paired t-intervals
(scipy.stats.ttest_1samp / ttest_rel), BCa bootstrap intervals (scipy.stats.bootstrap) and the partial correlation
of claim 9 (statsmodels OLS residuals, then scipy.stats.pearsonr). No test is written by hand here; these are thin
wrappers that align seeds, drop missing values and say which method gave the interval. Torch-free.

Every function returns an `Interval` (value, low, high, n, method); low and high are NaN when fewer than 2 seeds give
a value (one seed says nothing about seed-to-seed spread).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

T_ONE = "t (one-sample, over seeds)"
T_PAIRED = "paired t (over seeds)"
BCA = "BCa bootstrap (over seeds)"
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    value: float  # the statistic on the data (a mean over seeds)
    low: float  # CONFIDENCE interval; NaN without one
    high: float
    n: int  # seeds that gave a value
    method: str  # T_ONE | T_PAIRED | BCA

    def __iter__(self):  # (value, low, high), as the decision functions unpack it
        return iter((self.value, self.low, self.high))

    @property
    def finite(self) -> bool:
        return bool(np.isfinite(self.low) and np.isfinite(self.high))


def _values(x) -> np.ndarray:
    x = np.asarray(x.to_numpy() if isinstance(x, pd.Series) else x, dtype=float)
    return x[np.isfinite(x)]


def t_interval(x, confidence: float = CONFIDENCE, method: str = T_ONE) -> Interval:
    """Mean of `x` (one value per seed) with its t-interval (scipy.stats.ttest_1samp). All values equal: a
    zero-width interval at their value."""
    x = _values(x)
    if len(x) == 0:
        return Interval(math.nan, math.nan, math.nan, 0, method)
    mean = float(np.mean(x))
    if len(x) < 2:
        return Interval(mean, math.nan, math.nan, 1, method)
    if np.ptp(x) == 0:
        return Interval(mean, mean, mean, len(x), method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nearly equal values: scipy warns, the interval is fine
        ci = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
    return Interval(mean, float(ci.low), float(ci.high), len(x), method)


def paired(a: pd.Series, b: pd.Series) -> tuple[pd.Series, pd.Series]:
    """`a` and `b` (indexed by seed) on the seeds where both have a finite value."""
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").astype(float).dropna()
    return both["a"], both["b"]


def paired_t_interval(a: pd.Series, b: pd.Series, confidence: float = CONFIDENCE) -> Interval:
    """Mean over seeds of a − b with the paired t-interval (scipy.stats.ttest_rel) on the seeds both have."""
    a, b = paired(a, b)
    if len(a) >= 2 and np.ptp(a.to_numpy() - b.to_numpy()) > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ci = stats.ttest_rel(a.to_numpy(), b.to_numpy()).confidence_interval(confidence)
        return Interval(float(np.mean(a - b)), float(ci.low), float(ci.high), len(a), T_PAIRED)
    return t_interval(a - b, confidence, method=T_PAIRED)  # 0 or 1 seed, or a constant difference


def contrast(series: Mapping[str, pd.Series], weights: Mapping[str, float], constant: float = 0.0) -> pd.Series:
    """Per seed, constant + Σ weight · series (seeds where every series has a value): a linear statistic of arms that
    share seeds, whose t-interval replaces the bootstrap of a ratio (e.g. claim 6's "gain < 1/3 of online's" is
    (final − 0.5) − (online − 0.5) / 3 < 0 seed by seed)."""
    frame = pd.concat({name: series[name] for name in weights}, axis=1, join="inner").astype(float).dropna()
    return constant + sum(weight * frame[name] for name, weight in weights.items())


def bca_interval(samples: Sequence, statistic: Callable, confidence: float = CONFIDENCE, n_resamples: int = 9999,
                 seed: int = 0, paired_samples: bool = True, vectorized: bool = False) -> Interval:
    """statistic(*samples) with a BCa interval (scipy.stats.bootstrap, method="BCa"); rows resampled together when
    `paired_samples` (one row per seed); `vectorized`: statistic takes axis=. tests/test_stats_coverage.py measures where BCa keeps its nominal coverage."""
    arrays = [np.asarray(s, dtype=float) for s in samples]
    value = float(statistic(*arrays))
    n = min(len(a) for a in arrays)
    if n < 3 or not np.isfinite(value):
        return Interval(value, math.nan, math.nan, n, BCA)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples: scipy warns and returns NaN, reported as no CI
        result = stats.bootstrap(tuple(arrays), statistic, confidence_level=confidence, method="BCa",
                                 n_resamples=n_resamples, paired=paired_samples, vectorized=vectorized,
                                 rng=np.random.default_rng(seed))
    return Interval(value, float(result.confidence_interval.low), float(result.confidence_interval.high), n, BCA)


def spearman(x, y) -> float:
    """Spearman ρ (scipy.stats.spearmanr); NaN when either side is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def partial_correlation(x, y, covariate) -> float:
    """Pearson correlation of x and y once the covariate's linear effect is removed from both: the residuals of
    statsmodels OLS fits of x and y on [1, covariate], correlated by scipy.stats.pearsonr. NaN when a residual is
    constant or there are fewer than 4 points."""
    import statsmodels.api as sm  # imported here: ~1 s, and only claim 9 needs it

    x, y, covariate = (np.asarray(v, dtype=float) for v in (x, y, covariate))
    keep = np.isfinite(x) & np.isfinite(y) & np.isfinite(covariate)
    x, y, covariate = x[keep], y[keep], covariate[keep]
    if len(x) < 4:
        return math.nan
    design = sm.add_constant(covariate, has_constant="add")
    rx, ry = sm.OLS(x, design).fit().resid, sm.OLS(y, design).fit().resid
    if np.ptp(rx) < 1e-12 or np.ptp(ry) < 1e-12:
        return math.nan
    return float(stats.pearsonr(rx, ry).statistic)


def fitted_slope(x, y) -> float:
    """Least-squares slope of y on x (scipy.stats.linregress); NaN with fewer than 2 distinct x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2 or np.ptp(x) == 0:
        return math.nan
    return float(stats.linregress(x, y).slope)
