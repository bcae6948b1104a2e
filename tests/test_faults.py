"""Faults: no two processes write one run directory (a lock the OS drops when its holder dies), and a world build
killed part-way resumes from its checkpoint to exactly the artifact an uninterrupted build makes. (The suite killed
at random moments, workers and all, is in test_registry.py.)"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.plan import plan
from experiments.schedule import run_suite
from experiments.suite import Arm, Suite
from gapstudy import cli
from gapstudy.runs import LOCK_NAME, RunBusy, prepare, run_lock
from tests.conftest import FAST

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="flock and process kills: POSIX only")

TOKEN = ["world=token_bandit", *FAST, "steps=2", "eval.every=0"]


def test_a_second_writer_of_a_run_directory_is_refused_with_the_holders_pid(tmp_path):
    run_dir = tmp_path / "root" / "suite" / "run"
    with run_lock(run_dir):
        assert (run_dir / LOCK_NAME).read_text().strip() == str(os.getpid())
        with pytest.raises(RunBusy, match=rf"{run_dir} is being written by another process \(pid {os.getpid()}\)"):
            with run_lock(run_dir):  # another open file: flock refuses it even in the same process
                pass
    # let go: the lock file and the directories made only for it are gone; the root is as it was
    assert not (tmp_path / "root").exists()
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(ZeroDivisionError):
        with run_lock(run_dir):
            1 / 0
    assert sorted(p.name for p in run_dir.iterdir()) == ["metrics.jsonl"]  # an existing run keeps its files
    with run_lock(run_dir):  # and can be locked again at once
        pass


def test_only_rank_0_of_a_torchrun_run_takes_the_lock(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    with run_lock(run_dir):
        monkeypatch.setenv("RANK", "1")  # another rank of the same run works in the same directory
        with run_lock(run_dir):
            pass
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(RunBusy):
            with run_lock(run_dir):
                pass


def test_the_lock_of_a_killed_process_is_free_at_once(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom gapstudy.runs import run_lock\n"
         f"with run_lock({str(run_dir)!r}):\n    print('locked', flush=True)\n    time.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunBusy, match=f"pid {holder.pid}"):
            with run_lock(run_dir):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)  # no handler runs: the OS alone releases the lock
        holder.wait()
    with run_lock(run_dir):  # the stale .lock file (it names the dead pid) does not block
        assert (run_dir / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_gapstudy_run_on_a_busy_directory_is_one_line_and_a_suite_reports_it_busy(tmp_path, capsys):
    overrides = [f"paths.results={tmp_path}", *TOKEN]
    _, run_dir = prepare(overrides)
    with run_lock(run_dir):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["run", *overrides])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2
        assert err.splitlines() == [f"gapstudy: error: {run_dir} is being written by another process "
                                    f"(pid {os.getpid()}); wait for it to finish or stop it, then re-run to resume"]
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]  # nothing written by the refused run

    suite = Suite("s", "q?", "p", (Arm("a", ("sync_every=1",)), Arm("b", ("sync_every=inf",)),
                                   Arm("after_b", ("data=replay", "data.path=@b"), needs=("b",))),
                  base=("world=token_bandit",), profiles={"quick": ()})
    extra = [*FAST, "steps=2", "eval.every=0"]
    busy = next(job.run_dir for job in plan(suite, "quick", [0], None, extra, None, tmp_path / "suite") if job.arm == "b")
    with run_lock(busy):
        status = run_suite(suite, "quick", [0], None, extra, None, 1, tmp_path / "suite", log=lambda line: None)
    by_arm = {key.split("/")[0]: outcome for key, outcome in status.items()}
    assert by_arm["a"] == "done"
    assert by_arm["b"] == f"busy: {busy} is being written by another process (pid {os.getpid()}); wait for it to " \
                          "finish or stop it, then re-run to resume"
    assert by_arm["after_b"].startswith("skipped")
    assert not busy.exists()  # the busy run wrote nothing (its lock file went with the lock)
    again = run_suite(suite, "quick", [0], None, extra, None, 1, tmp_path / "suite", log=lambda line: None)
    assert {key.split("/")[0]: outcome for key, outcome in again.items()} == \
        {"a": "complete", "b": "done", "after_b": "done"}


# ---------------------------------------------------------------- the world build: progress, checkpoint, resume
SYNTH = ["world=synth_lm", "world.pretrain_steps=40", "world.corpus_size=400", "world.train_prompts=100",
         "world.eval_prompts=32", "world.n_embd=32", "world.n_layer=2", "world.n_head=2"]


def _build(root: Path, progress: bool = False):
    import torch

    from gapstudy.config import compose
    from gapstudy.worlds import build_world

    torch.set_num_threads(1)  # as every run does before building its world (cfg.threads)
    return build_world(compose([*SYNTH, f"progress={str(progress).lower()}"]), root)


def _artifact(path: Path) -> dict[str, str]:
    """Every file of a built world -> its hash; build_info.json without its wall-clock seconds."""
    out = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        data = file.read_bytes()
        if file.name == "build_info.json":
            info = json.loads(data)
            info.pop("build_seconds")
            data = json.dumps(info, sort_keys=True).encode()
        out[str(file.relative_to(path))] = hashlib.sha256(data).hexdigest()
    return out


def _state_dict(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("world")).policy_path


def test_an_interrupted_world_build_resumes_to_the_same_artifact(uninterrupted, tmp_path, monkeypatch, capsys):
    import torch

    from gapstudy import cache, worlds

    seen: list[int] = []

    def interrupt_at(k):
        def hook(step):
            seen.append(step)
            if step == k:
                raise KeyboardInterrupt("preempted")
        return hook

    monkeypatch.setattr(worlds, "_after_step", interrupt_at(25))  # 40 steps: a checkpoint every 2, the last at 24
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "building world synth_lm: " in err and "/40 [" in err  # the bar on stderr
    (tmp, ) = (tmp_path / ".cache").glob("synth_lm-*.tmp")
    assert not list((tmp_path / ".cache").glob("synth_lm-*[0-9a-f]"))  # nothing published
    assert torch.load(tmp / cache.RESUME / "pretrain.pt", weights_only=False)["step"] == 24

    seen.clear()
    monkeypatch.setattr(worlds, "_after_step", interrupt_at(31))  # killed again, after more progress
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path, progress=True)
    assert seen[0] == 25  # resumed after step 24, not from scratch
    assert "resuming at step 24/40" in capsys.readouterr().err

    seen.clear()
    monkeypatch.setattr(worlds, "_after_step", seen.append)
    resumed = _build(tmp_path).policy_path
    assert seen == list(range(31, 41))
    assert capsys.readouterr().err == ""  # progress=false: silent
    assert resumed.name == uninterrupted.name  # the same cache key
    assert not (resumed / cache.RESUME).exists() and not tmp.exists()
    assert _artifact(resumed) == _artifact(uninterrupted)  # bit-identical: model, tokenizer, prompts, losses
    a, b = _state_dict(resumed), _state_dict(uninterrupted)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_unusable_build_checkpoint_is_reported_and_the_build_starts_over(uninterrupted, tmp_path, monkeypatch,
                                                                            capsys):
    from gapstudy import cache, worlds

    def interrupt(step):
        if step == 9:
            raise KeyboardInterrupt("preempted")

    monkeypatch.setattr(worlds, "_after_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path)
    (checkpoint, ) = (tmp_path / ".cache").glob(f"synth_lm-*.tmp/{cache.RESUME}/pretrain.pt")
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # a damaged file
    monkeypatch.setattr(worlds, "_after_step", None)
    resumed = _build(tmp_path).policy_path
    err = capsys.readouterr().err
    assert err.startswith("gapstudy: warning: building world synth_lm: cannot resume from ") and "starting over" in err
    assert _artifact(resumed) == _artifact(uninterrupted)


def test_a_world_build_killed_by_sigkill_resumes_and_its_lock_is_free(uninterrupted, tmp_path):
    """A real kill: the building process dies holding the cache's build lock and mid-way through its steps."""
    script = ("import sys\nsys.path.insert(0, {here!r})\nfrom tests.test_faults import _build\nfrom pathlib import Path\n"
              "from gapstudy import worlds\nimport time\n"
              "worlds._after_step = lambda step: time.sleep(600) if step == 30 else None\n"
              "_build(Path({root!r}))\n").format(here=str(Path(__file__).resolve().parents[1]), root=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    checkpoint = None
    try:
        import torch

        from gapstudy import cache

        while proc.poll() is None:  # wait for the checkpoint of step 30 (the script then sleeps), never on time
            found = list((tmp_path / ".cache").glob(f"synth_lm-*.tmp/{cache.RESUME}/pretrain.pt"))
            if found:
                try:
                    if torch.load(found[0], weights_only=False)["step"] == 30:
                        checkpoint = found[0]
                        break
                except (OSError, RuntimeError, EOFError, KeyError):
                    pass  # being replaced just now
            proc_wait(proc, 0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    assert checkpoint is not None, err.decode()[-2000:]
    resumed = _build(tmp_path).policy_path  # would wait forever on the build lock if the dead process held it
    assert _artifact(resumed) == _artifact(uninterrupted)


def proc_wait(proc: subprocess.Popen, seconds: float) -> None:
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        pass
