"""The pair log: the exact rows a run trained on, step by step, as parquet shards under <run dir>/pairs/
(readable with `datasets`). data=replay reads it back batch by batch; data=dataset reads it as a preference dataset.

A pair row holds step, prompt, chosen, rejected (token ids), chosen_reward, rejected_reward, chosen_logps,
rejected_logps (the sampler's per-token log-probs), sampler_version (the optimizer step of the sampler's weights)
and task; a group row holds step, prompt, responses, rewards, logps, sampler_version and task.
"""
from __future__ import annotations

from pathlib import Path

from gapstudy.errors import DataError


def pair_log_folder(path) -> Path | None:
    """A run directory's pairs/ folder, or `path` itself when it holds PairLogWriter's steps-*.parquet shards."""
    path = Path(str(path)).expanduser()
    for folder in (path / "pairs", path):
        if folder.is_dir() and any(folder.glob("steps-*.parquet")):
            return folder
    return None


def read_shards(folder: Path) -> list[dict]:
    """Every row of the folder's parquet files, in file order."""
    # shard by shard with pyarrow: a column that is null in one shard and typed in another is fine here
    import pyarrow.parquet as pq

    return [row for shard in sorted(folder.glob("*.parquet")) for row in pq.read_table(shard).to_pylist()]


def read_pair_log(path) -> list[list[dict]]:
    """A run's pair log as its list of batches, in the order they were trained on."""
    path = Path(path)
    folder = path / "pairs" if (path / "pairs").is_dir() else path
    if not folder.is_dir() or not sorted(folder.glob("*.parquet")):
        raise DataError(f"no pair log at {path} (expected a run directory with pairs/*.parquet)")
    rows = read_shards(folder)
    batches: dict[int, list[dict]] = {}
    for r in rows:
        batches.setdefault(int(r["step"]), []).append(r)
    return [batches[s] for s in sorted(batches)]


class PairLogWriter:
    """Writes the exact training rows to pairs/steps-FIRST-LAST.parquet shards (readable with `datasets`)."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.folder = Path(run_dir) / "pairs"
        self.enabled = enabled
        self.pending: list[dict] = []
        if enabled:
            self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, rows: list[dict]) -> None:
        if self.enabled:
            self.pending += rows

    def flush(self) -> None:
        if not (self.enabled and self.pending):
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        first, last = self.pending[0]["step"], self.pending[-1]["step"]
        tmp = self.folder / f".steps-{first:07d}-{last:07d}.tmp"
        pq.write_table(pa.Table.from_pylist(self.pending), tmp)
        tmp.replace(self.folder / f"steps-{first:07d}-{last:07d}.parquet")
        self.pending = []

    def drop_after(self, step: int) -> None:
        """Resuming at `step`: delete shards of steps the run will redo."""
        for shard in self.folder.glob("steps-*.parquet"):
            if int(shard.stem.split("-")[1]) >= step:
                shard.unlink()
