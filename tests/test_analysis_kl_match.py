"""analysis.kl_match: frontier, best win rate under a KL budget and the KL-matched statistic, hand-checked."""
import numpy as np
import pandas as pd
import pytest

from analysis.kl_match import best_under_budget, bootstrap_ci, default_budgets, frontier, kl_matched


def _points(rows):
    """rows: (arm, seed, kl, win_rate)."""
    return pd.DataFrame(rows, columns=["arm", "seed", "eval/kl", "eval/win_rate"])


# arm "on": seed 0 checkpoints (KL, win) = (1, .6), (2, .55), (4, .8); seed 1 = (1, .7), (3, .75)
# arm "off": seed 0 = (0.5, .52), (8, .65); seed 1 = (2, .6)
CLOUD = _points([("on", 0, 1, .6), ("on", 0, 2, .55), ("on", 0, 4, .8), ("on", 1, 1, .7), ("on", 1, 3, .75),
                 ("off", 0, .5, .52), ("off", 0, 8, .65), ("off", 1, 2, .6)])


def test_frontier_is_the_running_maximum_over_increasing_kl():
    """Arm "on", pooled over seeds, sorted by KL: (1,.6) (1,.7) (2,.55) (3,.75) (4,.8) ->
    running max .6 .7 .7 .75 .8; arm "off": (.5,.52) (2,.6) (8,.65) -> .52 .6 .65."""
    env = frontier(CLOUD)
    on = env[env["arm"] == "on"]
    assert on["eval/kl"].tolist() == [1, 1, 2, 3, 4]
    assert on["eval/win_rate"].tolist() == pytest.approx([.6, .7, .7, .75, .8])
    off = env[env["arm"] == "off"]
    assert off["eval/win_rate"].tolist() == pytest.approx([.52, .6, .65])
    assert frontier(CLOUD.iloc[0:0]).empty


def test_best_under_budget_per_arm_and_seed():
    """Budget 2: on/0 -> max(.6, .55) = .6; on/1 -> .7; off/0 -> .52; off/1 -> .6.
    Budget 0.7: on/0, on/1, off/1 have no checkpoint -> NaN; off/0 -> .52. Budget 10: overall bests."""
    best = best_under_budget(CLOUD, [0.7, 2, 10]).set_index(["arm", "seed", "budget"])["best"]
    assert best[("on", 0, 2)] == .6 and best[("on", 1, 2)] == .7
    assert best[("off", 0, 2)] == .52 and best[("off", 1, 2)] == .6
    assert np.isnan(best[("on", 0, 0.7)]) and np.isnan(best[("off", 1, 0.7)]) and best[("off", 0, 0.7)] == .52
    assert best[("on", 0, 10)] == .8 and best[("on", 1, 10)] == .75 and best[("off", 0, 10)] == .65


def test_kl_matched_mean_over_seeds_with_a_ci_from_two_seeds():
    """Budget 2: "on" seeds give .6 and .7 -> mean .65, and the percentile CI of a two-value bootstrap lies in
    [.6, .7] and covers the mean; "off" .52 and .6 -> .56."""
    table = kl_matched(CLOUD, [2.0], n_boot=500).set_index("arm")
    assert table.loc["on", "mean"] == pytest.approx(.65)
    assert table.loc["off", "mean"] == pytest.approx(.56)
    assert table.loc["on", "n_seeds"] == 2
    assert .6 <= table.loc["on", "ci_low"] <= .65 <= table.loc["on", "ci_high"] <= .7
    assert table.loc["on", "note"] == ""


def test_kl_matched_with_one_seed_has_no_ci_and_says_so():
    table = kl_matched(CLOUD[CLOUD["seed"] == 0], [2.0, 0.7]).set_index(["arm", "budget"])
    row = table.loc[("on", 2.0)]
    assert row["mean"] == pytest.approx(.6) and np.isnan(row["ci_low"]) and np.isnan(row["ci_high"])
    assert "single seed" in row["note"]
    assert table.loc[("on", 0.7), "note"] == "no checkpoint within budget"


def test_default_budgets_are_log_spaced_over_the_positive_kl_range():
    budgets = default_budgets(CLOUD, n=5)
    assert budgets[0] == pytest.approx(0.5) and budgets[-1] == pytest.approx(8)
    assert np.allclose(np.diff(np.log(budgets)), np.log(16) / 4)
    # a step-0 checkpoint at KL 1e-12 (float noise) only lowers the first budget to 1e-3 x the largest KL
    noisy = pd.concat([CLOUD, _points([("on", 0, 1e-12, .5)])])
    assert default_budgets(noisy, n=5)[0] == pytest.approx(8e-3)
    assert len(default_budgets(CLOUD.iloc[0:0])) == 0


def test_bootstrap_ci_of_a_difference_of_two_samples():
    value, low, high = bootstrap_ci([np.array([1.0, 1.2, 1.1]), np.array([0.0, 0.1, 0.2])],
                                    lambda a, b: np.mean(a) - np.mean(b), n_boot=500)
    assert value == pytest.approx(1.0) and 0.8 <= low <= value <= high <= 1.2
    assert np.isnan(bootstrap_ci(np.array([0.3]))[1])


def test_common_budgets_compare_peaks_when_the_kl_ranges_do_not_overlap():
    import pandas as pd

    from analysis.kl_match import common_budgets

    df = pd.DataFrame({"arm": ["a"] * 3 + ["b"] * 3, "eval/kl": [0.0, 0.2, 0.5, 0.0, 4.0, 9.0]})
    assert common_budgets(df, ["a", "b"]).tolist() == [9.0]  # disjoint: one budget covering every checkpoint
    overlapping = pd.DataFrame({"arm": ["a"] * 3 + ["b"] * 3, "eval/kl": [0.0, 1.0, 5.0, 0.0, 2.0, 9.0]})
    budgets = common_budgets(overlapping, ["a", "b"], n=4)
    assert budgets[0] == pytest.approx(2.0) and budgets[-1] == pytest.approx(5.0) and len(budgets) == 4
