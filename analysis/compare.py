"""Compare any runs, wherever they live (`gapstudy compare PATH ...`): the papers' win rate against KL figure, the
KL-matched table and the final values, for runs made outside the registry as much as for suite arms.

Runs are grouped into arms pooled over seeds: by the registry arm when a run has one, else by its run name without
the seed (gapstudy's run names hold every choice that varies), or, with `by`, by the values of chosen config keys.
Pure functions over the tidy frame of `analysis.load`; no torch.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.figures.common import final_table
from analysis.figures.tang import kl_matched_figure, kl_matched_table, win_rate_vs_kl
from analysis.load import BASE_COLUMNS, _varying, ad_hoc_arm, environment_notes, load_runs
from analysis.report import write_table
from analysis.style import save


class CompareError(ValueError):
    """Nothing to compare (no runs at a path, an unknown config key); the CLI prints the message and exits 2."""


def load_paths(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Every run under each path (a run directory or any folder of runs), one tidy frame with all config columns."""
    frames = []
    for path in paths:
        df = load_runs(path, config_columns="all")
        if df.empty:
            raise CompareError(f"no runs at {path} (a run directory holds config.yaml and metrics.jsonl)")
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    return df.drop_duplicates(subset=["run_dir", "step"]).reset_index(drop=True)  # a run reached by two paths


def _value_text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "null"
    return str(value)


NOT_A_CHOICE = ("overrides", "code_version", "copied_from", "hydra.")  # differ without being an arm (beyond seed, run name, paths)


def varying_keys(df: pd.DataFrame) -> list[str]:
    """The config keys whose value differs across the runs of `df` (as `load_runs` decides its varying columns),
    bookkeeping left out."""
    runs = df.groupby("run_dir", sort=False).first()
    configs = [{k: v for k, v in row.items() if "/" not in k and k not in BASE_COLUMNS} for _, row in runs.iterrows()]
    return [key for key in _varying(configs) if not key.startswith(NOT_A_CHOICE)]


def group_arms(df: pd.DataFrame, by: Sequence[str] | None = None) -> pd.DataFrame:
    """`df` with its arm column set from the config keys `by` ("key=value, key=value"). With None, registry runs
    keep their arms; runs made outside the registry are named by the config keys that vary across them."""
    if not by:
        if (df["arm"] != df["run_name"].map(ad_hoc_arm)).any():  # registry runs: their arms say it best
            return df
        by = varying_keys(df)
        if not by:  # one configuration: its run name without the seed
            return df
    missing = [key for key in by if key not in df.columns]
    if missing:
        raise CompareError(f"by={','.join(by)}: {', '.join(missing)} is not a config key of these runs; the keys that "
                           f"vary across them: {', '.join(varying_keys(df)) or 'none'}")
    arms = df[list(by)].apply(lambda row: ", ".join(f"{k}={_value_text(v)}" for k, v in row.items()), axis=1)
    return df.assign(arm=arms)


def compare(paths: Sequence[str | Path], out: str | Path, by: Sequence[str] | None = None,
            y: str = "eval/win_rate") -> tuple[list[Path], dict[str, pd.DataFrame]]:
    """Write the figures and tables of the runs at `paths` into `out`; returns (written paths, tables by name).

    Runs made under different environments (package versions, CPU capability, device, threads), or without a recorded
    one, are warned about on stderr, one line each, and the lines are the table `environment` (environment.md)."""
    df = group_arms(load_paths(paths), by)
    if y not in df.columns or df[y].notna().sum() == 0:
        raise CompareError(f"y={y}: no run logged it; e.g. eval/win_rate, eval/gold_reward, eval/accuracy")
    notes = environment_notes(df["run_dir"].unique())
    for note in notes:
        print(f"gapstudy: warning: {note}", file=sys.stderr)
    out = Path(out)
    written: list[Path] = []
    written += save(win_rate_vs_kl(df, y=y), out, "win_rate_vs_kl")
    written += save(kl_matched_figure(df, y=y), out, "kl_matched")
    tables = {"kl_matched": kl_matched_table(df, y=y),
              "final": final_table(df, metrics=tuple(dict.fromkeys((y, "eval/kl", "eval/gold_reward"))))}
    if notes:
        tables["environment"] = pd.DataFrame({"note": notes})
    for name, table in tables.items():
        written += write_table(table, out, name)
    return written, tables
