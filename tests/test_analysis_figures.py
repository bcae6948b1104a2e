"""analysis.figures: every figure renders on full, partial and empty data; regenerate writes the files;
importing analysis never imports torch."""
import io
import json
import subprocess
import sys
from pathlib import Path

import matplotlib
import matplotlib.collections
import pandas as pd
import pytest
import yaml
from matplotlib.figure import Figure

from analysis.figures import SUITE_FIGURES, SUITE_TABLES, named
from analysis.figures.common import MIN_LOG_TICKS, bars, curves_vs_step
from analysis.figures.lanchantin import sync_curves_math, sync_period_table
from analysis.figures.tajwar import bandit_curves
from analysis.figures.tang import kl_matched_figure, win_rate_vs_kl
from analysis.figures.xu import toy_masses
from analysis.load import final_points, load_runs
from analysis.regenerate import regenerate
from analysis.style import arm_color, arm_label, save
from analysis.synthetic import fake_suite, write_run
from experiments import SUITES

REPO = Path(__file__).resolve().parents[1]


def _render(fig: Figure) -> str:
    """Draw the figure (as savefig does) and return all its text."""
    assert isinstance(fig, Figure)
    fig.savefig(io.BytesIO(), format="png", dpi=30)
    return " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))


@pytest.fixture(scope="module")
def partial(tmp_path_factory):
    """Every suite with one seed and its first arm missing."""
    root = tmp_path_factory.mktemp("partial")
    for suite, registered in SUITES.items():
        fake_suite(root, suite, seeds=(0,), drop_arms=[registered.arms[0].name], steps=40, eval_every=10, train_every=5)
    return load_runs(root)


@pytest.mark.parametrize("suite", list(SUITE_FIGURES))
def test_every_figure_and_table_renders_with_a_missing_arm_and_one_seed(partial, suite):
    data = partial[partial["suite"] == suite]
    assert SUITES[suite].arms[0].name not in set(data["arm"])
    for name, draw in named(SUITE_FIGURES[suite]):
        text = _render(draw(data))
        assert "no data" not in text, name
    for name, build in SUITE_TABLES[suite]:
        assert isinstance(build(data), pd.DataFrame), name


@pytest.mark.parametrize("suite", list(SUITE_FIGURES))
def test_every_figure_says_no_data_on_an_empty_frame(suite):
    empty = load_runs("/nonexistent-results-root")
    for name, draw in named(SUITE_FIGURES[suite]):
        assert "no data" in _render(draw(empty)), name
    for name, build in SUITE_TABLES[suite]:
        build(empty)


def test_every_registered_arm_has_its_own_colour_and_label():
    """Arms are read from the registry; their look is style's own data, so an arm added there without a colour and
    label would be drawn in a hashed colour under its raw name."""
    from analysis.style import ARM_COLORS, ARM_LABELS

    names = {arm.name for suite in SUITES.values() for arm in suite.arms}
    assert names - set(ARM_COLORS) == set() and names - set(ARM_LABELS) == set()


def test_figures_survive_runs_without_eval_rows(tmp_path):
    fake_suite(tmp_path, "best_of_2", seeds=(0,), steps=20, eval_every=10, train_every=5)
    df = load_runs(tmp_path)
    train_only = df.assign(**{c: float("nan") for c in df.columns if c.startswith("eval/")})
    assert "no data" in _render(win_rate_vs_kl(train_only))
    assert "no data" in _render(bars(train_only))


def test_win_rate_vs_kl_axes_and_frontier_lines(tmp_path):
    fake_suite(tmp_path, "kl_budget", seeds=(0, 1), steps=40, eval_every=10, train_every=5)
    fig = win_rate_vs_kl(load_runs(tmp_path))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel().startswith("KL(π‖π") and "log scale" in ax.get_xlabel()
    assert ax.get_ylabel() == "win rate vs SFT (gold judge)"
    lines = [line for line in ax.get_lines() if line.get_label() in ("online IPO", "offline IPO")]
    assert [line.get_label() for line in lines] == ["online IPO", "offline IPO"]  # registry order
    assert lines[0].get_color() == arm_color("online_ipo") and lines[1].get_linestyle() == "--"
    legend_labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert legend_labels[:5] == ["online IPO", "offline IPO", "offline IPO, D_golden", "online DPO", "offline DPO"]
    assert "seed 1" in legend_labels


def test_sync_period_table_layout(tmp_path):
    fake_suite(tmp_path, "sync_period", seeds=(0,), steps=40, eval_every=10, train_every=5)
    df = load_runs(tmp_path)
    table = sync_period_table(df)
    assert table.index.tolist()[:2] == ["seed", "offline (s=∞)"] and table.index[-1] == "GRPO"
    # the seed row is the step-0 evaluation of the math runs (the policy before training), not any run's last one
    math_runs = df[df["arm"].str.startswith("math_")]
    start = math_runs[math_runs["step"] == 0].groupby("seed")["eval/math/accuracy"].mean().mean()
    assert table.loc["seed", "math accuracy"] == pytest.approx(start)
    offline = final_points(df[df["arm"] == "math_sinf"])["eval/math/accuracy"].mean()
    assert table.loc["offline (s=∞)", "math accuracy"] == pytest.approx(offline) and offline != pytest.approx(start)
    assert table.loc["online (s=1)", "math accuracy"] > table.loc["offline (s=∞)", "math accuracy"]
    assert pd.isna(table.loc["s=5", "math accuracy"]) and table.loc["s=5", "chat seeds"] == 1
    # every run is evaluated on both prompt families: the math curves use the math prompts' keys
    labels = [ax.get_ylabel() for ax in sync_curves_math(load_runs(tmp_path)).axes]
    assert labels == ["math accuracy", "math response length (tokens)", "math token entropy (nats)"]


def test_save_writes_png_and_pdf(tmp_path):
    paths = save(bars(pd.DataFrame()), tmp_path / "out", "empty")
    assert [p.name for p in paths] == ["empty.png", "empty.pdf"] and all(p.stat().st_size > 0 for p in paths)


def test_regenerate_writes_figures_tables_and_report(tmp_path):
    fake_suite(tmp_path, "best_of_2", seeds=(0, 1), steps=40, eval_every=10, train_every=5, drop_arms=("bo2_offline",))
    paths = regenerate(tmp_path, "best_of_2")
    names = {p.relative_to(tmp_path).as_posix() for p in paths}
    for figure in ("final_win_rate", "win_rate_vs_kl"):
        assert {f"figures/best_of_2/{figure}.png", f"figures/best_of_2/{figure}.pdf"} <= names
    assert {"figures/best_of_2/final_metrics.csv", "figures/best_of_2/final_metrics.md", "best_of_2/REPORT.md"} <= names
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    report = (tmp_path / "best_of_2" / "REPORT.md").read_text()
    assert "missing arms: bo2_offline" in report and "![win_rate_vs_kl](../figures/best_of_2/win_rate_vs_kl.png)" in report
    assert (tmp_path / "best_of_2" / report.split("](")[1].split(")")[0]).resolve().is_file()  # links resolve


def test_regenerate_without_suite_draws_every_suite_found(tmp_path):
    fake_suite(tmp_path, "curriculum", seeds=(0,), steps=20, eval_every=10, train_every=5)
    fake_suite(tmp_path, "sample_reuse", seeds=(0,), steps=20, eval_every=10, train_every=5)
    paths = regenerate(tmp_path)
    assert {p.parent.name for p in paths if p.name == "REPORT.md"} == {"curriculum", "sample_reuse"}
    assert regenerate(tmp_path / "empty") == []


def test_importing_every_analysis_module_never_imports_torch_or_the_training_code():
    """A fresh interpreter imports every module of the analysis package (found by walking it, compare and the
    claims and figures of every paper included): torch is not loaded, and of gapstudy only the metric vocabulary is
    (the registry, experiments.SUITES, is the other thing analysis reads)."""
    code = ("import importlib, json, pkgutil, sys, analysis\n"
            "names = sorted(m.name for m in pkgutil.walk_packages(analysis.__path__, 'analysis.'))\n"
            "for name in names:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps({'imported': names, 'loaded': sorted(sys.modules)}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"analysis.compare", "analysis.regenerate", "analysis.claims.tang", "analysis.figures.xu"} <= set(
        report["imported"])
    loaded = report["loaded"]
    assert not [m for m in loaded if m == "torch" or m.startswith("torch.")], "torch imported"
    assert [m for m in loaded if m == "gapstudy" or m.startswith("gapstudy.")] == ["gapstudy", "gapstudy.metrics"]


# ------------------------------------------------------------------ labels, ticks, bands (issue 10's trial)
def _adhoc_runs(root, kls, seeds=(0,), name="algo-dpo__sync_every-1__world-token_bandit"):
    """Runs made outside the registry (like the demo's): one per seed, evaluated at the KLs `kls`."""
    for seed in seeds:
        records = [{"step": 10 * i, "eval/kl": kl, "eval/win_rate": 0.5 + 0.1 * i} for i, kl in enumerate(kls)]
        write_run(root / f"{name}__seed-{seed}", {"seed": seed, "run_name": f"{name}__seed-{seed}", "sync_every": 1},
                  records)
    return load_runs(root)


def _labelled_x_ticks(ax) -> list[str]:
    low, high = ax.get_xlim()
    return [t.get_text() for t in ax.get_xticklabels() if t.get_text() and low <= t.get_position()[0] <= high]


def test_arm_labels_keep_the_underscores_of_config_names(tmp_path):
    assert arm_label("sync_every=1") == "sync_every=1"
    assert arm_label("algo-dpo__world-token_bandit") == "algo-dpo, world-token_bandit"
    assert arm_label("offline_ipo_golden") == "offline IPO, D_golden"  # registry arms keep their labels
    fig = win_rate_vs_kl(_adhoc_runs(tmp_path, [14.0, 20.0, 35.0, 55.0]))
    legend = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert legend == ["algo-dpo, sync_every-1, world-token_bandit"]


@pytest.mark.parametrize("kls", [[14.0, 20.0, 35.0, 55.0], [2.1, 2.3, 2.6], [0.2, 1.0, 8.0], [2.0, 30.0, 150.0],
                                 [0.01, 1.0, 300.0]])
def test_the_log_kl_axis_has_at_least_four_labelled_ticks(tmp_path, kls):
    """The demo's KL range (14 to 55 nats) showed only 20 and 50."""
    df = _adhoc_runs(tmp_path, kls, seeds=(0, 1))
    for fig in (win_rate_vs_kl(df), kl_matched_figure(df)):
        _render(fig)
        labels = _labelled_x_ticks(fig.axes[0])
        assert len(labels) >= MIN_LOG_TICKS, labels
        assert len(set(labels)) == len(labels)  # no two ticks print the same number
    low, high = fig_limits = win_rate_vs_kl(df).axes[0].get_xlim()
    assert low <= min(kls) and max(kls) <= high, fig_limits  # the ticks never hide a checkpoint


def _legend_titles(fig) -> list[str]:
    return [legend.get_title().get_text() for legend in fig.legends]


def _bands(fig) -> int:
    return sum(isinstance(c, matplotlib.collections.PolyCollection) for ax in fig.axes for c in ax.collections)


@pytest.mark.parametrize("suite, draw", [("kl_budget", lambda df: curves_vs_step(df, metrics=("eval/kl",))),
                                         ("bandit", bandit_curves), ("toy8x8", toy_masses)])
def test_a_legend_promises_bands_only_when_two_seeds_draw_them(tmp_path, suite, draw):
    one = tmp_path / "one"
    fake_suite(one, suite, seeds=(0,), steps=40, eval_every=10, train_every=5)
    fig = draw(load_runs(one))
    assert _bands(fig) == 0 and _legend_titles(fig) == ["arm (one seed: no band)"]
    two = tmp_path / "two"
    fake_suite(two, suite, seeds=(0, 1), steps=40, eval_every=10, train_every=5)
    fig = draw(load_runs(two))
    assert _bands(fig) > 0 and _legend_titles(fig) == ["arm (band = ±1 s.e. over seeds)"]


def test_the_kl_matched_title_names_a_band_only_with_two_seeds(tmp_path):
    one = kl_matched_figure(_adhoc_runs(tmp_path / "one", [1.0, 2.0, 4.0]))
    assert one.axes[0].get_title() == "KL-matched comparison" and _bands(one) == 0
    two = kl_matched_figure(_adhoc_runs(tmp_path / "two", [1.0, 2.0, 4.0], seeds=(0, 1)))
    assert two.axes[0].get_title() == "KL-matched comparison (band: 95% CI over seeds)" and _bands(two) > 0


# ------------------------------------------------------------------ the scorecard says where it comes from
def test_the_scorecard_names_the_root_and_profile_it_was_decided_from(tmp_path):
    fake_suite(tmp_path, "best_of_2", seeds=(0, 1), steps=20, eval_every=10, train_every=5)
    for config in tmp_path.glob("best_of_2/*/config.yaml"):
        config.write_text(config.read_text() + "profile: quick\n")
    _adhoc_runs(tmp_path / "demo", [1.0, 2.0])  # decides no claim: not counted
    regenerate(tmp_path, profile="quick")
    text = (tmp_path / "SCORECARD.md").read_text()
    assert f"decided from the 10 runs of the quick profile (and runs made outside a profile) under `{tmp_path.as_posix()}`" in text
    assert "the committed" not in text and "committed runs" not in text and "full-profile" not in text
    regenerate(tmp_path, profile="full")  # no full-profile runs there: only the demo's, which decide nothing
    assert "decided from the 0 runs of the full profile" in (tmp_path / "SCORECARD.md").read_text()


# ------------------------------------------------------------------ environments and determinism
ENV = {"packages": {"torch": "2.5.1", "numpy": "2.1.0"}, "python": "3.11.9", "cpu_capability": "AVX512",
       "device": "cpu", "threads": 2}


def _set_environment(run_dir: Path, environment) -> None:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["environment"] = environment
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("gapstudy: warning:")]


def test_regenerate_warns_once_per_differing_environment_field_and_notes_it_in_the_reports(tmp_path, capsys):
    runs = fake_suite(tmp_path, "best_of_2", seeds=(0, 1), steps=20, eval_every=10, train_every=5, environment=ENV)
    _set_environment(runs[0], {**ENV, "cpu_capability": "AVX2", "packages": {**ENV["packages"], "torch": "2.6.0"}})
    regenerate(tmp_path)
    lines = _warnings(capsys.readouterr().err)
    assert lines == [
        "gapstudy: warning: runs made under different environments: environment.packages.torch = 2.5.1 (9 runs), "
        "2.6.0 (1 run)",
        "gapstudy: warning: runs made under different environments: environment.cpu_capability = AVX2 (1 run), "
        "AVX512 (9 runs)"]
    for text in ((tmp_path / "best_of_2" / "REPORT.md").read_text(), (tmp_path / "SCORECARD.md").read_text()):
        assert "- runs made under different environments: environment.cpu_capability = AVX2 (1 run), AVX512 (9 runs)" in text
    assert "environment" not in "".join(load_runs(tmp_path).columns)  # never a config column


def test_regenerate_names_one_shared_environment_and_warns_once_when_none_is_recorded(tmp_path, capsys):
    fake_suite(tmp_path / "same", "curriculum", seeds=(0,), steps=20, eval_every=10, train_every=5, environment=ENV)
    regenerate(tmp_path / "same")
    assert _warnings(capsys.readouterr().err) == []
    assert ("- all 5 runs record one environment: python 3.11.9, cpu_capability AVX512, device cpu, threads 2; "
            "packages: torch 2.5.1, numpy 2.1.0") in (tmp_path / "same" / "curriculum" / "REPORT.md").read_text()
    fake_suite(tmp_path / "none", "curriculum", seeds=(0,), steps=20, eval_every=10, train_every=5)
    assert regenerate(tmp_path / "none")
    assert _warnings(capsys.readouterr().err) == [
        "gapstudy: warning: provenance missing: 5 of 5 runs record no environment in config.yaml (package versions, "
        "CPU capability, device and threads unknown)"]


def test_regenerate_rewrites_every_file_byte_for_byte(tmp_path, monkeypatch):
    """Re-running `gapstudy figures` on unchanged runs leaves git status clean: no timestamp (a PDF's CreationDate
    follows SOURCE_DATE_EPOCH, set differently for the two passes), no version string, no ordering noise."""
    fake_suite(tmp_path, "kl_budget", seeds=(0, 1), steps=40, eval_every=10, train_every=5)
    fake_suite(tmp_path, "toy8x8", seeds=(0, 1), steps=40, eval_every=10, train_every=5)
    _adhoc_runs(tmp_path / "demo", [14.0, 20.0, 35.0, 55.0])

    def snapshot():
        return {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in sorted(tmp_path.rglob("*"))
                if p.is_file() and p.suffix in (".png", ".pdf", ".md", ".csv")}

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1000000000")
    regenerate(tmp_path, profile=None)
    first = snapshot()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    regenerate(tmp_path, profile=None)
    second = snapshot()
    assert sorted(first) == sorted(second) and {"figures/demo/win_rate_vs_kl.pdf", "SCORECARD.md"} <= set(first)
    assert [name for name in first if first[name] != second[name]] == []
    assert not any(b"Matplotlib v" in data or b"matplotlib version" in data.lower() for data in first.values())
