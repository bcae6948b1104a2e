"""`gapstudy bench case=chat`: the synth_lm chat IPO case prints ms per step and ms per evaluation as its last lines,
beside the token-bandit case, which keeps ending with its ms_per_step line."""
from __future__ import annotations

import math
import re

import pytest

from gapstudy.cli import main
from tests.conftest import SMALL_SYNTH

TINY = ["measured=2", "repeats=1", "world.eval_prompts=16", "eval.prompts=4", "world.train_prompts=50"]


def _last_lines(capsys, n: int) -> list[str]:
    return capsys.readouterr().out.strip().splitlines()[-n:]


def test_chat_case_ends_with_ms_per_step_and_ms_per_eval(results, capsys):
    main(["bench", "case=chat", f"paths.results={results}", *SMALL_SYNTH, *TINY])
    setup, step, evaluation = _last_lines(capsys, 3)
    assert re.fullmatch(r"setup_s_per_run: \d+\.\d+", setup)
    assert re.fullmatch(r"ms_per_step: -?\d+\.\d+", step)
    assert re.fullmatch(r"ms_per_eval: -?\d+\.\d+", evaluation)
    assert math.isfinite(float(evaluation.split(": ")[1]))


def test_bandit_case_is_the_default_and_keeps_its_last_line(results, capsys):
    main(["bench", f"paths.results={results}", "world.pretrain_steps=5", "measured=2", "repeats=1"])
    out = capsys.readouterr().out.strip().splitlines()
    assert "world=token_bandit" in out[0] and "algo=dpo" in out[0]
    assert re.fullmatch(r"repeat 0: -?\d+\.\d+ ms/step", out[-2])
    assert re.fullmatch(r"ms_per_step: -?\d+\.\d+", out[-1])


def test_unknown_case_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "case=nope"])
    assert exit_info.value.code == 2
    assert "case='nope' is invalid; valid choices: bandit, chat" in capsys.readouterr().err
