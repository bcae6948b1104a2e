"""Sources of training batches: the on-policy stream, a fixed dataset, D_golden, or the replay of an earlier run's
pair log.

Every source yields *rows* (plain dicts of token-id lists, rewards and sampler versions, one per pair or group);
the loop logs the rows to the run's pair log (gapstudy.data.pair_log) and collates them with
gapstudy.data.batches.collate. The on-policy stream goes through exactly the same rows -> collate path as a replay,
which is what makes "replay in original order reproduces the online run" true by construction.
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Protocol

import torch

from gapstudy.config import check_name_or_path
from gapstudy.data.pair_log import read_pair_log, read_shards
from gapstudy.data.preference import drop_long_pairs, read_preference_rows
from gapstudy.errors import ConfigError, DataError, RewardError
from gapstudy.generation import left_pad
from gapstudy.golden import golden_pairs
from gapstudy.pairs import select_pairs
from gapstudy.runtime import resolve_device
from gapstudy.worlds.records import dataset_cache_dir


class Source(Protocol):
    """What the loop asks of a source of training batches."""

    needs_sampler: bool  # True: its rows are sampled by the run's sampler, which the loop builds and syncs
    length: int | None  # the optimizer steps it can feed (a pair log runs out); None: unbounded

    def rows(self, step: int, sampler) -> tuple[list[dict], dict]:
        """The rows of one optimizer step, and counters {samples, skipped, ...} for the metrics."""

    def state_dict(self) -> dict:
        """What a resumed run needs to continue the same stream (random states, the epoch's order)."""

    def load_state_dict(self, state: dict) -> None:
        """Continue from a state_dict() of the same source."""


def _trim(tokens: torch.Tensor, mask: torch.Tensor) -> list[int]:
    return tokens[: int(mask.sum())].tolist()


class OnPolicySource:
    """Fresh prompts each collection; responses from the sampler as it is now (synced by the loop)."""

    needs_sampler = True
    length = None  # unbounded: fresh samples every step

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


class DatasetSource:
    """A fixed preference dataset, read in seeded random order, epoch after epoch."""

    needs_sampler = False
    length = None  # unbounded: epoch after epoch

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
                                    dataset_cache_dir(cfg.paths.results))
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
        path = golden_pairs(world, cfg, Path(cfg.paths.results), resolve_device(cfg.device))
        return read_shards(path.parent)


def shuffle_in_windows(batches: list[list[dict]], window, rng: random.Random) -> list[list[dict]]:
    """Tang et al.'s shuffle-degree ablation: permute examples uniformly within each window of `window` consecutive
    batches (window="all": across the whole log), then cut them back into batches of the original sizes. Inside a
    batch the rows keep their log order: which rows share a batch is what a window changes; their order within it
    changes only the float rounding of the batch mean, which Adam amplifies over hundreds of steps (a window of one
    batch is then exactly the original order, not a run that drifts from it by rounding)."""
    sizes = [len(b) for b in batches]
    w = len(batches) if window == "all" else int(window)
    out = []
    for start in range(0, len(batches), w):
        chunk = list(enumerate(row for b in batches[start : start + w] for row in b))
        rng.shuffle(chunk)
        for size in sizes[start : start + w]:
            out.append([row for _, row in sorted(chunk[:size], key=lambda item: item[0])])
            chunk = chunk[size:]
    return out


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
        self.length = len(batches) * int(cfg.reuse)  # optimizer steps the log can feed
        self.reuse = int(cfg.reuse)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

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


def check_dataset(d) -> None:
    """data=dataset: data.path is a hub name or a local path (a value written as a path must exist; a hub name is
    checked when it loads); the split and the chosen/rejected fields are names, the subset and prompt field may be
    null."""
    if not isinstance(d.path, str) or not d.path.strip():
        raise ConfigError(f"data.path={d.path!r} is invalid; valid: a hub dataset name or a local path")
    check_name_or_path("data.path", d.path)
    for key, nullable in (("split", False), ("subset", True), ("prompt_field", True), ("chosen_field", False),
                          ("rejected_field", False)):
        value = d.get(key)
        if not (isinstance(value, str) and value) and not (nullable and value is None):
            raise ConfigError(f"data.{key}={value!r} is invalid; valid: a name" + (" or null" if nullable else ""))
    for key in ("max_prompt_tokens", "max_response_tokens"):
        value = d.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"data.{key}={value!r} is invalid; valid: an integer >= 1 or null")


def _check_sampler_from(cfg) -> None:
    sources = cfg.get("sampler_from")
    if sources is None:
        return
    paths = [sources] if isinstance(sources, str) else list(sources)
    if not paths:
        raise ConfigError("sampler_from=[] is invalid; valid: null, `sft`, a checkpoint directory or a list of them")
    if cfg.data.name != "policy":
        raise ConfigError(f"sampler_from needs data=policy (it replaces the sampler), not data={cfg.data.name}")
    if not math.isinf(cfg.sync_every):
        raise ConfigError(f"sampler_from holds fixed policies: it needs sync_every=inf, not {cfg.sync_every}")
    for path in paths:
        if path != "sft" and not Path(path).exists():
            raise ConfigError(f"sampler_from: {path!r} does not exist")
    if int(cfg.algo.samples_per_prompt) % len(paths):
        raise ConfigError(f"algo.samples_per_prompt={cfg.algo.samples_per_prompt} must be a multiple of the "
                          f"{len(paths)} samplers of sampler_from")


def check(cfg) -> None:
    """The settings of where batches come from (on a config that config.validate passed): data names a source,
    data=dataset its dataset and fields, sampler_from the fixed samplers of the on-policy stream."""
    if cfg.data.name not in SOURCES:
        raise ConfigError(f"data={cfg.data.name!r} is invalid; valid choices: {', '.join(SOURCES)}")
    if cfg.data.name == "dataset":
        check_dataset(cfg.data)
    _check_sampler_from(cfg)


def make_source(cfg, world, labeller, pair_kind: str, seed: int) -> Source:
    """The source cfg.data names, its settings checked."""
    check(cfg)
    return SOURCES[cfg.data.name][0](cfg, world, labeller, pair_kind, seed)
