"""The settings' declaration (gapstudy/schema.py): the checker gives today's one-line messages for every kind of
check, the declaration covers every setting of configs/ (each number and boolean with a check), it is a real
structured config, and it is a torch-free leaf."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, fields
from typing import Any, Optional

import pytest
from omegaconf import OmegaConf

from gapstudy import schema
from gapstudy.config import ConfigError, compose, group_options
from gapstudy.schema import choice, flag, integer, number, period, section, variants


@dataclass
class Inner:
    size: int = integer(1)


@dataclass
class Other:
    depth: int = integer(0)


@dataclass
class Kinds:
    """One field per kind of check (the comment names the real setting declared so)."""
    seed: int = integer(0)  # seed
    batch_size: int = integer(1)  # batch_size
    k: int = integer(1, 6, why="at least one response of each prompt must stay uncovered")  # toy8x8
    limit: Optional[int] = integer(1, null="")  # world.prompts.limit
    lr: float = number(0, low_open=True)  # lr
    weight_decay: float = number(0)  # weight_decay
    loc: float = number()  # world.cauchy_loc
    fraction: float = number(0, 1)  # world.corpus_math_fraction
    eval_fraction: float = number(0, 1, high_open=True)  # rm.eval_fraction
    memory: float = number(0, 1, low_open=True)  # vllm.gpu_memory_utilization
    grad_clip: Optional[float] = number(0, low_open=True, null="no clipping")  # grad_clip
    progress: bool = flag()  # progress
    optimizer: str = choice("adam", "adamw", "sgd")  # optimizer
    chat_template: Any = choice("auto", True, False)  # world.chat_template
    sync_every: Any = period()  # sync_every
    shuffle_window: Any = period(inf=False, words=("all",))  # replay.shuffle_window
    inner: Inner = section(Inner)
    group: Any = variants(a=Inner, b=Other)


GOOD = dict(seed=0, batch_size=1, k=6, limit=None, lr=1e-6, weight_decay=0.0, loc=-0.7, fraction=1, eval_fraction=0,
            memory=1, grad_clip=None, progress=True, optimizer="sgd", chat_template=False, sync_every="inf",
            shuffle_window="all", inner={"size": 3}, group={"name": "a", "size": 1})

BAD = [
    ("seed", "abc", "seed='abc' is invalid; valid: an integer >= 0"),
    ("seed", 1.5, "seed=1.5 is invalid; valid: an integer >= 0"),
    ("seed", -1, "seed=-1 is invalid; valid: an integer >= 0"),
    ("batch_size", 0, "batch_size=0 is invalid; valid: an integer >= 1"),
    ("batch_size", True, "batch_size=True is invalid; valid: an integer >= 1"),
    ("k", 7, "k=7 is invalid; valid: an integer in [1, 6] (at least one response of each prompt must stay uncovered)"),
    ("limit", 0, "limit=0 is invalid; valid: an integer >= 1 or null"),
    ("lr", 0, "lr=0 is invalid; valid: a positive number"),
    ("lr", "abc", "lr='abc' is invalid; valid: a positive number"),
    ("lr", float("nan"), "lr=nan is invalid; valid: a positive number"),
    ("weight_decay", -1, "weight_decay=-1 is invalid; valid: a number >= 0"),
    ("loc", "x", "loc='x' is invalid; valid: a number"),
    ("fraction", 1.5, "fraction=1.5 is invalid; valid: a number in [0, 1]"),
    ("eval_fraction", 1, "eval_fraction=1 is invalid; valid: a number in [0, 1)"),
    ("memory", 0, "memory=0 is invalid; valid: a number in (0, 1]"),
    ("grad_clip", -1, "grad_clip=-1 is invalid; valid: a positive number, or null (no clipping)"),
    ("grad_clip", 0, "grad_clip=0 is invalid; valid: a positive number, or null (no clipping)"),
    ("progress", "maybe", "progress='maybe' is invalid; valid choices: true, false"),
    ("progress", 1, "progress=1 is invalid; valid choices: true, false"),
    ("optimizer", "x", "optimizer='x' is invalid; valid choices: adam, adamw, sgd"),
    ("chat_template", "maybe", "chat_template='maybe' is invalid; valid choices: auto, true, false"),
    ("chat_template", 1, "chat_template=1 is invalid; valid choices: auto, true, false"),
    ("sync_every", 0, "sync_every=0 is invalid; valid: a positive integer or inf"),
    ("sync_every", 2.5, "sync_every=2.5 is invalid; valid: a positive integer or inf"),
    ("shuffle_window", "inf", "shuffle_window='inf' is invalid; valid: a positive integer"),
    ("shuffle_window", 0, "shuffle_window=0 is invalid; valid: a positive integer"),
    ("inner", {"size": 0}, "inner.size=0 is invalid; valid: an integer >= 1"),
    ("inner", 3, "inner=3 is invalid; valid: a group of settings (inner.*)"),
    ("group", {"name": "a", "size": 0}, "group.size=0 is invalid; valid: an integer >= 1"),
    ("group", {"name": "c"}, "group='c' is invalid; valid choices: a, b"),
]


def test_good_values_pass_and_absent_or_missing_ones_are_skipped():
    schema.check(OmegaConf.create(GOOD), schema=Kinds)
    schema.check(OmegaConf.create({"seed": "???", "inner": {}}), schema=Kinds)


@pytest.mark.parametrize("key,value,message", BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_each_kind_of_check_gives_todays_one_line_message(key, value, message):
    with pytest.raises(ConfigError) as info:
        schema.check(OmegaConf.create({**GOOD, key: value}), schema=Kinds)
    assert str(info.value) == message


def test_keys_limit_the_check_to_those_settings():
    cfg = OmegaConf.create({**GOOD, "seed": -1, "inner": {"size": 0}})
    schema.check(cfg, "lr", "group", schema=Kinds)
    with pytest.raises(ConfigError, match="inner.size=0"):
        schema.check(cfg, "inner.size", schema=Kinds)


def test_periods_read_as_numbers():
    assert [schema.as_period(v, "s") for v in (1, 3.0, "inf", "never", float("inf"))] == [1, 3, *[float("inf")] * 3]


# (overrides, the message config.validate's checks give today)
REAL = [
    (["seed=abc"], "seed='abc' is invalid; valid: an integer >= 0"),
    (["optimizer=x"], "optimizer='x' is invalid; valid choices: adam, adamw, sgd"),
    (["grad_clip=-1"], "grad_clip=-1 is invalid; valid: a positive number, or null (no clipping)"),
    (["algo.beta=0"], "algo.beta=0 is invalid; valid: a positive number"),
    (["algo=grpo", "algo.beta=-1"], "algo.beta=-1 is invalid; valid: a number >= 0"),
    (["algo=ipo", "algo.form=x"], "algo.form='x' is invalid; valid choices: tang, azar"),
    (["world=synth_lm", "world.corpus_math_fraction=1.5"],
     "world.corpus_math_fraction=1.5 is invalid; valid: a number in [0, 1]"),
    (["world=hf", "world.prompts.limit=0"], "world.prompts.limit=0 is invalid; valid: an integer >= 1 or null"),
    (["world=hf", "world.chat_template=maybe"], "world.chat_template='maybe' is invalid; valid choices: auto, true, false"),
    (["world=toy8x8", "world.pairs_per_cell=0"], "world.pairs_per_cell=0 is invalid; valid: an integer >= 1"),
    (["data=dataset", "data.max_prompt_tokens=0"], "data.max_prompt_tokens=0 is invalid; valid: an integer >= 1 or null"),
    (["replay.shuffle_window=0"], "replay.shuffle_window=0 is invalid; valid: a positive integer"),
    (["rm.eval_fraction=1"], "rm.eval_fraction=1 is invalid; valid: a number in [0, 1)"),
]


@pytest.mark.parametrize("overrides,message", REAL, ids=[" ".join(o) for o, _ in REAL])
def test_the_declared_settings_give_todays_messages(overrides, message):
    with pytest.raises(ConfigError) as info:
        schema.check(compose(overrides))
    assert str(info.value) == message


# ---------------------------------------------------------------- the declaration covers configs/
def _option_configs():
    """The composed config of every option of every group (the others at their defaults)."""
    return {f"{g}={o}": compose([f"{g}={o}"]) for g in ("world", "algo", "data", "logger") for o in group_options(g)}


def _structured(cfg):
    """The structured config of cfg's group choices: the top level with each group's declared variant."""
    typed = OmegaConf.structured(schema.Config)
    for f in fields(schema.Config):
        if "variants" in f.metadata:
            typed[f.name] = OmegaConf.structured(f.metadata["variants"][cfg[f.name].name])
    return typed


def _declaration(cls, path: list[str], cfg):
    """The dataclass field declaring the setting at path (a group's variant picked by cfg's name)."""
    f = {f.name: f for f in fields(cls)}[path[0]]
    if len(path) == 1:
        return f
    inner = f.metadata["variants"][cfg[path[0]].name] if "variants" in f.metadata else f.metadata["section"]
    return _declaration(inner, path[1:], cfg[path[0]])


def _leaves(node, prefix=()):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


@pytest.fixture(scope="module")
def option_configs():
    return _option_configs()


def test_every_config_is_an_instance_of_the_declaration(option_configs):
    """Each composed config merges into its structured config: every key of configs/ is declared, with a type
    that holds its default (a structured config is closed, so an undeclared key fails the merge)."""
    for option, cfg in option_configs.items():
        OmegaConf.merge(_structured(cfg), cfg)


def test_an_undeclared_key_fails_the_merge(option_configs):
    cfg = option_configs["world=synth_lm"].copy()
    OmegaConf.set_struct(cfg, False)
    cfg.world.new_size = 3
    with pytest.raises(Exception, match="new_size"):
        OmegaConf.merge(_structured(cfg), cfg)


def test_every_number_and_boolean_of_configs_has_a_check(option_configs):
    """A setting in configs/*.yaml holding a number or a boolean must be declared with a check (integer, number,
    flag, choice or period): a new numeric setting cannot slip past validation."""
    unchecked = set()
    for option, cfg in option_configs.items():
        for path, value in _leaves(OmegaConf.to_container(cfg, resolve=False)):
            if isinstance(value, (bool, int, float)) and "kind" not in _declaration(schema.Config, path, cfg).metadata:
                unchecked.add(".".join(path))
    assert not unchecked, f"declare a check in gapstudy/schema.py for: {', '.join(sorted(unchecked))}"


def test_each_group_declares_exactly_the_names_its_options_give(option_configs):
    declared = {f.name: set(f.metadata["variants"]) for f in fields(schema.Config) if "variants" in f.metadata}
    named = {group: set() for group in declared}
    for option, cfg in option_configs.items():
        named[option.partition("=")[0]].add(cfg[option.partition("=")[0]].name)
    assert declared == named


def test_the_declaration_is_a_torch_free_leaf():
    code = ("import sys, gapstudy.schema; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('gapstudy', 'experiments', 'analysis', 'torch', 'transformers')))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout.replace("'", '"'))
    assert loaded == ["gapstudy", "gapstudy.errors", "gapstudy.schema"]
