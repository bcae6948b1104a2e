"""Sweeps through hydra launchers, as on a cluster: joblib (local processes), submitit with its local executor
(the SLURM launcher's code path without SLURM), and Ray against a head started here on loopback. Every launched
run lands in the shared results root, complete."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SWEEP = ["algo=dpo,ipo", "steps=3", "eval.every=0", "eval.prompts=8", "world.pretrain_steps=60", "progress=false",
         "checkpoint_every=0"]
NAMES = [f"algo-{a}__eval.every-0__eval.prompts-8__steps-3__world.pretrain_steps-60__seed-0" for a in ("dpo", "ipo")]


def _gapstudy(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "gapstudy.cli", "run", *args], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A results root whose world is already built (launched workers only load it)."""
    root = tmp_path_factory.mktemp("launchers")
    _gapstudy(["steps=0", "world.pretrain_steps=60", "eval.prompts=8", "progress=false", f"paths.results={root}"])
    return root


def _fresh_root(built: Path, name: str) -> Path:
    root = built.parent / name
    shutil.copytree(built / ".cache", root / ".cache")
    return root


def _assert_complete(root: Path) -> None:
    for name in NAMES:
        final = json.loads((root / name / "final.json").read_text())
        assert final["step"] == 3 and 0.0 <= final["eval/win_rate"] <= 1.0


def test_joblib_launcher_runs_the_sweep_in_parallel_processes(built):
    root = _fresh_root(built, "joblib")
    _gapstudy(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *SWEEP, f"paths.results={root}"])
    _assert_complete(root)


def test_submitit_launcher_with_its_local_executor(built):
    pytest.importorskip("submitit")
    root = _fresh_root(built, "submitit")
    _gapstudy(["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", *SWEEP,
               f"paths.results={root}"])
    _assert_complete(root)
    assert list((root / ".multirun" / ".submitit").rglob("*_result.pkl"))  # submitit really ran the jobs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head on loopback for this module's tests; stopped afterwards."""
    pytest.importorskip("ray")
    ray = str(Path(sys.executable).parent / "ray")
    port = _free_port()
    start = subprocess.run([ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                            "--include-dashboard=false", "--disable-usage-stats"], capture_output=True, text=True,
                           timeout=120)
    assert start.returncode == 0, start.stderr[-2000:]
    yield f"127.0.0.1:{port}"
    subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)


def test_ray_launcher_against_a_local_head_on_loopback(built, ray_head):
    root = _fresh_root(built, "ray")
    done = _gapstudy(["-m", "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={ray_head}", *SWEEP,
                      f"paths.results={root}"], timeout=480)
    assert "_run_job" in done.stdout + done.stderr  # the runs executed as Ray tasks
    _assert_complete(root)


# a suite on a cluster: the replay arm needs the online arm's pair log, passed through the shared results root
SUITE_ARGS = ["suite=data_coverage", "profile=quick", "arm=replay_original", "jobs=2", "steps=3", "eval.every=0",
              "eval.prompts=8", "progress=false", "checkpoint_every=0", "world.pretrain_steps=20",
              "world.corpus_size=400", "world.train_prompts=100", "world.eval_prompts=32", "world.n_embd=32",
              "world.n_layer=2", "world.n_head=2"]


@pytest.mark.parametrize("executor", ["submitit_local", "ray"])
def test_a_suite_runs_its_arms_as_cluster_jobs_in_dependency_order(executor, tmp_path, request):
    args = [*SUITE_ARGS, f"executor={executor}", f"paths.results={tmp_path}"]
    if executor == "ray":
        args.append(f"address={request.getfixturevalue('ray_head')}")
    else:
        pytest.importorskip("submitit")
    done = _gapstudy(args, timeout=480)
    assert "2/2 runs complete" in done.stdout, done.stdout[-2000:]
    timing = json.loads((tmp_path / "data_coverage" / "timing-quick.json").read_text())
    assert [(r["arm"], r["status"]) for r in timing["runs"]] == [("online", "done"), ("replay_original", "done")]
    online, replay = (json.loads((tmp_path / "data_coverage" / r["run"] / "final.json").read_text())
                      for r in timing["runs"])
    assert replay["eval/kl"] == pytest.approx(online["eval/kl"], rel=1e-5)  # the replay read the online log
    if executor == "submitit_local":
        assert list((tmp_path / ".submitit").rglob("*_result.pkl"))
