"""The limits drawn beside the runs (gapstudy/limits.py): the exact KL-regularised frontier against brute-force search
over every policy of a tiny problem, the best-of-n KL formula against the exact KL of best-of-n on a distribution
whose atoms can be enumerated, the unbiased expected maximum, and no logged toy8x8 checkpoint above its world's
frontier."""
from __future__ import annotations

import math

import numpy as np
import pytest

from gapstudy.limits import (best_of_n_frontier, best_of_n_kl, expected_max_of_n, kl_optimal_frontier,
                             optimal_reward_at_kl)


def _simplex(step: float = 0.02) -> np.ndarray:
    """Every distribution over 3 responses on a grid of `step` (strictly positive: KL stays finite)."""
    ticks = np.arange(step, 1.0, step)
    a, b = np.meshgrid(ticks, ticks, indexing="ij")
    grid = np.stack([a.ravel(), b.ravel(), 1.0 - a.ravel() - b.ravel()], axis=1)
    return grid[grid[:, 2] > 1e-9]


def _problem():
    rng = np.random.default_rng(3)
    ref = rng.dirichlet([1.0, 1.0, 1.0], size=2)  # 2 prompts x 3 responses
    reward = rng.uniform(0, 1, size=(2, 3))
    return ref, reward


def test_the_closed_form_optimum_beats_every_policy_of_a_brute_force_grid_and_the_grid_approaches_it():
    """For each β, π*_β ∝ π_ref exp(r/β) has the largest E[r] − β KL of all policies: no grid policy (pairs of
    distributions, one per prompt) exceeds it, and the best grid policy comes within the grid's resolution."""
    ref, reward = _problem()
    grid = _simplex()
    for beta, close in ((0.05, False), (0.3, True), (2.0, True)):  # at 0.05 π* sits nearer a vertex than the grid
        frontier = kl_optimal_frontier(ref, reward, [beta])
        best = frontier["gold_reward"][0] - beta * frontier["kl"][0]
        objective = [(grid * reward[i]).sum(1) - beta * (grid * np.log(grid / ref[i])).sum(1) for i in range(2)]
        brute = (objective[0].max() + objective[1].max()) / 2  # the prompts' problems are separate
        assert brute <= best + 1e-12
        if close:
            assert brute >= best - 2e-3


def test_no_grid_policy_has_more_reward_than_the_frontier_at_its_kl_and_the_frontier_is_monotone():
    ref, reward = _problem()
    grid = _simplex(0.05)
    r = [(grid * reward[i]).sum(1) for i in range(2)]
    kl = [(grid * np.log(grid / ref[i])).sum(1) for i in range(2)]
    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(grid), size=(300, 2))  # random policies: one grid distribution per prompt
    for a, b in pick:
        policy_kl, policy_reward = (kl[0][a] + kl[1][b]) / 2, (r[0][a] + r[1][b]) / 2
        assert policy_reward <= optimal_reward_at_kl(ref, reward, policy_kl) + 1e-9
    frontier = kl_optimal_frontier(ref, reward)
    assert np.all(np.diff(frontier["kl"]) <= 1e-12) and np.all(np.diff(frontier["gold_reward"]) <= 1e-12)
    assert frontier["kl"][-1] == pytest.approx(0.0, abs=1e-6)  # β large: π_ref itself
    assert frontier["gold_reward"][-1] == pytest.approx(float((ref * reward).sum(1).mean()), abs=1e-4)  # β = 1000
    assert frontier["gold_reward"][0] == pytest.approx(float(reward.max(1).mean()), abs=1e-6)  # β → 0: the argmax
    assert optimal_reward_at_kl(ref, reward, 0.0) == pytest.approx(float((ref * reward).sum(1).mean()), abs=1e-9)


def test_the_best_of_n_kl_formula_bounds_the_exact_kl_and_matches_it_for_many_distinct_rewards():
    """On M equiprobable atoms with distinct rewards, best-of-n puts (k/M)^n − ((k−1)/M)^n on the k-th smallest:
    its exact KL to the base stays at or below log n − (n−1)/n (Beirami et al. 2024) and reaches it as M grows."""
    for n in (1, 2, 4, 16, 64):
        for M, tolerance in ((50, 0.2), (20_000, 2e-3)):
            k = np.arange(1, M + 1)
            p = (k / M) ** n - ((k - 1) / M) ** n
            exact = float(np.sum(np.where(p > 0, p * np.log(p * M), 0.0)))
            assert exact <= best_of_n_kl(n) + 1e-9
            assert exact >= best_of_n_kl(n) - tolerance, (n, M)
    assert best_of_n_kl(1) == 0.0 and best_of_n_kl(256) == pytest.approx(math.log(256) - 255 / 256)
    with pytest.raises(ValueError, match="n >= 1"):
        best_of_n_kl(0)


def test_the_expected_maximum_is_the_mean_at_one_the_max_at_n_and_unbiased_in_between():
    rewards = np.array([[0.1, 0.7, 0.3, 0.9], [1.0, 0.0, 0.5, 0.5]])
    assert expected_max_of_n(rewards, 1) == pytest.approx(rewards.mean(1).mean())
    assert expected_max_of_n(rewards, 4) == pytest.approx(rewards.max(1).mean())
    # n = 2 of 4: the mean over the 6 pairs of their maximum, by hand for the first prompt (sorted .1 .3 .7 .9):
    # pairs' maxima .3 .7 .9 .7 .9 .9 -> 4.4 / 6; the second prompt (0 .5 .5 1): .5 .5 1 .5 1 1 -> 4.5 / 6
    assert expected_max_of_n(rewards, 2) == pytest.approx((4.4 / 6 + 4.5 / 6) / 2)
    # against the exact expectation of a discrete distribution: values 0..9 with P(v) ∝ v + 1
    values = np.arange(10.0)
    probs = (values + 1) / (values + 1).sum()
    cdf = np.cumsum(probs)
    n = 8
    exact = float(np.sum(values * (cdf ** n - np.concatenate([[0.0], cdf[:-1]]) ** n)))
    draws = np.random.default_rng(1).choice(values, p=probs, size=(400, 64))
    assert expected_max_of_n(draws, n) == pytest.approx(exact, abs=0.02)
    frontier = best_of_n_frontier(draws)
    assert frontier["n"] == [1, 2, 4, 8, 16, 32, 64] and np.all(np.diff(frontier["gold_reward"]) >= 0)
    with pytest.raises(ValueError, match="1 <= n <= 64"):
        expected_max_of_n(draws, 65)


def test_no_toy8x8_checkpoint_lies_above_its_worlds_exact_frontier(tmp_path):
    """Online GRPO with the gold reward and DPO on the fixed dataset, evaluated often: every evaluation's exact
    (eval/kl, eval/diagonal_mass) is at or below the frontier computed from the same world's π_ref."""
    from analysis.load import load_runs
    from gapstudy.config import compose
    from gapstudy.limits import compute_limit
    from gapstudy.runs import run

    base = ["world=toy8x8", f"paths.results={tmp_path}", "steps=60", "eval.every=5", "progress=false",
            "checkpoint_every=0", "save_checkpoint=false", "lr=0.01"]
    run([*base, "algo=grpo", "sync_every=1", "algo.beta=0.1"])
    run([*base, "algo=dpo", "algo.beta=0.1", "data=dataset", "data.path=${world.pairs_path}"])
    limit = compute_limit(compose(base), tmp_path)
    assert limit["kind"] == "kl_optimal"
    ref = np.array(limit["reference"])
    df = load_runs(tmp_path)
    rows = df.dropna(subset=["eval/kl", "eval/diagonal_mass"])
    assert len(rows) >= 20 and rows["eval/diagonal_mass"].max() > 0.2  # the runs moved
    for kl, mass in zip(rows["eval/kl"], rows["eval/diagonal_mass"]):
        assert mass <= optimal_reward_at_kl(ref, np.eye(8), kl) + 1e-5
    # the figure draws that frontier (a line of 241 β values) and every checkpoint of both arms below it
    from analysis.figures.limits import gold_vs_kl, limit_excess

    limits = {"curves": [limit]}
    assert limit_excess(df, limits, "eval/diagonal_mass") <= 1e-5
    figure = gold_vs_kl(df, limits=limits)
    lines = [line for line in figure.axes[0].get_lines() if line.get_label().startswith("optimum")]
    assert len(lines) == 1 and len(lines[0].get_xdata()) > 200
    assert figure.axes[0].get_ylabel().startswith("gold reward (exact")
    broken = {"curves": [{**limit, "gold_reward": [g - 0.5 for g in limit["gold_reward"]]}]}  # a frontier too low
    assert limit_excess(df, broken, "eval/diagonal_mass") > 0.1


def test_limits_command_writes_one_curve_per_world_of_the_suite(tmp_path, capsys):
    import json

    from gapstudy.cli import main

    main(["limits", "suite=toy8x8", "profile=quick", f"paths.results={tmp_path}", "world.pretrain_steps=50"])
    data = json.loads((tmp_path / "toy8x8" / "limits-quick.json").read_text())
    assert data["suite"] == "toy8x8" and data["profile"] == "quick"
    (curve,) = data["curves"]  # quick: the world's default build seed only
    assert curve["kind"] == "kl_optimal" and curve["build_seed"] == 0 and len(curve["kl"]) == len(curve["beta"])
    assert "kl_optimal frontier" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["limits", "profile=quick"])
    assert exit_info.value.code == 2
