"""The experiment registry: suites are well-formed, plans are ordered and named, every arm of every suite runs,
a failed arm does not stop the others, and an interrupted suite completes only what was missing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from experiments import SUITES, schedule
from experiments.executors import Executor
from experiments.plan import plan
from experiments.schedule import run_suite
from experiments.suite import Arm, Suite, SuiteError
from tests.conftest import SMALL_SYNTH, read

TINY = ["steps=2", "eval.every=1", "eval.prompts=8", "progress=false", "checkpoint_every=0"]


def test_registry_has_every_suite_of_the_issue():
    assert list(SUITES) == ["kl_budget", "data_coverage", "shuffle_degree", "suboptimal_data", "best_of_2",
                            "sync_period", "curriculum", "bandit", "sample_reuse", "toy8x8"]
    for suite in SUITES.values():
        assert suite.question.endswith("?") and suite.paper and suite.claims
        assert set(suite.profiles) == {"quick", "full"} and len(suite.seeds["full"]) >= 5


def test_suite_rejects_an_undeclared_or_unknown_need():
    with pytest.raises(ValueError, match="without listing it in needs"):
        Suite("s", "q?", "p", (Arm("a"), Arm("b", ("data.path=@a",))))
    with pytest.raises(ValueError, match="unknown arm 'z'"):
        Suite("s", "q?", "p", (Arm("a", needs=("z",)),))
    with pytest.raises(ValueError, match="sweeps"):
        Suite("s", "q?", "p", (Arm("a", sweep=(("lr", (1, 2)),)), Arm("b", needs=("a",))))


def test_plan_orders_needs_first_resolves_placeholders_and_names_every_choice(tmp_path):
    suite = SUITES["suboptimal_data"]
    jobs = plan(suite, "full", [0, 1], arms=["sft_vs_mid"], extra=["lr=0.01"], root=tmp_path)
    assert [(j.arm, j.seed) for j in jobs] == [("online", 0), ("online", 1), ("sft_vs_mid", 0), ("sft_vs_mid", 1)]
    online0, _, mid0, _ = jobs
    assert online0.run_dir == tmp_path / "suboptimal_data" / "online__lr-0.01__seed-0"
    assert mid0.needs == [online0.key]
    assert f"sampler_from=[sft,{online0.run_dir}/snapshot-0.2]" in mid0.overrides
    assert "arm=sft_vs_mid" in mid0.overrides and "suite=suboptimal_data" in mid0.overrides
    # a sweep gives one run per point (quick: the first value of each key); a non-full profile is in the name
    kl = plan(SUITES["kl_budget"], "full", [0], arms=["offline_ipo"])
    assert len(kl) == 3 and len({j.name for j in kl}) == 3
    quick = plan(SUITES["kl_budget"], "quick", None, arms=["offline_ipo"])
    assert [j.name for j in quick] == ["offline_ipo__profile-quick__algo.beta-0.01__seed-0"]
    # -m on top of a suite: the grid multiplies every arm, and each point keeps its own dependency chain
    grid = plan(suite, "full", [0], arms=["final_vs_final"], grid={"lr": ["0.1", "0.2"]}, root=tmp_path)
    assert len(grid) == 4 and grid[2].needs == [grid[0].key] and grid[3].needs == [grid[1].key]
    with pytest.raises(SuiteError, match="valid: online, offline_dataset"):
        plan(suite, "full", [0], arms=["nope"])
    with pytest.raises(SuiteError, match="quick, full"):
        plan(suite, "long", [0])


@pytest.mark.parametrize("name", list(SUITES))
def test_every_arm_of_every_suite_runs_two_steps(name, results):
    suite = SUITES[name]
    extra = [*TINY, *(SMALL_SYNTH if "world=synth_lm" in suite.base else ["world.pretrain_steps=60"])]
    status = run_suite(suite, "quick", [0], None, extra, None, 1, results, log=lambda line: None)
    assert set(status.values()) == {"done"}, status
    for job in plan(suite, "quick", [0], None, extra, None, results):
        records = read(job.run_dir)
        assert max(r["step"] for r in records) == 2
        cfg = (job.run_dir / "config.yaml").read_text()
        assert f"arm: {job.arm}" in cfg and f"suite: {name}" in cfg
        assert "code_version: " in cfg  # the commit that made the run (None outside a git checkout)
    timing = json.loads((results / name / "timing-quick.json").read_text())
    assert len(timing["runs"]) == len(status)


def test_suite_rejects_needs_that_form_a_cycle():
    with pytest.raises(ValueError, match="the needs of arms .* form a cycle"):
        Suite("s", "q?", "p", (Arm("a", needs=("b",)), Arm("b", needs=("a",))))


class _Deferred(Executor):
    """Runs nothing: a run finishes (empty metrics, or an error for the arms in `failing`) when it is waited for,
    the earliest submitted first, as a pool's would."""

    def __init__(self, slots: int, failing=()):
        self.slots, self.failing, self.started, self.pending = slots, failing, [], []

    def submit(self, job):
        self.started.append(job.key)
        self.pending.append((Future(), job))
        return self.pending[-1][0]

    def wait_any(self, handles):
        handle, job = self.pending.pop(0)
        handle.set_exception(RuntimeError("boom")) if job.arm in self.failing else handle.set_result({})
        return [handle]


PLAN_ORDER = ["a0", "a1", "b0", "b1", "c0", "c1"]  # arm and seed of each planned job (b needs a)


@pytest.mark.parametrize("slots, failing, started, finished", [
    (1, (), PLAN_ORDER, PLAN_ORDER),
    (2, (), PLAN_ORDER, PLAN_ORDER),  # a0 and a1 at once; b0 the moment a0 is done, before c0
    (2, ("a",), ["a0", "a1", "c0", "c1"], ["a0", "b0", "a1", "b1", "c0", "c1"]),  # b skipped, taking no slot
])
def test_the_scheduler_starts_ready_jobs_in_plan_order_within_its_slots_and_skips_dependents_of_a_failure(
        tmp_path, monkeypatch, slots, failing, started, finished):
    suite = Suite("s", "q?", "p", (Arm("a"), Arm("b", ("data=replay", "data.path=@a"), needs=("a",)), Arm("c")),
                  base=("world=token_bandit",), profiles={"quick": ()})
    executor = _Deferred(slots, failing)
    monkeypatch.setattr(schedule, "make_executor", lambda *args: executor)
    lines = []
    status = run_suite(suite, "quick", [0, 1], None, TINY, None, slots, tmp_path, log=lines.append)
    short = {job.key: f"{job.arm}{job.seed}" for job in plan(suite, "quick", [0, 1], None, TINY, None, tmp_path)}
    assert list(short.values()) == PLAN_ORDER
    assert [short[key] for key in executor.started] == started
    assert [short[key] for key in status] == finished
    assert [line.split(" ")[0] for line in lines] == [f"[{i}/6]" for i in range(1, 7)]
    broken = {"a": "failed: RuntimeError: boom", "b": "skipped: needs a failed arm"} if failing else {}
    assert {short[key]: outcome for key, outcome in status.items()} == \
        {name: broken.get(name[0], "done") for name in PLAN_ORDER}
    timing = json.loads((tmp_path / "s" / "timing-quick.json").read_text())
    assert [short[f"{r['arm']}/{r['run']}"] for r in timing["runs"]] == PLAN_ORDER  # the plan's order, always


def test_a_suite_whose_results_root_is_a_file_stops_with_one_line_before_any_run(tmp_path, capsys):
    from gapstudy.cli import main

    afile = (tmp_path / "afile").resolve()
    afile.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "suite=bandit", "profile=quick", "seeds=0", f"paths.results={afile}"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2
    assert out == ""  # no "[i/16] failed" line per run
    assert err.splitlines() == [f"gapstudy: error: paths.results={str(afile)!r} is invalid: {str(afile)!r} is a file, "
                                "not a directory"]


def test_a_failing_arm_is_reported_and_only_its_dependents_are_skipped(tmp_path):
    suite = Suite("broken", "Does it carry on?", "none", (
        Arm("bad", ("reward=R9",)),  # rejected when the run is prepared
        Arm("after_bad", ("data=replay", "data.path=@bad"), needs=("bad",)),
        Arm("good", ("sync_every=inf",)),
    ), base=("world=token_bandit",), profiles={"quick": ()})
    status = run_suite(suite, "quick", [0], None, [*TINY, "world.pretrain_steps=60"], None, 1, tmp_path, log=lambda line: None)
    by_arm = {key.split("/")[0]: outcome for key, outcome in status.items()}
    assert by_arm["bad"].startswith("failed: ConfigError: reward='R9' is invalid")
    assert by_arm["after_bad"].startswith("skipped")
    assert by_arm["good"] == "done"


KILLED_ARMS = ["dpo_onpolicy_R1", "dpo_offline_R1", "ipo_onpolicy_R1"]  # with jobs=2 the third waits for a worker
KILLED = ["steps=30", "eval.every=10", "eval.prompts=8", "checkpoint_every=3", "world.pretrain_steps=60"]


def _process(pid: int) -> tuple[int, str, int, str] | None:
    """(ppid, state, start time, command line) of a live process from /proc, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ..., starttime (22nd field)
    return int(fields[1]), fields[0], int(fields[19]), cmdline


def _children(pid: int) -> dict[int, tuple[int, str]]:
    """pid -> (start time, command line) of every live child of `pid` (the pool's workers, its resource tracker)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _process(int(entry.name))) and info[0] == pid and info[1] not in "ZX":
            out[int(entry.name)] = (info[2], info[3])
    return out


def _survivors(children: dict[int, tuple[int, str]]) -> dict[int, str]:
    """Those of `children` still running (a zombie has exited; a pid with another start time is another process)."""
    out = {}
    for pid, (started, cmdline) in children.items():
        info = _process(pid)
        if info and info[1] not in "ZX" and info[2] == started:
            out[pid] = cmdline
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the pool's workers in /proc (Linux)")
def test_a_jobs_2_suite_killed_at_random_moments_leaves_no_worker_and_ends_as_if_never_killed(tmp_path):
    """SIGKILL the suite's process only (not its group: its workers must die with it on their own) at seeded
    moments chosen by observed progress -- as soon as its workers exist (before any state.pt), then after a
    random number of training steps (with state.pt on disk) -- check by pid that none of its children outlives it, re-run
    until complete, and compare every run with an uninterrupted one: identical metrics, step by step."""
    import random

    root = tmp_path / "results"
    args = [sys.executable, "-m", "gapstudy.cli", "run", "suite=bandit", "profile=quick", "jobs=2",
            f"arm={','.join(KILLED_ARMS)}", *KILLED, f"paths.results={root}"]
    suite_dir = root / "bandit"
    rng = random.Random(10)
    progress = lambda: sum(f.read_text().count('"train/loss"') for f in suite_dir.glob("*/metrics.jsonl"))
    recorded: dict[int, tuple[int, str]] = {}  # every child seen, to clean up after a failure
    moments = []
    try:
        for cycle in range(2):  # each cycle costs a start of the suite and its workers (~20 s on 2 cores)
            stderr = tmp_path / f"stderr-{cycle}"
            with open(stderr, "w") as err:
                proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
            target = None if cycle == 0 else progress() + rng.randint(1, 25)
            children: dict[int, tuple[int, str]] = {}
            while proc.poll() is None:
                children = _children(proc.pid)
                recorded.update(children)
                workers = [pid for pid, (_, cmd) in children.items() if "spawn_main" in cmd]
                if workers and (target is None or progress() >= target):
                    states = sum(1 for _ in suite_dir.glob("*/state.pt"))
                    os.kill(proc.pid, signal.SIGKILL)  # the parent alone: no handler runs, the pool is not shut down
                    moments.append((progress(), len(workers), states))
                    break
                time.sleep(0.02)
            proc.wait()
            assert len(moments) == cycle + 1, f"finished before kill {cycle + 1}: {stderr.read_text()[-2000:]}"
            deadline = time.time() + 60  # a grace period to wait in, never a measured duration
            while _survivors(children) and time.time() < deadline:
                time.sleep(0.05)
            assert not _survivors(children), f"orphans after kill {cycle + 1} at {moments[-1]}: {_survivors(children)}"
        assert any(states for _, _, states in moments) and len({m[0] for m in moments}) == len(moments), moments

        finished = {r.name: (r / "metrics.jsonl").stat().st_mtime_ns for r in suite_dir.glob("*") if
                    (r / "final.json").exists()}
        done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    finally:
        for pid in _survivors(recorded):  # only the children this test saw, if a broken runner left them
            os.kill(pid, signal.SIGKILL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3/3 runs complete" in done.stdout
    timing = json.loads((suite_dir / "timing-quick.json").read_text())
    assert {r["run"]: r["status"] for r in timing["runs"]} == \
        {r["run"]: "complete" if r["run"] in finished else "done" for r in timing["runs"]}
    for name, mtime in finished.items():  # a run finished before a kill is not touched again
        assert (suite_dir / name / "metrics.jsonl").stat().st_mtime_ns == mtime
    assert not list(suite_dir.glob("*/state.pt")) and not list(suite_dir.glob("*/.lock"))

    reference = tmp_path / "uninterrupted"
    status = run_suite(SUITES["bandit"], "quick", None, KILLED_ARMS, KILLED, None, 1, reference, log=lambda line: None)
    assert set(status.values()) == {"done"}
    clean = lambda records: [{k: v for k, v in r.items() if k != "time/seconds"} for r in records]
    for job in plan(SUITES["bandit"], "quick", None, KILLED_ARMS, KILLED, None, reference):
        killed = suite_dir / job.name
        assert json.loads((killed / "final.json").read_text()) == json.loads((job.run_dir / "final.json").read_text())
        records = clean(read(killed))
        assert records == clean(read(job.run_dir)), job.name  # every step exactly once, with the same numbers
        assert [r["step"] for r in records if "train/loss" in r] == list(range(30))


def test_figures_command_draws_a_suite_and_rejects_bad_input(tmp_path, capsys):
    from gapstudy.cli import main

    extra = [*TINY, *SMALL_SYNTH]
    status = run_suite(SUITES["data_coverage"], "quick", [0], None, extra, None, 1, tmp_path, log=lambda line: None)
    assert set(status.values()) == {"done"}
    main(["figures", f"paths.results={tmp_path}", "suite=data_coverage", "profile=quick"])
    out = capsys.readouterr().out
    assert (tmp_path / "figures" / "data_coverage" / "win_rate_vs_kl.png").stat().st_size > 10_000
    report = (tmp_path / "data_coverage" / "REPORT.md").read_text()
    assert "| 3 | Offline training on the online pair log" in report and "| 4 |" in report
    assert "timings" in out  # the runner's timing file became a table
    with pytest.raises(SystemExit) as exit_info:  # the full profile has no runs here
        main(["figures", f"paths.results={tmp_path}", "suite=data_coverage"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main(["figures", "suite=nope"])
    assert "valid choices: kl_budget" in capsys.readouterr().err


def test_a_finished_run_of_a_changed_arm_is_not_reused(tmp_path):
    extra = [*TINY, "world.pretrain_steps=60"]
    first = Suite("s", "q?", "p", (Arm("a", ("lr=0.001",)), Arm("b", ("data=replay", "data.path=@a"), needs=("a",))),
                  base=("world=token_bandit",), profiles={"quick": ()})
    assert set(run_suite(first, "quick", [0], None, extra, None, 1, tmp_path, log=print).values()) == {"done"}
    again = run_suite(first, "quick", [0], None, extra, None, 1, tmp_path, log=print)
    assert set(again.values()) == {"complete"}
    moved = tmp_path.parent / (tmp_path.name + "_moved")  # a results root copied elsewhere is still reusable
    tmp_path.rename(moved)
    assert set(run_suite(first, "quick", [0], None, extra, None, 1, moved, log=print).values()) == {"complete"}
    changed = Suite("s", "q?", "p", (Arm("a", ("lr=0.002",)), Arm("b", ("data=replay", "data.path=@a"), needs=("a",))),
                    base=("world=token_bandit",), profiles={"quick": ()})
    status = run_suite(changed, "quick", [0], None, extra, None, 1, moved, log=print)
    by_arm = {key.split("/")[0]: outcome for key, outcome in status.items()}
    assert "made with other settings (lr=0.001, lr=0.002)" in by_arm["a"]
    assert by_arm["b"].startswith("skipped")


def _two_suites():
    """Suite t's arm x computes what suite s's arm a computes (in another order of overrides); t's replay of x is
    then s's replay of a; t's arm y differs in one setting that changes nothing of the numbers it logs first."""
    s = Suite("s", "q?", "p", (Arm("a", ("lr=0.001", "algo=dpo")),
                               Arm("b", ("data=replay", "data.path=@a"), needs=("a",))),
              base=("world=token_bandit",), profiles={"quick": ()})
    t = Suite("t", "q?", "p", (Arm("x", ("algo=dpo", "lr=0.001")), Arm("y", ("lr=0.002",)),
                               Arm("z", ("data=replay", "data.path=@x"), needs=("x",))),
              base=("world=token_bandit",), profiles={"quick": ()})
    return s, t


def test_a_job_of_a_later_suite_that_computes_what_an_earlier_suite_computes_is_copied_not_trained(tmp_path):
    from experiments.schedule import run_suites

    s, t = _two_suites()
    extra = [*TINY, "world.pretrain_steps=60"]
    lines: list[str] = []
    name = lambda arm: plan(s if arm in "ab" else t, "quick", [0], [arm], extra)[-1].name  # arm__profile-quick__...
    early = tmp_path / "s" / "timing-quick.json"
    log = lambda line: lines.append(line + (f" | s timing: {json.loads(early.read_text())['invocation']['finished']}"
                                            if early.exists() else ""))
    status = run_suites([s, t], "quick", [0], None, extra, None, 1, tmp_path, log=log)
    assert lines[2].endswith("| s timing: False")  # suite s's timing was written as it finished, before t ran
    assert json.loads(early.read_text())["invocation"]["finished"] is True  # and again at the end
    by_arm = {suite: {key.split("/")[0]: outcome for key, outcome in outcomes.items()}
              for suite, outcomes in status.items()}
    assert by_arm == {"s": {"a": "done", "b": "done"}, "t": {"x": "copied", "y": "done", "z": "copied"}}
    assert any(line.split()[1:3] == ["copied", f"t/{name('x')}"] and f"from s/{name('a')}" in line for line in lines)
    # the copy is what training would have given: suite t alone, in another root, trains x and z itself
    alone = run_suite(t, "quick", [0], None, extra, None, 1, tmp_path / "alone", log=lambda line: None)
    assert set(alone.values()) == {"done"}
    for arm, source in (("x", "a"), ("z", "b")):
        copy, trained = tmp_path / "t" / name(arm), tmp_path / "alone" / "t" / name(arm)
        clean = lambda rows: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]
        assert clean(read(copy)) == clean(read(trained)) and len(read(copy)) > 2
        assert (copy / "final.json").read_text() == (tmp_path / "s" / name(source) / "final.json").read_text()
        config = (copy / "config.yaml").read_text()
        assert f"suite: t\narm: {arm}\n" in config.replace("profile: quick\n", "")
        assert f"copied_from: ../../s/{name(source)}" in config
    timing = json.loads((tmp_path / "t" / "timing-quick.json").read_text())
    assert timing["invocation"]["suites"] == ["s", "t"]
    assert [r.get("copied_from") for r in timing["runs"]] == [f"s/{name('a')}", None, f"s/{name('b')}"]
    again = run_suites([s, t], "quick", [0], None, extra, None, 1, tmp_path, log=lambda line: None)
    assert {o for outcomes in again.values() for o in outcomes.values()} == {"complete"}  # copies are runs


def test_identity_of_registry_jobs_finds_the_runs_the_suites_share_and_only_those():
    from experiments.schedule import _nodes

    names = ["kl_budget", "data_coverage", "shuffle_degree", "suboptimal_data", "best_of_2"]
    nodes = _nodes([SUITES[n] for n in names], "full", [0], None, [], None, Path("/results"))
    copies = {key: node.source for key, node in nodes.items() if node.source}
    assert copies == {
        "data_coverage/offline_dataset/offline_dataset__seed-0":
            "kl_budget/offline_ipo/offline_ipo__algo.beta-0.01__seed-0",
        "shuffle_degree/online/online__seed-0": "data_coverage/online/online__seed-0",
        "shuffle_degree/window_all/window_all__seed-0": "data_coverage/replay_shuffled/replay_shuffled__seed-0",
        # suboptimal_data's online arm saves a snapshot (another run); its offline arm is kl_budget's
        "suboptimal_data/offline_dataset/offline_dataset__seed-0":
            "kl_budget/offline_ipo/offline_ipo__algo.beta-0.01__seed-0",
        "best_of_2/ipo_online/ipo_online__seed-0": "data_coverage/online/online__seed-0",
        "best_of_2/ipo_offline/ipo_offline__seed-0": "kl_budget/offline_ipo/offline_ipo__algo.beta-0.01__seed-0",
    }
    assert all(node.source in node.needs for node in nodes.values() if node.source)


def test_suite_all_is_every_suite_in_registry_order_and_a_list_keeps_its_order():
    from gapstudy.cli import get_suites

    assert get_suites("all") == list(SUITES.values())
    assert [s.name for s in get_suites("toy8x8,bandit")] == ["toy8x8", "bandit"]
