"""Run provenance: every run's config.yaml records the environment it ran under (package versions, Python, torch's
CPU kernels, device, threads), and that record never enters the run's name nor makes a finished or resumed run look
changed to the suite runner."""
from __future__ import annotations

import platform
from importlib import metadata

import torch
import yaml

from conftest import train_run
from experiments.plan import Job
from experiments.schedule import _stale
from gapstudy import provenance

TINY = ["steps=2", "eval.every=0"]


def config_of(run_dir):
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def test_a_runs_config_records_its_environment(results):
    run_dir, _, _ = train_run(results / "env", TINY)
    env = config_of(run_dir)["environment"]
    assert set(env) == {"packages", "python", "cpu", "cpu_capability", "device", "threads"}
    assert env["packages"] == {name: metadata.version(name) for name in provenance.PROVENANCE_PACKAGES}
    assert {"torch", "transformers", "datasets", "numpy", "pandas", "scipy", "pyarrow", "hydra-core", "omegaconf",
            "tokenizers", "safetensors"} <= set(env["packages"])
    assert env["python"] == platform.python_version()
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["cpu"] == provenance.cpu_model() and (env["cpu"] is None or env["cpu"].strip() == env["cpu"] != "")
    assert env["device"] == "cpu"
    assert env["threads"] == 1 == config_of(run_dir)["threads"]  # the run's own setting, applied


REAL_ENVIRONMENT = provenance.environment


def other_environment(device):
    env = REAL_ENVIRONMENT(device)
    env["packages"]["torch"] = "0.0.0+elsewhere"
    return {**env, "cpu_capability": "NO AVX", "threads": 7}


def test_runs_differing_only_in_environment_share_a_name_and_are_not_stale(results, monkeypatch):
    here, _, _ = train_run(results / "env_a", TINY)
    monkeypatch.setattr(provenance, "environment", other_environment)
    there, _, _ = train_run(results / "env_b", TINY)
    assert here.name == there.name
    assert config_of(here)["environment"] != config_of(there)["environment"]
    assert config_of(there)["environment"]["threads"] == 7
    # the suite runner reuses a finished run made under another environment: same overrides, not "changed"
    mine = config_of(here)["overrides"]
    job = Job(key=f"a/{there.name}", arm="a", seed=0, name=there.name,
              overrides=[o.replace(str(results / "env_a"), str(results / "env_b")) for o in mine], run_dir=there)
    assert _stale(job) is None


def test_a_run_resumed_under_another_environment_says_so_and_records_the_new_one(results, monkeypatch, capsys):
    import pytest

    from gapstudy import sources

    overrides = ["steps=6", "eval.every=0", "checkpoint_every=2"]
    original = sources.OnPolicySource.rows

    def crash(self, at, sampler):
        if at == 5:
            raise KeyboardInterrupt("killed")
        return original(self, at, sampler)

    monkeypatch.setattr(sources.OnPolicySource, "rows", crash)
    with pytest.raises(KeyboardInterrupt):
        train_run(results / "env_resume", overrides)
    monkeypatch.setattr(sources.OnPolicySource, "rows", original)
    capsys.readouterr()
    monkeypatch.setattr(provenance, "environment", other_environment)  # the re-run happens elsewhere
    run_dir, _, records = train_run(results / "env_resume", overrides)
    err = capsys.readouterr().err
    assert "resumes under another environment" in err and "packages.torch" in err and "threads 1 -> 7" in err
    assert config_of(run_dir)["environment"]["threads"] == 7
    assert [r["step"] for r in records if "train/loss" in r] == list(range(6))  # every step once
