"""D_golden (Tang et al. 2024): gold-labelled pairs of SFT samples, drawn once per world and proxy settings.

Both the proxy reward model (`labeller=proxy`, gapstudy.rewards.train_proxy) and the offline source
`data=golden` (gapstudy.sources.GoldenSource) read these pairs, so an offline run sees exactly the information the
online run's proxy labeller was built from.
"""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from gapstudy.cache import cached_artifact
from gapstudy.generation import left_pad, sample


def _sample_pairs(world, n_pairs: int, seed: int, device):
    """n_pairs prompts, two reference samples each, the gold reward of each, each prompt's task: the proxy's
    training data."""
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(world.policy_path).to(device).eval()
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(len(world.train_prompts), (n_pairs,), generator=g).tolist()
    prompts = [world.train_prompts[i] for i in index]
    tasks = [world.train_tasks[i] for i in index for _ in range(2)]
    ids, mask = left_pad(prompts, world.pad_token_id, device)
    s = sample(policy, ids, mask, 2, g, world.max_new_tokens, 1.0, world.eos_token_id, world.pad_token_id)
    gold = world.gold(s.prompts, s.prompt_mask, s.responses, s.response_mask, tasks).float()
    return s, gold.view(-1, 2), tasks[::2]


def spec(cfg) -> dict:
    """What D_golden and the proxy trained on it depend on: the world, the reward and proxy.* (not proxy.path)."""
    proxy = {k: v for k, v in OmegaConf.to_container(cfg.proxy, resolve=True).items() if k != "path"}
    return {"world": OmegaConf.to_container(cfg.world, resolve=True), "reward": cfg.reward, "proxy": proxy}


def draw(world, cfg, device):
    """D_golden and the proxy's held-out pairs: (samples, gold [n, 2], tasks [n], loser [n] (offset of the losing
    sample in its pair), train index, held-out index), ties dropped from both indices. Deterministic (seed 12345),
    so the proxy and data=golden see exactly the same pairs."""
    pairs = int(cfg.proxy.pairs)
    s, gold, tasks = _sample_pairs(world, pairs + max(64, pairs // 8), seed=12345, device=device)
    keep = gold[:, 0] != gold[:, 1]  # ties carry no preference
    loser = (gold[:, 0] > gold[:, 1]).long()
    n = gold.shape[0]
    return s, gold, tasks, loser, torch.arange(pairs)[keep[:pairs]], torch.arange(pairs, n)[keep[pairs:]]


def golden_pairs(world, cfg, cache_root: Path, device="cpu") -> Path:
    """Tang et al.'s D_golden as a pair file (cached like the proxy, under the same settings): the proxy.pairs
    gold-labelled pairs of SFT samples the proxy RM learns from, ties dropped. `data=golden` trains on it, so an
    offline run sees exactly the information the online run's proxy labeller was built from."""
    def build(directory: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        s, gold, tasks, loser, train_idx, _ = draw(world, cfg, device)
        rows = []
        for i in train_idx.tolist():
            win, lose = 2 * i + 1 - int(loser[i]), 2 * i + int(loser[i])
            trim = lambda r: s.responses[r][s.response_mask[r]].tolist()
            prompt = s.prompts[win] if s.prompt_mask is None else s.prompts[win][s.prompt_mask[win].bool()]
            rows.append({"step": -1, "prompt": prompt.tolist(), "chosen": trim(win), "rejected": trim(lose),
                         "chosen_reward": float(gold[i].max()), "rejected_reward": float(gold[i].min()),
                         "task": tasks[i]})
        pq.write_table(pa.Table.from_pylist(rows), directory / "pairs.parquet")

    return cached_artifact(cache_root, f"golden_{world.name}", spec(cfg), build) / "pairs.parquet"
