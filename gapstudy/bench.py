"""`gapstudy bench`: milliseconds per online DPO step of the real loop on token_bandit.

The step measured is everything the loop does per optimizer step: sync the sampler, draw 32 prompts x 2 samples
x 9 tokens, score them, build pairs, write the pair log, reference and policy passes, loss, backward, Adam, log.
It runs the loop twice, with W and W + M steps (evaluation only at the start and end), and reports
(time(W + M) - time(W)) / M, so set-up and evaluation cancel out. Target: <= 30 ms per step on 2 cores.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

BENCH = ["world=token_bandit", "algo=dpo", "sync_every=1", "batch_size=32", "algo.samples_per_prompt=2",
         "eval.every=0", "eval.prompts=32", "checkpoint_every=0", "save_checkpoint=false", "progress=false"]
WARM = 20  # W: the steps of the short run, whose time (set-up, evaluation, the first steps) the long run subtracts


def _timed_run(overrides: list[str], steps: int, out: Path) -> float:
    from gapstudy.loop import train
    from gapstudy.runs import prepare

    cfg, _ = prepare(BENCH + overrides + [f"steps={steps}"])
    tic = time.perf_counter()
    train(cfg, out)
    return time.perf_counter() - tic


def bench(argv: list[str]) -> float:
    import torch

    measured, repeats = 300, 3
    extra = [a for a in argv if not a.startswith(("measured=", "repeats="))]
    for a in argv:
        if a.startswith("measured="):
            measured = int(a.split("=", 1)[1])
        elif a.startswith("repeats="):
            repeats = int(a.split("=", 1)[1])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s) before set-up; "
          f"overrides: {' '.join(BENCH + extra)}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        _timed_run(extra, 2, Path(tmp) / "build")  # builds and caches the world outside the timing
        for r in range(repeats):
            short = _timed_run(extra, WARM, Path(tmp) / f"short{r}")
            long = _timed_run(extra, WARM + measured, Path(tmp) / f"long{r}")
            results.append((long - short) / measured * 1000)
            print(f"repeat {r}: {results[-1]:.2f} ms/step")
    ms = min(results)
    print(f"ms_per_step: {ms:.2f}")
    return ms
