"""Rows from outside: a local file, a `save_to_disk` folder, a folder laid out like a hub repo, or a hub dataset
name, read through `datasets`. World=hf's prompts and data=dataset's preference pairs both load here; it sits with
the worlds (below the stages) so that a world can load its prompts without importing a stage."""
from __future__ import annotations

import json
from pathlib import Path

from gapstudy.config import LOCAL_PREFIXES
from gapstudy.errors import ConfigError, first_line


def dataset_cache_dir(results_root) -> str:
    """Where hub datasets are downloaded and local files converted: <paths.results>/.cache/datasets."""
    return str(Path(results_root) / ".cache" / "datasets")


LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def load_records(path, split: str = "train", subset: str | None = None, cache_dir: str | None = None, *, key: str):
    """A `datasets.Dataset` of the rows at `path`: a local file (by extension), a folder saved with `save_to_disk`
    (a DatasetDict gives its `split`), a folder of data files (laid out like a hub repo), or else a hub dataset name.
    World prompts (world=hf) and preference datasets (data=dataset) both load here. `key` is the setting that named
    `path` (e.g. `data.path`); errors name it and its split setting, and are ConfigErrors."""
    import datasets

    split_key = key[: -len("path")] + "split"  # data.path -> data.split, world.prompts.eval_path -> ..eval_split
    local = Path(str(path)).expanduser()
    try:
        if local.is_file():
            builder = LOCAL_FORMATS.get(local.suffix.lower())
            if builder is None:
                raise ConfigError(f"{key}={str(path)!r}: unsupported file type {local.suffix!r}; valid: "
                                  f"{', '.join(LOCAL_FORMATS)}, a save_to_disk folder or a hub dataset name")
            if local.stat().st_size == 0:
                raise ConfigError(f"{key}={str(path)!r} is empty")
            if builder == "json" and local.suffix.lower() == ".jsonl":
                return _read_jsonl(local, key)
            # a single file has one split, whatever the split setting says
            return datasets.load_dataset(builder, data_files=str(local), split="train", cache_dir=cache_dir)
        if local.is_dir():
            if any((local / name).exists() for name in ("dataset_dict.json", "state.json", "dataset_info.json")):
                data = datasets.load_from_disk(str(local))
                if isinstance(data, datasets.DatasetDict):
                    if split not in data:
                        raise ConfigError(f"{split_key}={split!r} is not a split of {path}; valid choices: "
                                          f"{', '.join(data)}")
                    data = data[split]
                return data
            return datasets.load_dataset(str(local), subset, split=split, cache_dir=cache_dir)
        if str(path).startswith(LOCAL_PREFIXES):  # written as a local path: never a hub name
            raise ConfigError(f"{key}={str(path)!r} does not exist")
        return datasets.load_dataset(str(path), subset, split=split, cache_dir=cache_dir)  # a hub name
    except ConfigError:
        raise
    except Exception as e:
        if not local.exists() and isinstance(e, (ConnectionError, FileNotFoundError)):
            raise ConfigError(f"{key}={str(path)!r} is neither a local path nor a dataset reachable on the hub (or in "
                              f"the cache {cache_dir}): {first_line(e)}") from None
        if isinstance(e, ValueError) and not local.is_file():  # "Unknown split": name the setting, list the splits
            try:
                splits = datasets.get_dataset_split_names(str(local) if local.exists() else str(path), subset)
            except Exception:
                splits = None
            if splits and split not in splits:
                raise ConfigError(f"{split_key}={split!r} is not a split of {path}; valid choices: "
                                  f"{', '.join(splits)}") from None
        if "corresponds to no data" in str(e):  # datasets' words for a split with no rows
            raise ConfigError(f"{key}={str(path)!r} is empty (no rows in split {split!r})") from None
        raise ConfigError(f"{key}={str(path)!r} (split {split!r}) could not be loaded: {first_line(e)}") from None


def _read_jsonl(path: Path, key: str):
    """A local jsonl file as an in-memory `datasets.Dataset`: a bad line is named (file, line, why) and nothing is
    converted into the results root's cache."""
    import datasets

    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{key}={str(path)!r}: line {number} is not valid JSON ({e.msg} at column "
                                  f"{e.colno})") from None
            except UnicodeDecodeError as e:
                raise ConfigError(f"{key}={str(path)!r}: line {number} is not UTF-8 text ({e.reason})") from None
            if not isinstance(record, dict):
                raise ConfigError(f"{key}={str(path)!r}: line {number} is a JSON {type(record).__name__}; valid: one "
                                  "object per line")
            records.append(record)
    if not records:
        raise ConfigError(f"{key}={str(path)!r} is empty")
    columns = list(dict.fromkeys(k for r in records for k in r))
    try:
        return datasets.Dataset.from_dict({c: [r.get(c) for r in records] for c in columns})
    except Exception as e:  # pyarrow: a column mixing types (text in one row, a list in another)
        raise ConfigError(f"{key}={str(path)!r}: its columns mix types across rows: {first_line(e)}") from None
