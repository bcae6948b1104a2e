"""Data parallelism for the one loop: several processes (torchrun) train one run with the same global batch.

Every rank draws the same global batch (same seeds, same sampler weights), keeps its shard of the rows, and
computes its part of the loss; gradients are summed across ranks with all-reduce (what DDP does, done by hand so
that uneven shards and empty shards stay exact). Each rank's loss is scaled by n_local * world / n_total, so the
averaged gradient equals the gradient of the global-batch mean: a 2-process run matches a 1-process run to float
noise. Rank 0 alone evaluates, logs and writes files. With one process every function here is the identity.

With `parallel=fsdp` the policy is sharded instead (FSDP2's `fully_shard`, block by block): each rank holds 1/world
of its parameters, gradients and optimizer state, for models whose training state does not fit one device. Forward
and backward gather and reduce-scatter on their own (averaging over ranks, as the all-reduce above does), so every
rank must run every forward and backward: a rank with an empty shard computes on one row with weight 0. Whatever
needs the whole policy (the sampler's sync, evaluation, saving) reads a plain copy refreshed from the shards
(`FullPolicy`); the sampler, reference and anchor stay whole on every rank.

Launch: `torchrun --nproc_per_node 2 -m gapstudy.cli run ...` (gloo on CPU, nccl on CUDA).
"""
from __future__ import annotations

import contextlib
import copy
import os

import torch
import torch.distributed as dist

PARALLEL = ("ddp", "fsdp")  # replicate the policy and all-reduce its gradients | shard it (FSDP2)


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


@contextlib.contextmanager
def rank_zero_first(rank: int, world: int):
    """Rank 0 runs the block first, then the others: building a cached world or proxy must happen on rank 0 (in a
    process group, transformers' save_pretrained writes on rank 0 only), and the others then find it cached."""
    if world > 1 and rank != 0:
        dist.barrier()
    yield
    if world > 1 and rank == 0:
        dist.barrier()


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


def shard_model(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2: every block the model names in `_no_split_modules` (transformers' own list), then the root."""
    from torch.distributed.fsdp import fully_shard

    blocks = set(getattr(model, "_no_split_modules", None) or ())
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module)
    fully_shard(model)
    return model


def _full_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


class FullPolicy:
    """The policy as one plain model. Unsharded it is the policy itself; sharded, a copy made before sharding whose
    weights are gathered from the shards (a collective: every rank calls it at the same steps) when they changed."""

    def __init__(self, policy: torch.nn.Module, sharded: bool, dtype: torch.dtype | None = None):
        self.policy = policy  # fully_shard wraps in place: this stays the trained (sharded) module
        self.copy = copy.deepcopy(policy).eval().to(dtype) if sharded else None  # bf16 like the frozen copies
        self.updates = None  # the optimizer-step count the copy's weights belong to

    def __call__(self, updates: int) -> torch.nn.Module:
        if self.copy is None:
            return self.policy
        if updates != self.updates:
            from torch.distributed.checkpoint.state_dict import get_model_state_dict

            full = get_model_state_dict(self.policy, options=_full_options())
            with torch.no_grad():
                for name, tensor in self.copy.state_dict(keep_vars=True).items():
                    if name in full:  # tied weights appear once
                        tensor.copy_(full[name])
            self.updates = updates
        return self.copy


def policy_state(policy, optimizer, sharded: bool) -> dict:
    """The policy's and optimizer's full state for state.pt (a collective when sharded; rank 0 receives it)."""
    if not sharded:
        return {"policy": policy.state_dict(), "optimizer": optimizer.state_dict(), "parallel": "ddp"}
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    options = _full_options(cpu_offload=True)
    return {"policy": get_model_state_dict(policy, options=options),
            "optimizer": get_optimizer_state_dict(policy, optimizer, options=options), "parallel": "fsdp"}


def load_policy_state(policy, optimizer, state: dict, sharded: bool) -> None:
    saved = state.get("parallel", "ddp")
    if saved != ("fsdp" if sharded else "ddp"):
        written = "a sharded (parallel=fsdp, several processes)" if saved == "fsdp" else "an unsharded"
        raise RuntimeError(f"state.pt was written by {written} run; resume it the same way (the optimizer "
                           "state's layout differs)")
    if not sharded:
        policy.load_state_dict(state["policy"])
        optimizer.load_state_dict(state["optimizer"])
        return
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(policy, state["policy"], options=_full_options())
    set_optimizer_state_dict(policy, optimizer, state["optimizer"], options=_full_options())


def average_gradients(model: torch.nn.Module, world: int, sharded: bool = False) -> None:
    """Sum every parameter's gradient over ranks and divide by the world size (missing gradients count as 0).
    Sharded models need nothing: FSDP reduce-scattered the average during backward."""
    if world == 1 or sharded:
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
