"""analysis.prereg and what the reports show of it: the commit at which a claim's rule block last changed (on a git
repository built here), whether the rule changed after the runs, leave-one-seed-out stability, the tally counting
claims only (checks apart), and the post-hoc changes listed per suite."""
from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from analysis import prereg
from analysis.claims import CLAIM, CHECK, stability
from analysis.claims.rules import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Claim
from analysis.load import run_provenance
from analysis.report import commits_text, posthoc_lines, tally, verdict_lines
from analysis.synthetic import fake_suite

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def _commit_rules(repo: Path, document: dict, message: str) -> str:
    path = repo / prereg.RULES_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    _git(repo, "add", prereg.RULES_PATH)
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


RULES_V1 = {"claims": {1: {"kind": "claim", "text": "A above B", "thresholds": {"band": 0.02}},
                       2: {"kind": "claim", "text": "C above D", "thresholds": {"band": 0.02}}},
            "checks": {"check_replay_original": {"kind": "check", "text": "replay = online"}},
            "posthoc": [{"claims": [2], "commit": "abc", "what": "w", "why": "y"}]}


@pytest.fixture
def repo(tmp_path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    return repo


@needs_git
def test_rule_commit_is_the_commit_that_last_changed_each_block_and_uncommitted_after_an_edit(repo):
    first = _commit_rules(repo, RULES_V1, "rules")
    changed = {**RULES_V1, "claims": {**RULES_V1["claims"], 2: {**RULES_V1["claims"][2], "thresholds": {"band": 0.05}}},
               "posthoc": [*RULES_V1["posthoc"], {"claims": [2], "commit": "def", "what": "band", "why": "z"}]}
    second = _commit_rules(repo, changed, "claim 2's band; a posthoc entry (changes no block)")
    third = _commit_rules(repo, {**changed, "posthoc": []}, "posthoc emptied: no rule block changes")
    history = prereg.load_history(repo)
    assert [c for c, _ in history.commits] == [third, second, first]
    assert prereg.rule_commit(2, history) == second  # the changed block: the commit that changed it
    assert prereg.rule_commit("2", history) == second  # a Claim's key is a string; YAML's key is the int 2
    assert prereg.rule_commit(1, history) == first  # untouched since the first commit
    assert prereg.rule_commit("check_replay_original", history) == first
    assert prereg.rule_commit(99, history) is None  # no such block

    edited = {**changed, "claims": {**changed["claims"], 1: {**changed["claims"][1], "text": "A above B by 0.1"}}}
    (repo / prereg.RULES_PATH).write_text(yaml.safe_dump(edited), encoding="utf-8")
    history = prereg.load_history(repo)
    assert prereg.rule_commit(1, history) == prereg.UNCOMMITTED
    assert prereg.rule_commit(2, history) == second  # the other blocks keep their commits


@needs_git
def test_a_block_changed_and_changed_back_dates_from_the_commit_that_restored_it(repo):
    _commit_rules(repo, RULES_V1, "v1")
    _commit_rules(repo, {**RULES_V1, "claims": {**RULES_V1["claims"], 1: {"kind": "claim", "text": "other"}}}, "v2")
    restored = _commit_rules(repo, RULES_V1, "back to v1")
    assert prereg.rule_commit(1, prereg.load_history(repo)) == restored


def test_without_git_history_every_answer_is_unknown(tmp_path):
    """A tarball: the rules file is there, no repository around it."""
    (tmp_path / prereg.RULES_PATH).parent.mkdir(parents=True)
    (tmp_path / prereg.RULES_PATH).write_text(yaml.safe_dump(RULES_V1), encoding="utf-8")
    history = prereg.load_history(tmp_path)
    assert not history.git and prereg.block(history.working, 1) == RULES_V1["claims"][1]
    assert prereg.rule_commit(1, history) is None
    assert prereg.changed_after_runs(None, ["a" * 40]) is None
    assert prereg.results_commits([tmp_path / "x" / "run" / "config.yaml"], tmp_path) == {}
    assert [e["why"] for e in prereg.posthoc(history)] == ["y"]  # posthoc still read from the file


@needs_git
def test_changed_after_runs_true_when_the_rule_is_not_an_ancestor_of_every_run(repo):
    rule = _commit_rules(repo, RULES_V1, "rule")
    (repo / "code.py").write_text("x = 1\n")
    _git(repo, "add", "code.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "code")
    run = _git(repo, "rev-parse", "HEAD")
    assert prereg.changed_after_runs(rule, [run, rule], repo) is False  # runs made at or after the rule
    assert prereg.changed_after_runs(rule, [run + "+dirty"], repo) is False  # "+dirty" is the same commit
    assert prereg.changed_after_runs(run, [run, rule], repo) is True  # one run predates the rule
    assert prereg.changed_after_runs(prereg.UNCOMMITTED, [run], repo) is True
    assert prereg.changed_after_runs(rule, [run, None], repo) is None  # a run with no code_version: unknown ...
    assert prereg.changed_after_runs(run, [None], repo, written_by=[rule]) is True  # ... unless its results were
    assert prereg.changed_after_runs(rule, [None], repo, written_by=[run]) is None  # written before the rule
    assert prereg.changed_after_runs(rule, ["f" * 40], repo) is None  # a commit this repository does not know


@needs_git
def test_results_commits_names_the_commit_that_last_wrote_each_run(repo):
    config = repo / "results" / "suite" / "run" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("seed: 0\n")
    _git(repo, "add", "results")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a run")
    found = prereg.results_commits([config, repo / "results" / "suite" / "untracked" / "config.yaml"], repo)
    assert found == {str(config): _git(repo, "rev-parse", "HEAD")}


def test_run_provenance_reads_each_runs_code_version(tmp_path):
    runs = fake_suite(tmp_path, "best_of_2", seeds=(0,), steps=20, eval_every=10)
    config = runs[0] / "config.yaml"
    config.write_text(config.read_text() + "code_version: 0123456789abcdef+dirty\n")
    table = run_provenance(runs)
    assert table.set_index("run_dir").loc[str(runs[0]), "code_version"] == "0123456789abcdef+dirty"
    assert table["code_version"].isna().sum() == len(runs) - 1  # the others record none
    assert commits_text(table["code_version"].tolist()) == f"`0123456+dirty` ×1, unknown ×{len(runs) - 1}"


# ------------------------------------------------------------------------------ leave-one-seed-out stability
def _all_positive(df: pd.DataFrame):
    """A rule for the test: reproduced when every row's x is positive (a decision's verdict and n are all that
    stability reads)."""
    return SimpleNamespace(verdict=REPRODUCED if (df["x"] > 0).all() else NOT_REPRODUCED, n=int(df["seed"].nunique()))


def test_stability_is_the_fraction_of_leave_one_seed_out_verdicts_equal_to_all_seeds_one():
    claim = Claim(99, "x is positive", "suite", _all_positive, None)
    df = pd.DataFrame({"seed": [0, 1, 2, 3], "x": [1.0, 2.0, 3.0, -1.0]})  # without seed 3: reproduced
    assert _all_positive(df).verdict == NOT_REPRODUCED
    assert stability(claim, df) == (0.75, 4)
    unseeded = pd.concat([df, pd.DataFrame({"seed": [math.nan], "x": [-1.0]})])  # kept in every subset
    assert stability(claim, unseeded) == (1.0, 4)
    assert math.isnan(stability(claim, df[df["seed"] == 0])[0])  # one seed: no subset to drop it from


def test_stability_compares_the_rule_before_its_minimum_seed_gate():
    """With one seed fewer the gate alone would make every subset inconclusive; stability reads the rule itself."""
    def gated(df):
        decision = _all_positive(df)
        return SimpleNamespace(verdict=INCONCLUSIVE, n=decision.n) if decision.n < 10 else decision
    gated.__wrapped__ = _all_positive
    claim = Claim(99, "x is positive", "suite", gated, SimpleNamespace(kind=CLAIM, min_seeds=10, text="x > 0"))
    df = pd.DataFrame({"seed": [0, 1, 2, 3], "x": [1.0, 2.0, 3.0, 4.0]})
    assert gated(df).verdict == INCONCLUSIVE
    assert stability(claim, df, gated(df)) == (1.0, 4)


# ------------------------------------------------------------------------------ tally, checks, post-hoc
def _table(rows) -> pd.DataFrame:
    base = {"claim": "c", "suite": "s", "statistic": "d", "value": 0.1, "ci_low": 0.0, "ci_high": 0.2,
            "explanation": "", "interval": "paired t", "n": 5, "rule": "", "stability": 1.0, "subsets": 5,
            "rule_commit": "a" * 40, "run_commits": "`bbbbbbb` ×5", "changed": True}
    return pd.DataFrame([{**base, "number": n, "key": str(n), "kind": k, "verdict": v} for n, k, v in rows])


def test_the_tally_counts_claims_only_and_checks_get_their_own_table():
    table = _table([(1, CLAIM, REPRODUCED), (3, CHECK, REPRODUCED), (4, CLAIM, NOT_REPRODUCED),
                    ("check_window_1", CHECK, INCONCLUSIVE)])
    assert tally(table) == "1 reproduced, 1 not reproduced, 0 inconclusive, 0 not covered."
    lines = verdict_lines(table, suite=True)
    checks = lines.index("### Sanity checks (true by construction; not counted)")
    assert [l.split(" | ")[0] for l in lines[:checks] if l.startswith("| ") and "---" not in l][1:] == ["| 1", "| 4"]
    assert [l.split(" | ")[0] for l in lines[checks:] if l.startswith("| ")][1:] == ["| 3", "| check_window_1"]
    row = next(l for l in lines if l.startswith("| 1 |"))
    assert "paired t | 5 | 0.1 [0, 0.2] | 1.00 (5/5) | `aaaaaaa` | `bbbbbbb` ×5 | **rule changed after its runs**" in row


def test_posthoc_lines_list_the_changes_concerning_the_given_claims_with_their_reasons():
    history = prereg.History({"posthoc": [{"claims": [1, 4], "commit": "2fb1ef1aaaa", "what": "β 0.01", "why": "gap"},
                                          {"claims": 13, "commit": "this session", "what": "β 0.05", "why": "R1"}]},
                             None, (), False)
    assert posthoc_lines(["4"], history) == ["- claims 1, 4 (`2fb1ef1`): β 0.01. Why: gap."]
    assert posthoc_lines([13], history) == ["- claims 13 (`this session`): β 0.05. Why: R1."]
    assert len(posthoc_lines(None, history)) == 2 and posthoc_lines([7], history)[0].startswith("None listed")
