"""Running suites: plan their jobs, skip the complete ones, hand the rest to an executor as their needs finish, and
keep going past a failed arm (its dependents are skipped). Several suites run as one schedule (`gapstudy run
suite=all`): no core waits for a suite's last run before the next suite starts, and a job that computes exactly
what an earlier one computes (data_coverage's online arm is shuffle_degree's and best_of_2's) is copied, not
trained again.

The order is the standard library's `graphlib.TopologicalSorter` over the jobs' needs: a job becomes ready once
every job it needs has an outcome, and of the ready jobs the earliest in plan order starts first (so jobs=1 runs
them in plan order). Interrupting a suite and running it again completes only what is missing: finished runs are
skipped (final.json) and a run killed mid-way resumes from its last checkpoint (state.pt).
"""
from __future__ import annotations

import graphlib
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from experiments.executors import make_executor
from experiments.plan import Job, plan
from experiments.suite import Suite
from gapstudy.errors import first_line

DONE = ("done", "complete", "copied")  # outcomes whose dependents may run
NOT_DONE = ("failed", "skipped:", "busy:")  # outcomes whose dependents are skipped and that make the exit status 1
# what names a run or says where it lives, never what it computes: left out when two jobs are compared (`_identity`)
NOT_COMPUTED = ("suite", "arm", "profile", "run_name", "overrides", "paths", "hydra", "progress")


@dataclass
class _Node:
    """A planned job of one of the suites of an invocation."""

    suite: Suite
    job: Job
    needs: list[str]  # node keys ("<suite>/<arm>/<run name>") of the jobs it reads from
    identity: str  # digest of what it computes (`_identity`)
    source: str | None = None  # node key of an identical job earlier in the invocation: its run is copied

    @property
    def key(self) -> str:
        return f"{self.suite.name}/{self.job.key}"


def run_suite(suite: Suite, profile: str, seeds, arms, extra: list[str], grid: dict | None, jobs: int,
              root: str | Path, log=print, executor: str = "process", address: str | None = None) -> dict[str, str]:
    """Run the planned jobs of one suite (see `run_suites`); returns job key -> outcome."""
    return run_suites([suite], profile, seeds, arms, extra, grid, jobs, root, log, executor, address)[suite.name]


def run_suites(suites: list[Suite], profile: str, seeds, arms, extra: list[str], grid: dict | None, jobs: int,
               root: str | Path, log=print, executor: str = "process",
               address: str | None = None) -> dict[str, dict[str, str]]:
    """Run the planned jobs of `suites` as one schedule, at most `jobs` at a time, in this process (jobs=1), in
    local processes, or as cluster jobs (`executor`): a slot freed by one suite's last runs goes to the next suite's.
    A job that computes exactly what a job of an earlier suite of the invocation computes (the same composed config,
    its needs identical too: another suite's online arm, say) does not train again: once that job is done its run is
    copied (gapstudy.runs.copy_run, outcome "copied"). Returns suite -> job key -> "done" | "complete" | "copied" |
    "failed: ..." | "busy: ..." | "skipped: needs ...". Each outcome is logged as "[i/N] outcome suite/run
    (seconds) metrics"; <root>/<suite>/timing-<profile>.json records the invocation."""
    from gapstudy.config import check_results_root

    check_results_root(str(root))  # a file there fails once, here, not once per run
    started = time.perf_counter()  # the invocation's wall time includes planning (composing every job's config)
    nodes = _nodes(suites, profile, seeds, arms, extra, grid, Path(root))
    status: dict[str, str] = {}
    seconds: dict[str, float] = {}
    spans: dict[str, list[float]] = {}  # suite -> [first start, last end], seconds since the invocation began
    pool = make_executor(executor, jobs, Path(root), address)
    graph = graphlib.TopologicalSorter({key: node.needs for key, node in nodes.items()})
    graph.prepare()
    place = {key: i for i, key in enumerate(nodes)}
    ready: list[str] = []  # node keys whose needs all have an outcome, not started yet
    running: dict = {}  # handle -> (node key, start time)

    members = {suite.name: [node for node in nodes.values() if node.suite is suite] for suite in suites}
    left = {name: len(group) for name, group in members.items()}  # suite -> jobs without an outcome yet

    def finish(key: str, outcome: str, final: dict | None, spent: float) -> None:
        node = nodes[key]
        status[key] = outcome
        seconds[key] = spent
        graph.done(key)
        now = time.perf_counter() - started
        span = spans.setdefault(node.suite.name, [now - spent, now])
        span[0], span[1] = min(span[0], now - spent), max(span[1], now)
        left[node.suite.name] -= 1
        if left[node.suite.name] == 0 and len(suites) > 1:  # a suite done mid-invocation: its timing now, not at the end
            _write_timing(Path(root), node.suite, profile, members[node.suite.name], status, seconds, span, now,
                          [s.name for s in suites], finished=False)
        summary = ""
        if final:
            summary = "  ".join(f"{k.split('/')[-1]}={final[k]:.3f}" for k in
                                ("eval/gold_reward", "eval/win_rate", "eval/kl") if k in final)
        if outcome == "copied":
            summary = f"from {nodes[node.source].suite.name}/{nodes[node.source].job.name}"
        log(f"[{len(status)}/{len(nodes)}] {outcome:<8} {node.suite.name}/{node.job.name} ({spent:.0f} s) "
            f"{summary}".rstrip())

    def collect(handles: list) -> None:
        for handle in sorted(handles, key=lambda h: place[running[h][0]]):
            key, tic = running.pop(handle)
            try:
                finish(key, "done", handle.result(), time.perf_counter() - tic)
            except Exception as error:  # noqa: BLE001 -- a failed arm must not stop the others
                finish(key, _outcome(error), None, time.perf_counter() - tic)

    try:
        while graph.is_active():
            ready = sorted([*ready, *graph.get_ready()], key=place.get)
            progressed = False
            for key in list(ready):
                outcome = _settled(nodes[key], status)
                if outcome is not None:  # skipped, complete (or stale) already, or copied: no slot needed
                    ready.remove(key)
                    tic = time.perf_counter()
                    final = None
                    if outcome == "copy":
                        outcome, final = _copy(nodes[key], nodes)
                    elif outcome == "complete":
                        final = json.loads((nodes[key].job.run_dir / "final.json").read_text())
                    finish(key, outcome, final, time.perf_counter() - tic if outcome == "copied" else 0.0)
                    progressed = True
                elif len(running) < pool.slots:
                    ready.remove(key)
                    tic = time.perf_counter()
                    handle = pool.submit(nodes[key].job)
                    running[handle] = (key, tic)
                    if handle.done():  # it ran in this process: what needed it may come next in plan order
                        collect([handle])
                        progressed = True
                        break
            if not (progressed and len(running) < pool.slots):  # else: what needed the settled jobs may be ready
                collect(pool.wait_any(list(running)))
    finally:
        pool.shutdown()
    wall = time.perf_counter() - started
    by_suite: dict[str, dict[str, str]] = {suite.name: {} for suite in suites}
    for key, outcome in status.items():  # in the order the outcomes came
        by_suite[nodes[key].suite.name][nodes[key].job.key] = outcome
    for suite in suites:
        _write_timing(Path(root), suite, profile, members[suite.name], status, seconds, spans.get(suite.name), wall,
                      [s.name for s in suites])
    return by_suite


def _nodes(suites, profile, seeds, arms, extra, grid, root: Path) -> dict[str, _Node]:
    """The jobs of every suite in plan order, keyed "<suite>/<arm>/<run name>", each with the digest of what it
    computes; a job whose digest a job of an earlier suite has gets that job as its `source` (and need)."""
    from gapstudy.config import compose

    nodes: dict[str, _Node] = {}
    first: dict[str, str] = {}  # identity -> node key of the first job computing it
    for suite in suites:
        planned = plan(suite, profile, seeds, arms, extra, grid, root)
        for job in planned:
            # every override list must compose before anything runs (validation waits for artifacts)
            cfg = compose([o for o in job.overrides if "@" not in o])
            needs = [f"{suite.name}/{dep}" for dep in job.needs]
            identity = _identity(cfg, {str(nodes[n].job.run_dir): nodes[n].identity for n in needs})
            node = _Node(suite, job, needs, identity, first.get(identity))
            if node.source is not None:
                node.needs = [*needs, node.source]
            nodes[node.key] = node
        for key, node in nodes.items():  # within a suite identical arms both train: that is the suite's choice
            first.setdefault(node.identity, key)
    return nodes


def _identity(cfg, needs: dict[str, str]) -> str:
    """Digest of what a run computes: its composed config without what only names or places it (NOT_COMPUTED), the
    run directories of the jobs it reads from replaced by their own digests (a replay of identical logs is
    identical). The registry's runs depend on nothing else: every random stream is seeded from `seed`."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg, resolve=False)
    for key in NOT_COMPUTED:
        data.pop(key, None)
    text = json.dumps(data, sort_keys=True, default=str)
    for run_dir, digest in sorted(needs.items(), key=lambda item: -len(item[0])):  # longest first: no prefix clash
        text = text.replace(run_dir, f"<run {digest}>")
    return hashlib.sha256(text.encode()).hexdigest()


def _copy(node: _Node, nodes: dict[str, _Node]) -> tuple[str, dict | None]:
    """Copy the run of `node`'s source into `node`'s run directory: ("copied", final metrics) or a failure."""
    from gapstudy.runs import copy_run

    job = node.job
    fields = {"suite": node.suite.name, "arm": job.arm, "run_name": job.name, "overrides": list(job.overrides)}
    try:
        return "copied", copy_run(nodes[node.source].job.run_dir, job.run_dir, fields)
    except Exception as error:  # noqa: BLE001 -- a failed copy must not stop the others
        return _outcome(error), None


def _settled(node: _Node, status: dict[str, str]) -> str | None:
    """The outcome of a ready job that needs no run slot: "skipped: ..." when a job it needs did not finish,
    "complete" when its run directory holds the finished run, "failed: ..." when that run is stale, "copy" when an
    identical job of the invocation has finished (its run is to be copied); else None (it must train)."""
    from gapstudy.runs import is_complete

    if any(status[dep].startswith(NOT_DONE) for dep in node.needs):
        return "skipped: needs a failed arm"
    if is_complete(node.job.run_dir):
        stale = _stale(node.job)
        return f"failed: {stale}" if stale else "complete"
    return "copy" if node.source is not None else None


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


def _write_timing(root: Path, suite: Suite, profile: str, nodes: list[_Node], status, seconds, span, wall: float,
                  suites: list[str], finished: bool = True) -> None:
    """<root>/<suite>/timing-<profile>.json: how long this invocation took and what each run did. `wall_seconds` is
    the suite's own span (its first run's start to its last run's end) when it ran beside other suites, the whole
    invocation's when alone; `invocation` names the suites of the invocation and its wall-clock seconds (so far,
    with `finished` false, when the suite finished before the invocation did: a run of every suite that is stopped
    midway keeps the timings of the suites it completed)."""
    path = root / suite.name / f"timing-{profile}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    own = wall if len(suites) == 1 or span is None else span[1] - span[0]
    path.write_text(json.dumps({
        "command": "gapstudy run " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["run"] else None,
        "profile": profile, "wall_seconds": round(own, 1),
        "invocation": {"suites": suites, "wall_seconds": round(wall, 1), "finished": finished},
        "runs": [{"arm": n.job.arm, "seed": n.job.seed, "run": n.job.name, "status": status.get(n.key, "not run"),
                  "seconds": round(seconds.get(n.key, 0.0), 1),
                  **({"copied_from": f"{n.source.split('/')[0]}/{n.source.split('/')[-1]}"} if n.source else {})}
                 for n in nodes],
    }, indent=1) + "\n")
