"""The command line: bad input ends with one line naming the bad value and the valid choices, status 2, and
nothing already written is touched; every config group composes; list and multirun work."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FAST, train_run
from gapstudy import cli
from gapstudy.config import CONFIG_DIR, ConfigError, compose, group_options
from gapstudy.runs import validate


def snapshot(root: Path) -> dict:
    """Every file a run wrote; caches may grow (a bad dataset is converted by `datasets` before its fields are checked)."""
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] != ".cache"}


def run_cli(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err
    return exit_info.value.code, err


@pytest.fixture(scope="module")
def finished(results):
    """A finished run whose files must survive every bad invocation below."""
    run_dir, _, _ = train_run(results, ["steps=3", "eval.every=0", "save_checkpoint=true"])
    return run_dir


def bad_datasets(tmp: Path) -> dict:
    (tmp / "empty.jsonl").write_text("")
    (tmp / "nofield.jsonl").write_text(json.dumps({"prompt": [1], "chosen": [2] * 9}) + "\n")
    (tmp / "notalog").mkdir(exist_ok=True)
    return {"empty": tmp / "empty.jsonl", "nofield": tmp / "nofield.jsonl", "notalog": tmp / "notalog"}


@pytest.mark.parametrize("args, needle", [
    (["world=gridworld"], "world='gridworld' is invalid; valid choices: hf, qwen_chat, qwen_gsm8k, synth_lm, token_bandit, toy8x8"),
    (["algo=ppo"], "algo='ppo' is invalid; valid choices: best_of_2, dpo, grpo, ipo, kto, orpo, reinforce, rwr, sft, simpo"),
    (["data=stream"], "data='stream' is invalid; valid choices: dataset, golden, policy, replay"),
    (["logger=tensorboard"], "logger='tensorboard' is invalid; valid choices: jsonl, wandb"),
    (["sync_every=0"], "sync_every=0 is invalid; valid: a positive integer or inf"),
    (["sync_every=-2"], "sync_every=-2 is invalid"),
    (["reward=R7"], "reward='R7' is invalid for world token_bandit; valid choices: R1, R2"),
    (["replay.order=backwards"], "replay.order='backwards' is invalid; valid choices: original, shuffled"),
    (["data=dataset"], "missing required setting(s): data.path"),
    (["data=dataset", "data.path=DATA/empty"], "is empty"),
    (["data=dataset", "data.path=DATA/nofield"], "lacks field(s) rejected"),
    (["data=replay", "data.path=DATA/notalog"], "no pair log at"),
    (["data=replay", "data.path=/nonexistent/run"], "data.path='/nonexistent/run' does not exist"),
])
def test_bad_input_stops_with_one_line_and_status_2(results, finished, tmp_path, capsys, args, needle):
    paths = bad_datasets(tmp_path)
    args = [a.replace("DATA/empty", str(paths["empty"])).replace("DATA/nofield", str(paths["nofield"]))
            .replace("DATA/notalog", str(paths["notalog"])) for a in args]
    before = snapshot(results)
    code, err = run_cli(["run", f"paths.results={results}", *FAST, "steps=2", *args], capsys)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert snapshot(results) == before


def test_a_nan_reward_stops_the_run_and_keeps_earlier_metrics(results, capsys, monkeypatch):
    import torch

    from gapstudy import rewards

    calls = {"n": 0}

    def nan_after_three(world):
        def label(prompts, prompt_mask, responses, response_mask, tasks):
            calls["n"] += 1
            r = world.gold(prompts, prompt_mask, responses, response_mask, tasks)
            return r if calls["n"] <= 3 else torch.full_like(r, float("nan"))
        return label

    monkeypatch.setattr(rewards, "gold_labeller", nan_after_three)
    code, err = run_cli(["run", f"paths.results={results / 'nan'}", *FAST, "steps=10", "eval.every=0"], capsys)
    assert code == 2 and "the labeller returned nan at step 3" in err and "Traceback" not in err
    (run_dir,) = (results / "nan").glob("*__seed-0")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 0, 1, 2]  # eval at 0, then steps 0-2, all whole
    assert not (run_dir / "final.json").exists()


def test_the_console_script_exits_2_without_a_traceback(results):
    out = subprocess.run([sys.executable, "-m", "gapstudy.cli", "run", "sync_every=0", f"paths.results={results}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip() == "gapstudy: error: sync_every=0 is invalid; valid: a positive integer or inf"


def test_every_config_group_option_composes_and_validates(finished):
    groups = {g: group_options(g) for g in ("world", "algo", "data", "logger")}
    assert groups["world"] == ["hf", "qwen_chat", "qwen_gsm8k", "synth_lm", "token_bandit", "toy8x8"]
    presets = {"qwen_chat": "hf", "qwen_gsm8k": "hf"}  # real-scale presets of world=hf
    assert sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra") == sorted(groups)
    # world=hf has required (???) settings; hub names validate without touching the network
    required = {("world", "hf"): ["world.model=gpt2", "world.prompts.path=openai/gsm8k",
                                  "world.prompts.answer_field=answer", "world.reward.kind=gsm8k"]}
    for group, options in groups.items():
        for option in options:
            extra = [f"data.path={finished}"] if group == "data" and option in ("dataset", "replay") else []
            extra += required.get((group, option), [])
            cfg = validate(compose([f"{group}={option}", *extra]))
            assert cfg[group]["name"] == (presets.get(option, option) if group == "world" else option)
    for sync in ("1", "7", "inf"):
        assert str(validate(compose([f"sync_every={sync}"])).sync_every) == sync
    with pytest.raises(ConfigError):
        validate(compose(["algo.samples_per_prompt=1"]))  # a pair needs two responses


def test_list_names_every_choice(capsys):
    cli.main(["list"])
    out = capsys.readouterr().out
    for name in ["token_bandit", "synth_lm", "dpo", "ipo", "best_of_2", "grpo", "reinforce", "policy", "dataset",
                 "replay", "inf", "semi-online", "proxy"]:
        assert name in out


def test_run_and_multirun_from_the_command_line(results, capsys):
    root = results / "cli"
    cli.main(["run", "-m", f"paths.results={root}", *FAST, "steps=2", "eval.every=0", "algo=dpo,ipo",
              "sync_every=1,inf"])
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    out = capsys.readouterr().out
    counters = re.findall(r"^\[(\d+)/(\d+)\] ([^/\s]+)$", out, re.M)  # "[i/N] run name" as each job starts
    assert sorted((int(i), int(n)) for i, n, _ in counters) == [(i, 4) for i in range(1, 5)]
    assert sorted(name for *_, name in counters) == names
    fast = "eval.every-0__eval.prompts-32__steps-2"
    assert names == [f"algo-{a}__{fast}__sync_every-{s}__world.pretrain_steps-60__seed-0"
                     for a in ("dpo", "ipo") for s in ("1", "inf")]
    for name in names:
        assert (root / name / "final.json").exists() and (root / name / "config.yaml").exists()
    # running a finished run again is free and prints its final metrics
    cli.main(["run", f"paths.results={root}", *FAST, "steps=2", "eval.every=0", "algo=dpo", "sync_every=1"])
    assert "win_rate=" in capsys.readouterr().out


REPO = Path(__file__).resolve().parents[1]
DEMO_FAST = ["steps=2", "eval.every=0", "eval.prompts=8", "world.pretrain_steps=60"]
ROW = re.compile(r"^(online|offline)\s+(\S+)\s+(\d+)" + r"\s+(\S+) \[(\S+), (\S+)\]" * 3 + r"\s+(\S+)$")


def tree_state(root: Path) -> dict:
    """(size, mtime) of every file under root: what any write, replacement or deletion changes."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def demo_rows(out: str) -> dict:
    rows = {}
    for line in out.splitlines():
        match = ROW.match(line)
        if match:
            g = match.groups()
            rows[g[0]] = {"sync": g[1], "seeds": int(g[2]), "seconds": g[12],
                          **{name: tuple(float(x) for x in g[3 + 3 * k: 6 + 3 * k])
                             for k, name in enumerate(("eval/gold_reward", "eval/win_rate", "eval/kl"))}}
    return rows


def test_demo_runs_five_seeds_per_regime_into_a_scratch_root_and_prints_t_intervals(tmp_path, capsys, monkeypatch):
    import tempfile

    from scipy import stats

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the scratch root lands here, not in /tmp
    before = tree_state(REPO / "results")
    cli.main(["demo", *DEMO_FAST])
    out = capsys.readouterr().out
    assert tree_state(REPO / "results") == before  # nothing under the tracked results/ written, replaced or removed
    (scratch,) = tmp_path.glob("gapstudy-demo-*")
    assert f"written under {scratch / 'demo'}" in out
    runs = {p.name: json.loads((p / "final.json").read_text()) for p in (scratch / "demo").iterdir()}
    rows = demo_rows(out)
    assert set(rows) == {"online", "offline"}
    for label, sync in (("online", "1"), ("offline", "inf")):
        finals = [f for name, f in runs.items() if f"sync_every-{sync}__" in name]
        assert rows[label]["sync"] == sync and rows[label]["seeds"] == len(finals) >= 5
        assert {int(name.rsplit("seed-", 1)[1]) for name in runs if f"sync_every-{sync}__" in name} == set(range(5))
        for key in ("eval/gold_reward", "eval/win_rate", "eval/kl"):
            values = [f[key] for f in finals]
            mean, low, high = rows[label][key]
            digits = 2 if key == "eval/kl" else 3
            assert mean == round(sum(values) / len(values), digits)
            if stats.sem(values) > 0:  # the printed interval is scipy's t-interval over the seeds' final values
                expected = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / len(values),
                                            scale=stats.sem(values))
                assert (low, high) == (round(expected[0], digits), round(expected[1], digits))
            else:
                assert low == high == mean
        float(rows[label]["seconds"])  # every run trained here: a number, not "reused"
    assert len(re.findall(r"^\[\d+/10\] ", out, re.M)) == 10  # one line per finished run


def test_demo_in_a_given_root_reuses_finished_runs_and_deletes_nothing(tmp_path, capsys):
    args = [*DEMO_FAST, "seeds=0,1", f"paths.results={tmp_path}"]
    cli.main(["demo", *args])
    capsys.readouterr()
    runs = sorted((tmp_path / "demo").iterdir())
    assert len(runs) == 4
    marker = runs[0] / "marker"
    marker.write_text("kept")
    before = tree_state(tmp_path)
    cli.main(["demo", *args])
    out = capsys.readouterr().out
    assert marker.read_text() == "kept" and tree_state(tmp_path) == before  # reused: nothing rewritten or removed
    assert all(row["seconds"] == "reused" for row in demo_rows(out).values())


@pytest.mark.parametrize("arg, needle", [
    ("seeds=3", "seeds='3' is invalid; an interval over seeds needs at least 2"),
    ("seeds=a,b", "seeds='a,b' is invalid"),
    ("seed=1", "seed= is set by the demo"),
    ("jobs=0", "jobs='0' is invalid"),
    ("sync_evry=1", "sync_evry"),
])
def test_demo_refuses_bad_options_and_leaves_no_scratch_root(tmp_path, capsys, monkeypatch, arg, needle):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code, err = run_cli(["demo", *DEMO_FAST, arg], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["demo", "figures", "compare", "bench", "train-rm", "list"])
def test_every_command_but_run_prints_its_help(command, capsys):
    cli.main([command, "--help"])
    out = capsys.readouterr().out
    assert out.startswith(f"usage: gapstudy {command}") and f"  {command}" in out
