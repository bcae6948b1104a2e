"""synth_lm world: the gold reward on hand-made responses, caching, loading the policy, and the prompt sets."""
import math
import time

import pytest
import torch

from gapstudy.config import compose
from gapstudy.generation import left_pad, sample
from gapstudy.worlds import build_world

# a small build: a few seconds on one thread (the default build is ~50 s)
SMALL = ["world=synth_lm", "world.pretrain_steps=20", "world.corpus_size=400", "world.train_prompts=100",
         "world.eval_prompts=32", "world.n_embd=32", "world.n_layer=2", "world.n_head=2"]


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def world(cache_root):
    torch.set_num_threads(1)
    return build_world(compose(SMALL), cache_root)


def ids(world, text: str) -> list[int]:
    return world.tokenizer.convert_tokens_to_ids(text.split())


def gold(world, rows: list[tuple[str, str, str]]) -> torch.Tensor:
    """rows of (task, prompt text, response text); left-pads prompts and right-pads responses like the loop."""
    prompts, prompt_mask = left_pad([ids(world, p) for _, p, _ in rows], world.pad_token_id)
    responses = [ids(world, r) for _, _, r in rows]
    width = max(len(r) for r in responses)
    tokens = torch.full((len(rows), width), world.pad_token_id)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(responses):
        tokens[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = True
    return world.gold(prompts, prompt_mask, tokens, mask, [t for t, _, _ in rows])


def test_math_gold_is_an_exact_answer_verifier(world):
    p = "<bos> math 3 7 + 4 5 ="  # 37 + 45 = 82
    r = gold(world, [
        ("math", p, "8 2 <eos>"),  # right, direct
        ("math", p, "1 2 ; 8 ; 8 2 <eos>"),  # right, with the column-sum scratchpad
        ("math", p, "7 2 <eos>"),  # dropped carry
        ("math", p, "1 2 ; 7 ; 7 2 <eos>"),  # dropped carry in the scratchpad, answer follows it
        ("math", p, "8 2"),  # right digits but no <eos>: never finished
        ("math", p, "8 2 1 <eos>"),  # extra digit
        ("math", p, "1 2 ; 8 ; <eos>"),  # scratchpad without an answer
        ("math", "<bos> math 9 + 1 =", "1 0 <eos>"),  # a shorter prompt in the same (left-padded) batch
    ])
    assert r.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_chat_gold_prefers_long_on_topic_and_penalises_repetition(world):
    p = "<bos> chat rain cold <sep>"  # weather
    ideal = "rain snow wind sun cloud storm cold warm fog ice <eos>"  # 10 distinct on-topic words = the target
    r = gold(world, [
        ("chat", p, ideal),
        ("chat", p, "rain the cat <eos>"),
        ("chat", p, "rain snow rain snow rain snow rain snow rain snow <eos>"),
        ("chat", p, "cat dog <eos>"),
        ("chat", p, "rain snow <eos>"),
        ("chat", p, "rain snow wind sun cloud storm cold warm fog ice heat sky rain snow wind <eos>"),
    ])
    ideal_score, short_mixed, repetitive, off_topic, short_on_topic, too_long = r.tolist()
    assert ideal_score == pytest.approx(1.0)
    # "rain the cat": relevance 1/3, length 3/10, distinct 1: (1/3)^2 * 0.3 = 1/30
    assert short_mixed == pytest.approx(1 / 30)
    # 10 on-topic words but 2 distinct: 1 * 1 * (2/10)^2 = 0.04
    assert repetitive == pytest.approx(0.04)
    assert off_topic == 0.0
    assert short_on_topic == pytest.approx(0.2)  # 1 * 2/10 * 1
    # 15 words: length 1 - 5/10 = 0.5, distinct 12/15: 0.5 * 0.8^2 = 0.32
    assert too_long == pytest.approx(0.32)
    assert ideal_score > short_on_topic > short_mixed > off_topic
    assert repetitive < short_on_topic


def test_gold_dispatches_by_task_in_one_batch(world):
    r = gold(world, [("chat", "<bos> chat rain cold <sep>", "rain snow <eos>"),
                     ("math", "<bos> math 3 7 + 4 5 =", "8 2 <eos>")])
    assert r.tolist() == pytest.approx([0.2, 1.0])
    with pytest.raises(ValueError, match="unknown task"):
        gold(world, [("poetry", "<bos> chat rain <sep>", "rain <eos>")])


def test_world_is_cached(world, cache_root, monkeypatch):
    import gapstudy.worlds.synth_lm as synth_lm

    def no_rebuild(*args):
        raise AssertionError("the cached world was rebuilt")

    monkeypatch.setattr(synth_lm, "_build", no_rebuild)
    start = time.perf_counter()
    again = build_world(compose(SMALL), cache_root)
    assert time.perf_counter() - start < 5
    assert again.policy_path == world.policy_path
    assert again.train_prompts == world.train_prompts and again.eval_prompts == world.eval_prompts
    # the reward knobs and the task are not part of the artifact
    other = build_world(compose(SMALL + ["world.task=chat", "world.chat_target_length=12"]), cache_root)
    assert other.policy_path == world.policy_path


def test_policy_loads_and_samples(world):
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(world.policy_path).eval()
    assert policy.config.n_positions >= max(len(p) for p in world.eval_prompts) + world.max_new_tokens
    prompts, mask = left_pad(world.eval_prompts, world.pad_token_id)
    s = sample(policy, prompts, mask, 2, torch.Generator().manual_seed(0), world.max_new_tokens, 1.0,
               world.eos_token_id, world.pad_token_id)
    tasks = [t for t in world.eval_tasks for _ in range(2)]
    r = world.gold(s.prompts, s.prompt_mask, s.responses, s.response_mask, tasks)
    assert r.shape == (2 * len(world.eval_prompts),)
    assert bool(((r >= 0) & (r <= 1)).all())


def test_prompt_sets(world):
    assert world.tasks == ("math", "chat") and world.binary_tasks == frozenset({"math"})
    assert set(map(tuple, world.eval_prompts)).isdisjoint(map(tuple, world.train_prompts))
    assert len(set(map(tuple, world.train_prompts))) == len(world.train_prompts) == 200
    assert world.eval_tasks[:4] == ["math", "chat", "math", "chat"]  # interleaved: any prefix covers both
    assert world.eval_tasks.count("math") == world.eval_tasks.count("chat") == 16
    math_id = world.tokenizer.convert_tokens_to_ids("math")
    for prompt, task in zip(world.train_prompts + world.eval_prompts, world.train_tasks + world.eval_tasks):
        assert prompt[0] == world.tokenizer.bos_token_id
        assert (prompt[1] == math_id) == (task == "math")


def test_task_filters_training_prompts(world, cache_root):
    math_only = build_world(compose(SMALL + ["world.task=math"]), cache_root)
    assert set(math_only.train_tasks) == {"math"} and len(math_only.train_prompts) == 100
    assert math_only.eval_tasks == world.eval_tasks  # evaluation always covers both families
    from gapstudy.errors import ConfigError

    with pytest.raises(ConfigError, match="mixed, math, chat"):
        build_world(compose(SMALL + ["world.task=poetry"]), cache_root)


@pytest.mark.parametrize("labeller", ["gold", "proxy"])
@pytest.mark.parametrize("algo", ["dpo", "ipo", "best_of_2", "grpo", "reinforce", "kto", "simpo", "orpo", "rwr", "sft"])
def test_every_algorithm_and_labeller_trains_on_synth_lm(algo, labeller, cache_root):
    from tests.conftest import train_run

    small = [*SMALL, "proxy.pairs=64", "proxy.epochs=1", "eval.prompts=16", "progress=false",
             "checkpoint_every=0", "save_checkpoint=false"]
    _, final, records = train_run(cache_root, [f"algo={algo}", f"labeller={labeller}", "steps=3", "batch_size=4",
                                               "eval.every=0"], fast=small)
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(losses) == 3 and [type(x) for x in losses] == [float] * 3, losses  # the logger writes NaN as null
    assert [math.isfinite(x) for x in losses] == [True] * 3, losses  # it trained 3 steps, without NaN or inf
    assert final["eval/kl"] > 1e-6  # the 3 updates moved the policy off its reference (exact KL, not noise)
    assert final["eval/win_rate"] * 32 == pytest.approx(round(final["eval/win_rate"] * 32), abs=1e-6)  # 16 prompts, ties 1/2
    assert ("eval/proxy_reward" in final) == (labeller == "proxy")
