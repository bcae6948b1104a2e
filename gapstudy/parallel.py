"""How many processes train one run, and how they split the work: one strategy object, chosen at set-up, that the
loop asks (shard the batch, scale the loss, reduce the gradients, gather the policy) and never branches around.

- `Single`: one process; every method is the identity.
- `Replicated` (`parallel=ddp` under torchrun): every rank holds the whole policy and draws the same global batch
  (same seeds, same sampler weights), keeps its shard of the rows and computes its part of the loss; gradients are
  summed across ranks with all-reduce (what DDP does, done by hand so that uneven and empty shards stay exact).
  Each rank's loss is scaled by n_local * world / n_total, so the averaged gradient is the gradient of the
  global-batch mean: a 2-process run matches a 1-process run to float noise.
- `Sharded` (`parallel=fsdp` under torchrun): the policy is sharded (FSDP2's `fully_shard`, block by block): each
  rank holds 1/world of its parameters, gradients and optimizer state, for models whose training state does not
  fit one device. Forward and backward gather and reduce-scatter on their own (averaging over ranks, as the
  all-reduce above does), so every rank runs every forward and backward: a rank with an empty shard computes on one
  row with weight 0. Whatever needs the whole policy (the sampler's sync, evaluation, saving) reads a plain copy
  refreshed from the shards; the sampler, reference and anchor stay whole on every rank.

Rank 0 alone (`main`) evaluates, logs and writes files.
Launch: `torchrun --nproc_per_node 2 -m gapstudy.cli run ...` (gloo on CPU, nccl on CUDA).
"""
from __future__ import annotations

import contextlib
import copy
import math
import os

import torch
import torch.distributed as dist


def make_strategy(parallel: str, device: torch.device) -> Single:
    """The strategy for this process: Single without torchrun, else joins the process group torchrun describes in
    the environment and replicates (`ddp`) or shards (`fsdp`) the policy."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Single(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return (Sharded if parallel == "fsdp" else Replicated)(device)


class Single:
    """One process: the batch is whole, the loss and gradients are as computed, the policy is its own full copy."""

    name = "ddp"  # the layout of the policy and optimizer state it saves: unsharded
    rank, world = 0, 1

    def __init__(self, device: torch.device):
        self.device = device
        self.main = self.rank == 0  # evaluates, logs and writes; every rank trains on its shard of the global batch
        self.policy = None
        self.n_local = 0  # rows of the current batch this rank computes on (0: an empty shard)

    def wrap(self, policy: torch.nn.Module, dtype: torch.dtype | None = None) -> torch.nn.Module:
        """Take the freshly loaded policy; returns the module to train (the policy itself unless sharded)."""
        self.policy = policy
        return policy

    @contextlib.contextmanager
    def rank_zero_first(self):
        """Rank 0 runs the block first, then the others: building a cached world or proxy must happen on rank 0 (in
        a process group, transformers' save_pretrained writes on rank 0 only), and the others then find it cached."""
        yield

    def shard(self, rows: list) -> list:
        """The rows of the global batch this rank computes on."""
        self.n_local = len(rows)
        return rows

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """This rank's loss as its share of the global-batch mean."""
        return loss

    def reduce_gradients(self) -> None:
        """Make every rank's gradients those of the global-batch mean."""

    def clip_gradients(self, clip: float | None) -> float:
        """Clip the gradient norm of the whole policy (no clipping: None); returns the norm before clipping."""
        norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), math.inf if clip is None else float(clip))
        return float(self._full(norm))

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """One optimizer step: the gathered full policy is out of date afterwards."""
        optimizer.step()

    def means(self, values: dict[str, float]) -> dict[str, float]:
        """Global means of this rank's per-batch means of training metrics."""
        return values

    def full_policy(self) -> torch.nn.Module:
        """The policy as one plain model with the current weights: for syncs, evaluation and saving (a collective
        when sharded: every rank calls it at the same steps)."""
        return self.policy

    def state(self, optimizer) -> dict:
        """The policy's and optimizer's full state for state.pt (a collective when sharded; rank 0 receives it)."""
        return {"policy": self.policy.state_dict(), "optimizer": optimizer.state_dict(), "parallel": self.name}

    def load_state(self, optimizer, state: dict) -> None:
        saved = state.get("parallel", "ddp")
        if saved != self.name:
            written = "a sharded (parallel=fsdp, several processes)" if saved == "fsdp" else "an unsharded"
            raise RuntimeError(f"state.pt was written by {written} run; resume it the same way (the optimizer "
                               "state's layout differs)")
        self._load(optimizer, state)

    def _load(self, optimizer, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        optimizer.load_state_dict(state["optimizer"])

    def _full(self, norm: torch.Tensor) -> torch.Tensor:
        return norm

    def teardown(self) -> None:
        """Leave the process group (after every rank got here)."""


class Replicated(Single):
    """Several processes, each with the whole policy; gradients all-reduced by hand (exact for uneven shards)."""

    def __init__(self, device: torch.device):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        super().__init__(device)
        self.n_total = 0  # rows of the global batch

    @contextlib.contextmanager
    def rank_zero_first(self):
        if self.rank != 0:
            dist.barrier()
        yield
        if self.rank == 0:
            dist.barrier()

    def shard(self, rows: list) -> list:
        """Contiguous blocks, as even as possible; an empty shard computes on one row with weight 0, so that it
        joins every collective."""
        bounds = [len(rows) * r // self.world for r in range(self.world + 1)]
        local = rows[bounds[self.rank] : bounds[self.rank + 1]]
        self.n_local = len(local)
        total = torch.tensor([self.n_local], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        self.n_total = int(total.item())
        return local or rows[:1]

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * (self.n_local * self.world / self.n_total)

    def reduce_gradients(self) -> None:
        """Sum every parameter's gradient over ranks and divide by the world size (missing gradients count as 0)."""
        params = [p for p in self.policy.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p))
            offset += n

    def means(self, values: dict[str, float]) -> dict[str, float]:
        """Weighted by each rank's example count; a key is reported when any rank with examples has it (every rank
        sends the same fixed key list, so empty shards join the all-reduce, contributing nothing)."""
        from gapstudy.algorithms import STAT_KEYS

        values = values if self.n_local else {}
        keys = ["train/loss", "train/reward", "gen/length", *sorted(STAT_KEYS.values())]
        sums = [values[k] * self.n_local if k in values else 0.0 for k in keys]
        weights = [float(self.n_local) if k in values else 0.0 for k in keys]
        t = torch.tensor([sums, weights], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: s / w for k, s, w in zip(keys, t[0].tolist(), t[1].tolist()) if w > 0}

    def teardown(self) -> None:
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _full_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


class Sharded(Replicated):
    """Several processes, the policy sharded by FSDP2 (which averages gradients during backward); a plain copy made
    before sharding holds the gathered full weights, refreshed only when they changed."""

    name = "fsdp"

    def wrap(self, policy: torch.nn.Module, dtype: torch.dtype | None = None) -> torch.nn.Module:
        """Copy the policy (bf16 like the frozen copies), then shard it in place: every block the model names in
        `_no_split_modules` (transformers' own list), then the root."""
        from torch.distributed.fsdp import fully_shard

        self.copy = copy.deepcopy(policy).eval().to(dtype)
        self.stale = True  # the copy's weights are not the policy's
        blocks = set(getattr(policy, "_no_split_modules", None) or ())
        for module in policy.modules():
            if type(module).__name__ in blocks:
                fully_shard(module)
        fully_shard(policy)
        self.policy = policy
        return policy

    def reduce_gradients(self) -> None:
        """Nothing: FSDP reduce-scattered the average during backward."""

    def _full(self, norm: torch.Tensor) -> torch.Tensor:
        return norm.full_tensor()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()
        self.stale = True

    def full_policy(self) -> torch.nn.Module:
        if self.stale:
            from torch.distributed.checkpoint.state_dict import get_model_state_dict

            full = get_model_state_dict(self.policy, options=_full_options())
            with torch.no_grad():
                for name, tensor in self.copy.state_dict(keep_vars=True).items():
                    if name in full:  # tied weights appear once
                        tensor.copy_(full[name])
            self.stale = False
        return self.copy

    def state(self, optimizer) -> dict:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        options = _full_options(cpu_offload=True)
        return {"policy": get_model_state_dict(self.policy, options=options),
                "optimizer": get_optimizer_state_dict(self.policy, optimizer, options=options), "parallel": self.name}

    def _load(self, optimizer, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        set_model_state_dict(self.policy, state["policy"], options=_full_options())
        set_optimizer_state_dict(self.policy, optimizer, state["optimizer"], options=_full_options())
        self.stale = True
