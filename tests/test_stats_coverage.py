"""analysis.stats: the intervals the claims are decided by keep their nominal 95% coverage at the seed counts the rules
use (5 and 10), measured by simulation with a fixed RNG; BCa, which misses at 10 seeds already, is used by no rule."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis.stats import (BCA, T_ONE, T_PAIRED, bca_interval, contrast, paired_t_interval, partial_correlation,
                            t_interval)

NOMINAL, TOLERANCE = 0.95, 0.02  # the bar: within 2 points of nominal


def _coverage(intervals, truth) -> float:
    return float(np.mean([low <= truth <= high for _, low, high in intervals]))


# Coverage is measured on the scipy calls analysis.stats makes (vectorised over 4,000 simulated sets of seeds; the
# s.e. of each estimate is 0.35 points); the wrappers are those calls on aligned seeds (tested below).
@pytest.mark.parametrize("n", [5, 10])
def test_t_interval_covers_the_mean_of_normal_seeds(n):
    """n seeds from N(0.3, 0.05²): scipy.stats.ttest_1samp's interval (t_interval) holds 0.3 in 95% ± 2 points."""
    draws = np.random.default_rng(20261202 + n).normal(0.3, 0.05, size=(4000, n))
    ci = scipy_stats.ttest_1samp(draws, 0.0, axis=1).confidence_interval(0.95)
    coverage = float(np.mean((ci.low <= 0.3) & (0.3 <= ci.high)))
    assert abs(coverage - NOMINAL) <= TOLERANCE, coverage
    row = t_interval(draws[0])
    assert (row.low, row.high) == pytest.approx((ci.low[0], ci.high[0]))  # the wrapper is that call


@pytest.mark.parametrize("n", [5, 10])
def test_paired_t_interval_covers_a_difference_of_arms_sharing_seeds(n):
    """Two arms share a seed effect (sd 0.05) and differ by 0.04 with their own noise (sd 0.02): scipy.stats.ttest_rel's
    interval (paired_t_interval) holds 0.04 in 95% ± 2 points at n seeds."""
    rng = np.random.default_rng(7 + n)
    seed_effect = rng.normal(0, 0.05, size=(4000, n))
    a = 0.6 + seed_effect + rng.normal(0, 0.02, size=(4000, n))
    b = 0.56 + seed_effect + rng.normal(0, 0.02, size=(4000, n))
    ci = scipy_stats.ttest_rel(a, b, axis=1).confidence_interval(0.95)
    coverage = float(np.mean((ci.low <= 0.04) & (0.04 <= ci.high)))
    assert abs(coverage - NOMINAL) <= TOLERANCE, coverage
    shuffled = pd.Series(a[0]).sample(frac=1, random_state=1)  # alignment is by seed, not by order
    row = paired_t_interval(shuffled, pd.Series(b[0]))
    assert (row.low, row.high) == pytest.approx((ci.low[0], ci.high[0]))


def test_paired_t_interval_is_scipys_ttest_rel_on_the_shared_seeds():
    a = pd.Series({0: 0.71, 1: 0.64, 2: 0.69, 3: 0.75, 4: 0.70, 9: 0.1})
    b = pd.Series({0: 0.62, 1: 0.60, 2: 0.66, 3: 0.64, 4: 0.61})
    ci = paired_t_interval(a, b)
    expected = scipy_stats.ttest_rel(a.loc[b.index], b).confidence_interval()
    assert (ci.n, ci.method) == (5, T_PAIRED) and ci.value == pytest.approx((a.loc[b.index] - b).mean())
    assert (ci.low, ci.high) == pytest.approx((expected.low, expected.high))


def test_t_interval_edge_cases():
    one = t_interval([0.4])
    assert one.value == 0.4 and np.isnan(one.low) and one.n == 1 and one.method == T_ONE
    assert tuple(t_interval([0.2, 0.2, 0.2])) == pytest.approx((0.2, 0.2, 0.2))  # no spread: a zero-width interval
    assert t_interval([np.nan, 0.1, 0.3]).n == 2 and np.isnan(tuple(t_interval([]))[0])


def test_contrast_is_a_per_seed_linear_combination_on_shared_seeds():
    final, online = pd.Series({0: 0.55, 1: 0.6, 2: 0.5}), pd.Series({0: 0.8, 1: 0.9})
    value = contrast({"f": final, "o": online}, {"f": 1.0, "o": -1 / 3}, -0.5 * (1 - 1 / 3))
    # seed 0: (0.55 − 0.5) − (0.8 − 0.5)/3 = −0.05; seed 1: 0.1 − 0.4/3 = −0.0333; seed 2 has no online value
    assert value.to_dict() == pytest.approx({0: -0.05, 1: 0.1 - 0.4 / 3})


def test_partial_correlation_removes_what_the_covariate_drives():
    """Accuracy and win rate both rise with log KL (their plain correlation is high) but their residuals are
    independent: the partial correlation is near 0; when accuracy also tracks the win rate's residual, it is near 1."""
    rng = np.random.default_rng(3)
    log_kl = rng.uniform(-1, 2, 200)
    win_noise = rng.normal(0, 0.05, 200)
    win_rate = 0.5 + 0.1 * log_kl + win_noise
    accuracy = 0.6 + 0.05 * log_kl + rng.normal(0, 0.02, 200)
    assert scipy_stats.pearsonr(accuracy, win_rate).statistic > 0.7
    assert abs(partial_correlation(accuracy, win_rate, log_kl)) < 0.15
    tracking = 0.6 + 0.05 * log_kl + 0.5 * win_noise + rng.normal(0, 0.002, 200)
    assert partial_correlation(tracking, win_rate, log_kl) > 0.95
    assert np.isnan(partial_correlation([1, 2, 3], [1, 2, 3], [0, 1, 2]))  # fewer than 4 points


def test_bca_misses_its_nominal_coverage_even_at_ten_seeds():
    """BCa (scipy.stats.bootstrap, bca_interval) on the mean of 10 normal seeds, 400 simulated sets (s.e. 1.5 points):
    it covers about 90%, more than 2 points short of 95% (at 5 seeds it is worse), so no rule uses BCa: ratios are
    decided as per-seed linear contrasts with t intervals instead."""
    rng = np.random.default_rng(21)
    intervals = [bca_interval([row], np.mean, n_resamples=999, seed=i, vectorized=True)
                 for i, row in enumerate(rng.normal(0.0, 1.0, size=(400, 10)))]
    coverage = _coverage(intervals, 0.0)
    assert coverage < NOMINAL - TOLERANCE, coverage
    assert intervals[0].method == BCA
