"""`gapstudy bench`: milliseconds per step (and per evaluation) of the real loop, on two cases.

case=bandit (the default): online DPO on token_bandit. The step measured is everything the loop does per optimizer
step: sync the sampler, draw 32 prompts x 2 samples x 9 tokens, score them, build pairs, write the pair log,
reference and policy passes, loss, backward, Adam, log. Target: <= 30 ms per step on 2 cores.

case=chat: online IPO on synth_lm's chat prompts, as Tang et al.'s suites run it (experiments/tang2024.py's CHAT
base), evaluated on 512 held-out chat prompts (world.eval_prompts=1024: half of them are chat). It also reports the
milliseconds of one evaluation and the seconds a run spends before its first step (the world, the policies, the
evaluator's fixed samples), which a suite of hundreds of short runs pays hundreds of times.

Each case runs the loop with W and W + M steps (evaluation only at the start and end) and reports
(time(W + M) - time(W)) / M, so set-up and evaluation cancel out; case=chat then runs W steps evaluated every
EVAL_EVERY steps and reports (time - time(W)) / (the extra evaluations). The world is built (and cached under
paths.results, as every run's) before anything is timed.
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

BENCH = ["world=token_bandit", "algo=dpo", "sync_every=1", "batch_size=32", "algo.samples_per_prompt=2",
         "eval.every=0", "eval.prompts=32", "checkpoint_every=0", "save_checkpoint=false", "progress=false"]
# experiments/tang2024.py's CHAT base and its online IPO arm, evaluated on the reproduction's 512 held-out prompts
CHAT = ["world=synth_lm", "world.task=chat", "eval.tasks=[chat]", "algo=ipo", "algo.beta=0.01", "lr=0.001",
        "sync_every=1", "eval.every=0", "world.eval_prompts=1024",
        "eval.prompts=512", "checkpoint_every=0", "save_checkpoint=false", "progress=false"]
CASES = {"bandit": (BENCH, 300), "chat": (CHAT, 100)}  # name -> (overrides, default M)
WARM = 20  # W: the steps of the short run, whose time (set-up, evaluation, the first steps) the long run subtracts
EVAL_EVERY = 2  # case=chat: the evaluated short run evaluates every this many steps (W / EVAL_EVERY - 1 extra)
OPTIONS = ("case=", "measured=", "repeats=")


def _timed_run(overrides: list[str], steps: int, out: Path) -> float:
    from gapstudy.loop import train
    from gapstudy.runs import prepare

    cfg, _ = prepare(overrides + [f"steps={steps}"])
    tic = time.perf_counter()
    train(cfg, out)
    return time.perf_counter() - tic


def _setup_seconds(overrides: list[str], out: Path) -> float:
    """Seconds a run spends before its first step in a process that has run one before (a suite's worker):
    composing and validating its config, then the loop's set-up (world, labeller, policies, the evaluator's fixed
    samples)."""
    from gapstudy.loop import setup
    from gapstudy.runs import prepare

    tic = time.perf_counter()
    cfg, _ = prepare(overrides + ["steps=1"])
    setup(cfg, out)
    return time.perf_counter() - tic


def _options(argv: list[str]) -> tuple[str, int | None, int, list[str]]:
    case, measured, repeats = "bandit", None, 3
    for a in argv:
        key, _, value = a.partition("=")
        if key == "case":
            case = value
        elif key == "measured":
            measured = int(value)
        elif key == "repeats":
            repeats = int(value)
    if case not in CASES:
        from gapstudy.errors import ConfigError

        raise ConfigError(f"case={case!r} is invalid; valid choices: {', '.join(CASES)}")
    return case, measured, repeats, [a for a in argv if not a.startswith(OPTIONS)]


def bench(argv: list[str]) -> float:
    """Print the timings of one case; returns its ms per step."""
    import torch

    case, measured, repeats, extra = _options(argv)
    base, default_measured = CASES[case]
    measured = default_measured if measured is None else measured
    overrides = base + extra
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s) before set-up; "
          f"overrides: {' '.join(overrides)}")
    steps, evals, setups = [], [], []
    extra_evals = len(range(EVAL_EVERY, WARM, EVAL_EVERY))  # evaluated at every EVAL_EVERY-th step but 0 (always)
    with tempfile.TemporaryDirectory() as tmp:
        _timed_run(overrides, 2, Path(tmp) / "build")  # builds and caches the world outside the timing
        for r in range(repeats):
            short = _timed_run(overrides, WARM, Path(tmp) / f"short{r}")
            long = _timed_run(overrides, WARM + measured, Path(tmp) / f"long{r}")
            steps.append((long - short) / measured * 1000)
            line = f"repeat {r}: {steps[-1]:.2f} ms/step"
            if case == "chat":
                setups.append(_setup_seconds(overrides, Path(tmp) / f"setup{r}"))
                evaluated = _timed_run(overrides + [f"eval.every={EVAL_EVERY}"], WARM, Path(tmp) / f"eval{r}")
                evals.append((evaluated - short) / extra_evals * 1000)
                line += f", {evals[-1]:.1f} ms/evaluation, {setups[-1]:.2f} s of set-up"
            print(line)
    ms = min(steps)
    if case == "chat":
        print(f"setup_s_per_run: {min(setups):.2f}")
    print(f"ms_per_step: {ms:.2f}")
    if case == "chat":
        print(f"ms_per_eval: {min(evals) if evals else math.nan:.1f}")
    return ms
