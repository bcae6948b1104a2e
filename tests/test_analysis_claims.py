"""analysis.claims: verdicts follow the data (and analysis.report writes them). Synthetic suites (analysis.synthetic) are built with the
papers' effects (defaults), with the effects reversed (quality overrides), and with arms or seeds missing."""
import math

import numpy as np
import pandas as pd
import pytest

from analysis.claims import CLAIMS, CLAIMS_BY_NUMBER, decide, evaluate
from analysis.claims.rules import INCONCLUSIVE, NOT_REPRODUCED
from analysis.load import load_runs
from analysis.report import markdown_table, overview, report
from analysis.synthetic import fake_suite
from experiments import SUITES

BY_KEY = CLAIMS_BY_NUMBER  # claims by number, checks outside the numbering by their key


def _seeds(suite) -> range:
    """As many seeds as the suite's rules need (rules.yaml's min_seeds: 5, or 10 for a suite holding a null)."""
    return range(max([c.rule.min_seeds for c in CLAIMS if c.suite == suite] or [5]))


def _frame(tmp_path, suite, seeds=None, **kwargs):
    fake_suite(tmp_path, suite, seeds=_seeds(suite) if seeds is None else seeds, steps=100, eval_every=10,
               train_every=5, **kwargs)
    return load_runs(tmp_path, suite=suite)


def _verdict(df, number):
    return decide(BY_KEY[number], df)


@pytest.fixture(scope="module")
def every_suite(tmp_path_factory):
    """Every suite with the generator's default effects (those of the papers), at the seed counts the rules need."""
    root = tmp_path_factory.mktemp("all")
    for suite in SUITES:
        fake_suite(root, suite, seeds=_seeds(suite), steps=100, eval_every=10, train_every=5)
    return load_runs(root)


_BANDIT = ("dpo", "ipo", "best_of_n", "reinforce")
_KL_ARMS = ("online_ipo", "offline_ipo", "offline_ipo_golden", "online_dpo", "offline_dpo")
_WINDOWS = ("window_1", "window_4", "window_32", "window_256", "window_all")
_LATE = ("sft_vs_mid", "sft_vs_final", "mid_vs_final", "final_vs_final")
NOT = {NOT_REPRODUCED}  # the effect reversed: the rule must contradict the claim
NOT_OR_UNSURE = {NOT_REPRODUCED, INCONCLUSIVE}  # the effect removed: anything but reproduced
# (claim, suite, fake_suite overrides that remove or reverse the claim's effect, verdicts allowed without it)
FLIPS = [
    pytest.param(1, "kl_budget", {"quality": {"online_ipo": 0.5, "offline_ipo": 1.0, "offline_ipo_golden": 1.0,
                                              "online_dpo": 0.5, "offline_dpo": 1.0}}, NOT, id="1-offline-better"),
    pytest.param(1, "kl_budget", {"quality": dict.fromkeys(_KL_ARMS, 1.0)}, NOT_OR_UNSURE, id="1-equal"),
    pytest.param(2, "kl_budget", {"effects": {"overoptimisation": 0.0}}, NOT, id="2-gold-keeps-rising"),
    pytest.param(3, "data_coverage", {"faithful_replay": False}, NOT, id="3-replay-is-another-run"),
    pytest.param(3, "data_coverage", {"effects": {"replay_drift": 0.1}}, NOT, id="3-replay-drifts-10pct"),
    pytest.param(3, "data_coverage", {"quality": {"replay_original": 0.7}}, NOT, id="3-replay-worse"),
    pytest.param(4, "data_coverage", {"quality": {"replay_shuffled": 1.4}}, NOT, id="4-shuffled-better"),
    pytest.param(4, "data_coverage", {"quality": {"replay_shuffled": 1.0}}, NOT_OR_UNSURE, id="4-shuffled-equal"),
    pytest.param(5, "shuffle_degree", {"quality": dict(zip(_WINDOWS, (0.6, 0.7, 0.85, 0.97, 1.0)))}, NOT,
                 id="5-larger-window-better"),
    pytest.param(5, "shuffle_degree", {"quality": dict.fromkeys(_WINDOWS, 0.8)}, NOT_OR_UNSURE, id="5-no-trend"),
    pytest.param("check_window_1", "shuffle_degree", {"faithful_replay": False}, NOT, id="check-window-1-another-run"),
    pytest.param("check_window_1", "shuffle_degree", {"quality": {"window_1": 0.7}}, NOT, id="check-window-1-worse"),
    pytest.param(6, "suboptimal_data", {"quality": {"final_vs_final": 0.9}}, NOT, id="6-final-pairs-nearly-online"),
    pytest.param(6, "suboptimal_data", {"quality": {"final_vs_final": 0.5}}, NOT, id="6-final-pairs-half-online"),
    pytest.param(6, "suboptimal_data", {"quality": {"final_vs_final": -0.3}}, NOT, id="6-final-pairs-below-sft"),
    pytest.param(7, "suboptimal_data", {"quality": dict(zip(_LATE, (0.2, 0.2, 0.8, 0.8)))}, NOT, id="7-late-better"),
    pytest.param(7, "suboptimal_data", {"quality": dict.fromkeys(_LATE, 0.5)}, NOT_OR_UNSURE, id="7-equal"),
    pytest.param(8, "kl_budget", {"effects": {"classification_gap": -0.16}}, NOT, id="8-online-classifies-better"),
    pytest.param(8, "kl_budget", {"effects": {"classification_gap": 0.0}}, NOT_OR_UNSURE, id="8-no-gap"),
    pytest.param(9, "kl_budget", {"effects": {"accuracy_tracks_win_rate": 1.0}}, NOT, id="9-accuracy-predicts"),
    pytest.param(10, "kl_budget", {"effects": {"chosen_logratio_fall": -1.0}}, NOT, id="10-logratio-rises"),
    pytest.param(10, "kl_budget", {"effects": {"chosen_logratio_fall": 0.0}}, NOT_OR_UNSURE, id="10-logratio-flat"),
    pytest.param(11, "kl_budget", {"effects": {"proxy_accuracy_decay": -0.15}}, NOT, id="11-proxy-accuracy-rises"),
    pytest.param(11, "kl_budget", {"effects": {"proxy_accuracy_decay": 0.0}}, NOT_OR_UNSURE, id="11-proxy-flat"),
    pytest.param(12, "best_of_2", {"quality": {"bo2_shuffled": 0.5}}, NOT, id="12-shuffled-as-offline"),
    pytest.param(12, "best_of_2", {"quality": {"bo2_online": 0.5}}, NOT, id="12-online-as-offline"),
    pytest.param(13, "bandit", {"quality": {f"{a}_offline_R1": 1.0 for a in _BANDIT}}, NOT, id="13-no-R1-gap"),
    pytest.param(13, "bandit", {"quality": {f"{a}_offline_R2": 0.25 for a in _BANDIT}}, NOT, id="13-R2-gap-as-R1"),
    pytest.param(13, "bandit", {"quality": {"ipo_offline_R2": 0.5}}, NOT, id="13-one-algorithm-R2-gap"),
    pytest.param(14, "sample_reuse", {"quality": {"T1_R1": 0.35, "T8_R1": 1.0, "T8_R2": 0.3}}, NOT,
                 id="14-reuse-hurts-R2"),
    pytest.param(14, "sample_reuse", {"quality": {f"T{t}_R{r}": 1.0 for t in (1, 2, 4, 8) for r in (1, 2)}},
                 NOT_OR_UNSURE, id="14-reuse-harmless"),
    pytest.param(15, "sync_period", {"quality": {"math_sinf": 1.0, "chat_sinf": 1.0}}, NOT, id="15-offline-as-online"),
    pytest.param(15, "sync_period", {"quality": {"math_grpo": 0.5, "chat_grpo": 0.6}}, NOT, id="15-grpo-as-offline"),
    pytest.param(16, "sync_period", {"effects": {"entropy_fall": -0.6}}, NOT, id="16-entropy-rises"),
    pytest.param(16, "sync_period", {"effects": {"entropy_fall": 0.0}}, NOT_OR_UNSURE, id="16-entropy-flat"),
    pytest.param(16, "sync_period", {"effects": {"no_ref_sync_shortening": -0.5}}, NOT, id="16-no-sync-longer"),
    pytest.param(16, "sync_period", {"effects": {"no_ref_sync_shortening": 0.1}}, NOT, id="16-no-sync-only-10pct-shorter"),
    pytest.param(17, "curriculum", {"quality": {"nv_then_v": 0.1}}, NOT, id="17-order-reversed"),
    pytest.param(17, "curriculum", {"quality": {"mixed": 0.1}}, NOT, id="17-mixed-forgets"),
    pytest.param(18, "toy8x8", {"quality": {"dpo_offline": -1.0}}, NOT, id="18-dpo-lowers-uncovered"),
    pytest.param(18, "toy8x8", {"quality": {"dpo_offline": 0.0}}, NOT_OR_UNSURE, id="18-dpo-leaves-uncovered"),
    pytest.param(18, "toy8x8", {"quality": {"ppo_kl": 0.3}}, NOT, id="18-ppo-misses-diagonal"),
]
DECIDED = [claim.number for claim in CLAIMS if claim.suite is not None]
# Claim 9 is a null decided by an equivalence band on a partial correlation within a seed: the generator's kl_budget
# holds 6 offline runs per seed, too few for the CI to land inside ±0.5 reliably (it may read inconclusive);
# tests/test_claims_rules.py reproduces it on a hand-built frame of 15 runs per seed.
REPRODUCED_BY_GENERATOR = [number for number in DECIDED if number != 9]


def test_every_decided_claim_has_a_case_without_its_effect():
    assert {case.values[0] for case in FLIPS} == set(DECIDED)


def test_evaluate_has_one_row_per_claim_holding_its_decision(every_suite):
    table = evaluate(every_suite)
    assert table["number"].tolist() == [1, 2, 3, 4, 5, "check_window_1", *range(6, 19)]
    for number, verdict in zip(table["number"], table["verdict"]):
        claim = CLAIMS_BY_NUMBER[number]
        assert verdict == decide(claim, every_suite[every_suite["suite"] == claim.suite]).verdict


@pytest.mark.parametrize("number", REPRODUCED_BY_GENERATOR)
def test_with_its_effect_each_claim_is_reproduced(every_suite, number):
    """The generator's defaults carry every paper's effect; the cases of FLIPS remove or reverse one at a time."""
    d = _verdict(every_suite[every_suite["suite"] == BY_KEY[number].suite], number)
    assert d.verdict == "reproduced", d
    assert d.n >= BY_KEY[number].rule.min_seeds


def test_claim_9_with_its_effect_is_not_contradicted(every_suite):
    d = _verdict(every_suite[every_suite["suite"] == "kl_budget"], 9)
    assert d.verdict in {"reproduced", INCONCLUSIVE} and d.n == 10 and "6 offline runs per seed" in d.explanation


@pytest.mark.parametrize("number, suite, without, allowed", FLIPS)
def test_without_its_effect_the_claim_is_not_reproduced(tmp_path, number, suite, without, allowed):
    d = _verdict(_frame(tmp_path, suite, **without), number)
    assert d.verdict in allowed, d


def test_the_replay_reuses_the_online_stream_only_when_it_is_faithful(tmp_path):
    """Faithful with no drift: the ordered replay is the online run number for number; unfaithful at the same quality:
    its own noise, so its values differ; faithful with drift: within the drift."""
    def records(name, **kwargs):
        df = _frame(tmp_path / name, "data_coverage", quality={"replay_original": 1.0}, **kwargs)
        columns = ["eval/win_rate", "eval/gold_reward", "train/loss", "train/chosen_logratio"]
        return [df[df["arm"] == arm].set_index(["seed", "step"])[columns] for arm in ("online", "replay_original")]

    online, replay = records("copy", effects={"replay_drift": 0.0})
    pd.testing.assert_frame_equal(online, replay)
    online, replay = records("own", faithful_replay=False)
    assert not np.allclose(online.to_numpy(), replay.to_numpy(), equal_nan=True)
    online, replay = records("drift", effects={"replay_drift": 1e-3})
    both = online.notna().to_numpy()
    ratio = replay.to_numpy()[both] / online.to_numpy()[both]
    assert np.all(np.abs(ratio - 1) < 1e-2) and not np.allclose(ratio, 1.0)


def test_unknown_effects_are_refused(tmp_path):
    with pytest.raises(KeyError, match="overoptimisation"):
        fake_suite(tmp_path, "kl_budget", effects={"overoptimization": 0.0})


def test_claim_1_online_beats_offline(every_suite):
    d = _verdict(every_suite[every_suite["suite"] == "kl_budget"], 1)
    assert d.verdict == "reproduced" and d.ci_low > 0 and d.value > 0
    assert "online ahead at 100% of budgets" in d.explanation


def test_claim_1_reversed_is_not_reproduced(tmp_path):
    df = _frame(tmp_path, "kl_budget", quality={"online_ipo": 0.5, "offline_ipo": 1.0, "offline_ipo_golden": 1.0,
                                                "online_dpo": 0.5, "offline_dpo": 1.0})
    d = _verdict(df, 1)
    assert d.verdict == "not reproduced" and d.ci_high < 0


def test_claim_1_missing_offline_arm_or_single_seed_is_inconclusive(tmp_path):
    df = _frame(tmp_path / "a", "kl_budget", drop_arms=("offline_ipo", "offline_ipo_golden", "offline_dpo"))
    d = _verdict(df, 1)
    assert d.verdict == "inconclusive" and "offline_ipo_golden" in d.explanation and math.isnan(d.value)
    one_seed = _frame(tmp_path / "b", "kl_budget", seeds=(0,))
    d = _verdict(one_seed, 1)
    assert d.verdict == "inconclusive" and d.value > 0 and math.isnan(d.ci_low)
    three = _verdict(_frame(tmp_path / "c", "kl_budget", seeds=(0, 1, 2)), 1)  # a CI, but fewer seeds than the rule's 5
    assert three.verdict == "inconclusive" and three.ci_low > 0 and three.n == 3
    assert three.explanation.startswith("3 seeds, the rule needs >= 5 (with these seeds the rule alone says reproduced)")


def test_claim_1_uses_the_dpo_pair_when_the_ipo_pair_is_incomplete(tmp_path):
    df = _frame(tmp_path, "kl_budget", drop_arms=("offline_ipo", "offline_ipo_golden"))
    d = _verdict(df, 1)
    assert d.verdict == "reproduced" and d.explanation.startswith("online DPO vs offline DPO")


def test_claim_1_is_decided_on_d_golden_when_it_ran(tmp_path):
    """Offline IPO on D_golden decides (Tang et al.'s comparison); unbounded offline IPO is the fallback and is
    reported beside it."""
    df = _frame(tmp_path / "a", "kl_budget", quality={"offline_ipo_golden": 1.2})  # D_golden beats online here
    d = _verdict(df, 1)
    assert d.verdict == "not reproduced" and d.explanation.startswith("online IPO vs offline IPO, D_golden")
    assert "online IPO − offline IPO:" in d.explanation
    without = _verdict(_frame(tmp_path / "b", "kl_budget", drop_arms=("offline_ipo_golden",)), 1)
    assert without.verdict == "reproduced" and without.explanation.startswith("online IPO vs offline IPO,")


def test_claims_of_a_suite_with_no_runs_are_inconclusive():
    empty = load_runs("/nonexistent-results-root")
    table = evaluate(empty, suite="kl_budget")
    assert set(table["number"]) == {1, 2, 8, 9, 10, 11}
    assert (table["verdict"] == "inconclusive").all()


def test_report_has_the_verdict_table_rules_missing_runs_and_figure_links(tmp_path):
    df = _frame(tmp_path, "best_of_2", drop_arms=("bo2_shuffled",))
    text = report(df, "best_of_2", figures=["final_win_rate"],
                  tables={"final_metrics": pd.DataFrame({"x": [1.0]}, index=pd.Index(["a"], name="arm"))})
    assert "| 12 | Best-of-2: online beats offline" in text
    assert "**inconclusive**" in text and "missing arms: bo2_shuffled" in text
    assert "## Decision rules" in text
    assert "- Best-of-2, shuffled log (`bo2_shuffled`), seed 0: missing" in text
    assert "![final_win_rate](../figures/best_of_2/final_win_rate.png)" in text
    assert "| arm | x |" in text and "Claims not covered by any suite: none." in text


def test_markdown_table_formats_numbers_and_nan():
    table = pd.DataFrame({"a": [0.12345, np.nan], "b": ["x|y", "z"]}, index=pd.Index(["r1", "r2"], name="row"))
    assert markdown_table(table).splitlines() == [
        "| row | a | b |", "|---|---|---|", "| r1 | 0.123 | x\\|y |", "| r2 | – | z |"]


def test_overview_lists_every_claim_with_its_verdict_or_not_run(tmp_path):
    fake_suite(tmp_path, "data_coverage")
    text = overview(load_runs(tmp_path))
    assert all(f"| {c.number} |" in text for c in CLAIMS)
    assert "| 1 | Online beats offline" in text and "not run |" in text  # kl_budget has no runs here
    assert text.count("**") >= 4  # claims 3 and 4 decided


def _toy_frame(dpo_uncovered, ppo_diagonal, seeds=(0, 1, 2, 3, 4), beta=0.1) -> pd.DataFrame:
    """A hand-built toy8x8 frame: per seed, each run's last two evaluations (the tail claim 18 averages) hold the
    given end values; π_ref holds 0.1 on the diagonal and 0.3 on the uncovered responses."""
    rows = []
    for arm, values in (("dpo_offline", dpo_uncovered), ("ppo_kl", ppo_diagonal)):
        for seed, value in zip(seeds, values):
            for step, current in ((0, None), (90, value - 0.01), (100, value + 0.01)):
                key = "eval/uncovered_mass" if arm == "dpo_offline" else "eval/diagonal_mass"
                start = 0.3 if arm == "dpo_offline" else 0.1
                rows.append({"suite": "toy8x8", "arm": arm, "seed": seed, "run_dir": f"{arm}/{seed}", "step": step,
                             "algo.beta": beta, key: start if current is None else current,
                             "eval/uncovered_mass_ref": 0.3, "eval/diagonal_mass_ref": 0.1})
    return pd.DataFrame(rows)


def test_claim_18_on_hand_set_numbers():
    """DPO's uncovered mass 0.45, 0.50, 0.48, 0.46, 0.49 against π_ref's 0.3 (mean difference 0.176), PPO's diagonal
    mass 0.90, 0.88, 0.91, 0.89, 0.90 against the threshold max(0.5, 0.1 + 0.2) = 0.5: reproduced (paired t over 5
    seeds: sd 0.0207, t(4, 0.975) = 2.776, half-width 0.0257)."""
    dpo, ppo = [0.45, 0.50, 0.48, 0.46, 0.49], [0.90, 0.88, 0.91, 0.89, 0.90]
    d = _verdict(_toy_frame(dpo, ppo), 18)
    assert d.verdict == "reproduced" and d.value == pytest.approx(0.476 - 0.3, abs=1e-3) and d.n == 5
    assert (d.ci_low, d.ci_high) == pytest.approx((0.176 - 0.0257, 0.176 + 0.0257), abs=1e-3)
    assert "DPO uncovered mass 0.476 vs π_ref 0.300" in d.explanation and "threshold 0.50" in d.explanation
    # DPO leaves the uncovered cells where π_ref had them (difference inside ±0.02): not reproduced
    d = _verdict(_toy_frame([0.30, 0.31, 0.295, 0.305, 0.30], ppo), 18)
    assert d.verdict == "not reproduced" and "no meaningful difference" in d.explanation
    # PPO stuck below half the mass on the diagonal: not reproduced, whatever DPO does
    d = _verdict(_toy_frame(dpo, [0.40, 0.42, 0.38, 0.41, 0.39]), 18)
    assert d.verdict == "not reproduced" and "PPO diagonal CI below 0.50" in d.explanation
    # one seed, three seeds (fewer than the rule's 5), or runs only at another β: inconclusive
    assert _verdict(_toy_frame([0.45], [0.9], seeds=(0,)), 18).verdict == "inconclusive"
    assert _verdict(_toy_frame(dpo[:3], ppo[:3], seeds=(0, 1, 2)), 18).verdict == "inconclusive"
    d = _verdict(_toy_frame(dpo, ppo, beta=0.3), 18)
    assert d.verdict == "inconclusive" and "missing arms: dpo_offline, ppo_kl" in d.explanation
