"""Rewards and judges: the gold reward of a world, and the proxy reward model that can label training pairs.

A labeller is any callable (prompts [N, P], prompt_mask, responses [N, L], response_mask, tasks) -> rewards [N].
The gold reward always judges evaluation; `labeller=proxy` swaps in a Bradley-Terry reward model trained on a
finite set of gold-labelled pairs of reference samples (Tang et al. 2024's D_golden; Gao et al. 2022's proxy RM).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf


def gold_labeller(world):
    return world.gold


class ProxyLabeller:
    """Scores with a sequence-classification reward model loaded by path."""

    def __init__(self, path: Path, device="cpu"):
        from transformers import AutoModelForSequenceClassification

        self.model = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
        self.info = json.loads((Path(path) / "proxy.json").read_text())

    @torch.no_grad()
    def __call__(self, prompts, prompt_mask, responses, response_mask, tasks=None) -> torch.Tensor:
        return score(self.model, prompts, prompt_mask, responses, response_mask)


def score(model, prompts, prompt_mask, responses, response_mask) -> torch.Tensor:
    """[N] scalar scores read at the last real token of prompt ++ response."""
    pm = torch.ones_like(prompts) if prompt_mask is None else prompt_mask
    ids = torch.cat([prompts, responses], 1)
    mask = torch.cat([pm, response_mask.long()], 1)
    return model(input_ids=ids, attention_mask=mask).logits[:, 0].float()


def _gold_pairs(world, n_pairs: int, seed: int, device):
    """n_pairs prompts, two reference samples each, the gold reward of each: the proxy's training data."""
    from transformers import AutoModelForCausalLM

    from gapstudy.generation import left_pad, sample

    policy = AutoModelForCausalLM.from_pretrained(world.policy_path).to(device).eval()
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(len(world.train_prompts), (n_pairs,), generator=g).tolist()
    prompts = [world.train_prompts[i] for i in index]
    tasks = [world.train_tasks[i] for i in index for _ in range(2)]
    ids, mask = left_pad(prompts, world.pad_token_id, device)
    s = sample(policy, ids, mask, 2, g, world.max_new_tokens, 1.0, world.eos_token_id, world.pad_token_id)
    gold = world.gold(s.prompts, s.prompt_mask, s.responses, s.response_mask, tasks).float()
    return s, gold.view(-1, 2)


def train_proxy(world, cfg, cache_root: Path, device="cpu") -> Path:
    """Train (once; cached by a hash of the world and proxy settings) and return the proxy RM directory."""
    from gapstudy.worlds import cached_artifact

    spec = {"world": OmegaConf.to_container(cfg.world, resolve=True), "reward": cfg.reward,
            "proxy": OmegaConf.to_container(cfg.proxy, resolve=True)}

    def build(directory: Path) -> None:
        from transformers import AutoModelForSequenceClassification

        p = cfg.proxy
        held_out = max(64, int(p.pairs) // 8)
        s, gold = _gold_pairs(world, int(p.pairs) + held_out, seed=12345, device=device)
        label = (gold[:, 0] > gold[:, 1]).float()  # 1: the first sample wins
        keep = gold[:, 0] != gold[:, 1]  # ties carry no preference
        # the reward model starts from the SFT policy's trunk (as in Tang et al. and Gao et al.), a fresh scalar head
        rm = AutoModelForSequenceClassification.from_pretrained(world.policy_path, num_labels=1).to(device)
        torch.manual_seed(0)
        head = getattr(rm, "score", None)  # the scalar head of transformers' *ForSequenceClassification
        if head is None:
            raise RuntimeError(f"{type(rm).__name__} has no `score` head to train as a reward model")
        torch.nn.init.zeros_(head.weight)
        if getattr(head, "bias", None) is not None:  # most transformers classification heads have no bias
            torch.nn.init.zeros_(head.bias)
        opt = torch.optim.Adam(rm.parameters(), lr=float(p.lr))
        n = gold.shape[0]
        first = torch.arange(0, 2 * n, 2)
        rows = lambda idx, off: (s.prompts[first[idx] + off],
                                 None if s.prompt_mask is None else s.prompt_mask[first[idx] + off],
                                 s.responses[first[idx] + off], s.response_mask[first[idx] + off])
        train_idx = torch.arange(int(p.pairs))[keep[: int(p.pairs)]]
        test_idx = torch.arange(int(p.pairs), n)[keep[int(p.pairs):]]
        g = torch.Generator().manual_seed(0)
        rm.train()
        for _ in range(int(p.epochs)):
            perm = train_idx[torch.randperm(len(train_idx), generator=g)]
            for start in range(0, len(perm), int(p.batch_size)):
                idx = perm[start : start + int(p.batch_size)]
                margin = score(rm, *rows(idx, 0)) - score(rm, *rows(idx, 1))  # r(x, y1) - r(x, y2)
                loss = F.binary_cross_entropy_with_logits(margin, label[idx])  # Bradley-Terry: -log sigmoid(r_w - r_l)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        rm.eval()
        with torch.no_grad():
            margin = score(rm, *rows(test_idx, 0)) - score(rm, *rows(test_idx, 1))
            accuracy = float(((margin > 0).float() == label[test_idx]).float().mean())
        rm.save_pretrained(directory)
        (directory / "proxy.json").write_text(json.dumps(
            {"train_pairs": len(train_idx), "held_out_pairs": len(test_idx), "held_out_accuracy": accuracy}, indent=1))

    return cached_artifact(cache_root, f"proxy_{world.name}", spec, build)


def make_labeller(cfg, world, cache_root: Path, device="cpu"):
    if cfg.labeller == "gold":
        return gold_labeller(world), None
    proxy = ProxyLabeller(train_proxy(world, cfg, cache_root, device), device)
    return proxy, proxy
