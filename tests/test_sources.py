"""Pair builder, shuffle windows, datasets in every accepted format, and the stock-transformers generate path."""
from __future__ import annotations

import json
import math
import random

import pytest
import torch

from conftest import train_run
from gapstudy.data.batches import collate
from gapstudy.data.pair_log import read_pair_log
from gapstudy.pairs import best_vs_worst, correct_vs_incorrect, select_pairs
from gapstudy.sources import shuffle_in_windows


def test_best_vs_worst_picks_the_extremes_and_skips_ties():
    rewards = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.3, 0.3], [0.7, 0.2, 0.4]])
    pairs, skipped = best_vs_worst(rewards)
    assert pairs == [(0, 1, 0), (2, 0, 1)] and skipped == 1


def test_correct_vs_incorrect_skips_prompts_where_all_agree():
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    pairs, skipped = correct_vs_incorrect(rewards, random.Random(0))
    assert skipped == 2 and [b for b, _, _ in pairs] == [0, 3]
    for b, i, j in pairs:
        assert rewards[b, i] == 1.0 and rewards[b, j] == 0.0
    assert pairs[1][1] == 2  # the only correct answer of prompt 3
    # mixed batches follow each prompt's kind
    mixed, skipped = select_pairs(torch.tensor([[1.0, 0.0], [0.2, 0.6]]), [True, False], random.Random(0))
    assert mixed == [(0, 0, 1), (1, 1, 0)] and skipped == 0


def batches_of(sizes):
    n = 0
    out = []
    for s in sizes:
        out.append([{"id": n + i} for i in range(s)])
        n += s
    return out


@pytest.mark.parametrize("window", [1, 2, 3, "all"])
def test_shuffle_windows_keep_sizes_and_mix_only_within_windows(window):
    batches = batches_of([4, 3, 4, 4, 2])
    shuffled = shuffle_in_windows(batches, window, random.Random(0))
    assert [len(b) for b in shuffled] == [4, 3, 4, 4, 2]
    assert sorted(r["id"] for b in shuffled for r in b) == list(range(17))
    w = 5 if window == "all" else window
    for start in range(0, 5, w):
        ids = lambda bs: sorted(r["id"] for b in bs[start:start + w] for r in b)
        assert ids(shuffled) == ids(batches)  # rows never leave their window
    for batch in shuffled:  # rows keep their log order inside a batch
        assert [r["id"] for r in batch] == sorted(r["id"] for r in batch)
    if window == 1:  # a one-batch window is the original order exactly
        assert shuffled == batches


def test_collate_pairs_and_groups():
    pairs = collate([{"prompt": [5], "chosen": [1, 2, 9], "rejected": [3], "chosen_reward": 1.0,
                      "rejected_reward": 0.0, "chosen_logps": None, "rejected_logps": None, "sampler_version": 2},
                     {"prompt": [6, 7], "chosen": [4], "rejected": [8, 8], "chosen_reward": 0.5,
                      "rejected_reward": 0.1, "chosen_logps": None, "rejected_logps": None, "sampler_version": 3}],
                    pad_token_id=0)
    assert pairs.n_pairs == 2
    assert pairs.prompts.tolist() == [[0, 5], [6, 7], [0, 5], [6, 7]]  # left-padded prompts
    assert pairs.prompt_mask.tolist() == [[0, 1], [1, 1], [0, 1], [1, 1]]
    assert pairs.responses.tolist() == [[1, 2, 9], [4, 0, 0], [3, 0, 0], [8, 8, 0]]
    assert pairs.response_mask.sum(-1).tolist() == [3, 1, 1, 2]
    assert pairs.sampler_version.tolist() == [2, 3, 2, 3] and pairs.group.tolist() == [0, 1, 0, 1]
    groups = collate([{"prompt": [5], "responses": [[1], [2, 3]], "rewards": [0.0, 1.0], "logps": [[-1.0], [-2.0, -3.0]],
                       "sampler_version": 0}], pad_token_id=0)
    assert groups.n_pairs == 0 and groups.group.tolist() == [0, 0]
    assert groups.sampler_logps.tolist() == [[-1.0, 0.0], [-2.0, -3.0]]


@pytest.fixture(scope="module")
def logged_run(results):
    run_dir, _, _ = train_run(results, ["steps=6", "eval.every=0", "batch_size=8", "seed=11"])
    return run_dir


def test_the_pair_log_is_a_datasets_dataset_with_the_trained_rows(logged_run):
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=str(logged_run / "pairs" / "*.parquet"), split="train")
    assert {"prompt", "chosen", "rejected", "chosen_reward", "rejected_reward", "sampler_version", "step"} <= set(ds.column_names)
    batches = read_pair_log(logged_run)
    assert len(batches) == 6 and sum(len(b) for b in batches) == len(ds)
    assert all(r["chosen_reward"] > r["rejected_reward"] for b in batches for r in b)


def test_dataset_source_reads_jsonl_parquet_text_and_datasets_folders(results, logged_run, tmp_path):
    from datasets import Dataset

    rows = [r for b in read_pair_log(logged_run) for r in b]
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps({"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}) + "\n"
                             for r in rows))
    text = tmp_path / "text.jsonl"  # text fields go through the world's tokenizer
    text.write_text("".join(json.dumps({"question": "t5", "good": "t70 " * 9, "bad": "t10 " * 9}) + "\n" for _ in range(8)))
    on_disk = tmp_path / "saved"
    Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]).save_to_disk(on_disk)
    for path, extra in [(jsonl, []), (logged_run / "pairs", []), (on_disk, []),
                        (text, ["data.prompt_field=question", "data.chosen_field=good", "data.rejected_field=bad"])]:
        _, final, records = train_run(results, ["data=dataset", f"data.path={path}", "steps=3", "eval.every=0",
                                                "batch_size=8", *extra])
        losses = [r["train/loss"] for r in records if "train/loss" in r]
        # the logger writes NaN as null: a loss must be a real, finite number
        assert len(losses) == 3 and [type(l) for l in losses] == [float] * 3, (path, losses)
        assert [math.isfinite(l) for l in losses] == [True] * 3, (path, losses)
        # no sampler of this run made a dataset's rows, not even a pair log's (its versions are another run's steps)
        assert [r["step"] for r in records if "gen/staleness" in r] == [], path


def test_stock_transformers_models_sample_through_generate(tmp_path):
    """Any causal LM without gapstudy's fast path samples through transformers' generate, loaded by path."""
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    from gapstudy.generation import left_pad, sample
    from gapstudy.logprobs import token_logps

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=12, n_positions=16, n_embd=16, n_layer=1, n_head=2)).save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    prompts, mask = left_pad([[1, 2, 3], [4]], pad_id=0)
    s = sample(model, prompts, mask, 3, torch.Generator().manual_seed(0), max_new_tokens=5, temperature=1.0,
               eos_token_id=11, pad_token_id=0)
    assert s.responses.shape == (6, 5) and s.prompts.shape == (6, 3)
    after_eos = (s.responses == 11).long().cumsum(-1) - (s.responses == 11).long() > 0
    assert not (s.response_mask & after_eos).any()
    again = token_logps(model, s.prompts, s.prompt_mask, s.responses, s.response_mask)
    torch.testing.assert_close(again, s.logps)
    s2 = sample(model, prompts, mask, 3, torch.Generator().manual_seed(0), 5, 1.0, 11, 0)
    assert torch.equal(s.responses, s2.responses)  # seeded by the run's generator: reproducible


def test_golden_is_exactly_the_pairs_the_proxy_learns_from(results):
    """data=golden (Tang et al.'s D_golden): the proxy's training pairs, gold-labelled, ties dropped; a run on it
    trains on those pairs and nothing else."""
    import json

    from gapstudy.config import compose, validate
    from gapstudy.data.pair_log import read_shards
    from gapstudy.golden import draw, golden_pairs
    from gapstudy.rewards import train_proxy
    from gapstudy.worlds import build_world

    overrides = ["world=token_bandit", "world.pretrain_steps=60", "data=golden", "proxy.pairs=64", "proxy.epochs=1",
                 "steps=4", "batch_size=8"]
    cfg = validate(compose([*overrides, f"paths.results={results}"]))
    world = build_world(cfg, results)
    rows = read_shards(golden_pairs(world, cfg, results).parent)
    info = json.loads((train_proxy(world, cfg, results) / "proxy.json").read_text())
    assert len(rows) == info["train_pairs"] > 50  # the proxy's training set, ties dropped
    s, gold, _, loser, train_idx, _ = draw(world, cfg, "cpu")
    assert [r["chosen"] for r in rows] == [s.responses[2 * i + 1 - int(loser[i])].tolist() for i in train_idx.tolist()]
    chosen = torch.tensor([r["prompt"] + r["chosen"] for r in rows])
    rejected = torch.tensor([r["prompt"] + r["rejected"] for r in rows])
    regold = lambda t: world.gold(t[:, :1], None, t[:, 1:], torch.ones_like(t[:, 1:], dtype=torch.bool))
    assert (regold(chosen) > regold(rejected)).all()  # the world's gold reward prefers every chosen response
    assert [r["chosen_reward"] for r in rows] == pytest.approx(regold(chosen).tolist())
    run_dir, final, _ = train_run(results, overrides)
    trained = {(tuple(r["prompt"]), tuple(r["chosen"]), tuple(r["rejected"])) for b in read_pair_log(run_dir) for r in b}
    assert len(trained) == 32 and trained <= {(tuple(r["prompt"]), tuple(r["chosen"]), tuple(r["rejected"])) for r in rows}
