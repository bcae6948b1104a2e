"""Where the runs of a suite execute, behind one interface: `submit(job)` starts a run and returns a handle (with
`done()` and `result()`, which returns the run's final metrics or raises its error), `wait_any(handles)` blocks
until at least one of them has finished and returns those, `shutdown()` lets go of the workers. `slots` is how many
runs may be in flight at once (experiments/schedule.py keeps to it).

- `InProcess`: jobs=1, the run executes in this process as it is submitted (progress bars shown);
- `ProcessPool`: jobs=N local worker processes, which die with the suite's process even when it is SIGKILLed;
- `Submitit`: submitit's local executor or SLURM; `Ray`: tasks on a running Ray cluster. Each worker imports
  gapstudy from the same environment, and the results root must be on a filesystem every worker sees (the runs
  pass pair logs and checkpoints through it).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from experiments.plan import Job
from experiments.suite import SuiteError

EXECUTORS = ("process", "submitit_local", "submitit_slurm", "ray")
POLL_SECONDS = 0.5  # how often a cluster's handles are asked whether they are done


def execute(overrides: list[str], name: str, quiet: bool, expected: Path | None = None) -> dict:
    """One run, in this process or a worker (prepared again there: configs do not cross processes)."""
    from gapstudy.runs import execute as execute_run
    from gapstudy.runs import prepare, quiet_libraries

    quiet_libraries()
    if quiet:
        overrides = [*overrides, "progress=false"]
    cfg, run_dir = prepare(overrides, name=name)
    if expected is not None and Path(run_dir) != Path(expected):
        raise RuntimeError(f"run directory {run_dir} differs from the planned {expected}")
    return execute_run(cfg, run_dir)


def _arguments(job: Job, quiet: bool = True) -> tuple:
    return job.overrides, job.name, quiet, job.run_dir


class Executor(ABC):
    """The interface; by default a handle is polled (cluster handles) and shutting down lets nothing go (submitted
    cluster jobs belong to the cluster; a re-run skips what they finished)."""

    slots = 1  # runs in flight at once

    @abstractmethod
    def submit(self, job: Job):
        """Start the run of `job`; returns its handle."""

    def wait_any(self, handles: list) -> list:
        while True:
            done = [h for h in handles if h.done()]
            if done:
                return done
            time.sleep(POLL_SECONDS)

    def shutdown(self) -> None:
        pass


class InProcess(Executor):
    """jobs=1: each run executes in this process when submitted; its handle is already done. An interruption
    (KeyboardInterrupt) is not a run's failure: it propagates and stops the suite."""

    def submit(self, job: Job) -> Future:
        handle: Future = Future()
        try:
            handle.set_result(execute(*_arguments(job, quiet=False)))
        except Exception as error:  # noqa: BLE001 -- a failed arm must not stop the others
            handle.set_exception(error)
        return handle


def spawn_context():
    """Fresh interpreters for workers (no forked torch or thread state)."""
    import multiprocessing

    return multiprocessing.get_context("spawn")


class ProcessPool(Executor):
    """jobs=N local worker processes; they die with this process (see `_die_with_parent`)."""

    def __init__(self, jobs: int):
        self.slots = jobs
        self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=spawn_context(), initializer=_die_with_parent,
                                        initargs=(os.getpid(),))

    def submit(self, job: Job) -> Future:
        return self.pool.submit(execute, *_arguments(job))

    def wait_any(self, handles: list) -> list:
        return list(wait(handles, return_when=FIRST_COMPLETED)[0])

    def shutdown(self) -> None:
        self.pool.shutdown(cancel_futures=True)


PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCHDOG_SECONDS = 1.0


def _die_with_parent(parent: int) -> None:
    """Pool worker initializer: a worker must not outlive the suite that started it, even when that process is
    SIGKILLed (no handler, no atexit, no pool shutdown runs then); an orphan would finish its run, never exit, and
    hold its memory (and its run directory's lock) forever.

    Linux: prctl(PR_SET_PDEATHSIG, SIGKILL) makes the kernel kill this worker when its parent goes. The kernel
    tracks the parent *thread* that forked the worker: the pool spawns workers from the thread that calls submit()
    (run_suite's, which waits on them until the pool is shut down), or from the pool's manager thread when it
    replaces a worker (it lives until shutdown too), so that thread outlives every run it hands out. The parent may
    already have died before prctl ran: then this worker was re-parented, and getppid() tells. Everywhere (and as a
    second line on Linux): a daemon thread polls getppid() and kills the worker once its parent has changed."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no libc prctl: the watchdog alone
            pass
    if os.getppid() != parent:  # the parent is already gone
        _kill_self()
    threading.Thread(target=_watch_parent, args=(parent,), name="die-with-parent", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(WATCHDOG_SECONDS)
        if os.getppid() != parent:
            _kill_self()


def _kill_self() -> None:
    if hasattr(signal, "SIGKILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(1)


class Submitit(Executor):
    """Runs as submitit jobs: its local executor (`submitit_local`) or SLURM (`submitit_slurm`); submitit's folder
    is <results root>/.submitit."""

    def __init__(self, kind: str, jobs: int, root: Path):
        import submitit

        self.slots = jobs
        self.executor = submitit.AutoExecutor(folder=str(root / ".submitit"),
                                              cluster="local" if kind == "submitit_local" else "slurm")
        self.executor.update_parameters(timeout_min=24 * 60, nodes=1, tasks_per_node=1, cpus_per_task=1)

    def submit(self, job: Job):
        return self.executor.submit(execute, *_arguments(job))


class _RayHandle:
    """A Ray object ref as a handle (done, result)."""

    def __init__(self, ref):
        self.ref = ref

    def done(self) -> bool:
        import ray

        return bool(ray.wait([self.ref], timeout=0)[0])

    def result(self):
        import ray

        return ray.get(self.ref)


class Ray(Executor):
    """Runs as one-CPU Ray tasks on the cluster at `address` (joined once; None: Ray's own lookup)."""

    def __init__(self, jobs: int, address: str | None):
        import ray

        self.slots = jobs
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        self.remote = ray.remote(num_cpus=1)(execute)

    def submit(self, job: Job) -> _RayHandle:
        return _RayHandle(self.remote.remote(*_arguments(job)))


def make_executor(kind: str, jobs: int, root: Path, address: str | None = None) -> Executor:
    """The executor `executor=kind jobs=N` asks for (`process` with jobs=1 runs in this process)."""
    if kind not in EXECUTORS:
        raise SuiteError(f"executor={kind!r} is invalid; valid choices: {', '.join(EXECUTORS)}")
    if kind == "ray":
        return Ray(jobs, address)
    if kind.startswith("submitit"):
        return Submitit(kind, jobs, root)
    return ProcessPool(jobs) if jobs > 1 else InProcess()
