"""analysis.figures: every figure renders on full, partial and empty data; regenerate writes the files;
importing analysis never imports torch."""
import io
import subprocess
import sys
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from matplotlib.figure import Figure

from analysis import figures
from analysis.figures import SUITE_FIGURES, SUITE_TABLES, named, regenerate
from analysis.load import load_runs
from analysis.style import SUITE_ARMS, arm_color, save
from analysis.synthetic import fake_suite

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
    for suite, arms in SUITE_ARMS.items():
        fake_suite(root, suite, seeds=(0,), drop_arms=arms[:1], steps=40, eval_every=10, train_every=5)
    return load_runs(root)


@pytest.mark.parametrize("suite", list(SUITE_FIGURES))
def test_every_figure_and_table_renders_with_a_missing_arm_and_one_seed(partial, suite):
    data = partial[partial["suite"] == suite]
    assert SUITE_ARMS[suite][0] not in set(data["arm"])
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


def test_figures_survive_runs_without_eval_rows(tmp_path):
    fake_suite(tmp_path, "best_of_2", seeds=(0,), steps=20, eval_every=10, train_every=5)
    df = load_runs(tmp_path)
    train_only = df.assign(**{c: float("nan") for c in df.columns if c.startswith("eval/")})
    assert "no data" in _render(figures.win_rate_vs_kl(train_only))
    assert "no data" in _render(figures.bars(train_only))


def test_win_rate_vs_kl_axes_and_frontier_lines(tmp_path):
    fake_suite(tmp_path, "kl_budget", seeds=(0, 1), steps=40, eval_every=10, train_every=5)
    fig = figures.win_rate_vs_kl(load_runs(tmp_path))
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
    table = figures.sync_period_table(load_runs(tmp_path))
    assert table.index.tolist()[:2] == ["seed", "offline (s=∞)"] and table.index[-1] == "GRPO"
    assert table.loc["seed", "math accuracy"] == pytest.approx(0.34, abs=0.02)
    assert table.loc["online (s=1)", "math accuracy"] > table.loc["offline (s=∞)", "math accuracy"]
    assert pd.isna(table.loc["s=5", "math accuracy"]) and table.loc["s=5", "chat seeds"] == 1
    # every run is evaluated on both prompt families: the math curves use the math prompts' keys
    labels = [ax.get_ylabel() for ax in figures.sync_curves_math(load_runs(tmp_path)).axes]
    assert labels == ["math accuracy", "math response length (tokens)", "math token entropy (nats)"]


def test_save_writes_png_and_pdf(tmp_path):
    paths = save(figures.bars(pd.DataFrame()), tmp_path / "out", "empty")
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


def test_importing_analysis_never_imports_torch():
    code = ("import analysis.figures, analysis.scorecard, analysis.load, analysis.kl_match, analysis.style, "
            "analysis.synthetic, sys; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert not any(m == 'gapstudy' or m.startswith('gapstudy.') for m in sys.modules), 'gapstudy imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
