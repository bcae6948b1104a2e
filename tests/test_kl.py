"""Exact KL along samples against brute-force enumeration of every sequence; evaluation at policy = reference."""
from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from gapstudy.logprobs import entropy, exact_kl, gather_logps, response_logits
from gapstudy.model import TinyGPTConfig, TinyGPTForCausalLM, response_mask

VOCAB, EOS, LENGTH = 4, 3, 3  # tokens 0, 1, 2 and an EOS; responses of at most 3 tokens


def random_lm(seed: int) -> TinyGPTForCausalLM:
    torch.manual_seed(seed)
    model = TinyGPTForCausalLM(TinyGPTConfig(vocab_size=VOCAB, n_positions=8, n_embd=16, n_layer=1, n_head=2))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.6)  # far from uniform, so the two models differ a lot
    return model.eval()


def all_responses() -> torch.Tensor:
    """Every distinct response: cut at the first EOS, padded with 0 after it."""
    seen = set()
    for seq in itertools.product(range(VOCAB), repeat=LENGTH):
        cut = list(seq[: seq.index(EOS) + 1]) if EOS in seq else list(seq)
        seen.add(tuple(cut + [0] * (LENGTH - len(cut))))
    return torch.tensor(sorted(seen))


def enumerate_sequences(p, q):
    """Every response y once, with p(y) and the per-token logits of p and q along it."""
    responses = all_responses()
    mask = response_mask(responses, EOS)
    prompts = torch.tensor([[1, 2]]).expand(len(responses), -1)
    logits_p = response_logits(p, prompts, None, responses)
    logits_q = response_logits(q, prompts, None, responses)
    logp = gather_logps(logits_p, responses, mask).sum(-1)  # log p(y), each whole sequence
    logq = gather_logps(logits_q, responses, mask).sum(-1)
    return responses, mask, logits_p, logits_q, logp, logq


@torch.no_grad()
def test_exact_kl_matches_brute_force_enumeration():
    p, q = random_lm(0), random_lm(1)
    responses, mask, logits_p, logits_q, logp, logq = enumerate_sequences(p, q)
    prob = logp.exp()
    assert float(prob.sum()) == pytest.approx(1.0, abs=1e-5)  # the enumeration covers every sequence once
    brute = float((prob * (logp - logq)).sum())  # sum_y p(y) log p(y)/q(y)
    estimator = float((prob * exact_kl(logits_p, logits_q, mask)).sum())  # E_{y~p}[sum_t KL_t]
    assert brute > 0.3
    assert estimator == pytest.approx(brute, rel=1e-4)
    # exact entropy along samples: its expectation is the sequence entropy
    assert float((prob * entropy(logits_p, mask).sum(-1)).sum()) == pytest.approx(float(-(prob * logp).sum()), rel=1e-4)


class _World(SimpleNamespace):
    """The evaluator's view of a world: N copies of one prompt, a constant gold reward (so no classification pairs)."""


@torch.no_grad()
def test_the_evaluators_kl_estimators_are_unbiased_against_brute_force_enumeration():
    """eval/kl (exact along samples), eval/kl_k1 and eval/kl_k3 as the Evaluator computes them from N samples of p:
    each is a mean of N draws of an estimator whose expectation under p is KL(p || q). Its exact mean and variance
    come from enumerating every sequence, so each metric must lie within 4 standard errors of the brute-force KL."""
    from omegaconf import OmegaConf

    from gapstudy.evaluation import Evaluator

    p, q = random_lm(0), random_lm(1)
    responses, mask, logits_p, logits_q, logp, logq = enumerate_sequences(p, q)
    prob = logp.exp()
    kl = float((prob * (logp - logq)).sum())
    log_r = gather_logps(logits_q, responses, mask) - gather_logps(logits_p, responses, mask)  # per token
    per_sequence = {"eval/kl": exact_kl(logits_p, logits_q, mask), "eval/kl_k1": logp - logq,
                    "eval/kl_k3": ((log_r.exp() - 1 - log_r) * mask).sum(-1)}
    n = 4096
    world = _World(eval_prompts=[[1, 2]] * n, eval_tasks=["default"] * n, tasks=("default",), pad_token_id=0,
                   eos_token_id=EOS, max_new_tokens=LENGTH, binary_tasks=frozenset(), extra_metrics=None,
                   gold=lambda prompts, prompt_mask, responses, response_mask, tasks: torch.zeros(len(responses)))
    cfg = OmegaConf.create({"eval": {"prompts": n, "tasks": None}, "seed": 0, "temperature": 1.0})
    metrics = Evaluator(cfg, world, q, q)(p, step=0)
    for key, values in per_sequence.items():
        mean = float((prob * values).sum())
        assert mean == pytest.approx(kl, rel=1e-4), key  # unbiased: the expectation is the KL itself
        se = math.sqrt(float((prob * (values - mean) ** 2).sum()) / n)
        assert se > 0 and abs(metrics[key] - kl) < 4 * se, (key, metrics[key], kl, se)
    assert metrics["eval/win_rate"] == 0.5  # constant gold: every comparison a tie


@torch.no_grad()
def test_exact_kl_of_a_model_with_itself_is_zero():
    p = random_lm(2)
    responses = all_responses()
    logits = response_logits(p, torch.ones(len(responses), 1, dtype=torch.long), None, responses)
    assert float(exact_kl(logits, logits.clone(), response_mask(responses, EOS)).abs().max()) == 0.0


def test_evaluation_at_the_reference_gives_kl_zero_and_win_rate_one_half(results):
    """policy = reference = baseline: KL estimators are exactly 0 and the win rate is 1/2 up to sampling noise."""
    from gapstudy.config import compose, validate
    from gapstudy.evaluation import Evaluator
    from gapstudy.runtime import frozen, load_policy
    from gapstudy.worlds import build_world

    cfg = validate(compose([f"paths.results={results}", "world.pretrain_steps=60", "world.eval_prompts=2048",
                            "eval.prompts=2048", "reward=R2"]))
    world = build_world(cfg, results)
    policy = load_policy(world.policy_path, "cpu")
    evaluator = Evaluator(cfg, world, frozen(policy), frozen(policy))
    m = evaluator(policy, step=0)
    assert m["eval/kl"] == 0.0 and m["eval/kl_k1"] == 0.0 and m["eval/kl_k3"] == 0.0
    se = math.sqrt(0.25 / 2048)
    assert abs(m["eval/win_rate"] - 0.5) < 3 * se
    assert m["eval/classification_accuracy"] == 0.5  # h = 0 on every pair: all ties
    assert m["eval/length"] == 9.0
