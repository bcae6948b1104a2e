"""Tajwar et al. 2024's token bandit ("GPT-nano"), as in PAPERS.md [C].

Prompt = one random token of a 100-token vocabulary; the policy generates 9 tokens at temperature 1. The reference
is warm-started so that its next-token distribution at every response position matches the histogram of 10,000
draws of tanh(Cauchy(loc -0.7, scale 0.4)) in 100 bins on [-1, 1]: an interior mode near token 17 plus the two
edge bins where the heavy tails pile up (bin 0 holds ~7.7% of the mass, bin 99 ~4%). Gold reward = mean over the
10 tokens (prompt and response, as in the paper) of exp(-((t - c)/10)^2), with c = 70 for R1 (optimum where the
reference is unlikely: ~2.5% of its mass lies in tokens 65-75) or c = 20 for R2 (at the reference's interior mode).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gapstudy.cache import cached_artifact
from gapstudy.model import TinyGPTConfig, TinyGPTForCausalLM
from gapstudy.worlds import World, pretrain, word_level_tokenizer

REWARD_CENTRES = {"R1": 70, "R2": 20}


def reference_histogram(vocab: int, draws: int, loc: float, scale: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = np.tanh(loc + scale * rng.standard_cauchy(draws))
    counts, _ = np.histogram(values, bins=vocab, range=(-1.0, 1.0))
    return counts / counts.sum()


def gold_reward(centre: float, width: float):
    def gold(prompts, prompt_mask, responses, response_mask, tasks=None) -> torch.Tensor:
        tokens = torch.cat([prompts, responses], dim=1).float()  # [N, 10]
        return torch.exp(-(((tokens - centre) / width) ** 2)).mean(dim=1)

    return gold


def _build_policy(w, directory: Path) -> None:
    vocab = int(w.vocab)
    hist = reference_histogram(vocab, int(w.histogram_draws), float(w.cauchy_loc), float(w.cauchy_scale))
    tokenizer = word_level_tokenizer([f"t{i}" for i in range(vocab)], ["<pad>", "<eos>"], directory)
    config = TinyGPTConfig(
        vocab_size=len(tokenizer), n_positions=1 + int(w.response_tokens), n_embd=int(w.n_embd),
        n_layer=int(w.n_layer), n_head=int(w.n_head), pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(int(w.build_seed))
    model = TinyGPTForCausalLM(config)
    target = torch.zeros(len(tokenizer))
    target[:vocab] = torch.tensor(hist, dtype=torch.float32)  # specials get no mass
    length = 1 + int(w.response_tokens)
    sampler = torch.distributions.Categorical(probs=target)
    gen = torch.Generator().manual_seed(int(w.build_seed))

    def batches(i):
        prompts = torch.randint(0, vocab, (256, 1), generator=gen)
        responses = sampler.sample((256, length - 1))
        ids = torch.cat([prompts, responses], 1)
        soft = target.expand(256, length - 1, -1)  # the same histogram after every prefix
        return ids, None, soft, torch.ones(256, length - 1)

    pretrain(model, batches, int(w.pretrain_steps), float(w.pretrain_lr), int(w.build_seed))
    model.save_pretrained(directory)
    np.save(directory / "histogram.npy", hist)


def validate(cfg) -> None:
    from gapstudy.errors import ConfigError

    if cfg.reward not in REWARD_CENTRES:
        raise ConfigError(f"reward={cfg.reward!r} is invalid for world token_bandit; valid choices: {', '.join(REWARD_CENTRES)}")


def build(cfg, cache_root: Path) -> World:
    w = cfg.world
    validate(cfg)
    spec = {k: w[k] for k in ("vocab", "response_tokens", "histogram_draws", "cauchy_loc", "cauchy_scale",
                              "n_embd", "n_layer", "n_head", "pretrain_steps", "pretrain_lr", "build_seed")}
    path = cached_artifact(cache_root, "token_bandit", spec, lambda d: _build_policy(w, d))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    vocab = int(w.vocab)
    rng = np.random.default_rng(int(w.build_seed) + 1)
    eval_prompts = [[int(t)] for t in rng.integers(0, vocab, int(w.eval_prompts))]
    return World(
        name="token_bandit",
        policy_path=path,
        tokenizer=tokenizer,
        train_prompts=[[t] for t in range(vocab)],
        train_tasks=["default"] * vocab,
        eval_prompts=eval_prompts,
        eval_tasks=["default"] * len(eval_prompts),
        max_new_tokens=int(w.response_tokens),
        eos_token_id=None,
        pad_token_id=tokenizer.pad_token_id,
        gold=gold_reward(REWARD_CENTRES[cfg.reward], float(w.reward_width)),
    )
