"""analysis.load: run directories on disk -> the tidy frame, on small hand-written metric files."""
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from analysis.load import eval_points, final_points, load_runs, missing, read_metrics
from analysis.synthetic import write_run


def _config(suite, arm, seed, **extra):
    return {"suite": suite, "arm": arm, "seed": seed, "run_name": f"{suite}__{arm}__{seed}", "overrides": [],
            "world": {"name": "synth_lm"}, "algo": {"name": "ipo", "beta": 0.1}, "sync_every": 1,
            "replay": {"order": "original", "shuffle_window": 1}, **extra}


def _records(kl_values, win_rates):
    records = []
    for step, (kl, win) in enumerate(zip(kl_values, win_rates)):
        records.append({"step": step * 10, "train/loss": 1.0 / (step + 1), "counters/samples": step * 64})
        records.append({"step": step * 10, "eval/kl": kl, "eval/win_rate": win})
    return records


def test_truncated_last_line_is_skipped_with_a_warning_naming_the_file(tmp_path):
    run = write_run(tmp_path / "s" / "r", _config("s", "a", 0), _records([0, 1, 2], [0.5, 0.6, 0.7]),
                    truncate_last_line=True, complete=False)  # a crash: no final.json
    with pytest.warns(UserWarning, match="metrics.jsonl: skipped truncated last line"):
        records = read_metrics(run / "metrics.jsonl")
    assert len(records) == 5  # six lines written, the last one cut in half
    with pytest.warns(UserWarning, match=str(run)):
        df = load_runs(tmp_path)
    assert df["step"].tolist() == [0, 10, 20]
    assert np.isnan(df["eval/kl"].iloc[-1]) and df["train/loss"].iloc[-1] == pytest.approx(1 / 3)


def test_one_row_per_logged_step_merging_train_and_eval_lines(tmp_path):
    write_run(tmp_path / "r", _config("s", "a", 0), _records([0.0, 0.5], [0.5, 0.6]))
    df = load_runs(tmp_path)
    assert len(df) == 2
    row = df.iloc[1]
    assert (row["step"], row["train/loss"], row["eval/kl"], row["eval/win_rate"]) == (10, 0.5, 0.5, 0.6)
    # every vocabulary key is a column even if never logged, NaN there
    assert df["eval/entropy"].isna().all()
    assert set(["suite", "arm", "seed", "run_name", "run_dir", "step", "complete"]) <= set(df.columns)


def test_runs_with_and_without_suite_folders_and_inf_sync_every(tmp_path):
    write_run(tmp_path / "sync_period" / "online", _config("sync_period", "math_s1", 0, sync_every=1),
              _records([0, 1], [0.5, 0.6]))
    write_run(tmp_path / "sync_period" / "offline", _config("sync_period", "math_sinf", 0, sync_every="inf"),
              _records([0, 1], [0.5, 0.55]), complete=False)
    # a loose run directly under the root, whose config has no suite
    write_run(tmp_path / "adhoc", {**_config(None, None, 3), "run_name": "adhoc"}, _records([0], [0.5]))
    # a run inside a suite folder whose config has suite: null takes the folder's name
    write_run(tmp_path / "kl_budget" / "old", _config(None, "online_ipo", 0), _records([0], [0.5]))
    df = load_runs(tmp_path)
    runs = df.groupby("run_name").first()
    assert runs.loc["sync_period__math_sinf__0", "sync_every"] == math.inf
    assert runs.loc["sync_period__math_s1__0", "sync_every"] == 1
    assert runs.loc["sync_period__math_s1__0", "complete"] and not runs.loc["sync_period__math_sinf__0", "complete"]
    assert runs.loc["adhoc", "arm"] == "adhoc" and pd.isna(runs.loc["adhoc", "suite"])
    assert runs.loc["None__online_ipo__0", "suite"] == "kl_budget"
    only = load_runs(tmp_path, suite="sync_period")
    assert set(only["arm"]) == {"math_s1", "math_sinf"}


def test_config_columns_are_the_values_that_vary(tmp_path):
    for beta in (0.1, 0.5):
        config = _config("kl_budget", "online_ipo", 0, replay={"order": "original", "shuffle_window": "all"})
        config["algo"]["beta"] = beta
        config["run_name"] = f"b{beta}"
        write_run(tmp_path / "kl_budget" / f"b{beta}", config, _records([0], [0.5]))
    df = load_runs(tmp_path)
    assert "algo.beta" in df.columns and sorted(df["algo.beta"].unique()) == [0.1, 0.5]
    assert "algo.name" not in df.columns and "replay.shuffle_window" not in df.columns
    assert load_runs(tmp_path, config_columns="all")["replay.shuffle_window"].eq("all").all()


def test_final_json_fills_values_missing_from_the_jsonl(tmp_path):
    run = write_run(tmp_path / "r", _config("s", "a", 0), _records([0, 1], [0.5, 0.6]))
    (run / "final.json").write_text(json.dumps({"step": 10, "eval/kl": 99.0, "eval/gold_reward": 0.3}))
    df = load_runs(tmp_path)
    last = df.iloc[-1]
    assert last["eval/kl"] == 1  # the jsonl value wins
    assert last["eval/gold_reward"] == 0.3


def test_eval_and_final_points(tmp_path):
    write_run(tmp_path / "r0", _config("s", "a", 0), _records([0, 1, 2], [0.5, 0.6, 0.55]))
    write_run(tmp_path / "r1", _config("s", "a", 1), _records([0, 3], [0.5, 0.8]))
    df = load_runs(tmp_path)
    assert len(eval_points(df)) == 5
    finals = final_points(df).set_index("seed")
    assert finals.loc[0, "eval/win_rate"] == 0.55 and finals.loc[1, "eval/win_rate"] == 0.8


def test_missing_lists_absent_and_unfinished_arm_seed_pairs(tmp_path):
    write_run(tmp_path / "s" / "a0", _config("s", "a", 0), _records([0], [0.5]))
    write_run(tmp_path / "s" / "a1", _config("s", "a", 1), _records([0], [0.5]), complete=False)
    df = load_runs(tmp_path)
    gaps = missing(df, {"s": ["a", "b"]}, seeds=[0, 1])
    assert set(map(tuple, gaps[["arm", "seed", "status"]].values.tolist())) == {
        ("a", 1, "incomplete"), ("b", 0, "missing"), ("b", 1, "missing")}
    assert len(missing(df, {"s": ["a"]}, seeds=1)) == 0


def test_empty_root_gives_an_empty_frame_with_the_columns(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = load_runs(tmp_path / "nothing_here")
    assert df.empty and "eval/win_rate" in df.columns and "arm" in df.columns
    assert eval_points(df).empty and final_points(df).empty


def test_metric_prefix_filter_keeps_only_the_named_keys_and_their_steps(tmp_path):
    records = _records([0, 1], [0.5, 0.6]) + [{"step": 15, "train/loss": 0.1}]
    write_run(tmp_path / "r", _config("s", "a", 0), records)
    df = load_runs(tmp_path, metrics=("eval/",))
    assert df["step"].tolist() == [0, 10] and df["train/loss"].isna().all()


def test_timings_table_reads_the_runner_files_and_skips_a_broken_one(tmp_path):
    import json

    import pytest

    from analysis.load import timings

    (tmp_path / "bandit").mkdir()
    (tmp_path / "bandit" / "timing-full.json").write_text(json.dumps({
        "command": "gapstudy run suite=bandit", "profile": "full", "wall_seconds": 120.0,
        "runs": [{"status": "done", "seconds": 60}, {"status": "complete", "seconds": 0},
                 {"status": "failed: ConfigError: x", "seconds": 6}]}))
    (tmp_path / "toy").mkdir()  # one of two suites run as one schedule (suite=bandit,toy): one run copied
    (tmp_path / "toy" / "timing-full.json").write_text(json.dumps({
        "command": "gapstudy run suite=bandit,toy", "profile": "full", "wall_seconds": 30.0,
        "invocation": {"suites": ["bandit", "toy"], "wall_seconds": 150.0},
        "runs": [{"status": "done", "seconds": 30}, {"status": "copied", "seconds": 0.1}]}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "timing-quick.json").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable timing file"):
        table = timings(tmp_path)
    assert table.to_dict("records") == [{
        "suite": "bandit", "profile": "full", "command": "gapstudy run suite=bandit", "wall_minutes": 2.0,
        "invocation": "alone", "runs": 3, "ran": 1, "already_complete": 1, "copied": 0, "failed_or_skipped": 1,
        "run_minutes": 1.1}, {
        "suite": "toy", "profile": "full", "command": "gapstudy run suite=bandit,toy", "wall_minutes": 0.5,
        "invocation": "2 suites, 2.5 min", "runs": 2, "ran": 1, "already_complete": 0, "copied": 1,
        "failed_or_skipped": 0, "run_minutes": 0.5}]
