"""Sweeps through hydra launchers, as on a cluster: joblib (local processes), submitit with its local executor
(the SLURM launcher's code path without SLURM), and Ray against a head started here on loopback. Every launched
run lands in the shared results root, complete."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
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


def _finals(root: Path) -> dict[str, dict]:
    return {name: json.loads((root / name / "final.json").read_text()) for name in NAMES}


@pytest.fixture(scope="module")
def direct(built) -> dict[str, dict]:
    """The sweep's final metrics from hydra's basic launcher (one process, one run after the other): what every
    launcher must reproduce, since a run is a pure function of its config and seed."""
    root = _fresh_root(built, "basic")
    _gapstudy(["-m", *SWEEP, f"paths.results={root}"])
    return _finals(root)


def _assert_complete(root: Path, direct: dict[str, dict]) -> None:
    """Every run of the sweep finished all 3 steps in `root` with the metrics of the same run launched directly."""
    finals = _finals(root)
    assert finals[NAMES[0]]["eval/kl"] != finals[NAMES[1]]["eval/kl"]  # two different runs
    for name, final in finals.items():
        assert final["step"] == 3, name
        metrics = {k: v for k, v in direct[name].items() if k.startswith("eval/")}
        assert len(metrics) > 5 and {k: final.get(k) for k in metrics} == pytest.approx(metrics, rel=1e-6), name


def test_joblib_launcher_runs_the_sweep_in_parallel_processes(built, direct):
    root = _fresh_root(built, "joblib")
    _gapstudy(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *SWEEP, f"paths.results={root}"])
    _assert_complete(root, direct)


def test_submitit_launcher_with_its_local_executor(built, direct):
    pytest.importorskip("submitit")
    root = _fresh_root(built, "submitit")
    _gapstudy(["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", *SWEEP,
               f"paths.results={root}"])
    _assert_complete(root, direct)
    assert list((root / ".multirun" / ".submitit").rglob("*_result.pkl"))  # submitit really ran the jobs


def _free_ports(n: int) -> list[int]:
    """n distinct loopback ports that were free a moment ago (held open together, so no two are the same)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line names `text` (this head's own temp dir): the cluster's raylet, GCS and workers."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:  # gone meanwhile, or not ours to read
                pass
    return pids


@dataclass
class RayHead:
    address: str
    process: subprocess.Popen  # `ray start --head --block`: it lives as long as the head does
    temp_dir: Path

    def failure(self) -> str | None:
        """Why the head is unusable (None while it runs), with the tail of its log."""
        if self.process.poll() is None:
            return None
        return (f"the Ray head started for this test ({self.address}, temp dir {self.temp_dir}) exited with status "
                f"{self.process.returncode}:\n{self.log()[-2000:]}")

    def log(self) -> str:
        return (self.temp_dir / "head.log").read_text(errors="replace")


def _stop(head: RayHead) -> None:
    """Stop this head only: its `ray start --block` process group, then any process still naming its temp dir."""
    if head.process.poll() is None:
        head.process.terminate()  # --block tears its cluster down on SIGTERM
        try:
            head.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            head.process.kill()
            head.process.wait(timeout=10)
    try:
        os.killpg(head.process.pid, signal.SIGKILL)  # whatever of its group is left
    except ProcessLookupError:
        pass
    for pid in _pids_mentioning(str(head.temp_dir)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _start_head(temp_dir: Path) -> RayHead:
    """`ray start --head --block` on free loopback ports with its own temp dir, in a process group of its own;
    returns once the head is up (or fails with its log)."""
    ray = str(Path(sys.executable).parent / "ray")
    gcs, client, node, objects, agent_listen, agent_grpc, runtime_env, metrics = _free_ports(8)
    with open(temp_dir / "head.log", "w") as log:
        process = subprocess.Popen(
            [ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
             f"--temp-dir={temp_dir}", f"--ray-client-server-port={client}", f"--node-manager-port={node}",
             f"--object-manager-port={objects}", f"--dashboard-agent-listen-port={agent_listen}",
             f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={runtime_env}",
             f"--metrics-export-port={metrics}", "--num-cpus=2", "--include-dashboard=false",
             "--disable-usage-stats"],
            stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    head = RayHead(f"127.0.0.1:{gcs}", process, temp_dir)
    deadline = time.monotonic() + 120
    while "Ray runtime started" not in head.log():
        if head.failure() is not None or time.monotonic() > deadline:
            problem = head.failure() or f"the Ray head did not start in 120 s:\n{head.log()[-2000:]}"
            _stop(head)
            pytest.fail(problem)
        time.sleep(0.5)
    return head


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head of this module's own on loopback: free ports, its own temp dir, its own process group. Only it is
    stopped afterwards (never `ray stop`, which stops every Ray cluster on the machine)."""
    pytest.importorskip("ray")
    head = _start_head(tmp_path_factory.mktemp("ray"))  # short enough for Ray's unix sockets (< 108 characters)
    try:
        yield head
    finally:
        _stop(head)


def _gapstudy_on_ray(args: list[str], head: RayHead, timeout: int) -> subprocess.CompletedProcess:
    """_gapstudy, but a head that vanishes (or a run past `timeout`) ends the wait at once with the reason, instead
    of leaving the client to wait for a cluster that is gone."""
    command = [sys.executable, "-m", "gapstudy.cli", "run", *args]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True) as run:
        output: list[str] = []
        reader = threading.Thread(target=lambda: output.extend(run.stdout), daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        problem = None
        while run.poll() is None:
            problem = head.failure() or (f"gapstudy did not finish in {timeout} s" if time.monotonic() > deadline
                                         else None)
            if problem:
                os.killpg(run.pid, signal.SIGKILL)
                break
            time.sleep(0.5)
        run.wait()
        reader.join(timeout=30)
    settle = time.monotonic() + 30  # a run that failed because its head went away says so, once the head has gone
    while problem is None and run.returncode != 0 and head.failure() is None and time.monotonic() < settle:
        time.sleep(0.5)  # the client can notice a dying head (its raylet's socket closes) before the head has exited
    problem = problem or head.failure()
    text = "".join(output)
    assert problem is None, f"{problem}\n--- gapstudy output ---\n{text[-3000:]}"
    assert run.returncode == 0, text[-3000:]
    return subprocess.CompletedProcess(command, run.returncode, text, "")


def test_ray_launcher_against_a_local_head_on_loopback(built, direct, ray_head):
    root = _fresh_root(built, "ray")
    done = _gapstudy_on_ray(["-m", "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={ray_head.address}",
                             *SWEEP, f"paths.results={root}"], ray_head, timeout=480)
    assert "_run_job" in done.stdout + done.stderr  # the runs executed as Ray tasks
    _assert_complete(root, direct)


def test_a_second_head_stops_alone_and_a_vanished_head_ends_the_wait(ray_head, tmp_path_factory):
    """Stopping a head stops that cluster only (the module's head keeps running), and a client whose head vanishes
    fails at once with the reason instead of waiting out its timeout."""
    other = _start_head(tmp_path_factory.mktemp("ray_other"))
    assert _pids_mentioning(str(other.temp_dir)) and other.address != ray_head.address
    threading.Timer(3.0, _stop, [other]).start()  # the head goes away under a running client
    with pytest.raises(AssertionError, match="the Ray head started for this test .* exited"):
        _gapstudy_on_ray(["-m", "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={other.address}",
                          *SWEEP, f"paths.results={tmp_path_factory.mktemp('vanished')}"], other, timeout=300)
    assert _pids_mentioning(str(other.temp_dir)) == []
    assert ray_head.failure() is None and _pids_mentioning(str(ray_head.temp_dir))  # the module's head still runs


# a suite on a cluster: the replay arm needs the online arm's pair log, passed through the shared results root
SUITE_ARGS = ["suite=data_coverage", "profile=quick", "arm=replay_original", "jobs=2", "steps=3", "eval.every=0",
              "eval.prompts=8", "progress=false", "checkpoint_every=0", "world.pretrain_steps=20",
              "world.corpus_size=400", "world.train_prompts=100", "world.eval_prompts=32", "world.n_embd=32",
              "world.n_layer=2", "world.n_head=2"]


@pytest.mark.parametrize("executor", ["submitit_local", "ray"])
def test_a_suite_runs_its_arms_as_cluster_jobs_in_dependency_order(executor, tmp_path, request):
    args = [*SUITE_ARGS, f"executor={executor}", f"paths.results={tmp_path}"]
    if executor == "ray":
        head = request.getfixturevalue("ray_head")
        done = _gapstudy_on_ray([*args, f"address={head.address}"], head, timeout=480)
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
