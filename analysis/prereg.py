"""Pre-registration, read from git: the commit at which each claim's rule (its block of analysis/claims/rules.yaml)
last changed, the commits that made the runs deciding it, and whether the rule changed after those runs. REPORT.md and
SCORECARD.md print them beside every verdict, with the post-hoc changes rules.yaml lists under `posthoc:`.

The comparisons are pure functions over loaded history; the git calls are a thin layer that answers None (unknown)
wherever git, the repository or the history is missing (a tarball of the project), so the reports still render.
"""
from __future__ import annotations

import functools
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

RULES_PATH = "analysis/claims/rules.yaml"  # relative to the repository root
UNCOMMITTED = "uncommitted"  # the working tree's block differs from HEAD's
POSTHOC = "posthoc"  # rules.yaml's top-level list of {claims, commit, what, why}
_MISSING = object()  # a block absent from a version of the file (never equal to any block)
SHORT = 7  # characters of a commit hash shown in the reports


# ---------------------------------------------------------------------------------------------- git layer
def _git(repo: str | Path, *args: str) -> str | None:
    """stdout of `git -C repo ARGS`, or None when git is missing, the call fails or `repo` is no repository."""
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def repository(start: str | Path | None = None) -> Path | None:
    """The root of the git checkout holding `start` (default: this package), or None outside one."""
    start = Path(start) if start is not None else Path(__file__).resolve().parent
    top = _git(start, "rev-parse", "--show-toplevel")
    return Path(top.strip()) if top else None


@functools.lru_cache(maxsize=512)
def _show(repo: str, commit: str, path: str) -> str | None:
    """The text of `path` at `commit` (immutable, so cached), None where it does not exist."""
    return _git(repo, "show", f"{commit}:{path}")


@functools.lru_cache(maxsize=4096)
def is_ancestor(repo: str, ancestor: str, descendant: str) -> bool | None:
    """`ancestor` is `descendant` or one of its ancestors; None when git cannot tell (an unknown commit, no git)."""
    try:
        done = subprocess.run(["git", "-C", repo, "merge-base", "--is-ancestor", ancestor, descendant],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return {0: True, 1: False}.get(done.returncode)  # 128: a commit git does not know


def parse(text: str | None):
    """A rules.yaml document (a mapping), or None when there is no text or it is not YAML."""
    if text is None:
        return None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return document if isinstance(document, Mapping) else None


@dataclass(frozen=True)
class History:
    """The versions of rules.yaml a verdict's pre-registration is read from."""
    working: Mapping | None  # the working tree's file (None: absent)
    head: Mapping | None  # HEAD's (None: not committed, or no git)
    commits: tuple[tuple[str, Mapping | None], ...]  # (commit, document), newest first, every commit touching the file
    git: bool  # whether the history could be read at all


def load_history(repo: str | Path | None = None, path: str = RULES_PATH) -> History:
    """rules.yaml as it is on disk, at HEAD and at each commit that changed it (`git log --format=%H -- path`)."""
    given = Path(repo) if repo is not None else Path(__file__).resolve().parents[1]
    repo = repository(given) if given.is_dir() else None
    if repo is None:
        local = given / path
        return History(parse(local.read_text(encoding="utf-8")) if local.is_file() else None, None, (), False)
    file = repo / path
    working = parse(file.read_text(encoding="utf-8")) if file.is_file() else None
    log = _git(repo, "log", "--format=%H", "--", path)
    if log is None:
        return History(working, None, (), False)
    head = _git(repo, "rev-parse", "HEAD")
    commits = tuple((c, parse(_show(str(repo), c, path))) for c in log.split())
    return History(working, parse(_show(str(repo), head.strip(), path)) if head else None, commits, True)


# ---------------------------------------------------------------------------------------------- pure part
def block(document: Mapping | None, key):
    """The rule block of `key` (a claim number or a check's key such as "check_replay_original"): the top-level
    entry, or one under `claims:` / `checks:`, by the key or its string; _MISSING where there is none."""
    if not isinstance(document, Mapping):
        return _MISSING
    candidates = [key, str(key)] + ([int(key)] if str(key).isdigit() else [])  # YAML reads `12:` as the int 12
    for where in (document.get("claims"), document.get("checks"), document):
        if isinstance(where, Mapping):
            for candidate in candidates:
                if candidate in where and candidate != POSTHOC:
                    return where[candidate]
    return _MISSING


def rule_commit(key, history: History | None = None) -> str | None:
    """The commit at which `key`'s rule block last changed: the oldest commit of the newest run of commits whose
    block equals the current one; "uncommitted" when the working tree's block differs from HEAD's (or was never
    committed); None when unknown (no rules file, no git history)."""
    history = history if history is not None else load_history()
    current = block(history.working, key)
    if current is _MISSING or not history.git:
        return None
    if block(history.head, key) != current:
        return UNCOMMITTED
    found = None
    for commit, document in history.commits:  # newest first: walk back until the block differed
        if block(document, key) != current:
            break
        found = commit
    return found if found is not None else UNCOMMITTED


def base_commit(code_version) -> str | None:
    """A run's code_version without its "+dirty" suffix; None for runs that record none."""
    if not isinstance(code_version, str) or not code_version.strip():
        return None
    return code_version.strip().removesuffix("+dirty") or None


def changed_after_runs(rule: str | None, run_commits: Iterable, repo: str | Path | None = None,
                       written_by: Sequence | None = None) -> bool | None:
    """True when `rule` (rule_commit's answer) is not an ancestor-or-equal of every run's commit: the rule was
    changed after some of its runs (an uncommitted rule is later than every run). A run recording no commit
    (`run_commits` holds None) is judged by `written_by` (parallel to `run_commits`: the commit that last wrote
    its results, by which the run existed): a rule that is not an ancestor of that commit came later. False only when
    every run is known to descend from the rule; None when that cannot be told (no git, no rule commit)."""
    run_commits = list(run_commits)
    if rule == UNCOMMITTED:
        return True
    if rule is None or not run_commits:
        return None
    repo = str(repo if repo is not None else repository() or ".")
    written_by = list(written_by) if written_by is not None else [None] * len(run_commits)
    unknown = False
    for i, version in enumerate(run_commits):
        commit = base_commit(version)
        if commit is not None:
            after = is_ancestor(repo, rule, commit)
            if after is False:
                return True
            unknown |= after is None
            continue
        written = written_by[i] if i < len(written_by) else None
        if written is not None and is_ancestor(repo, rule, written) is False:
            return True
        unknown = True
    return None if unknown else False


def results_commits(paths: Sequence[str | Path], repo: str | Path | None = None) -> dict[str, str]:
    """path -> the newest commit that wrote it (`git log --name-only` over the paths' folders, one call); paths git
    does not track are left out. A run made before the loop recorded code_version existed by that commit."""
    repo = repository(repo) if repo is None or Path(repo).is_dir() else None
    if repo is None or not len(paths):
        return {}
    wanted: dict[str, str] = {}
    for path in paths:
        try:
            wanted[Path(path).resolve().relative_to(repo).as_posix()] = str(path)
        except ValueError:
            continue  # outside the repository
    folders = sorted({str(Path(p).parent.parent) for p in wanted}) or ["."]
    log = _git(repo, "log", "--format=commit %H", "--name-only", "--", *folders)
    found: dict[str, str] = {}
    commit = None
    for line in (log or "").splitlines():
        if line.startswith("commit "):
            commit = line.removeprefix("commit ").strip()
        elif line in wanted and wanted[line] not in found and commit:
            found[wanted[line]] = commit
    return found


def posthoc(history: History | None = None) -> list[dict]:
    """rules.yaml's `posthoc:` entries, each {claims: [keys], commit, what, why} (claims always a list)."""
    history = history if history is not None else load_history()
    entries = (history.working or {}).get(POSTHOC) if isinstance(history.working, Mapping) else None
    out = []
    for entry in entries or []:
        if not isinstance(entry, Mapping):
            continue
        claims = entry.get("claims", [])
        claims = list(claims) if isinstance(claims, (list, tuple)) else [claims]
        out.append({"claims": claims, "commit": entry.get("commit"), "what": entry.get("what", ""),
                    "why": entry.get("why", "")})
    return out


def concerns(entry: Mapping, keys: Iterable) -> bool:
    """Whether a posthoc entry names one of `keys` (claim numbers or check keys; compared as strings)."""
    keys = {str(k) for k in keys}
    return any(str(k) in keys for k in entry.get("claims", []))


def short(commit: str | None) -> str:
    """A commit as the reports print it: 7 characters (keeping "+dirty"), "uncommitted", or "unknown"."""
    if commit is None:
        return "unknown"
    base = base_commit(commit) or str(commit)
    if len(base) < SHORT or any(c not in "0123456789abcdef" for c in base.lower()):
        return str(commit)  # "uncommitted", or a posthoc entry's "this session (...)"
    return base[:SHORT] + ("+dirty" if str(commit).endswith("+dirty") else "")
