"""Shared fixtures: one results root per test session, so each tiny world is built (pretrained) once."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

# small and fast: a briefly warm-started bandit reference, few evaluation prompts, no checkpoints
FAST = ["world.pretrain_steps=60", "eval.prompts=32", "progress=false", "checkpoint_every=0",
        "save_checkpoint=false"]
# a small synth_lm build (seconds, not the default ~45 s)
SMALL_SYNTH = ["world.pretrain_steps=20", "world.corpus_size=400", "world.train_prompts=100", "world.eval_prompts=32",
               "world.n_embd=32", "world.n_layer=2", "world.n_head=2"]


@pytest.fixture(scope="session")
def results(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("results")


@pytest.fixture(autouse=True)
def _quiet():
    from gapstudy.runs import quiet_libraries

    quiet_libraries()


def train_run(results: Path, overrides: list[str], fast: list[str] = FAST):
    """prepare + train one run under `results`; returns (run_dir, final metrics, metric records)."""
    from gapstudy.loop import train
    from gapstudy.runs import prepare

    cfg, run_dir = prepare([f"paths.results={results}", *fast, *overrides])
    final = train(cfg, run_dir)
    return run_dir, final, read(run_dir)


def read(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in open(Path(run_dir) / "metrics.jsonl")]


def series(records: list[dict], key: str) -> list:
    return [r[key] for r in records if key in r]


def crash_then_resume(results: Path, overrides: list[str], step: int, monkeypatch) -> tuple[Path, list[dict]]:
    """Run until the on-policy source is asked for `step` and kill the run there (as a crash would), then run the
    same command again, which resumes from the last checkpoint; returns (run_dir, the resumed run's records)."""
    from gapstudy import sources

    original = sources.OnPolicySource.rows

    def crash(self, at, sampler):
        if at == step:
            raise KeyboardInterrupt("killed")
        return original(self, at, sampler)

    monkeypatch.setattr(sources.OnPolicySource, "rows", crash)
    with pytest.raises(KeyboardInterrupt):
        train_run(results, overrides)
    monkeypatch.setattr(sources.OnPolicySource, "rows", original)
    run_dir, _, resumed = train_run(results, overrides)
    return run_dir, resumed
