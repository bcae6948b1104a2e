"""state.pt: what a run needs to resume exactly where it stopped, saved and restored from one list of parts.

The parts are the step and counters, the policy and optimizer (in the layout the parallelism strategy trains
them), the source of batches (its position and random state), the sampler when there is one (its possibly stale
weights) and the reference when it syncs (else it is the initial policy, loaded again). A resumed run is then the
run an uninterrupted one would have been: its metrics.jsonl and pair log are cut back to the checkpoint's step.
Every checkpoint is written atomically and the one before it is kept as state.prev.pt, for when the newest turns
out unreadable.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from gapstudy.metrics import truncate_metrics

PREVIOUS_STATE = "state.prev.pt"
STATE_KEYS = ("step", "counters", "source")


class Checkpoint:
    """The resumable state of one run in run_dir/state.pt, every `every` steps that end a collected batch (`reuse`
    gradient steps on it); `every=0` never. `step` is the step a re-run would resume from (0: none yet)."""

    def __init__(self, run_dir: Path, every: int, reuse: int, strategy, optimizer, pair_log, *, source, sampler,
                 reference, anchor):
        self.run_dir, self.every, self.reuse = Path(run_dir), int(every), int(reuse)
        self.strategy, self.optimizer, self.pair_log = strategy, optimizer, pair_log
        self.parts = {"source": source}  # the one list of stateful parts, beside the policy and optimizer
        if sampler is not None:
            self.parts["sampler"] = sampler
        if reference is not anchor:  # a reference that syncs (ref_sync_every); else it is the initial policy
            self.parts["reference"] = reference
        self.step = 0

    def restore(self) -> tuple[int, dict]:
        """(the step to start at, the counters): from the newest readable state (every rank reads rank 0's file),
        else a fresh start, which removes what a run that died before its first checkpoint had logged."""
        main = self.strategy.main
        state = load_state(self.run_dir, main)
        metrics = self.run_dir / "metrics.jsonl"
        if state is None:
            if main and metrics.exists():
                metrics.unlink()
                self.pair_log.drop_after(0)
            return 0, {"samples": 0, "updates": 0, "seconds": 0.0}
        self.step = state["step"]
        self.strategy.load_state(self.optimizer, state)
        for name, part in self.parts.items():
            part.load_state_dict(state[name])
        self.pair_log.drop_after(self.step)
        if main:
            truncate_metrics(metrics, self.step - 1)
        return self.step, state["counters"]

    def due(self, done: int) -> bool:
        """Is a checkpoint due after `done` steps?"""
        return bool(self.every) and done % self.every == 0 and done % self.reuse == 0

    def save(self, done: int, counters: dict) -> None:
        """Save the state after `done` steps (every rank joins: gathering a sharded policy is a collective)."""
        state = {"step": done, "counters": dict(counters), **self.strategy.state(self.optimizer),
                 **{name: part.state_dict() for name, part in self.parts.items()}}
        if self.strategy.main:
            self.pair_log.flush()
            save_state(self.run_dir / "state.pt", state)
            self.step = done

    def drop(self) -> None:
        """The run is complete: its resumable states go."""
        for name in ("state.pt", PREVIOUS_STATE):
            (self.run_dir / name).unlink(missing_ok=True)


def save_state(path: Path, state: dict) -> None:
    """Write state.pt atomically; the checkpoint it replaces becomes state.prev.pt."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    if path.exists():  # the previous checkpoint stays, for when this one turns out unreadable
        path.replace(path.with_name(PREVIOUS_STATE))
    tmp.replace(path)


def load_state(run_dir: Path, main: bool = True) -> dict | None:
    """The newest readable resumable state: state.pt, else the checkpoint before it (state.prev.pt). A file passed
    over is said in one line on stderr and removed (by rank 0), so the next checkpoint keeps the readable one as
    its previous. None when there is none: then the run starts over (a warning says so when unreadable files were
    there), which gives the same run an uninterrupted one would have."""
    skipped = []
    for name in ("state.pt", PREVIOUS_STATE):
        path = Path(run_dir) / name
        if not path.exists():
            continue
        try:
            state = torch.load(path, weights_only=False)
            if not isinstance(state, dict) or any(k not in state for k in STATE_KEYS):
                raise ValueError("not a gapstudy checkpoint")
        except Exception as e:  # noqa: BLE001 -- a truncated or corrupt file: pass it over, say why
            reason = str(e).strip().splitlines()[0][:80] if str(e).strip() else ""
            skipped.append(f"{name} is unreadable ({type(e).__name__}: {reason}), removed")
            if main:
                path.unlink(missing_ok=True)
            continue
        if skipped and main:
            print(f"gapstudy: warning: {Path(run_dir).name}: {'; '.join(skipped)}; resuming from {name} "
                  f"(step {state['step']})", file=sys.stderr)
        return state
    if skipped and main:
        print(f"gapstudy: warning: {Path(run_dir).name}: {'; '.join(skipped)}; no readable checkpoint, the run "
              "starts over", file=sys.stderr)
    return None
