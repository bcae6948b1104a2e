"""Run directories: where a run lives, what marks it complete, and the one entry point `run(overrides)`.

<results root>/[<suite>/]<run name>/ holds config.yaml (resolved, with run_name and overrides), metrics.jsonl,
pairs/ (the pair log), checkpoint/ (final policy, save_pretrained), final.json (written last: the run is complete)
and, while a run is in progress, state.pt (resumable state) and .lock (held by the process writing it). A run
copied from an identical run of another suite (`copy_run`) says so in config.yaml's `copied_from`.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from omegaconf import DictConfig, open_dict

from gapstudy.config import ConfigError, compose, run_name
from gapstudy.provenance import code_version


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


def run_dir_for(cfg: DictConfig, name: str) -> Path:
    root = Path(cfg.paths.results)
    return root / cfg.suite / name if cfg.get("suite") else root / name


def is_complete(run_dir: Path) -> bool:
    return (Path(run_dir) / "final.json").exists()


def validate(cfg: DictConfig) -> DictConfig:
    """config.validate (the settings every run has), then each stage's own settings, checked by the stage that
    reads them, the world first (toy8x8 writes the dataset a data.path may name): a bad setting stops here, with
    one line, before anything is written. Returns the config with its periods normalised."""
    from gapstudy import algorithms, config, rewards, sources, worlds

    cfg = config.validate(cfg)
    for check in (worlds.check, algorithms.check, rewards.check, sources.check):
        check(cfg)
    return cfg


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
    """Train unless final.json already exists (then return it): re-running a finished run is free. Training holds
    the run directory's lock: a second process asking for the same run fails at once (RunBusy)."""
    from gapstudy.loop import train

    if is_complete(run_dir):
        return json.loads((Path(run_dir) / "final.json").read_text())
    with run_lock(run_dir):
        if is_complete(run_dir):  # finished by the process that held the lock just before
            return json.loads((Path(run_dir) / "final.json").read_text())
        return train(cfg, run_dir)


LOCK_NAME = ".lock"


class RunBusy(ConfigError):
    """Another live process is writing this run directory (it holds the directory's lock)."""


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold <run_dir>/.lock (flock, exclusive, never waiting) while the block runs: no two processes ever write one
    run directory. The lock belongs to the open file, so the OS drops it when its process dies however it dies (a
    SIGKILLed run can be resumed at once); the file names the holder's pid for the message of whoever is refused.
    Under torchrun only rank 0 takes it (every rank of one run works in the same directory; rank 0 writes).
    Directories made here for a run that then failed before writing anything are removed again, and so is the
    lock file: a refused or failed run leaves the results root as it found it."""
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    try:
        import fcntl
    except ImportError:  # no flock (Windows): unlocked
        yield
        return
    run_dir = Path(run_dir)
    made = [d for d in (run_dir, *run_dir.parents) if not d.exists()]  # deepest first
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunBusy(f"{run_dir} is being written by another process (pid {holder}); wait for it to finish "
                          f"or stop it, then re-run to resume") from None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # its holder removed that file as it let go: lock the one there now
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while still held: whoever opened it meanwhile sees it gone and retries
        os.close(fd)
        for directory in made:
            try:
                directory.rmdir()  # only if still empty
            except OSError:
                break


IN_PROGRESS = (LOCK_NAME, "state.pt", "state.prev.pt")  # what only a run still being written holds


def copy_run(source: Path, run_dir: Path, fields: dict) -> dict:
    """Make `run_dir` the finished run `source` under another name: when two suites ask for the same computation
    (the same composed config; experiments/schedule.py decides), one trains and the other gets its files, hard-linked
    where the filesystem allows (they are never written again) and copied where it does not. config.yaml is
    `source`'s with `fields` (suite, arm, run_name, overrides: what names the run, never what it computes) replaced
    and `copied_from` naming `source` (relative to `run_dir`); final.json comes last, so an interrupted copy is not a complete run. Returns
    the final metrics. Holds `run_dir`'s lock, like a run that trains."""
    import shutil

    from omegaconf import OmegaConf

    source, run_dir = Path(source), Path(run_dir)
    if not is_complete(source):
        raise FileNotFoundError(f"{source} is not a finished run (no final.json): nothing to copy")

    def place(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:  # another filesystem, or no hard links
            shutil.copy2(src, dst)

    with run_lock(run_dir):
        for item in source.iterdir():
            if item.name in (*IN_PROGRESS, "config.yaml", "final.json"):
                continue
            target = run_dir / item.name
            if item.is_dir():
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(item, target, copy_function=place)
            else:
                target.unlink(missing_ok=True)
                place(str(item), str(target))
        cfg = OmegaConf.load(source / "config.yaml")
        with open_dict(cfg):
            for key, value in fields.items():
                cfg[key] = value
            cfg.copied_from = os.path.relpath(source, run_dir)  # relative: the results root may move
        OmegaConf.save(cfg, run_dir / "config.yaml")
        shutil.copy2(source / "final.json", run_dir / "final.json")
    return json.loads((run_dir / "final.json").read_text())


def run(overrides: list[str] | tuple[str, ...] = ()) -> tuple[Path, dict]:
    cfg, run_dir = prepare(overrides)
    return run_dir, execute(cfg, run_dir)
