"""`gapstudy compare`: runs from anywhere pooled over seeds into arms named by the choices that vary, the KL-matched
and final tables computed from them, and clear errors. Runs are written in the loop's on-disk format with
hand-set curves, so every number below is worked out by hand."""
from __future__ import annotations

import subprocess
import sys

import pytest

from analysis.compare import CompareError, compare, group_arms, load_paths, varying_keys
from analysis.load import ad_hoc_arm
from analysis.synthetic import write_run

# (sync_every, seed) -> win rate at the evaluations of KL 0, 1, 2, 4 nats
CURVES = {(1, 0): [0.5, 0.7, 0.8, 0.9], (1, 1): [0.5, 0.6, 0.8, 0.95],
          ("inf", 0): [0.5, 0.6, 0.65, 0.6], ("inf", 1): [0.5, 0.5, 0.7, 0.7]}
KLS = [0.0, 1.0, 2.0, 4.0]


def _name(sync, seed):
    return f"algo-dpo__sync_every-{sync}__world-token_bandit__seed-{seed}"


@pytest.fixture()
def runs(tmp_path):
    """Online and offline runs, 2 seeds each, the offline ones in a folder of their own."""
    for (sync, seed), wins in CURVES.items():
        folder = tmp_path / "online" if sync == 1 else tmp_path / "elsewhere" / "offline"
        records = [{"step": 10 * i, "eval/kl": kl, "eval/win_rate": w, "eval/gold_reward": w / 2}
                   for i, (kl, w) in enumerate(zip(KLS, wins))]
        config = {"seed": seed, "run_name": _name(sync, seed), "sync_every": sync, "algo": {"name": "dpo"},
                  "overrides": ["algo=dpo", f"sync_every={sync}", f"seed={seed}"], "code_version": f"c{seed}",
                  "paths": {"results": str(folder)}, "suite": None, "arm": None}
        write_run(folder / _name(sync, seed), config, records)
    return tmp_path


def test_an_ad_hoc_arm_is_the_run_name_without_its_seed():
    assert ad_hoc_arm("algo-dpo__sync_every-1__seed-3") == "algo-dpo__sync_every-1"
    assert ad_hoc_arm("my_run") == "my_run" and ad_hoc_arm("x__seed-abc") == "x__seed-abc"


def test_runs_from_several_paths_pool_over_seeds_into_arms_named_by_what_varies(runs):
    df = load_paths([runs / "online", runs / "elsewhere", runs / "online" / _name(1, 0)])  # one run reached twice
    assert df["run_dir"].nunique() == 4 and len(df) == 16
    assert varying_keys(df) == ["sync_every"]  # seed, overrides, code_version and paths are not choices
    grouped = group_arms(df)
    assert sorted(grouped["arm"].unique()) == ["sync_every=1", "sync_every=inf"]
    assert sorted(group_arms(df, ["sync_every", "seed"])["arm"].unique())[:2] == ["sync_every=1, seed=0",
                                                                                  "sync_every=1, seed=1"]


def test_the_kl_matched_and_final_tables_hold_the_hand_worked_numbers(runs, tmp_path):
    written, tables = compare([runs / "online", runs / "elsewhere"], tmp_path / "out")
    assert {p.name for p in written} == {"win_rate_vs_kl.png", "win_rate_vs_kl.pdf", "kl_matched.png",
                                         "kl_matched.pdf", "kl_matched.csv", "kl_matched.md", "final.csv", "final.md",
                                         "environment.csv", "environment.md"}  # these runs record no environment
    assert tables["environment"]["note"].tolist() == [
        "provenance missing: 4 of 4 runs record no environment in config.yaml (package versions, CPU capability, "
        "device and threads unknown)"]
    final = tables["final"]
    # final win rates: online (0.9 + 0.95) / 2, offline (0.6 + 0.7) / 2; the final KL is 4 for every run
    assert final.loc["sync_every=1", "eval/win_rate"] == pytest.approx(0.925)
    assert final.loc["sync_every=inf", "eval/win_rate"] == pytest.approx(0.65)
    assert final.loc["sync_every=inf", "eval/gold_reward"] == pytest.approx(0.325)
    assert list(final["n seeds"]) == [2, 2]
    matched = tables["kl_matched"]
    # KL budgets are log-spaced over the positive KLs [1, 4]: at 1 nat the best under budget is (0.7+0.6)/2 online,
    # (0.6+0.5)/2 offline; at 4 nats the running best is (0.9+0.95)/2 and (0.65+0.7)/2
    first, last = matched.iloc[0], matched.iloc[-1]
    assert matched.index[0] == "1" and matched.index[-1] == "4"
    assert first["sync_every=1"].startswith("0.650") and first["sync_every=inf"].startswith("0.550")
    assert last["sync_every=1"].startswith("0.925") and last["sync_every=inf"].startswith("0.675")


def test_bad_input_is_a_clear_error(runs, tmp_path):
    with pytest.raises(CompareError, match="no runs at"):
        compare([tmp_path / "nothing"], tmp_path / "out")
    with pytest.raises(CompareError, match=r"by=lr: lr is not a config key of these runs; the keys that vary "
                                           r"across them: sync_every"):
        compare([runs], tmp_path / "out", by=["lr"])
    with pytest.raises(CompareError, match="y=eval/accuracy: no run logged it"):
        compare([runs], tmp_path / "out", y="eval/accuracy")


def test_the_cli_prints_the_tables_and_fails_in_one_line(runs, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "gapstudy.cli", "compare", str(runs), f"out={tmp_path / 'cli'}"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "| sync_every=1 | 0.925 | 4.000 | 0.463 | 2 |" in ok.stdout
    assert (tmp_path / "cli" / "win_rate_vs_kl.png").exists()
    bad = subprocess.run([sys.executable, "-m", "gapstudy.cli", "compare", str(runs), "by=lr"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("gapstudy: error: by=lr") and "Traceback" not in bad.stderr


def test_registry_runs_keep_their_arms(tmp_path):
    from analysis.synthetic import fake_suite
    from experiments import SUITES

    fake_suite(tmp_path, "data_coverage", seeds=(0, 1))
    df = group_arms(load_paths([tmp_path]))
    assert set(df["arm"]) == {arm.name for arm in SUITES["data_coverage"].arms}


ENV = {"packages": {"torch": "2.5.1", "transformers": "4.46.0"}, "python": "3.11.9", "cpu_capability": "AVX512",
       "device": "cpu", "threads": 2}


def _record_environment(run_dir, environment):
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["environment"] = environment
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def test_runs_from_different_environments_are_warned_about_and_never_name_an_arm(runs, tmp_path, capsys):
    """One offline run made with 4 threads under AVX2 and another torch, one online run without any record: one
    line for the missing provenance, one per differing field, on stderr and as the environment table."""
    run_dirs = sorted(p.parent for p in runs.rglob("config.yaml"))
    for run_dir in run_dirs[1:]:
        _record_environment(run_dir, ENV)
    _record_environment(run_dirs[-1], {**ENV, "threads": 4, "packages": {"torch": "2.6.0", "transformers": "4.46.0"}})
    df = load_paths([runs])
    assert varying_keys(df) == ["sync_every"] and not any(c.startswith("environment") for c in df.columns)
    written, tables = compare([runs], tmp_path / "out")
    notes = ["provenance missing: 1 of 4 runs record no environment in config.yaml (package versions, CPU "
             "capability, device and threads unknown)",
             "runs made under different environments: environment.packages.torch = 2.5.1 (2 runs), 2.6.0 (1 run)",
             "runs made under different environments: environment.threads = 2 (2 runs), 4 (1 run)"]
    assert [line for line in capsys.readouterr().err.splitlines() if "warning" in line] == [
        f"gapstudy: warning: {note}" for note in notes]
    assert tables["environment"]["note"].tolist() == notes
    assert sorted(tables["final"].index) == ["sync_every=1", "sync_every=inf"]  # arms named without environment.*
    assert (tmp_path / "out" / "environment.md").read_text().startswith("| note |")


def test_runs_of_one_recorded_environment_give_no_warning(runs, tmp_path, capsys):
    for config in runs.rglob("config.yaml"):
        _record_environment(config.parent, ENV)
    written, tables = compare([runs], tmp_path / "out")
    assert "warning" not in capsys.readouterr().err and "environment" not in tables
