"""The experiment registry: suites are well-formed, plans are ordered and named, every arm of every suite runs,
a failed arm does not stop the others, and an interrupted suite completes only what was missing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments import SUITES, Arm, Suite
from experiments.runner import SuiteError, plan, run_suite
from tests.conftest import SMALL_SYNTH, read

TINY = ["steps=2", "eval.every=1", "eval.prompts=8", "progress=false", "checkpoint_every=0"]


def test_registry_has_every_suite_of_the_issue_with_the_analysis_arm_names():
    from analysis.style import SUITE_ARMS

    assert list(SUITES) == ["kl_budget", "data_coverage", "shuffle_degree", "suboptimal_data", "best_of_2",
                            "sync_period", "curriculum", "bandit", "sample_reuse", "toy8x8"]
    for name, suite in SUITES.items():
        assert [a.name for a in suite.arms] == SUITE_ARMS[name], name
        assert suite.question.endswith("?") and suite.paper and suite.claims
        assert set(suite.profiles) == {"quick", "full"} and len(suite.seeds["full"]) >= 3


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
    assert len(kl) == 6 and len({j.name for j in kl}) == 6
    quick = plan(SUITES["kl_budget"], "quick", None, arms=["offline_ipo"])
    assert [j.name for j in quick] == ["offline_ipo__profile-quick__algo.beta-0.01__lr-0.001__seed-0"]
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


def test_a_suite_killed_midway_completes_only_what_was_missing(tmp_path):
    root = tmp_path / "results"
    args = [sys.executable, "-m", "gapstudy.cli", "run", "suite=bandit", "profile=quick",
            "arm=dpo_onpolicy_R1,dpo_offline_R1", "steps=40", "eval.every=10", "eval.prompts=8",
            "checkpoint_every=5", "world.pretrain_steps=60", f"paths.results={root}"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    suite_dir = root / "bandit"
    first = second = None
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once the first run is complete and the second has a checkpoint
        runs = sorted(suite_dir.glob("dpo_*"))
        first = next((r for r in runs if r.name.startswith("dpo_onpolicy") and (r / "final.json").exists()), None)
        second = next((r for r in runs if r.name.startswith("dpo_offline") and (r / "state.pt").exists()), None)
        if first and second:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first and second, "the suite did not get far enough to be interrupted"
    assert not (second / "final.json").exists()
    first_metrics = (first / "metrics.jsonl").stat().st_mtime_ns

    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "2/2 runs complete" in done.stdout
    timing = json.loads((suite_dir / "timing-quick.json").read_text())
    assert [r["status"] for r in timing["runs"]] == ["complete", "done"]
    assert (first / "metrics.jsonl").stat().st_mtime_ns == first_metrics  # the finished run was not touched
    steps = [r["step"] for r in read(second) if "train/loss" in r]
    assert steps == list(range(40))  # resumed from its checkpoint: every step exactly once


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
