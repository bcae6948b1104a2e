"""Data parallelism: a 2-process run (torchrun, gloo on the CPU) trains on the same global batch as a 1-process
run and logs the same metrics, to float noise; only rank 0 writes."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import read

COMMON = ["world=token_bandit", "world.pretrain_steps=60", "steps=6", "eval.every=3", "eval.prompts=16",
          "batch_size=8", "checkpoint_every=0", "progress=false", "seed=3"]


def _run(prefix: list[str], overrides: list[str], root) -> None:
    done = subprocess.run([*prefix, "-m", "gapstudy.cli", "run", *overrides, f"paths.results={root}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("algo", ["dpo", "grpo"])
def test_two_processes_match_one_process_with_the_same_global_batch(algo, tmp_path):
    overrides = [*COMMON, f"algo={algo}"]
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable], overrides, one)
    shutil.copytree(one / ".cache", two / ".cache")  # the same built world
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], overrides, two)
    (run_one,) = [p for p in one.iterdir() if p.name != ".cache"]
    run_two = two / run_one.name
    a, b = read(run_one), read(run_two)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    assert [sorted(r) for r in a] == [sorted(r) for r in b]  # the same metric keys at every step
    compared = 0
    for ra, rb in zip(a, b):
        for key, value in ra.items():
            if key == "time/seconds":
                continue
            assert rb[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (ra["step"], key)
            compared += 1
    assert compared > 50
    assert len(list(run_two.glob("pairs/*.parquet"))) == len(list(run_one.glob("pairs/*.parquet")))  # rank 0 only
