"""Running a suite: plan its jobs, skip the complete ones, hand the rest to an executor as their needs finish, and
keep going past a failed arm (its dependents are skipped).

The order is the standard library's `graphlib.TopologicalSorter` over the jobs' needs: a job becomes ready once
every job it needs has an outcome, and of the ready jobs the earliest in plan order starts first (so jobs=1 runs
them in plan order). Interrupting a suite and running it again completes only what is missing: finished runs are
skipped (final.json) and a run killed mid-way resumes from its last checkpoint (state.pt).
"""
from __future__ import annotations

import graphlib
import json
import sys
import time
from pathlib import Path

from experiments.executors import make_executor
from experiments.plan import Job, plan
from experiments.suite import Suite
from gapstudy.errors import first_line

DONE = ("done", "complete")  # outcomes whose dependents may run
NOT_DONE = ("failed", "skipped:", "busy:")  # outcomes whose dependents are skipped and that make the exit status 1


def run_suite(suite: Suite, profile: str, seeds, arms, extra: list[str], grid: dict | None, jobs: int,
              root: str | Path, log=print, executor: str = "process", address: str | None = None) -> dict[str, str]:
    """Run the planned jobs, at most `jobs` at a time, in this process (jobs=1), in local processes, or as cluster
    jobs (`executor`); returns key -> "done" | "complete" | "failed: ..." | "busy: ..." | "skipped: needs ...".
    Each outcome is logged as "[i/N] outcome suite/run (seconds) metrics"; <root>/<suite>/timing-<profile>.json
    records the invocation."""
    from gapstudy.config import check_results_root, compose

    check_results_root(str(root))  # a file there fails once, here, not once per run
    planned = plan(suite, profile, seeds, arms, extra, grid, root)
    for job in planned:  # every override list must compose before anything runs (validation waits for artifacts)
        compose([o for o in job.overrides if "@" not in o])
    status: dict[str, str] = {}
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    pool = make_executor(executor, jobs, Path(root), address)
    graph = graphlib.TopologicalSorter({job.key: job.needs for job in planned})
    graph.prepare()
    by_key = {job.key: job for job in planned}
    place = {job.key: i for i, job in enumerate(planned)}
    ready: list[Job] = []  # jobs whose needs all have an outcome, not started yet
    running: dict = {}  # handle -> (job, start time)

    def finish(job: Job, outcome: str, final: dict | None, spent: float) -> None:
        status[job.key] = outcome
        seconds[job.key] = spent
        graph.done(job.key)
        summary = ""
        if final:
            summary = "  ".join(f"{k.split('/')[-1]}={final[k]:.3f}" for k in
                                ("eval/gold_reward", "eval/win_rate", "eval/kl") if k in final)
        log(f"[{len(status)}/{len(planned)}] {outcome:<8} {suite.name}/{job.name} ({spent:.0f} s) {summary}".rstrip())

    def collect(handles: list) -> None:
        for handle in sorted(handles, key=lambda h: place[running[h][0].key]):
            job, tic = running.pop(handle)
            try:
                finish(job, "done", handle.result(), time.perf_counter() - tic)
            except Exception as error:  # noqa: BLE001 -- a failed arm must not stop the others
                finish(job, _outcome(error), None, time.perf_counter() - tic)

    try:
        while graph.is_active():
            ready = sorted([*ready, *(by_key[key] for key in graph.get_ready())], key=lambda j: place[j.key])
            progressed = False
            for job in list(ready):
                outcome = _settled(job, status)
                if outcome is not None:  # skipped, or complete (or stale) already: no slot needed
                    ready.remove(job)
                    final = json.loads((job.run_dir / "final.json").read_text()) if outcome == "complete" else None
                    finish(job, outcome, final, 0.0)
                    progressed = True
                elif len(running) < pool.slots:
                    ready.remove(job)
                    tic = time.perf_counter()
                    handle = pool.submit(job)
                    running[handle] = (job, tic)
                    if handle.done():  # it ran in this process: what needed it may come next in plan order
                        collect([handle])
                        progressed = True
                        break
            if not (progressed and len(running) < pool.slots):  # else: what needed the settled jobs may be ready
                collect(pool.wait_any(list(running)))
    finally:
        pool.shutdown()
    _write_timing(Path(root), suite, profile, planned, status, seconds, time.perf_counter() - started)
    return status


def _settled(job: Job, status: dict[str, str]) -> str | None:
    """The outcome of a ready job that needs no run: "skipped: ..." when a job it needs did not finish,
    "complete" when its run directory holds the finished run, "failed: ..." when that run is stale; else None."""
    from gapstudy.runs import is_complete

    if any(status[dep].startswith(NOT_DONE) for dep in job.needs):
        return "skipped: needs a failed arm"
    if not is_complete(job.run_dir):
        return None
    stale = _stale(job)
    return f"failed: {stale}" if stale else "complete"


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
