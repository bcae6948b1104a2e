"""Run a suite: expand its arms into runs (arm x sweep point x seed), order them by `needs`, skip the complete
ones, run the rest in parallel processes, and keep going past a failed arm (its dependents are skipped).

Runs land in <results root>/<suite>/<run name>; the name is the arm, then every other varying choice (sweep values,
extra overrides, a non-full profile), then the seed. `@arm` in an override becomes that arm's run directory for
the same seed. Interrupting a suite and running it again completes only what is missing: finished runs are
skipped (final.json) and a run killed mid-way resumes from its last checkpoint (state.pt).
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from experiments import PLACEHOLDER, PROFILES, SUITES, Suite
from gapstudy.config import run_name, shorten
from gapstudy.errors import first_line

RUNNER_KEYS = ("suite", "profile", "seeds", "jobs", "arm", "executor", "address")  # the runner's, not a run's
EXECUTORS = ("process", "submitit_local", "submitit_slurm", "ray")
NOT_DONE = ("failed", "skipped:", "busy:")  # outcomes whose dependents are skipped and that make the exit status 1


class SuiteError(ValueError):
    """A bad suite request (unknown suite, arm or profile; bad seeds or jobs)."""


@dataclass
class Job:
    key: str  # "<arm>/<run name>"
    arm: str
    seed: int
    name: str
    overrides: list[str]
    needs: list[str] = field(default_factory=list)  # keys of the jobs whose artifacts this one reads
    run_dir: Path | None = None


def parse(argv: list[str]) -> tuple[dict, list[str]]:
    """Split `suite=... profile=... seeds=... jobs=... arm=...` from the overrides handed to every run."""
    opts, rest = {}, []
    for item in argv:
        key, eq, value = item.partition("=")
        if eq and key in RUNNER_KEYS:
            opts[key] = value
        else:
            rest.append(item)
    return opts, rest


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise SuiteError(f"suite={name!r} is invalid; valid choices: {', '.join(SUITES)}")
    return SUITES[name]


def _name_part(overrides: list[str], seed: int) -> str:
    body = run_name(overrides, seed)
    return body[len("defaults__"):] if body.startswith("defaults__") else body


def plan(suite: Suite, profile: str = "full", seeds: list[int] | None = None, arms: list[str] | None = None,
         extra: list[str] | tuple[str, ...] = (), grid: dict[str, list[str]] | None = None,
         root: str | Path | None = None) -> list[Job]:
    """Every run of the suite in dependency order. `arms` selects arms (their needs come along); `extra` are
    overrides for every run; `grid` (key -> values, from `-m`) multiplies every arm's sweep."""
    if profile not in PROFILES:
        raise SuiteError(f"profile={profile!r} is invalid; valid choices: {', '.join(PROFILES)}")
    seeds = list(suite.seeds[profile]) if seeds is None else seeds
    if not seeds:
        raise SuiteError("seeds= is empty; give e.g. seeds=0,1,2")
    selected = [a.name for a in suite.arms] if arms is None else list(arms)
    for name in selected:
        if name not in [a.name for a in suite.arms]:
            raise SuiteError(f"arm={name!r} is not an arm of {suite.name}; valid: {', '.join(a.name for a in suite.arms)}")
    wanted: list[str] = []

    def add(name: str) -> None:  # depth first: needs before the arm
        for dep in suite.arm(name).needs:
            add(dep)
        if name not in wanted:
            wanted.append(name)

    for name in selected:
        add(name)
    grid_points = [[f"{k}={v}" for k, v in zip(grid, values)] for values in itertools.product(*grid.values())] \
        if grid else [[]]
    results = Path(root) if root is not None else None
    jobs: list[Job] = []
    by_arm_seed: dict[tuple[str, int, tuple], Job] = {}
    for name in wanted:
        arm = suite.arm(name)
        for seed in seeds:
            for point in arm.grid(profile):
                for extra_point in grid_points:
                    varying = [*point, *extra_point, *extra]
                    run = ("" if profile == "full" else f"__profile-{profile}")
                    job_name = shorten(f"{name}{run}__{_name_part(varying, seed)}")
                    overrides = [*suite.base, *suite.profiles.get(profile, ()), *arm.overrides, *varying,
                                 f"suite={suite.name}", f"arm={name}", f"profile={profile}", f"seed={seed}"]
                    job = Job(f"{name}/{job_name}", name, seed, job_name, overrides)
                    for dep in arm.needs:
                        job.needs.append(by_arm_seed[(dep, seed, tuple(extra_point))].key)
                    by_arm_seed[(name, seed, tuple(extra_point))] = job
                    jobs.append(job)
    if results is not None:
        for job in jobs:
            job.run_dir = results / suite.name / job.name
            job.overrides.append(f"paths.results={results}")
        dirs = {j.key: j.run_dir for j in jobs}
        for job in jobs:
            deps = {by_key.arm: dirs[by_key.key] for by_key in jobs if by_key.key in job.needs}
            job.overrides = [PLACEHOLDER.sub(lambda m: str(deps[m.group(1)]), o) for o in job.overrides]
    return jobs


def _execute(overrides: list[str], name: str, quiet: bool, expected: Path | None = None) -> dict:
    """One run, in this process or a worker (prepared again there: configs do not cross processes)."""
    from gapstudy.runs import execute, prepare, quiet_libraries

    quiet_libraries()
    if quiet:
        overrides = [*overrides, "progress=false"]
    cfg, run_dir = prepare(overrides, name=name)
    if expected is not None and Path(run_dir) != Path(expected):
        raise RuntimeError(f"run directory {run_dir} differs from the planned {expected}")
    return execute(cfg, run_dir)


def _spawn_context():
    import multiprocessing

    return multiprocessing.get_context("spawn")


def _local_pool(jobs: int) -> ProcessPoolExecutor:
    """The worker processes of `jobs=N`; they die with this process (see `_die_with_parent`)."""
    return ProcessPoolExecutor(max_workers=jobs, mp_context=_spawn_context(), initializer=_die_with_parent,
                               initargs=(os.getpid(),))


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


class _RayHandle:
    """A Ray object ref with the two methods the runner uses (done, result)."""

    def __init__(self, ref):
        self.ref = ref

    def done(self) -> bool:
        import ray

        return bool(ray.wait([self.ref], timeout=0)[0])

    def result(self):
        import ray

        return ray.get(self.ref)


class _ClusterExecutor:
    """Runs of a suite as cluster jobs: submitit (its local executor, or SLURM) or Ray tasks on a running cluster.
    Each job runs `_execute` on a worker that imports gapstudy from the same environment; the results root must be
    on a filesystem every worker sees (the runs pass pair logs and checkpoints through it)."""

    def __init__(self, kind: str, root: Path, address: str | None):
        self.kind = kind
        if kind.startswith("submitit"):
            import submitit

            self.executor = submitit.AutoExecutor(folder=str(root / ".submitit"),
                                                  cluster="local" if kind == "submitit_local" else "slurm")
            self.executor.update_parameters(timeout_min=24 * 60, nodes=1, tasks_per_node=1, cpus_per_task=1)
        else:
            import ray

            if not ray.is_initialized():
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            self.remote = ray.remote(num_cpus=1)(_execute)

    def submit(self, fn, *args):
        if self.kind.startswith("submitit"):
            return self.executor.submit(fn, *args)
        return _RayHandle(self.remote.remote(*args))

    def shutdown(self, cancel_futures: bool = True) -> None:
        pass  # submitted cluster jobs belong to the cluster; a re-run skips what they finished


def _wait_any(running: dict) -> list:
    """The handles in `running` that have finished (blocks until one has)."""
    handles = list(running)
    if all(isinstance(h, Future) for h in handles):
        return list(wait(handles, return_when=FIRST_COMPLETED)[0])
    while True:
        done = [h for h in handles if h.done()]
        if done:
            return done
        time.sleep(0.5)


def run_suite(suite: Suite, profile: str, seeds, arms, extra: list[str], grid: dict | None, jobs: int,
              root: str | Path, log=print, executor: str = "process", address: str | None = None) -> dict[str, str]:
    """Run the planned jobs, at most `jobs` at a time, in this process (jobs=1), in local processes, or as cluster
    jobs (`executor`); returns key -> "done" | "complete" | "failed: ..." | "busy: ..." | "skipped: needs ..."."""
    from gapstudy.config import compose
    from gapstudy.runs import is_complete

    planned = plan(suite, profile, seeds, arms, extra, grid, root)
    for job in planned:  # every override list must compose before anything runs (validation waits for artifacts)
        compose([o for o in job.overrides if "@" not in o])
    status: dict[str, str] = {}
    seconds: dict[str, float] = {}
    pending = list(planned)
    running: dict = {}
    started = time.perf_counter()
    total = len(planned)
    if executor not in EXECUTORS:
        raise SuiteError(f"executor={executor!r} is invalid; valid choices: {', '.join(EXECUTORS)}")
    if executor != "process":
        pool = _ClusterExecutor(executor, Path(root), address)
    else:
        pool = _local_pool(jobs) if jobs > 1 else None

    def finish(job: Job, outcome: str, final: dict | None, spent: float) -> None:
        status[job.key] = outcome
        seconds[job.key] = spent
        summary = ""
        if final:
            summary = "  ".join(f"{k.split('/')[-1]}={final[k]:.3f}" for k in
                                ("eval/gold_reward", "eval/win_rate", "eval/kl") if k in final)
        log(f"[{len(status)}/{total}] {outcome:<8} {suite.name}/{job.name} ({spent:.0f} s) {summary}".rstrip())

    try:
        while pending or running:
            progressed = False
            for job in list(pending):
                if any(status.get(dep, "").startswith(NOT_DONE) for dep in job.needs):
                    pending.remove(job)
                    finish(job, "skipped: needs a failed arm", None, 0.0)
                    progressed = True
                    continue
                if not all(status.get(dep) in ("done", "complete") for dep in job.needs):
                    continue
                if is_complete(job.run_dir):
                    pending.remove(job)
                    stale = _stale(job)
                    if stale:
                        finish(job, f"failed: {stale}", None, 0.0)
                    else:
                        finish(job, "complete", json.loads((job.run_dir / "final.json").read_text()), 0.0)
                    progressed = True
                    continue
                if pool is None:
                    pending.remove(job)
                    tic = time.perf_counter()
                    try:
                        final = _execute(job.overrides, job.name, False, job.run_dir)
                        finish(job, "done", final, time.perf_counter() - tic)
                    except Exception as error:  # noqa: BLE001 -- a failed arm must not stop the others
                        finish(job, _outcome(error), None, time.perf_counter() - tic)
                    progressed = True
                elif len(running) < jobs:
                    pending.remove(job)
                    running[pool.submit(_execute, job.overrides, job.name, True, job.run_dir)] = (job, time.perf_counter())
                    progressed = True
            if running and (not progressed or len(running) >= jobs or not pending):
                for future in _wait_any(running):
                    job, tic = running.pop(future)
                    try:
                        finish(job, "done", future.result(), time.perf_counter() - tic)
                    except Exception as error:  # noqa: BLE001
                        finish(job, _outcome(error), None, time.perf_counter() - tic)
            elif not progressed and not running and pending:
                raise RuntimeError(f"unsatisfiable needs: {[j.key for j in pending]}")
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    _write_timing(Path(root), suite, profile, planned, status, seconds, time.perf_counter() - started)
    return status


def _stale(job: Job) -> str | None:
    """A finished run is reused only if it was made with the same overrides: an arm whose definition changed
    since must not be reported with old results. Returns why it cannot be reused, or None."""
    from omegaconf import OmegaConf

    def normalised(overrides) -> list[str]:  # paths inside the results root compare relative to it
        overrides = list(overrides or [])
        root = next((o.partition("=")[2] for o in overrides if o.startswith("paths.results=")), None)
        ignored = ("progress=", "paths.results=")
        return [o.replace(root, "<root>") if root else o for o in overrides if not o.startswith(ignored)]

    mine = normalised(job.overrides)
    theirs = normalised(OmegaConf.load(job.run_dir / "config.yaml").get("overrides"))
    if theirs == mine:
        return None
    changed = sorted(set(mine) ^ set(theirs))
    return (f"{job.run_dir} holds a finished run made with other settings ({', '.join(changed[:4])}); "
            "remove it (or use another paths.results) to run this arm as now defined")


def _outcome(error: BaseException) -> str:
    """The status of a run that raised: "busy: ..." when another process holds its run directory (a re-run once
    that one is gone picks it up), else "failed: ..."."""
    from gapstudy.runs import RunBusy

    return f"busy: {error}" if isinstance(error, RunBusy) else f"failed: {first_line(error, 300)}"


def _write_timing(root: Path, suite: Suite, profile: str, planned, status, seconds, wall: float) -> None:
    """<root>/<suite>/timing-<profile>.json: how long this invocation took and what each run did."""
    path = root / suite.name / f"timing-{profile}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "command": "gapstudy run " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["run"] else None,
        "profile": profile, "wall_seconds": round(wall, 1),
        "runs": [{"arm": j.arm, "seed": j.seed, "run": j.name, "status": status.get(j.key, "not run"),
                  "seconds": round(seconds.get(j.key, 0.0), 1)} for j in planned],
    }, indent=1) + "\n")


def main(argv: list[str], multirun: bool = False) -> int:
    """`gapstudy run suite=NAME [profile=quick|full] [seeds=0,1,2] [jobs=N] [arm=A,B]
    [executor=process|submitit_local|submitit_slurm|ray [address=HOST:PORT]] [overrides]`."""
    from gapstudy.config import compose

    opts, rest = parse(argv)
    suite = get_suite(opts["suite"])
    profile = opts.get("profile", "full")
    try:
        seeds = [int(s) for s in opts["seeds"].split(",")] if "seeds" in opts else None
    except ValueError:
        raise SuiteError(f"seeds={opts['seeds']!r} is invalid; valid: integers separated by commas, e.g. seeds=0,1,2")
    try:
        jobs = int(opts.get("jobs", 1))
        if jobs < 1:
            raise ValueError
    except ValueError:
        raise SuiteError(f"jobs={opts.get('jobs')!r} is invalid; valid: an integer >= 1")
    arms = opts["arm"].split(",") if "arm" in opts else None
    extra, grid = [], {}
    for item in rest:
        key, _, value = item.partition("=")
        if multirun and "," in value and not value.startswith("["):
            grid[key] = value.split(",")
        else:
            extra.append(item)
    root = Path(compose([*suite.base, *extra]).paths.results).resolve()  # absolute: cluster workers run elsewhere
    status = run_suite(suite, profile, seeds, arms, extra, grid or None, jobs, root,
                       executor=opts.get("executor", "process"), address=opts.get("address"))
    failed = {k: v for k, v in status.items() if v.startswith(NOT_DONE)}
    done = sum(v in ("done", "complete") for v in status.values())
    print(f"{suite.name}: {done}/{len(status)} runs complete under {Path(root) / suite.name}"
          + (f"; {len(failed)} failed, busy or skipped:" if failed else ""))
    for key, outcome in failed.items():
        print(f"  {key}: {outcome}")
    return 1 if failed else 0
