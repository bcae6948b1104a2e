"""The shape of the house (../shared/DESIGN.md): imports point one way, no module grows past a screenful of
screens, the loop fits on one screen. Each test reads the code itself, so it fails the day the shape breaks."""
from __future__ import annotations

import graphlib
import inspect
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gapstudy", "experiments", "analysis")
MAX_MODULE_LINES = 500
MAX_TRAIN_LINES = 120


def test_import_contracts_hold(capsys):
    """pyproject.toml's import-linter contracts: the layers (cli -> runs -> loop -> stages -> worlds -> leaves,
    every module placed), losses and pairs import nothing of the project, analysis never imports torch or the
    training code, and only the cli imports experiments and analysis."""
    from importlinter.cli import lint_imports

    status = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)
    assert status == 0, capsys.readouterr().out


def _import_graph(packages=PACKAGES) -> dict[str, set[str]]:
    """module -> the project modules it imports (function-local and TYPE_CHECKING imports included)."""
    graph = grimp.build_graph(*packages, cache_dir=None)
    return {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    try:
        list(graphlib.TopologicalSorter(edges).static_order())
    except graphlib.CycleError as e:
        return list(e.args[1])
    return None


def test_no_import_cycle():
    """No cycle among the modules of gapstudy/, experiments/ and analysis/, a package's __init__ included (a
    paper module importing its own package's __init__, which imports it back, is a cycle)."""
    edges = _import_graph()
    assert "gapstudy.loop" in edges and "analysis" in edges  # the graph is the project's, not an empty one
    cycle = _cycle(edges)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_the_cycle_check_sees_a_function_local_import(tmp_path, monkeypatch):
    """A cycle made by an import inside a function is found (config.py imported the stage registries that way,
    which is how the knot hid)."""
    pkg = tmp_path / "knot"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from knot import b\n    return b\n")
    (pkg / "b.py").write_text("import knot.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert sorted(set(_cycle(_import_graph(("knot",))))) == ["knot.a", "knot.b"]
    (pkg / "a.py").write_text("def f():\n    return 1\n")
    assert _cycle(_import_graph(("knot",))) is None


def test_no_module_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_train_fits_on_one_screen():
    from gapstudy.loop import train

    lines = len(inspect.getsource(train).splitlines())
    assert lines <= MAX_TRAIN_LINES, f"train() is {lines} lines; the target is <= {MAX_TRAIN_LINES}"
