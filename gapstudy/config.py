"""Configs: hydra composition of configs/, validation with short errors, and run names built from the overrides.

The defaults live in configs/ (one file per group option); everything here is about turning a list of overrides
into a checked config and a folder name that differs for every choice that varies.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gapstudy import schema
from gapstudy.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

# run-name exclusions: settings that change where or how a run is written, not what it computes
NOT_IN_NAME = ("paths.", "logger", "progress", "threads", "device", "save_", "checkpoint_every", "suite", "arm",
               "seed", "hydra", "profile", "jobs", "seeds", "vllm.", "parallel")


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The config `gapstudy run OVERRIDES...` would see (without validation); unknown settings are refused."""
    check_group_overrides(list(overrides))
    check_keys(list(overrides))
    return _hydra_compose(list(overrides))


def _hydra_compose(overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            return hydra_compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        # one line: hydra's messages run over several (and end with its search path)
        raise ConfigError(" ".join(str(e).split("\nConfig search path")[0].split())) from None


GROUPS = ("world", "algo", "data", "logger")
# where an override may name a key the config files do not hold: hydra's own settings (launcher, sweeper, job),
# which hydra checks itself. Nothing of gapstudy is free-form: a `+key` gapstudy does not read would be ignored.
FREE_FORM = ("hydra",)


def _key_paths(node, prefix: str = "") -> set[str]:
    paths = set()
    for key, value in node.items():
        path = f"{prefix}{key}"
        paths.add(path)
        if isinstance(value, dict):
            paths |= _key_paths(value, path + ".")
    return paths


_SCHEMAS: dict[tuple[str, ...], set[str]] = {}


def _schema(groups: tuple[str, ...]) -> set[str]:
    """Every key path of the config composed with these group choices (cached: the files do not change)."""
    if groups not in _SCHEMAS:
        cfg = _hydra_compose(list(groups))
        _SCHEMAS[groups] = _key_paths(OmegaConf.to_container(cfg, resolve=False))
    return _SCHEMAS[groups]


def check_keys(overrides: list[str]) -> None:
    """Refuse an override of a setting the config does not have (a typo such as sync_evry=1, with or without
    hydra's `+`), naming the closest real settings. The schema is the composed config of the group options the
    overrides choose (each option of a sweep such as algo=dpo,ipo counts)."""
    import difflib

    parsed = []
    for item in overrides:
        if item.startswith("-") or ("=" not in item and not item.startswith("~")):
            continue  # flags (-m, --cfg) and their values: hydra's
        key, _, value = item.partition("=")
        prefix = key[: len(key) - len(key.lstrip("+~"))]
        key = key.lstrip("+~")
        if key.split(".")[0].split("/")[0] in FREE_FORM:
            continue
        parsed.append((item, prefix, key, value))
    if not parsed:
        return
    known = set(_schema(()))
    for item, _, key, value in parsed:
        if key in GROUPS:
            for option in value.split(","):
                known |= _schema((f"{key}={option}",))
    for item, prefix, key, _ in parsed:
        if "/" in key or key in known:
            if prefix == "+" and key in known:
                raise ConfigError(f"{item}: {key} is already a setting; write it without the +: {item.lstrip('+')}")
            continue
        parent = key.rpartition(".")[0]
        if parent in known and _is_list_index(key):
            continue  # an element of a list setting, e.g. judge.tokens.0
        close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
        advice = (f"did you mean {' or '.join(close)}?" if close else
                  "the settings are the keys of configs/config.yaml and its groups (gapstudy run --cfg job prints them)")
        raise ConfigError(f"{item}: unknown setting {key!r}" + (" (a + cannot add a setting gapstudy does not read)"
                                                               if "+" in prefix else "") + f"; {advice}")


def _is_list_index(key: str) -> bool:
    return key.rpartition(".")[2].isdigit()


def group_options(group: str) -> list[str]:
    """The options of a config group: the yaml files in configs/<group>/."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def check_group_overrides(overrides: list[str]) -> None:
    """Name a bad group option before hydra does (hydra's message buries it under its search path)."""
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.lstrip("+")
        if key in ("world", "algo", "data", "logger"):
            for option in value.split(","):  # a multirun sweep lists several
                _choice(option, key, group_options(key))


def _choice(value, key: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is invalid; valid choices: {', '.join(map(str, choices))}")


def validate(cfg: DictConfig) -> DictConfig:
    """Check the settings every run has (types, ranges, the choices no stage owns); return the config with periods
    normalised (inf as float). Each stage checks its own settings against its registry when it is built, and
    runs.prepare runs those checks right after this one (gapstudy.runs.validate), before anything is written."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing required setting(s): {', '.join(missing)} (give them as KEY=VALUE)")
    _check_settings(cfg)  # before the stages' own checks, which compute with these numbers
    if cfg.generator == "vllm" and cfg.get("sampler_from") is not None:
        raise ConfigError("sampler_from holds several fixed samplers and needs generator=hf")
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.sync_every = schema.as_period(cfg.sync_every, "sync_every")
        cfg.ref_sync_every = schema.as_period(cfg.ref_sync_every, "ref_sync_every")
    for key in ("data.path", "init_from", "eval.baseline"):
        value = OmegaConf.select(cfg, key)
        if key == "data.path" and cfg.data.name == "dataset":
            continue  # may be a hub name: data=dataset's own check (sources.check_dataset) reads it
        if value is not None and value != "sft" and not Path(value).exists():
            raise ConfigError(f"{key}={value!r} does not exist")
    for fraction in cfg.get("snapshots") or ():
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ConfigError(f"snapshots: {fraction!r} is invalid; valid: fractions of steps in (0, 1]")
    return cfg


def _check_settings(cfg) -> None:
    """Every setting declared in gapstudy/schema.py holds its type, range or choice, so that a typo (seed=abc) or a
    value that breaks the science (grad_clip=-1, algo.beta=0) stops before anything runs; then the rules between
    settings and the results root."""
    schema.check(cfg)
    if "n_head" in cfg.world and "n_embd" in cfg.world and cfg.world.n_embd % cfg.world.n_head:
        raise ConfigError(f"world.n_embd={cfg.world.n_embd} is invalid; valid: a multiple of world.n_head="
                          f"{cfg.world.n_head}")
    if "chat_prompt_min_words" in cfg.world and cfg.world.chat_prompt_min_words > cfg.world.chat_prompt_max_words:
        raise ConfigError(f"world.chat_prompt_min_words={cfg.world.chat_prompt_min_words} is invalid; valid: at most "
                          f"world.chat_prompt_max_words={cfg.world.chat_prompt_max_words}")
    check_results_root(cfg.paths.results)


def check_results_root(value, key: str = "paths.results", must_exist: bool = False) -> None:
    """The results root is (or can become) a writable directory: a file there, or a folder this user cannot
    write, stops here rather than as an OSError midway through a run."""
    import os

    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}={value!r} is invalid; valid: a directory")
    path = Path(value).expanduser()
    if must_exist and not path.exists():
        raise ConfigError(f"{key}={value!r} does not exist")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key}={value!r} is invalid: {str(existing)!r} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={value!r} is invalid: {str(existing)!r} is not writable (permission denied)")


LOCAL_PREFIXES = ("/", "./", "../", "~")  # a hub name never starts so: such a value is meant as a local path


def check_name_or_path(key: str, value) -> None:
    """A hub name or a local path: a value written as a local path must exist (hub names are checked on load)."""
    if str(value).startswith(LOCAL_PREFIXES) and not Path(str(value)).expanduser().exists():
        raise ConfigError(f"{key}={value!r} does not exist")


def validate_rm(cfg: DictConfig) -> DictConfig:
    """The settings `gapstudy train-rm` reads beyond its world's and its dataset's (gapstudy.train_rm.validate checks
    those): data=dataset, data.path, rm.* and the run-wide numbers."""
    _choice(cfg.data.name, "data", ["dataset"])
    for key in ("data.path", "rm.out") + (("world.model",) if cfg.world.name == "hf" else ()):
        if OmegaConf.select(cfg, key, throw_on_missing=False) is None:  # ??? or null
            raise ConfigError(f"train-rm needs {key} (give it as {key}=...)")
    if cfg.rm.base is not None:
        check_name_or_path("rm.base", cfg.rm.base)
    schema.check(cfg, "rm", "seed", "threads", "device")
    check_results_root(cfg.paths.results)
    return cfg


def open_dict(cfg):
    from omegaconf import open_dict as _open

    return _open(cfg)


def _name_value(value: str) -> str:
    if "/" in value or len(value) > 32:  # paths and long values: last component plus a short hash
        digest = hashlib.sha256(value.encode()).hexdigest()[:6]
        return f"{Path(value).name[:24]}-{digest}"
    return value.replace(",", "+").replace(" ", "").replace("=", "-").replace("[", "").replace("]", "")


def run_name(overrides: list[str] | tuple[str, ...], seed: int) -> str:
    """cleanrl-style: every varying choice, sorted by key, then the seed; two arms never share a folder.

    Pairs are written key-value (keys never hold '-'), joined by '__': the name needs no quoting when it is
    passed back as a path override (hydra's grammar reserves '=').
    """
    parts = {}
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if any(key == p.rstrip(".") or key.startswith(p) for p in NOT_IN_NAME):
            continue
        parts[key] = _name_value(value)  # a key given twice: the last value wins, as in hydra
    body = "__".join(f"{k}-{v}" for k, v in sorted(parts.items())) or "defaults"
    return shorten(f"{body}__seed-{seed}")


MAX_NAME = 160  # file systems allow 255 bytes per name; leave room for suffixes


def shorten(name: str) -> str:
    """Names longer than MAX_NAME keep their start and their `__seed-N` end, with a hash of the whole between."""
    if len(name) <= MAX_NAME:
        return name
    head, sep, seed = name.rpartition("__seed-")
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{head[: MAX_NAME - 30]}__{digest}{sep}{seed}"


def sweep_size(overrides: list[str]) -> int | None:
    """How many jobs a hydra multirun of these overrides launches (the product of each swept key's choices);
    None when hydra alone can tell (a glob sweep, or overrides its parser rejects: hydra reports those)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return None
    sizes: dict[str, int] = {}
    for override in parsed:
        if not override.is_sweep_override():
            sizes[override.get_key_element()] = 1
        elif override.value_type == ValueType.GLOB_CHOICE_SWEEP:
            return None
        else:
            sizes[override.get_key_element()] = len(list(override.sweep_iterator()))
    total = 1
    for size in sizes.values():
        total *= size
    return total
