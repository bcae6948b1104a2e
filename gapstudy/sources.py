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
from dataclasses import dataclass
from pathlib import Path

import torch

from gapstudy.pairs import select_pairs

PAIR_FIELDS = ("step", "prompt", "chosen", "rejected", "chosen_reward", "rejected_reward", "chosen_logps",
               "rejected_logps", "sampler_version", "task")
GROUP_FIELDS = ("step", "prompt", "responses", "rewards", "logps", "sampler_version", "task")


class DataError(ValueError):
    """A dataset or pair log that cannot be used; the CLI prints the message and exits with status 2."""


class RewardError(RuntimeError):
    """The labeller returned NaN or inf."""


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


def _read_table(path: Path):
    """jsonl / json / parquet file, a folder of parquet shards, or a `datasets` dataset saved to disk -> list of dicts."""
    path = Path(path)
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            from datasets import load_from_disk

            return load_from_disk(str(path)).to_list()
        shards = sorted(path.glob("*.parquet"))
        if not shards and (path / "pairs").is_dir():
            shards = sorted((path / "pairs").glob("*.parquet"))
        if not shards:
            raise DataError(f"{path} holds no pair log or dataset (no *.parquet files, no pairs/ folder)")
        import pyarrow.parquet as pq

        rows = []
        for shard in shards:
            rows += pq.read_table(shard).to_pylist()
        return rows
    if path.suffix in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as f:
            try:
                return [json.loads(line) for line in f if line.strip()]
            except json.JSONDecodeError as e:
                raise DataError(f"{path} is not valid jsonl: {e}") from None
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise DataError(f"{path}: unsupported format {path.suffix!r}; valid: .jsonl, .json, .parquet, a folder of parquet "
                    "shards, or a datasets folder saved with save_to_disk")


def _is_messages(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(m, dict) for m in value)


def read_preference_rows(data_cfg, tokenizer, eos_token_id, encode_prompt=None) -> list[dict]:
    """The pairs of a preference dataset (`data.path` with its prompt/chosen/rejected field mapping) as pair rows of
    token ids, the format every source yields. Fields hold token-id lists or text: text is tokenised with the
    world's tokenizer (no special tokens; responses end with EOS, as sampled responses do), or, for prompts, with
    `encode_prompt(value) -> ids` when given (world=hf's chat template; it also takes chat-message lists)."""
    d = data_cfg
    table = _read_table(Path(d.path))
    if not table:
        raise DataError(f"dataset {d.path} is empty")
    fields = {"prompt": d.prompt_field, "chosen": d.chosen_field, "rejected": d.rejected_field}
    missing = [f for f in fields.values() if f not in table[0]]
    if missing:
        raise DataError(f"dataset {d.path} lacks field(s) {', '.join(missing)}; it has: {', '.join(table[0])}")

    def ids(value, is_response):
        if not is_response and encode_prompt is not None and (isinstance(value, str) or _is_messages(value)):
            return list(encode_prompt(value))
        if isinstance(value, str):
            out = tokenizer.encode(value, add_special_tokens=False)
            if is_response and eos_token_id is not None:
                out = out + [eos_token_id]
            return out
        if _is_messages(value):
            raise DataError(f"dataset {d.path}: a field holds chat messages, which need a chat template "
                            "(world=hf); valid: text or token-id lists")
        return [int(t) for t in value]

    return [
        {"step": r.get("step", -1), "prompt": ids(r[fields["prompt"]], False),
         "chosen": ids(r[fields["chosen"]], True), "rejected": ids(r[fields["rejected"]], True),
         "chosen_reward": r.get("chosen_reward"), "rejected_reward": r.get("rejected_reward"),
         "chosen_logps": None, "rejected_logps": None, "sampler_version": r.get("sampler_version"),
         "task": r.get("task", "default")}
        for r in table
    ]


class DatasetSource:
    """A fixed preference dataset, read in seeded random order, epoch after epoch."""

    needs_sampler = False

    def __init__(self, cfg, world, labeller, pair_kind: str, seed: int):
        if pair_kind != "pairs":
            raise DataError(f"data=dataset holds preference pairs; algo={cfg.algo.name} needs groups of samples "
                            "(use data=policy or data=replay of a group run)")
        self.rows_all = read_preference_rows(cfg.data, world.tokenizer, world.eos_token_id, world.encode_prompt)
        self.batch_size = int(cfg.batch_size)
        self.shuffle = bool(cfg.data.shuffle)
        self.rng = random.Random(seed)
        self.order: list[int] = []

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
            out.append(dict(self.rows_all[self.order.pop(0)], step=step))
        return out, {"samples": 0, "skipped": 0}


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
    rows = _read_table(folder)
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
    "dataset": (DatasetSource, "a fixed preference dataset (jsonl, parquet, datasets folder) with prompt/chosen/rejected"),
    "replay": (ReplaySource, "an earlier run's pair log, in original order or shuffled within replay.shuffle_window batches"),
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
