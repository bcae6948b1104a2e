"""Sources of training batches: the on-policy stream, a fixed dataset, or the replay of an earlier run's pair log.

Every source yields *rows* (plain dicts of token-id lists, rewards and sampler versions, one per pair or group);
the loop logs the rows to the run's pair log and collates them with `collate`. The on-policy stream goes through
exactly the same rows -> collate path as a replay, which is what makes "replay in original order reproduces the
online run" true by construction.
"""
from __future__ import annotations

import json
import math
import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from gapstudy.errors import ConfigError, DataError, RewardError, first_line
from gapstudy.pairs import select_pairs

PAIR_FIELDS = ("step", "prompt", "chosen", "rejected", "chosen_reward", "rejected_reward", "chosen_logps",
               "rejected_logps", "sampler_version", "task")
GROUP_FIELDS = ("step", "prompt", "responses", "rewards", "logps", "sampler_version", "task")


@dataclass
class Batch:
    """N sequences = prompt ++ response. Pair batches: rows [0, B) chosen, [B, 2B) rejected (n_pairs = B)."""

    prompts: torch.Tensor  # [N, P] left-padded
    prompt_mask: torch.Tensor | None  # [N, P] 1 = real token; None when nothing is padded
    responses: torch.Tensor  # [N, L] right-padded
    response_mask: torch.Tensor  # [N, L] bool
    rewards: torch.Tensor  # [N] labeller rewards (NaN when the dataset has none)
    group: torch.Tensor  # [N] index of the row's prompt within the batch
    sampler_logps: torch.Tensor  # [N, L] per-token log-probs under the sampler (0 when unknown)
    sampler_version: torch.Tensor  # [N] optimizer step of the sampler's weights (-1 when unknown)
    n_pairs: int  # B for pair batches, 0 for group batches

    def to(self, device) -> "Batch":
        moved = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in self.__dict__.items()}
        return Batch(**moved)


def _pad_right(seqs: list[list], value, dtype) -> torch.Tensor:
    width = max(1, max(len(s) for s in seqs))
    out = torch.full((len(seqs), width), value, dtype=dtype)
    for i, s in enumerate(seqs):
        if s:
            out[i, : len(s)] = torch.tensor(s, dtype=dtype)
    return out


def collate(rows: list[dict], pad_token_id: int) -> Batch:
    """Rows of one kind (pairs or groups) -> Batch; the same function for every source."""
    from gapstudy.generation import left_pad

    if "chosen" in rows[0]:
        prompts = [r["prompt"] for r in rows] * 2
        responses = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
        rewards = [r.get("chosen_reward") for r in rows] + [r.get("rejected_reward") for r in rows]
        logps = [r.get("chosen_logps") for r in rows] + [r.get("rejected_logps") for r in rows]
        versions = [r.get("sampler_version") for r in rows] * 2
        group = list(range(len(rows))) * 2
        n_pairs = len(rows)
    else:
        prompts, responses, rewards, logps, versions, group = [], [], [], [], [], []
        for g, r in enumerate(rows):
            k = len(r["responses"])
            prompts += [r["prompt"]] * k
            responses += r["responses"]
            rewards += r["rewards"]
            logps += r.get("logps") or [None] * k
            versions += [r.get("sampler_version")] * k
            group += [g] * k
        n_pairs = 0
    prompt_ids, prompt_mask = left_pad(prompts, pad_token_id)
    response_ids = _pad_right(responses, pad_token_id, torch.long)
    lengths = torch.tensor([len(s) for s in responses])
    response_mask = torch.arange(response_ids.shape[1])[None, :] < lengths[:, None]
    logps = [l if l is not None else [0.0] * len(s) for l, s in zip(logps, responses)]
    return Batch(
        prompts=prompt_ids,
        prompt_mask=prompt_mask,
        responses=response_ids,
        response_mask=response_mask,
        rewards=torch.tensor([math.nan if r is None else float(r) for r in rewards], dtype=torch.float32),
        group=torch.tensor(group, dtype=torch.long),
        sampler_logps=_pad_right(logps, 0.0, torch.float32) if response_ids.shape[1] else torch.zeros_like(response_ids, dtype=torch.float32),
        sampler_version=torch.tensor([-1 if v is None else int(v) for v in versions], dtype=torch.long),
        n_pairs=n_pairs,
    )


def _trim(tokens: torch.Tensor, mask: torch.Tensor) -> list[int]:
    return tokens[: int(mask.sum())].tolist()


class OnPolicySource:
    """Fresh prompts each collection; responses from the sampler as it is now (synced by the loop)."""

    needs_sampler = True

    def __init__(self, cfg, world, labeller, pair_kind: str, seed: int):
        self.world = world
        self.labeller = labeller
        self.pair_kind = pair_kind  # "pairs" | "groups"
        self.batch_size = int(cfg.batch_size)
        self.n = int(cfg.algo.samples_per_prompt)
        self.prompt_rng = torch.Generator().manual_seed(seed)
        self.sample_rng = torch.Generator().manual_seed(seed + 1)
        self.pair_rng = random.Random(seed + 2)

    def state_dict(self) -> dict:
        return {"prompt": self.prompt_rng.get_state(), "sample": self.sample_rng.get_state(),
                "pair": self.pair_rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self.prompt_rng.set_state(state["prompt"])
        self.sample_rng.set_state(state["sample"])
        self.pair_rng.setstate(state["pair"])

    def rows(self, step: int, sampler) -> tuple[list[dict], dict]:
        from gapstudy.generation import left_pad

        world = self.world
        index = torch.randint(len(world.train_prompts), (self.batch_size,), generator=self.prompt_rng).tolist()
        prompts = [world.train_prompts[i] for i in index]
        tasks = [world.train_tasks[i] for i in index]
        ids, mask = left_pad(prompts, world.pad_token_id)
        samples = sampler.generate(ids, mask, self.n, self.sample_rng)
        rewards = self.labeller(samples.prompts, samples.prompt_mask, samples.responses, samples.response_mask,
                                [t for t in tasks for _ in range(self.n)])
        if not bool(torch.isfinite(rewards).all()):
            raise RewardError(f"the labeller returned {rewards[~torch.isfinite(rewards)][0].item()} at step {step}; "
                              "rewards must be finite numbers")
        rewards = rewards.float().view(self.batch_size, self.n)
        responses = [_trim(t, m) for t, m in zip(samples.responses, samples.response_mask)]
        logps = [_trim(l, m) for l, m in zip(samples.logps, samples.response_mask)]
        info = {"samples": self.batch_size * self.n, "reward": float(rewards.mean())}
        version = samples.version
        rows = []
        if self.pair_kind == "pairs":
            binary = [t in world.binary_tasks for t in tasks]
            pairs, skipped = select_pairs(rewards, binary, self.pair_rng)
            for b, i, j in pairs:
                ci, ri = b * self.n + i, b * self.n + j
                rows.append({"step": step, "prompt": prompts[b], "chosen": responses[ci], "rejected": responses[ri],
                             "chosen_reward": float(rewards[b, i]), "rejected_reward": float(rewards[b, j]),
                             "chosen_logps": logps[ci], "rejected_logps": logps[ri], "sampler_version": version,
                             "task": tasks[b]})
        else:
            skipped = 0
            for b in range(self.batch_size):
                sl = slice(b * self.n, (b + 1) * self.n)
                rows.append({"step": step, "prompt": prompts[b], "responses": responses[sl],
                             "rewards": rewards[b].tolist(), "logps": logps[sl], "sampler_version": version,
                             "task": tasks[b]})
        info["skipped"] = skipped
        return rows, info


# ---------------------------------------------------------------- reading datasets
LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def load_records(path, split: str = "train", subset: str | None = None, cache_dir: str | None = None, *, key: str):
    """A `datasets.Dataset` of the rows at `path`: a local file (by extension), a folder saved with `save_to_disk`
    (a DatasetDict gives its `split`), a folder of data files (laid out like a hub repo), or else a hub dataset name.
    World prompts (world=hf) and preference datasets (data=dataset) both load here. `key` is the setting that named
    `path` (e.g. `data.path`); errors name it and its split setting, and are ConfigErrors."""
    import datasets

    from gapstudy.config import LOCAL_PREFIXES

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

    from gapstudy.errors import ConfigError

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


def _pair_log_folder(path) -> Path | None:
    """A run directory's pairs/ folder, or `path` itself when it holds PairLogWriter's steps-*.parquet shards."""
    path = Path(str(path)).expanduser()
    for folder in (path / "pairs", path):
        if folder.is_dir() and any(folder.glob("steps-*.parquet")):
            return folder
    return None


def _read_shards(folder: Path) -> list[dict]:
    # shard by shard with pyarrow: a column that is null in one shard and typed in another is fine here
    import pyarrow.parquet as pq

    return [row for shard in sorted(folder.glob("*.parquet")) for row in pq.read_table(shard).to_pylist()]


def _is_messages(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(m, dict) for m in value)


def _turns(value) -> list[dict] | None:
    """A prompt value as chat turns (text is one user turn) for comparing prompts; None for token ids."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if _is_messages(value):
        return [{"role": m.get("role"), "content": m.get("content")} for m in value]
    return None


def read_preference_rows(data_cfg, tokenizer, eos_token_id, encode_prompt=None, cache_dir=None) -> list[dict]:
    """The pairs of a preference dataset (`data.path` with its split, subset and prompt/chosen/rejected field
    mapping) as pair rows of token ids, the format every source yields.

    chosen / rejected hold text, token-id lists, or chat messages [{role, content}] (TRL's conversational format):
    a response is the content of the trailing assistant turn. Text responses are tokenised without special tokens
    and end with EOS, as sampled responses do. The prompt is the prompt field (text, messages or token ids), or,
    with `data.prompt_field=null`, the chat turns chosen and rejected share before their replies (TRL's implicit
    prompt). Text and message prompts go through `encode_prompt(value) -> ids` when given (world=hf's chat
    template); without it, text is tokenised plainly and messages cannot be rendered."""
    d = data_cfg
    folder = _pair_log_folder(d.path)
    if folder is not None:  # a run's pair log is a preference dataset too
        table, columns = _read_shards(folder), None
    else:
        data = load_records(d.path, d.get("split", "train"), d.get("subset"), cache_dir, key="data.path")
        table, columns = data.to_list(), data.column_names
    if not table:
        raise DataError(f"dataset {d.path} is empty")
    columns = columns or list(table[0])
    fields = {"prompt": d.prompt_field, "chosen": d.chosen_field, "rejected": d.rejected_field}
    missing = [f for f in fields.values() if f is not None and f not in columns]
    if missing:
        raise DataError(f"dataset {d.path} lacks field(s) {', '.join(missing)}; it has: {', '.join(columns)}")

    vocab = len(tokenizer)

    def token_ids(value, field):
        if not isinstance(value, (list, tuple)):
            raise DataError(f"dataset {d.path}: a {field} value is a {type(value).__name__}; valid: text, token ids "
                            "or chat messages [{role, content}]")
        for t in value:
            if isinstance(t, bool) or not isinstance(t, int):
                raise DataError(f"dataset {d.path}: a {field} value holds {str(t)[:40]!r} ({type(t).__name__}); "
                                "valid: text, a list of token ids or chat messages [{role, content}]")
            if not 0 <= t < vocab:
                raise DataError(f"dataset {d.path}: a {field} value holds token id {t}, outside the world's "
                                f"vocabulary; valid: ids in [0, {vocab})")
        return list(value)

    def prompt_ids(value):
        if encode_prompt is not None and (isinstance(value, str) or _is_messages(value)):
            return list(encode_prompt(value))
        if _is_messages(value):
            raise DataError(f"dataset {d.path}: its prompts are chat messages, which need a chat template to become "
                            "tokens; valid: world=hf with a tokenizer that has one, or text / token-id prompts")
        if isinstance(value, str):
            return tokenizer.encode(value, add_special_tokens=False)
        return token_ids(value, fields["prompt"])

    def response_ids(value, field):
        if isinstance(value, str):
            ids = tokenizer.encode(value, add_special_tokens=False)
            return ids + [eos_token_id] if eos_token_id is not None else ids
        return token_ids(value, field)

    def reply(value, field):
        """A conversation -> (the turns before the reply, the reply's text)."""
        turns = _turns(value)
        if turns[-1]["role"] != "assistant" or not isinstance(turns[-1]["content"], str):
            raise DataError(f"dataset {d.path}: a {field} conversation ends with a {turns[-1]['role']!r} turn; "
                            "valid: chat messages ending with the assistant's reply (text)")
        return turns[:-1], turns[-1]["content"]

    def pair(i, r):
        chosen, rejected = r[fields["chosen"]], r[fields["rejected"]]
        prompt = r[fields["prompt"]] if fields["prompt"] is not None else None
        if _is_messages(chosen) or _is_messages(rejected):
            if not (_is_messages(chosen) and _is_messages(rejected)):
                raise DataError(f"dataset {d.path}: one of {fields['chosen']} / {fields['rejected']} holds chat "
                                "messages and the other does not; valid: both or neither")
            before, chosen = reply(chosen, fields["chosen"])
            rejected_before, rejected = reply(rejected, fields["rejected"])
            if before != rejected_before:
                raise DataError(f"dataset {d.path}: row {i}'s chosen and rejected conversations differ before their "
                                f"replies, so they answer different prompts: {str(before)[:100]} vs "
                                f"{str(rejected_before)[:100]}")
            if prompt is None:  # the implicit prompt: the shared turns
                if not before:
                    raise DataError(f"dataset {d.path}: data.prompt_field=null but a chosen conversation holds only "
                                    "the reply; name the prompt column with data.prompt_field")
                prompt = before
            elif before and _turns(prompt) != before:
                raise DataError(f"dataset {d.path}: row {i}'s {fields['prompt']} field disagrees with the turns before "
                                "the replies in chosen/rejected; set data.prompt_field=null to take the prompt from them")
        elif prompt is None:
            raise DataError(f"dataset {d.path}: data.prompt_field=null needs chosen/rejected as chat messages (the "
                            "prompt is the turns they share); implicit prompts in plain text (Anthropic/hh-rlhf) are "
                            "not supported: give a prompt column")
        return (prompt_ids(prompt), response_ids(chosen, fields["chosen"]),
                response_ids(rejected, fields["rejected"]))

    rows = []
    for i, r in enumerate(table):
        prompt, chosen, rejected = pair(i, r)
        rows.append({"step": r.get("step", -1), "prompt": prompt, "chosen": chosen, "rejected": rejected,
                     "chosen_reward": r.get("chosen_reward"), "rejected_reward": r.get("rejected_reward"),
                     "chosen_logps": None, "rejected_logps": None, "sampler_version": r.get("sampler_version"),
                     "task": r.get("task", "default")})
    return rows


def dataset_cache_dir(cfg) -> str:
    """Where hub datasets are downloaded and local files converted: <paths.results>/.cache/datasets (as world=hf)."""
    return str(Path(cfg.paths.results) / ".cache" / "datasets")


def drop_long_pairs(rows: list[dict], max_prompt, max_response, path) -> list[dict]:
    """Pairs within the token limits (None = no limit). Long pairs are dropped, not truncated: a cut response has
    no EOS and is no longer the response the label was given to."""
    def fits(r):
        return ((max_prompt is None or len(r["prompt"]) <= max_prompt)
                and (max_response is None or max(len(r["chosen"]), len(r["rejected"])) <= max_response))

    kept = [r for r in rows if fits(r)]
    if not kept:
        raise DataError(f"dataset {path}: every one of its {len(rows)} pairs exceeds data.max_prompt_tokens="
                        f"{max_prompt} or data.max_response_tokens={max_response}")
    if len(kept) < len(rows):
        warnings.warn(f"dataset {path}: dropped {len(rows) - len(kept)} of {len(rows)} pairs longer than "
                      f"data.max_prompt_tokens={max_prompt} / data.max_response_tokens={max_response} tokens",
                      stacklevel=2)
    return kept


class DatasetSource:
    """A fixed preference dataset, read in seeded random order, epoch after epoch."""

    needs_sampler = False

    def __init__(self, cfg, world, labeller, pair_kind: str, seed: int):
        if pair_kind != "pairs":
            raise DataError(f"data=dataset holds preference pairs; algo={cfg.algo.name} needs groups of samples "
                            "(use data=policy or data=replay of a group run)")
        self.rows_all = self.read(cfg, world)
        self.batch_size = int(cfg.batch_size)
        self.shuffle = bool(cfg.data.shuffle)
        self.rng = random.Random(seed)
        self.order: list[int] = []

    @staticmethod
    def read(cfg, world) -> list[dict]:
        rows = read_preference_rows(cfg.data, world.tokenizer, world.eos_token_id, world.encode_prompt,
                                    dataset_cache_dir(cfg))
        return drop_long_pairs(rows, cfg.data.get("max_prompt_tokens"), cfg.data.get("max_response_tokens"),
                               cfg.data.path)

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate(), "order": self.order}

    def load_state_dict(self, state: dict) -> None:
        self.rng.setstate(state["rng"])
        self.order = list(state["order"])

    def rows(self, step: int, sampler=None):
        out = []
        while len(out) < self.batch_size:
            if not self.order:
                self.order = list(range(len(self.rows_all)))
                if self.shuffle:
                    self.rng.shuffle(self.order)
            # no sampler of this run made a dataset row: a pair log's sampler_version counts another run's steps
            out.append(dict(self.rows_all[self.order.pop(0)], step=step, sampler_version=None))
        return out, {"samples": 0, "skipped": 0}


class GoldenSource(DatasetSource):
    """Tang et al.'s D_golden: the proxy.pairs gold-labelled pairs of SFT samples that labeller=proxy's reward model
    learns from (built once per world and proxy settings), read like data=dataset. An offline run on it sees the
    same information as an online run labelled by that proxy; sync_every=inf draws fresh SFT pairs instead."""

    @staticmethod
    def read(cfg, world) -> list[dict]:
        from gapstudy.runtime import resolve_device
        from gapstudy.rewards import golden_pairs

        path = golden_pairs(world, cfg, Path(cfg.paths.results), resolve_device(cfg.device))
        return _read_shards(path.parent)


def shuffle_in_windows(batches: list[list[dict]], window, rng: random.Random) -> list[list[dict]]:
    """Tang et al.'s shuffle-degree ablation: permute examples uniformly within each window of `window` consecutive
    batches (window="all": across the whole log), then cut them back into batches of the original sizes."""
    sizes = [len(b) for b in batches]
    w = len(batches) if window == "all" else int(window)
    out = []
    for start in range(0, len(batches), w):
        chunk = [row for b in batches[start : start + w] for row in b]
        rng.shuffle(chunk)
        for size in sizes[start : start + w]:
            out.append(chunk[:size])
            chunk = chunk[size:]
    return out


def read_pair_log(path) -> list[list[dict]]:
    """A run's pair log as its list of batches, in the order they were trained on."""
    path = Path(path)
    folder = path / "pairs" if (path / "pairs").is_dir() else path
    if not folder.is_dir() or not sorted(folder.glob("*.parquet")):
        raise DataError(f"no pair log at {path} (expected a run directory with pairs/*.parquet)")
    rows = _read_shards(folder)
    batches: dict[int, list[dict]] = {}
    for r in rows:
        batches.setdefault(int(r["step"]), []).append(r)
    return [batches[s] for s in sorted(batches)]


class ReplaySource:
    """An earlier run's pair log, batch by batch: in original order, or shuffled within windows of batches."""

    needs_sampler = False

    def __init__(self, cfg, world, labeller, pair_kind: str, seed: int):
        batches = read_pair_log(cfg.data.path)
        kind = "pairs" if "chosen" in batches[0][0] else "groups"
        if kind != pair_kind:
            raise DataError(f"the pair log at {cfg.data.path} holds {kind}; algo={cfg.algo.name} needs {pair_kind}")
        if cfg.replay.order == "shuffled":
            batches = shuffle_in_windows(batches, cfg.replay.shuffle_window, random.Random(seed))
        self.batches = batches
        self.reuse = int(cfg.reuse)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def __len__(self) -> int:
        return len(self.batches) * self.reuse  # optimizer steps the log can feed

    def rows(self, step: int, sampler=None):
        rows = self.batches[step // self.reuse]
        samples = sum(len(r.get("responses", ())) or 2 for r in rows)
        return [dict(r) for r in rows], {"samples": samples, "skipped": 0}


# data name -> (class, one-line description)
SOURCES = {
    "policy": (OnPolicySource, "fresh samples every step from the sampler, synced to the policy every sync_every steps"),
    "dataset": (DatasetSource, "a fixed preference dataset (hub name, jsonl, parquet, datasets folder) with prompt/chosen/rejected"),
    "replay": (ReplaySource, "an earlier run's pair log, in original order or shuffled within replay.shuffle_window batches"),
    "golden": (GoldenSource, "D_golden: the proxy.pairs gold-labelled SFT pairs the proxy RM learns from (Tang et al.'s offline data)"),
}


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
