"""Run directories: where a run lives, what marks it complete, and the one entry point `run(overrides)`.

<results root>/[<suite>/]<run name>/ holds config.yaml (resolved, with run_name and overrides), metrics.jsonl,
pairs/ (the pair log), checkpoint/ (final policy, save_pretrained), final.json (written last: the run is complete)
and, while a run is in progress, state.pt (resumable state).
"""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, open_dict

from gapstudy.config import compose, run_name, validate


def quiet_libraries() -> None:
    import os
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=".*requires_grad=True to a scalar.*")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import datasets  # its "Generating split" bars would bury a one-line error (data=dataset, world=hf prompts)

    datasets.disable_progress_bars()


def code_version() -> str | None:
    """The git commit of the gapstudy checkout that runs (`+dirty` with uncommitted changes); None outside git.
    Saved in every run's config.yaml, so committed results name the code that made them."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here.parent), "status", "--porcelain", "--untracked-files=no", "--",
                                "gapstudy", "configs", "experiments"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return commit.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def run_dir_for(cfg: DictConfig, name: str) -> Path:
    root = Path(cfg.paths.results)
    return root / cfg.suite / name if cfg.get("suite") else root / name


def is_complete(run_dir: Path) -> bool:
    return (Path(run_dir) / "final.json").exists()


def prepare(overrides: list[str] | tuple[str, ...], cfg: DictConfig | None = None,
            name: str | None = None) -> tuple[DictConfig, Path]:
    """Compose (unless given) and validate the config, name the run (unless named, as the registry's runs
    are); nothing is written."""
    cfg = validate(compose(overrides) if cfg is None else cfg)
    name = name or run_name(overrides, cfg.seed)
    with open_dict(cfg):
        cfg.run_name = name
        cfg.overrides = list(overrides)
        cfg.code_version = code_version()
    return cfg, run_dir_for(cfg, name)


def execute(cfg: DictConfig, run_dir: Path) -> dict:
    """Train unless final.json already exists (then return it): re-running a finished run is free."""
    from gapstudy.loop import train

    if is_complete(run_dir):
        return json.loads((Path(run_dir) / "final.json").read_text())
    return train(cfg, run_dir)


def run(overrides: list[str] | tuple[str, ...] = ()) -> tuple[Path, dict]:
    cfg, run_dir = prepare(overrides)
    return run_dir, execute(cfg, run_dir)
