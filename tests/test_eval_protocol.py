"""Evaluation without a winner's curse: log-spaced evaluation steps, two disjoint halves of the held-out prompts,
Tang et al.'s chosen log-ratio on fixed gold-labelled SFT pairs, and a KL-matched frontier that selects on one half
and reports the other."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from conftest import crash_then_resume, series, train_run

# ---------------------------------------------------------------------------------------------------------------
# 1. the evaluation schedule


def _eval(every, log_spaced):
    return OmegaConf.create({"every": every, "log_spaced": log_spaced})


def test_log_spaced_evaluation_steps_are_zero_the_powers_of_two_the_grid_and_the_end():
    from gapstudy.loop import eval_steps

    assert sorted(eval_steps(_eval(25, True), 100)) == [0, 1, 2, 4, 8, 16, 25, 32, 50, 64, 75, 100]
    assert sorted(eval_steps(_eval(25, True), 64)) == [0, 1, 2, 4, 8, 16, 25, 32, 50, 64]  # 64 is the end
    assert sorted(eval_steps(_eval(10, True), 13)) == [0, 1, 2, 4, 8, 10, 13]
    assert sorted(eval_steps(_eval(0, True), 20)) == [0, 1, 2, 4, 8, 16, 20]  # every=0: powers of two only
    # off (the default): the grid as before, step 0 and the end
    assert sorted(eval_steps(_eval(25, False), 100)) == [0, 25, 50, 75, 100]
    assert sorted(eval_steps(_eval(0, False), 7)) == [0, 7]
    assert sorted(eval_steps(OmegaConf.create({"every": 4}), 9)) == [0, 4, 8, 9]  # a config without the key


def test_log_spaced_defaults_to_off_and_is_declared_in_the_schema():
    from gapstudy.config import compose, validate

    assert validate(compose([])).eval.log_spaced is False
    assert validate(compose(["eval.log_spaced=true"])).eval.log_spaced is True
    with pytest.raises(Exception, match="log_spaced"):
        validate(compose(["eval.log_spaced=3"]))


def test_the_loop_evaluates_at_the_log_spaced_steps_and_a_resumed_run_matches(results, monkeypatch):
    """A crash at step 7 resumes from the step-4 checkpoint: the evaluations at 4 (log) and 6 (grid) are redone,
    never duplicated, and every logged value equals the uninterrupted run's."""
    common = ["steps=10", "eval.every=3", "eval.log_spaced=true", "batch_size=8", "checkpoint_every=4", "seed=5"]
    root = results / "log_spaced"
    _, _, whole = train_run(root, common + ["paths.results=" + str(root / "whole")])
    evaluated = [r["step"] for r in whole if "eval/kl" in r]
    assert evaluated == [0, 1, 2, 3, 4, 6, 8, 9, 10]
    _, resumed = crash_then_resume(root, common + ["paths.results=" + str(root / "crashed")], 7, monkeypatch)
    assert [r["step"] for r in resumed] == [r["step"] for r in whole]
    for key in ("eval/kl", "eval/win_rate", "eval/win_rate_a", "eval/win_rate_b", "train/loss"):
        assert series(resumed, key) == pytest.approx(series(whole, key), rel=1e-6, abs=1e-7), key


# ---------------------------------------------------------------------------------------------------------------
# 2. and 3. the Evaluator's halves and held-out log-ratios, on a hand-made world

VOCAB, EOS, LENGTH = 4, 3, 3


def _lm(seed: int):
    from gapstudy.model import TinyGPTConfig, TinyGPTForCausalLM

    torch.manual_seed(seed)
    model = TinyGPTForCausalLM(TinyGPTConfig(vocab_size=VOCAB, n_positions=8, n_embd=16, n_layer=1, n_head=2))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.6)
    return model.eval()


def _world(prompts, tasks, gold):
    return SimpleNamespace(eval_prompts=prompts, eval_tasks=tasks, tasks=tuple(dict.fromkeys(tasks)), pad_token_id=0,
                           eos_token_id=EOS, max_new_tokens=LENGTH, binary_tasks=frozenset(), extra_metrics=None,
                           gold=gold)


@torch.no_grad()
def test_the_halves_are_the_even_and_odd_positions_among_the_evaluated_prompts():
    """8 prompts, tasks x y x y ...; eval.tasks=[x] keeps original rows 0 2 4 6, at positions 0 1 2 3. The gold
    reward is 0 while the baseline is scored at start-up, then 1 on the marked prompts (last token 2: rows 0 and 4)
    and 0 elsewhere, so the policy wins marked prompts (1) and ties the rest (1/2). Half a = positions 0, 2 = rows
    0, 4: win rate 1; half b = rows 2, 6: 1/2; all: 3/4. Halves by original index would put every x row in a."""
    from gapstudy.evaluation import Evaluator

    phase = {"scoring": False}

    def gold(prompts, prompt_mask, responses, response_mask, tasks):
        return (prompts[:, -1] == 2).float() if phase["scoring"] else torch.zeros(len(responses))

    marked = {0, 4}
    world = _world([[1, 2] if i in marked else [1, 1] for i in range(8)], ["x", "y"] * 4, gold)
    cfg = OmegaConf.create({"eval": {"prompts": 8, "tasks": ["x"]}, "seed": 0, "temperature": 1.0})
    q = _lm(1)
    evaluator = Evaluator(cfg, world, q, q)
    phase["scoring"] = True
    m = evaluator(_lm(0), step=0)
    assert m["eval/win_rate"] == 0.75
    assert m["eval/win_rate_a"] == 1.0 and m["eval/win_rate_b"] == 0.5
    # odd counts: 3 evaluated prompts -> a = positions 0, 2 and b = position 1
    cfg3 = OmegaConf.create({"eval": {"prompts": 3, "tasks": None}, "seed": 0, "temperature": 1.0})
    world3 = _world([[1, 2], [1, 1], [1, 1]], ["x"] * 3, gold)
    phase["scoring"] = False
    evaluator = Evaluator(cfg3, world3, q, q)
    phase["scoring"] = True
    m = evaluator(_lm(0), step=0)
    assert m["eval/win_rate_a"] == 0.75 and m["eval/win_rate_b"] == 0.5
    assert m["eval/win_rate"] == pytest.approx((2 * m["eval/win_rate_a"] + m["eval/win_rate_b"]) / 3)


def _first_token_gold(prompts, prompt_mask, responses, response_mask, tasks):
    return responses[:, 0].float()  # a response-dependent gold reward, so anchor pairs are mostly decided


@torch.no_grad()
def test_heldout_logratios_are_on_fixed_gold_labelled_anchor_pairs():
    """eval/heldout_chosen_logratio = mean over the start-up anchor pairs of log pi(chosen) - log pi_anchor(chosen),
    chosen by gold; recomputed here from the pairs with the gold labels redone. It is the same at every step
    (fixed pairs, not the policy's own samples), does not depend on the policy the pairs were drawn for, and is 0
    at the anchor."""
    from gapstudy.evaluation import Evaluator
    from gapstudy.logprobs import gather_logps, response_logits

    n = 64
    world = _world([[1, 2]] * n, ["x"] * n, _first_token_gold)
    cfg = OmegaConf.create({"eval": {"prompts": n, "tasks": None}, "seed": 3, "temperature": 1.0})
    anchor, policy = _lm(1), _lm(0)
    evaluator = Evaluator(cfg, world, anchor, anchor)
    at_0, at_9 = evaluator(policy, step=0), evaluator(policy, step=9)

    pairs = evaluator.class_pairs  # two anchor samples per prompt, rows 2i and 2i+1
    gold = _first_token_gold(None, None, pairs.responses, None, None).view(-1, 2)
    decided = gold[:, 0] != gold[:, 1]
    assert 10 < int(decided.sum()) < n  # some pairs tie and are dropped, most are kept
    first = torch.arange(0, 2 * n, 2)
    chosen = torch.where(gold[:, 0] > gold[:, 1], first, first + 1)[decided]
    rejected = torch.where(gold[:, 0] > gold[:, 1], first + 1, first)[decided]

    def seq_logps(model):
        logits = response_logits(model, pairs.prompts, pairs.prompt_mask, pairs.responses)
        return gather_logps(logits, pairs.responses, pairs.response_mask).sum(-1)

    ratio = seq_logps(policy) - seq_logps(anchor)
    assert at_0["eval/heldout_chosen_logratio"] == pytest.approx(float(ratio[chosen].mean()), rel=1e-5)
    assert at_0["eval/heldout_rejected_logratio"] == pytest.approx(float(ratio[rejected].mean()), rel=1e-5)
    assert abs(at_0["eval/heldout_chosen_logratio"]) > 0.1  # the two models differ: not a vacuous 0
    for key in ("eval/heldout_chosen_logratio", "eval/heldout_rejected_logratio"):
        assert at_9[key] == at_0[key]  # fixed pairs: the step changes the policy's samples, not these
    assert at_9["eval/kl"] != at_0["eval/kl"]
    # the same pairs for every arm: another evaluator of the same seed and anchor draws them again exactly
    again = Evaluator(cfg, world, anchor, anchor)
    assert torch.equal(again.class_pairs.responses, pairs.responses)
    at_anchor = evaluator(anchor, step=0)
    assert at_anchor["eval/heldout_chosen_logratio"] == 0.0 and at_anchor["eval/heldout_rejected_logratio"] == 0.0


def test_the_new_keys_are_in_the_vocabulary():
    from gapstudy.metrics import KEYS

    for key in ("eval/win_rate_a", "eval/win_rate_b", "eval/heldout_chosen_logratio",
                "eval/heldout_rejected_logratio"):
        assert KEYS[key]


# ---------------------------------------------------------------------------------------------------------------
# 4. the KL-matched frontier: select on one half, report the other

# one arm, one seed; checkpoints (kl, a, b) in KL order:
#   (0, .50, .50) (1, .70, .55) (2, .60, .90) (3, .70, .40) (5, .80, .60)
HALVES = pd.DataFrame([("on", 0, 3.0, .70, .40), ("on", 0, 0.0, .50, .50), ("on", 0, 2.0, .60, .90),
                       ("on", 0, 1.0, .70, .55), ("on", 0, 5.0, .80, .60)],
                      columns=["arm", "seed", "eval/kl", "eval/win_rate_a", "eval/win_rate_b"])


def test_the_frontier_selects_on_half_a_and_reports_half_b_at_that_checkpoint():
    """Budget 0.5: only KL 0 -> b = .50. Budget 2.5: a's best is .70 at KL 1 -> b = .55, though b's best under
    the budget is .90 (KL 2). Budget 3: KL 1 and 3 tie at a = .70, the first in KL order wins -> .55 (not .40).
    Budget 10: a's best .80 at KL 5 -> .60. Without report=: a's own running maximum, as before."""
    from analysis.kl_match import best_under_budget

    budgets = [0.5, 2.5, 3.0, 10.0]
    best = best_under_budget(HALVES, budgets, y="eval/win_rate_a", report="eval/win_rate_b")
    assert best["best"].tolist() == pytest.approx([.50, .55, .55, .60])
    assert best["n_points"].tolist() == [1, 3, 4, 5]
    assert best_under_budget(HALVES, budgets, y="eval/win_rate_a")["best"].tolist() == pytest.approx(
        [.50, .70, .70, .80])
    assert best_under_budget(HALVES, budgets, y="eval/win_rate_b")["best"].tolist() == pytest.approx(
        [.50, .90, .90, .90])  # a running max of b would be the winner's curse


def test_selection_never_sees_the_report_column():
    """Permute half b's values across checkpoints: the selected checkpoints (by a) are the same, so each reported
    value is the permuted b at the same checkpoint, whatever b holds."""
    from analysis.kl_match import best_under_budget

    budgets = [0.5, 1.5, 2.5, 4.0, 10.0]
    base = best_under_budget(HALVES, budgets, y="eval/win_rate_a", report="eval/win_rate_b")["best"].to_numpy()
    at_kl = dict(zip(HALVES["eval/kl"], HALVES["eval/win_rate_b"]))
    selected_kl = [[k for k, v in at_kl.items() if v == b][0] for b in base]  # b's values are distinct
    assert selected_kl == [0.0, 1.0, 1.0, 1.0, 5.0]
    rng = np.random.default_rng(0)
    for _ in range(10):
        permuted = HALVES.assign(**{"eval/win_rate_b": rng.permutation(HALVES["eval/win_rate_b"].to_numpy())})
        got = best_under_budget(permuted, budgets, y="eval/win_rate_a", report="eval/win_rate_b")["best"].tolist()
        lookup = dict(zip(permuted["eval/kl"], permuted["eval/win_rate_b"]))
        assert got == pytest.approx([lookup[k] for k in selected_kl])


def test_kl_matched_passes_report_through():
    from analysis.kl_match import kl_matched

    two_seeds = pd.concat([HALVES, HALVES.assign(seed=1, **{"eval/win_rate_b": HALVES["eval/win_rate_b"] - .1})])
    table = kl_matched(two_seeds, [2.5], y="eval/win_rate_a", report="eval/win_rate_b", n_boot=200)
    assert table.loc[0, "mean"] == pytest.approx((.55 + .45) / 2)
    assert table.loc[0, "n_seeds"] == 2
