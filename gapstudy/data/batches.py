"""Batches: the tensors one optimizer step trains on, collated from rows (prompts left-padded, responses
right-padded). Every source's rows go through the same `collate`, so a replayed row trains exactly as it did."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gapstudy.generation import left_pad


@dataclass
class Batch:
    """N sequences = prompt ++ response. Pair batches: rows [0, B) chosen, [B, 2B) rejected (n_pairs = B)."""

    prompts: torch.Tensor  # [N, P] left-padded
    prompt_mask: torch.Tensor | None  # [N, P] 1 = real token; None when nothing is padded
    responses: torch.Tensor  # [N, L] right-padded
    response_mask: torch.Tensor  # [N, L] bool
    rewards: torch.Tensor  # [N] labeller rewards (NaN when the dataset has none)
    group: torch.Tensor  # [N] index of the row's prompt within the batch
    sampler_logps: torch.Tensor  # [N, L] per-token log-probs under the sampler (0 when unknown)
    sampler_version: torch.Tensor  # [N] optimizer step of the sampler's weights (-1 when unknown)
    n_pairs: int  # B for pair batches, 0 for group batches

    def to(self, device) -> "Batch":
        moved = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in self.__dict__.items()}
        return Batch(**moved)


def _pad_right(seqs: list[list], value, dtype) -> torch.Tensor:
    width = max(1, max(len(s) for s in seqs))
    out = torch.full((len(seqs), width), value, dtype=dtype)
    for i, s in enumerate(seqs):
        if s:
            out[i, : len(s)] = torch.tensor(s, dtype=dtype)
    return out


def collate(rows: list[dict], pad_token_id: int) -> Batch:
    """Rows of one kind (pairs or groups) -> Batch; the same function for every source."""
    if "chosen" in rows[0]:
        prompts = [r["prompt"] for r in rows] * 2
        responses = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
        rewards = [r.get("chosen_reward") for r in rows] + [r.get("rejected_reward") for r in rows]
        logps = [r.get("chosen_logps") for r in rows] + [r.get("rejected_logps") for r in rows]
        versions = [r.get("sampler_version") for r in rows] * 2
        group = list(range(len(rows))) * 2
        n_pairs = len(rows)
    else:
        prompts, responses, rewards, logps, versions, group = [], [], [], [], [], []
        for g, r in enumerate(rows):
            k = len(r["responses"])
            prompts += [r["prompt"]] * k
            responses += r["responses"]
            rewards += r["rewards"]
            logps += r.get("logps") or [None] * k
            versions += [r.get("sampler_version")] * k
            group += [g] * k
        n_pairs = 0
    prompt_ids, prompt_mask = left_pad(prompts, pad_token_id)
    response_ids = _pad_right(responses, pad_token_id, torch.long)
    lengths = torch.tensor([len(s) for s in responses])
    response_mask = torch.arange(response_ids.shape[1])[None, :] < lengths[:, None]
    logps = [l if l is not None else [0.0] * len(s) for l, s in zip(logps, responses)]
    return Batch(
        prompts=prompt_ids,
        prompt_mask=prompt_mask,
        responses=response_ids,
        response_mask=response_mask,
        rewards=torch.tensor([math.nan if r is None else float(r) for r in rewards], dtype=torch.float32),
        group=torch.tensor(group, dtype=torch.long),
        sampler_logps=_pad_right(logps, 0.0, torch.float32) if response_ids.shape[1] else torch.zeros_like(response_ids, dtype=torch.float32),
        sampler_version=torch.tensor([-1 if v is None else int(v) for v in versions], dtype=torch.long),
        n_pairs=n_pairs,
    )
