"""world=toy8x8 (Xu et al.'s 8×8 toy): π_ref is a proper, prompt-dependent distribution off the diagonal; the fixed
dataset covers exactly the documented cells; the evaluator's exact masses are the brute-force softmax over the 8
responses; no special or prompt token ever gets mass."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from gapstudy.config import ConfigError, compose
from gapstudy.runs import validate
from gapstudy.worlds import build_world
from gapstudy.worlds.toy8x8 import (PROMPT_IDS, RESPONSE_IDS, SIZE, pair_rows, reference_table, rejected_responses,
                                    response_probabilities, uncovered_cells)

DATASET = "data.path=${world.pairs_path}"
# derived here from the documented layout, not from the module: for k = 2, prompt i's pairs set r_i against r_{i+1}
# and r_{i+2} (mod 8); every other response of prompt i is uncovered
UNCOVERED = np.array([[(j - i) % 8 not in (0, 1, 2) for j in range(8)] for i in range(8)])
REJECTED = np.array([[(j - i) % 8 in (1, 2) for j in range(8)] for i in range(8)])


@pytest.fixture(scope="module")
def toy(results):
    cfg = validate(compose(["world=toy8x8", f"paths.results={results}"]))
    world = build_world(cfg, results)
    from gapstudy.runtime import load_policy

    return cfg, world, load_policy(world.policy_path, "cpu")


def test_reference_is_a_prompt_dependent_distribution_off_the_diagonal(toy):
    cfg, world, policy = toy
    table = np.load(world.policy_path / "reference_table.npy")
    assert table.shape == (SIZE, SIZE) and (table > 0).all()
    assert np.allclose(table.sum(1), 1.0)
    assert np.allclose(np.diag(table), 0.1)  # world.ref_diagonal_mass
    assert (table.argmax(1) != np.arange(SIZE)).all()  # the optimum is never π_ref's mode
    aligned = np.stack([np.roll(row, -i) for i, row in enumerate(table)])  # row i seen from the diagonal
    assert np.ptp(aligned, axis=0).max() > 0.1  # prompts differ even relative to their own diagonal
    assert np.allclose((table * REJECTED).sum(1), 0.6)  # world.ref_rejected_mass on the 2 rejected responses
    assert np.allclose((table * UNCOVERED).sum(1), 0.3)  # 1 - diagonal - rejected mass on the 5 uncovered ones
    assert (uncovered_cells(2) == UNCOVERED).all()
    # the warm-started policy *is* that table, and the prompt tokens and <pad> get exactly no mass
    probs = response_probabilities(policy).numpy()
    assert np.abs(probs - table).max() < 0.01
    logits = policy(torch.tensor([[p, RESPONSE_IDS[0]] for p in PROMPT_IDS])).logits[:, 0]
    full = torch.softmax(logits, -1)
    blocked = [t for t in range(full.shape[1]) if t not in RESPONSE_IDS]
    assert full[:, blocked].max().item() == 0.0
    assert reference_table(2, 0.1, 0.6, 2.0, 0).tolist() == table.tolist()  # a pure function of the settings


def test_samples_are_single_response_tokens_and_gold_is_the_diagonal(toy):
    from gapstudy.generation import left_pad, sample

    _, world, policy = toy
    prompts, mask = left_pad(world.train_prompts, world.pad_token_id)
    s = sample(policy, prompts, mask, 256, torch.Generator().manual_seed(0), world.max_new_tokens, 1.0,
               world.eos_token_id, world.pad_token_id)
    assert s.responses.shape == (SIZE * 256, 1) and bool(s.response_mask.all())
    assert set(s.responses.flatten().tolist()) <= set(RESPONSE_IDS)
    gold = world.gold(s.prompts, s.prompt_mask, s.responses, s.response_mask, None)
    words = world.tokenizer.convert_ids_to_tokens  # "p3" and "r3": the diagonal by name
    expected = torch.tensor([float(p[1:] == r[1:]) for p, r in zip(words(s.prompts[:, -1].tolist()),
                                                                     words(s.responses[:, 0].tolist()))])
    assert torch.equal(gold, expected)
    assert 0.05 < float(gold.mean()) < 0.15  # π_ref's diagonal mass is 0.1


def test_the_dataset_covers_exactly_the_documented_cells_with_bradley_terry_labels(toy):
    from gapstudy.data.preference import read_preference_rows

    cfg, world, _ = toy
    path = Path(cfg.world.pairs_path)
    assert path.name == "toy8x8-pairs-k2-n15-s1.0.jsonl" and path.parent.name == ".cache"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == pair_rows(2, 15, 1.0) and len(rows) == SIZE * 2 * 15
    # the file against the documented dataset, built here from token names: for each prompt p_i and each of
    # r_{i+1}, r_{i+2} (mod 8), 15 rows of which round(15 * sigmoid(1)) = round(10.97) = 11 prefer r_i
    ids = world.tokenizer.convert_tokens_to_ids
    expected = Counter()
    for i in range(8):
        for j in ((i + 1) % 8, (i + 2) % 8):
            p, best, other = ids(f"p{i}"), ids(f"r{i}"), ids(f"r{j}")
            expected[((p,), (best,), (other,), 1.0, 0.0)] += 11
            expected[((p,), (other,), (best,), 0.0, 1.0)] += 4
    assert Counter((tuple(r["prompt"]), tuple(r["chosen"]), tuple(r["rejected"]), r["chosen_reward"],
                    r["rejected_reward"]) for r in rows) == expected
    covered = np.zeros((SIZE, SIZE), dtype=bool)
    for row in rows:
        i = row["prompt"][0] - PROMPT_IDS[0]
        pair = sorted(r[0] - RESPONSE_IDS[0] for r in (row["chosen"], row["rejected"]))
        assert i in pair  # every pair sets the diagonal response against another
        covered[i, pair] = True
    assert (covered == ~UNCOVERED).all()
    assert [sorted(np.flatnonzero(covered[i]).tolist()) for i in range(2)] == [[0, 1, 2], [1, 2, 3]]
    for i in range(SIZE):
        for j in rejected_responses(i, 2):
            cell = [r for r in rows if r["prompt"] == [PROMPT_IDS[i]] and RESPONSE_IDS[j] in r["chosen"] + r["rejected"]]
            wins = sum(r["chosen"] == [RESPONSE_IDS[i]] for r in cell)
            assert (len(cell), wins) == (15, 11)  # round(15 * sigmoid(1)) prefer the diagonal
    # data=dataset reads it as pair rows of token ids, as the DPO arm does
    read = read_preference_rows(compose(["world=toy8x8", "data=dataset", f"data.path={path}"]).data,
                                world.tokenizer, world.eos_token_id)
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in read] == \
        [(r["prompt"], r["chosen"], r["rejected"]) for r in rows]


def test_exact_masses_match_a_brute_force_softmax_over_the_8_responses(toy):
    from gapstudy.evaluation import Evaluator
    from gapstudy.logprobs import token_logps
    from gapstudy.runtime import frozen

    cfg, world, policy = toy
    anchor = frozen(policy)
    moved = frozen(policy)
    with torch.no_grad():  # a policy away from π_ref
        torch.manual_seed(0)
        for p in moved.parameters():
            p.add_(0.3 * torch.randn_like(p))

    def brute(model) -> torch.Tensor:  # π(r_j | p_i) from the log-prob of each of the 64 full sequences
        prompts = torch.tensor([[p] for p in PROMPT_IDS for _ in RESPONSE_IDS])
        responses = torch.tensor([[r] for _ in PROMPT_IDS for r in RESPONSE_IDS])
        with torch.no_grad():
            logps = token_logps(model, prompts, None, responses, torch.ones_like(responses, dtype=torch.bool))
        return logps.exp().view(SIZE, SIZE)

    p, q = brute(moved), brute(anchor)
    assert torch.allclose(p.sum(1), torch.ones(SIZE), atol=1e-5)  # the 8 responses hold all the mass
    uncovered = torch.from_numpy(UNCOVERED)
    expected = {"eval/diagonal_mass": p.diagonal().mean(), "eval/diagonal_mass_ref": q.diagonal().mean(),
                "eval/uncovered_mass": (p * uncovered).sum(1).mean(),
                "eval/uncovered_mass_ref": (q * uncovered).sum(1).mean(),
                "eval/uncovered_raised": (p[uncovered] > q[uncovered]).float().mean()}
    metrics = Evaluator(cfg, world, anchor, anchor)(moved, 0)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(float(value), abs=1e-5), key
    assert metrics["eval/uncovered_mass"] != pytest.approx(metrics["eval/uncovered_mass_ref"], abs=1e-3)


def test_validation_writes_the_dataset_an_arm_names_and_rejects_bad_settings(tmp_path):
    overrides = ["world=toy8x8", f"paths.results={tmp_path}", "data=dataset", DATASET]
    cfg = validate(compose(overrides))  # the file did not exist: validation writes it before checking data.path
    assert Path(cfg.data.path) == tmp_path / ".cache" / "toy8x8-pairs-k2-n15-s1.0.jsonl"
    assert Path(cfg.data.path).exists()
    assert not list(tmp_path.glob(".cache/toy8x8-[!p]*"))  # ... and built no policy
    validate(compose(["world=toy8x8", f"paths.results={tmp_path / 'other'}"]))  # data=policy: nothing written
    assert not (tmp_path / "other").exists()
    for bad, needle in (("world.rejected_per_prompt=7", "rejected_per_prompt=7 is invalid"),
                        ("world.ref_rejected_mass=0.95", "are invalid"),
                        ("world.pairs_per_cell=0", "pairs_per_cell=0 is invalid")):
        with pytest.raises(ConfigError, match=needle):
            validate(compose([*overrides, bad]))


def test_the_quick_suite_moves_the_masses_as_the_arms_should(tmp_path):
    """The whole quick profile (three arms, 200 steps each) in a few seconds."""
    from experiments import SUITES
    from experiments.plan import plan
    from experiments.schedule import run_suite

    extra = ["progress=false", "checkpoint_every=0", "save_checkpoint=false"]
    status = run_suite(SUITES["toy8x8"], "quick", [0], None, extra, None, 1, tmp_path, log=lambda line: None)
    assert set(status.values()) == {"done"}, status
    finals = {job.arm: json.loads((job.run_dir / "final.json").read_text())
              for job in plan(SUITES["toy8x8"], "quick", [0], None, extra, None, tmp_path)}
    for final in finals.values():
        assert final["eval/diagonal_mass_ref"] == pytest.approx(0.1, abs=0.01)
        assert final["eval/uncovered_mass_ref"] == pytest.approx(0.3, abs=0.01)
    assert finals["ppo_kl"]["eval/diagonal_mass"] > 0.5  # on-policy sampling with the gold reward finds the optimum
    assert finals["dpo_online"]["eval/diagonal_mass"] > 0.5
    assert finals["dpo_offline"]["eval/diagonal_mass"] > 0.1  # the dataset's chosen responses did gain mass
