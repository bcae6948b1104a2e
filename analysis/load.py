"""Run directories on disk -> one tidy DataFrame, the only input of every figure and verdict.

A run directory is any folder holding `config.yaml` and `metrics.jsonl`, directly under the results root
(`<root>/<run_name>/`) or inside a suite folder (`<root>/<suite>/<run_name>/`). The frame has one row per
(run, logged step): lines of metrics.jsonl sharing a step (a training line and an evaluation line) are merged.
"""
from __future__ import annotations

import functools
import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from gapstudy.metrics import KEYS

BASE_COLUMNS: tuple[str, ...] = ("suite", "arm", "seed", "run_name", "run_dir", "step", "complete")
_IDENTITY_KEYS = {"suite", "arm", "seed", "run_name"}  # already base columns
ENVIRONMENT = "environment"  # config.yaml's record of the machine that made a run (packages, python, cpu_capability,
                             # device, threads): provenance, read by environment_notes, never a config column
_SKIPPED_CONFIG_PREFIXES = ("paths.", f"{ENVIRONMENT}.")  # differ by machine or folder, not by scientific choice
_INF_STRINGS = {"inf", "+inf", "infinity", "+infinity", ".inf"}


# ---------------------------------------------------------------------------------------------- discovery
def find_run_dirs(root: str | Path) -> list[Path]:
    """Every directory under `root` (any depth) that holds both config.yaml and metrics.jsonl, sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.rglob("metrics.jsonl") if (p.parent / "config.yaml").is_file())


def read_metrics(path: str | Path) -> list[dict]:
    """Parsed lines of a metrics.jsonl. A line that is not valid JSON (a crash mid-write leaves a truncated
    last line) is skipped with a warning naming the file."""
    path = Path(path)
    records = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            where = "truncated last line" if number == len(lines) else f"malformed line {number}"
            warnings.warn(f"{path}: skipped {where}", stacklevel=2)
            continue
        if not isinstance(record, dict) or "step" not in record:
            warnings.warn(f"{path}: skipped line {number} without a step", stacklevel=2)
            continue
        records.append(record)
    return records


def _plain(value):
    """Config scalar as stored in the frame: "inf" strings become float inf (sync_every: inf = offline)."""
    if isinstance(value, str) and value.strip().lower() in _INF_STRINGS:
        return math.inf
    return value


def flatten(config: Mapping, prefix: str = "") -> dict:
    """Nested config -> {"algo.beta": 0.1, ...}; lists become one string ("a=1 b=2") so columns stay hashable."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = " ".join(str(v) for v in value)
        else:
            flat[name] = _plain(value)
    return flat


def _merge_by_step(records: Iterable[dict]) -> dict[int, dict]:
    """Lines sharing a step merged into one record; a later non-null value wins over an earlier one."""
    merged: dict[int, dict] = {}
    for record in records:
        step = int(record["step"])
        row = merged.setdefault(step, {})
        for key, value in record.items():
            if key == "step":
                continue
            if value is not None or key not in row:
                row[key] = np.nan if value is None else value
    return merged


def _read_run(run_dir: Path, root: Path) -> tuple[dict, list[dict]]:
    """(flattened config, rows) of one run directory."""
    with open(run_dir / "config.yaml", encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    flat = flatten(config)
    by_step = _merge_by_step(read_metrics(run_dir / "metrics.jsonl"))
    final_path = run_dir / "final.json"
    complete = final_path.is_file()
    if complete:
        # final.json repeats the last evaluation; it only fills values the jsonl lacks (a crash after writing it).
        try:
            final = json.loads(final_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            warnings.warn(f"{final_path}: unreadable, ignored", stacklevel=3)
            final = {}
        if "step" in final:
            row = by_step.setdefault(int(final["step"]), {})
            for key, value in final.items():
                if key != "step" and value is not None and pd.isna(row.get(key, np.nan)):
                    row[key] = value

    relative = run_dir.relative_to(root).parts
    suite = config.get("suite")
    if suite is None and len(relative) >= 2:
        suite = relative[0]  # a run inside a suite folder whose config predates the suite key
    run_name = config.get("run_name") or run_dir.name
    arm = config.get("arm") or ad_hoc_arm(run_name)
    seed = config.get("seed")
    identity = {
        "suite": suite, "arm": arm, "seed": np.nan if seed is None else seed,
        "run_name": run_name, "run_dir": str(run_dir), "complete": complete,
    }
    rows = [{**identity, "step": step, **values} for step, values in sorted(by_step.items())]
    return flat, rows


def ad_hoc_arm(run_name: str) -> str:
    """The arm of a run made outside the registry: its run name without the `__seed-N` suffix that gapstudy's run
    names end with, so that the seeds of one configuration pool into one arm."""
    stem, sep, seed = str(run_name).rpartition("__seed-")
    return stem if sep and stem and seed.lstrip("-").isdigit() else str(run_name)


def _varying(configs: list[dict]) -> list[str]:
    """Config keys whose value (or presence) differs across the runs, in first-seen order."""
    keys: dict[str, None] = {}
    for config in configs:
        keys.update(dict.fromkeys(config))
    varying = []
    for key in keys:
        if key in _IDENTITY_KEYS or key.startswith(_SKIPPED_CONFIG_PREFIXES):
            continue
        values = {repr(config.get(key, "<missing>")) for config in configs}
        if len(values) > 1:
            varying.append(key)
    return varying


def _suite_matches(value, suite) -> bool:
    if suite is None:
        return True
    if isinstance(suite, str):
        return value == suite
    return value in set(suite)


def load_runs(root: str | Path = "results", suite: str | Iterable[str] | None = None,
              config_columns: str | Iterable[str] = "varying", metrics: Iterable[str] | None = None,
              profile: str | None = None) -> pd.DataFrame:
    """All runs under `root` (optionally only those of `suite`) as one frame: one row per (run, logged step).

    Columns: suite, arm, seed, run_name, run_dir, step, complete (final.json exists), every metric key of the
    vocabulary gapstudy.metrics.KEYS (all-NaN when no run logged it, so figures can index blindly) plus any other key
    a run logged (NaN where missing), and config values flattened with dots.
    `config_columns`: "varying" (the keys whose values differ across the loaded runs), "all", or a list.
    `metrics`: key prefixes to keep (e.g. ("eval/",) for long runs whose every-step training lines are not
    needed); steps that logged none of them are dropped. None keeps everything.
    `profile`: keep only registry runs of this profile (quick | full) and runs made outside a profile.
    """
    prefixes = tuple(metrics) if metrics is not None else None
    root = Path(root)
    configs, rows = [], []
    for run_dir in find_run_dirs(root):
        try:
            flat, run_rows = _read_run(run_dir, root)
        except (OSError, yaml.YAMLError) as error:
            warnings.warn(f"{run_dir}: unreadable run skipped ({error})", stacklevel=2)
            continue
        if not _suite_matches(run_rows[0]["suite"] if run_rows else flat.get("suite"), suite):
            continue
        if profile is not None and flat.get("profile") not in (None, profile):
            continue
        if prefixes is not None:
            run_rows = [_keep(row, prefixes) for row in run_rows]
            run_rows = [row for row in run_rows if len(row) > len(BASE_COLUMNS)]
        configs.append(flat)
        rows.extend({**row, "_config": len(configs) - 1} for row in run_rows)

    if config_columns == "varying":
        keys = _varying(configs)
    elif config_columns == "all":
        keys = [k for k in dict.fromkeys(k for c in configs for k in c)
                if k not in _IDENTITY_KEYS and not k.startswith(_SKIPPED_CONFIG_PREFIXES)]
    else:
        keys = list(config_columns)

    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=[*BASE_COLUMNS, "_config"])
    for key in keys:
        df[key] = [configs[i].get(key, np.nan) for i in df["_config"]]
    df = df.drop(columns="_config")
    metric_columns = [c for c in df.columns if c not in BASE_COLUMNS and c not in keys]
    for key in KEYS:
        if key not in metric_columns:
            metric_columns.append(key)
            df[key] = np.nan
    for key in metric_columns:
        df[key] = pd.to_numeric(df[key], errors="coerce").astype(float)
    df["step"] = df["step"].astype("int64")
    df["complete"] = df["complete"].astype(bool)
    metric_columns.sort(key=_metric_sort_key)
    df = df[[*BASE_COLUMNS, *keys, *metric_columns]]
    return df.sort_values(["suite", "arm", "seed", "run_name", "step"], na_position="last",
                          ignore_index=True, key=_sortable)


def _keep(row: dict, prefixes: tuple[str, ...]) -> dict:
    return {k: v for k, v in row.items() if k in BASE_COLUMNS or k.startswith(prefixes)}


def _sortable(column: pd.Series) -> pd.Series:
    return column.astype(str) if column.dtype == object else column


def _metric_sort_key(key: str) -> tuple[int, str]:
    order = ("train/", "gen/", "counters/", "time/", "eval/")
    for rank, prefix in enumerate(order):
        if key.startswith(prefix):
            return rank, key
    return len(order), key


# ------------------------------------------------------------------------------------------ provenance
NOT_RECORDED = "not recorded"


def read_environment(run_dir: str | Path) -> dict | None:
    """The run's `environment:` from its config.yaml, flattened ({"packages.torch": "2.5.1", "python": ...}); None
    when the config records none (runs made before the loop recorded it) or cannot be read."""
    environment, _ = _provenance(Path(run_dir) / "config.yaml")
    return dict(environment) if environment is not None else None


CODE_VERSION = "code_version"  # config.yaml's commit of the code that made a run ("+dirty": uncommitted changes)


def read_code_version(run_dir: str | Path) -> str | None:
    """The run's `code_version` from its config.yaml (a commit, "+dirty" when the tree was dirty); None when it
    records none (runs made before the loop recorded it, or outside git) or the config cannot be read."""
    return _provenance(Path(run_dir) / "config.yaml")[1]


def run_provenance(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """(run_dir, code_version) for each run, sorted by run_dir: the side table of what code made which run (the
    frame holds code_version only where it varies); code_version is None where the run records none."""
    dirs = sorted({str(d) for d in run_dirs})
    return pd.DataFrame({"run_dir": dirs, CODE_VERSION: [read_code_version(d) for d in dirs]},
                        columns=["run_dir", CODE_VERSION], dtype=object)


def _provenance(path: Path) -> tuple[dict | None, str | None]:
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return None, None
    return _read_provenance(str(path), stamp)


@functools.lru_cache(maxsize=4096)
def _read_provenance(path: str, stamp: int) -> tuple[dict | None, str | None]:
    """(environment, code_version) of a config.yaml, read once per (file, modification time): regenerate asks once
    per suite, once for the whole pool and once for the run commits."""
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return None, None
    if not isinstance(config, Mapping):
        return None, None
    environment, version = config.get(ENVIRONMENT), config.get(CODE_VERSION)
    environment = flatten(environment) if isinstance(environment, Mapping) and environment else None
    return environment, (str(version) if version else None)


def _value_counts(values: list) -> str:
    counts: dict[str, int] = {}
    for value in values:
        text = "none" if value is None else str(value)  # None: e.g. a package that was not installed
        counts[text] = counts.get(text, 0) + 1
    return ", ".join(f"{text} ({n} run{'s' if n != 1 else ''})" for text, n in sorted(counts.items()))


def environment_notes(run_dirs: Iterable[str | Path]) -> list[str]:
    """What a reader of pooled runs must know about where they were made, one line each: one line when some runs
    record no environment (provenance missing), then one line per field (packages.torch, python, cpu_capability,
    device, threads) whose value differs across the runs that record one (a field one of them lacks counts as
    "not recorded"). Empty when every run records the same environment."""
    dirs = sorted({str(d) for d in run_dirs})
    recorded = {d: read_environment(d) for d in dirs}
    notes = []
    missing_runs = [d for d, env in recorded.items() if env is None]
    if missing_runs:
        notes.append(f"provenance missing: {len(missing_runs)} of {len(dirs)} runs record no {ENVIRONMENT} in "
                     "config.yaml (package versions, CPU capability, device and threads unknown)")
    envs = [env for env in recorded.values() if env is not None]
    fields = list(dict.fromkeys(key for env in envs for key in env))
    for field in fields:
        values = [env.get(field, NOT_RECORDED) for env in envs]
        if len({repr(v) for v in values}) > 1:
            notes.append(f"runs made under different environments: {ENVIRONMENT}.{field} = {_value_counts(values)}")
    return notes


def environment_summary(run_dirs: Iterable[str | Path]) -> str | None:
    """One line naming the environment every run records (python, CPU capability, device, threads, package
    versions), or None when the runs record none or differ (environment_notes says how)."""
    dirs = sorted({str(d) for d in run_dirs})
    envs = [read_environment(d) for d in dirs]
    if not envs or any(env is None for env in envs) or environment_notes(dirs):
        return None
    env = envs[0]
    main = [f"{key} {env[key]}" for key in ("python", "cpu_capability", "device", "threads") if key in env]
    packages = [f"{key.removeprefix('packages.')} {value}" for key, value in env.items() if key.startswith("packages.")]
    return (f"all {len(dirs)} runs record one environment: " + ", ".join(main)
            + (f"; packages: {', '.join(packages)}" if packages else ""))


# ------------------------------------------------------------------------------------------- selections
def eval_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if isinstance(c, str) and c.startswith("eval/")]


def eval_points(df: pd.DataFrame, x: str = "eval/kl") -> pd.DataFrame:
    """Evaluation checkpoints: rows where `x` (eval/kl by default) is logged. If the frame has no such
    column, every row with any eval/ value."""
    if x in df.columns:
        return df[df[x].notna()]
    columns = eval_columns(df)
    if not columns:
        return df.iloc[0:0]
    return df[df[columns].notna().any(axis=1)]


def final_points(df: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation row (any eval/ value logged) of each run."""
    columns = eval_columns(df)
    if df.empty or not columns:
        return df.iloc[0:0]
    evals = df[df[columns].notna().any(axis=1)]
    if evals.empty:
        return evals
    return evals.sort_values("step").groupby("run_dir", sort=False).tail(1).sort_index()


def initial_points(df: pd.DataFrame) -> pd.DataFrame:
    """The first evaluation row of each run (step 0 when the loop evaluates before training)."""
    columns = eval_columns(df)
    if df.empty or not columns:
        return df.iloc[0:0]
    evals = df[df[columns].notna().any(axis=1)]
    return evals.sort_values("step").groupby("run_dir", sort=False).head(1).sort_index()


def end_values(df: pd.DataFrame, metric: str, tail: float) -> pd.DataFrame:
    """(arm, seed, run_dir, value): per run, the mean of `metric` over its evaluations in the last `tail` fraction of
    its steps (at least the last one). For runs that settle at a fixed point and fluctuate around it (toy8x8's DPO on
    a fixed dataset), this estimates the settled value better than the last evaluation alone."""
    if df.empty or metric not in df:
        return pd.DataFrame(columns=["arm", "seed", "run_dir", "value"])
    rows = df[df[metric].notna()]
    last = rows.groupby("run_dir")["step"].transform("max")
    rows = rows[rows["step"] >= (1.0 - tail) * last]
    out = rows.groupby("run_dir", sort=False).agg(arm=("arm", "first"), seed=("seed", "first"), value=(metric, "mean"))
    return out.reset_index()[["arm", "seed", "run_dir", "value"]]


def resolve_metric(df: pd.DataFrame, metric: str, task: str | None = None) -> str | None:
    """The column holding `metric` for these rows: with `task`, its per-task key eval/<task>/<name> first
    (synth_lm evaluates every run on both prompt families, so a math arm's eval/length mixes in chat);
    then `metric` itself; then the first per-task key eval/<any task>/<name> with values. None if none has."""
    name = metric.rsplit("/", 1)[-1]
    if task is not None and metric.startswith("eval/"):
        own = f"eval/{task}/{name}"
        if own in df and df[own].notna().any():
            return own
    if metric in df and df[metric].notna().any():
        return metric
    if not metric.startswith("eval/"):
        return None
    pattern = re.compile(rf"^eval/[a-z_]+/{re.escape(name)}$")
    for column in sorted(c for c in df.columns if isinstance(c, str) and pattern.match(c)):
        if df[column].notna().any():
            return column
    return None


def per_seed_final(df: pd.DataFrame, metric: str, task: str | None = None) -> pd.DataFrame:
    """(arm, seed, value): the metric at each run's last evaluation, averaged over the runs of an arm and seed
    (per-task keys resolved by resolve_metric)."""
    finals = final_points(df)
    rows = []
    if finals.empty or "arm" not in finals:
        return pd.DataFrame(rows, columns=["arm", "seed", "value"])
    for arm in sorted(finals["arm"].dropna().unique(), key=str):
        runs = finals[finals["arm"] == arm]
        key = resolve_metric(runs, metric, task)
        if key is None:
            continue
        for seed, value in runs.groupby("seed", dropna=False)[key].mean().items():
            if np.isfinite(value):
                rows.append((arm, seed, float(value)))
    return pd.DataFrame(rows, columns=["arm", "seed", "value"])


def missing(df: pd.DataFrame, expected: Mapping[str, Iterable[str]], seeds: int | Iterable[int]) -> pd.DataFrame:
    """(suite, arm, seed, status) for every expected combination not yet finished.

    `expected`: suite -> arm names; `seeds`: the seeds each arm should have (an int n means 0..n-1).
    status is "missing" (no run directory) or "incomplete" (runs exist, none wrote final.json).
    """
    seeds = list(range(seeds)) if isinstance(seeds, (int, np.integer)) else list(seeds)
    rows = []
    done: dict[tuple, bool] = {}
    if not df.empty:
        per_run = df.groupby("run_dir", sort=False)[["suite", "arm", "seed", "complete"]].first()
        for run in per_run.itertuples(index=False):
            key = (run.suite, run.arm, run.seed)
            done[key] = done.get(key, False) or bool(run.complete)
    for suite, arms in expected.items():
        for arm in arms:
            for seed in seeds:
                status = done.get((suite, arm, seed))
                if status is None:
                    rows.append((suite, arm, seed, "missing"))
                elif not status:
                    rows.append((suite, arm, seed, "incomplete"))
    return pd.DataFrame(rows, columns=["suite", "arm", "seed", "status"])


def read_limits(root: str | Path, suite: str, profile: str | None = "full") -> dict | None:
    """`<root>/<suite>/limits-<profile>.json` (written by `gapstudy limits`): the limit of each of the suite's
    worlds; None when absent (or unreadable, with a warning)."""
    path = Path(root) / suite / f"limits-{profile or 'full'}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        warnings.warn(f"{path}: unreadable limits file skipped ({error})", stacklevel=2)
        return None


def timings(root: str | Path = "results") -> pd.DataFrame:
    """The suite runner's `<root>/<suite>/timing-<profile>.json` files as one row per suite and profile: the
    command, the wall-clock minutes of its last invocation (the suite's own span when it ran in a schedule of several
    suites, whose suites and minutes `invocation` names), the runs it ran, skipped as complete, copied from an
    identical run of another suite, or lost."""
    rows = []
    for path in sorted(Path(root).glob("*/timing-*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            warnings.warn(f"{path}: unreadable timing file skipped ({error})", stacklevel=2)
            continue
        runs = data.get("runs", [])
        count = lambda status: sum(r.get("status") == status for r in runs)
        invocation = data.get("invocation") or {}
        together = invocation.get("suites") or [path.parent.name]
        rows.append({"suite": path.parent.name, "profile": data.get("profile"), "command": data.get("command"),
                     "wall_minutes": round(float(data.get("wall_seconds", math.nan)) / 60, 1),
                     "invocation": "alone" if len(together) == 1 else
                     f"{len(together)} suites, {float(invocation.get('wall_seconds', math.nan)) / 60:.1f} min",
                     "runs": len(runs), "ran": count("done"), "already_complete": count("complete"),
                     "copied": count("copied"),
                     "failed_or_skipped": len(runs) - count("done") - count("complete") - count("copied"),
                     "run_minutes": round(sum(float(r.get("seconds", 0)) for r in runs) / 60, 1)})
    return pd.DataFrame(rows, columns=["suite", "profile", "command", "wall_minutes", "invocation", "runs", "ran",
                                       "already_complete", "copied", "failed_or_skipped", "run_minutes"])
