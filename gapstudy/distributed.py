"""Data parallelism for the one loop: several processes (torchrun) train one run with the same global batch.

Every rank draws the same global batch (same seeds, same sampler weights), keeps its shard of the rows, and
computes its part of the loss; gradients are summed across ranks with all-reduce (what DDP does, done by hand so
that uneven shards and empty shards stay exact). Each rank's loss is scaled by n_local * world / n_total, so the
averaged gradient equals the gradient of the global-batch mean: a 2-process run matches a 1-process run to float
noise. Rank 0 alone evaluates, logs and writes files. With one process every function here is the identity.

Launch: `torchrun --nproc_per_node 2 -m gapstudy.cli run ...` (gloo on CPU, nccl on CUDA).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, device): joins the process group torchrun describes in the environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def teardown(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard(rows: list, rank: int, world: int) -> list:
    """This rank's rows of the global batch: contiguous blocks, as even as possible."""
    if world == 1:
        return rows
    bounds = [len(rows) * r // world for r in range(world + 1)]
    return rows[bounds[rank] : bounds[rank + 1]]


def total(n: int, world: int, device) -> int:
    if world == 1:
        return n
    t = torch.tensor([n], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return int(t.item())


def average_gradients(model: torch.nn.Module, world: int) -> None:
    """Sum every parameter's gradient over ranks and divide by the world size (missing gradients count as 0)."""
    if world == 1:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p))
        offset += n


def weighted_means(values: dict[str, float], n_local: int, n_total: int, world: int, device) -> dict[str, float]:
    """Global means of per-rank means, weighted by each rank's example count; a key is reported when any rank with
    examples has it (every rank sends the same fixed key list, so empty shards join the all-reduce)."""
    if world == 1:
        return values
    from gapstudy.algorithms import STAT_KEYS

    keys = ["train/loss", "train/reward", "gen/length", *sorted(STAT_KEYS.values())]
    sums = [values[k] * n_local if k in values else 0.0 for k in keys]
    weights = [float(n_local) if k in values else 0.0 for k in keys]
    t = torch.tensor([sums, weights], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: s / w for k, s, w in zip(keys, t[0].tolist(), t[1].tolist()) if w > 0}
