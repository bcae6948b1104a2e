"""Each stage checks its own settings against its registry; config checks only what every run has and imports no
stage. The registries and the configs/ groups name the same options, so the two cannot drift apart."""
from __future__ import annotations

import subprocess
import sys

import pytest

from gapstudy.config import ConfigError, compose, group_options
from gapstudy.config import validate as validate_settings
from gapstudy.runs import validate


def test_every_registry_names_exactly_its_config_group_options():
    from gapstudy.algorithms import ALGORITHMS
    from gapstudy.sources import SOURCES
    from gapstudy.worlds import WORLDS

    assert sorted(ALGORITHMS) == group_options("algo")
    assert sorted(SOURCES) == group_options("data")
    # a world option is a world or a preset of one (qwen_chat: world=hf with a Qwen model): their names are WORLDS
    names = {compose([f"world={option}"]).world.name for option in group_options("world")}
    assert names == set(WORLDS)


def test_config_imports_no_stage():
    """config is a leaf: composing and validating a config loads no stage module (no registry, no check of theirs)."""
    code = ("import sys\nfrom gapstudy.config import compose, validate\nvalidate(compose([]))\n"
            "stages = ('algorithms', 'sources', 'rewards', 'judge', 'worlds', 'generation', 'evaluation', 'data',"
            " 'golden', 'loop', 'runs')\n"
            "print(sorted(m for m in sys.modules if m.startswith('gapstudy.') and m.split('.')[1] in stages))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("overrides, message", [
    (["algo.samples_per_prompt=1"], "algo.samples_per_prompt=1 is invalid; valid: an integer >= 2"),
    (["labeller=llm"], "labeller='llm' is invalid; valid choices: gold, proxy, judge"),
    (["labeller=judge"], "labeller=judge needs judge.model"),
    (["sampler_from=[sft]"], "sampler_from holds fixed policies: it needs sync_every=inf, not 1"),
    (["world=synth_lm", "eval.tasks=[poetry]"], "eval.tasks=['poetry'] is invalid; valid: a list of math, chat"),
])
def test_a_stage_setting_is_refused_by_its_stage_before_the_run(overrides, message):
    cfg = compose(overrides)
    validate_settings(cfg)  # not config's business
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert str(e.value).startswith(message)
