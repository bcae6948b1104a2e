"""Rewards and judges: the gold reward of a world, the proxy reward model that can label training pairs, and the
pairwise LLM judge.

A labeller is any callable (prompts [N, P], prompt_mask, responses [N, L], response_mask, tasks) -> rewards [N].
The gold reward always judges evaluation; `labeller=proxy` swaps in a Bradley-Terry reward model trained on a
finite set of gold-labelled pairs of reference samples (Tang et al. 2024's D_golden; Gao et al. 2022's proxy RM),
or, with `proxy.path`, one trained beforehand by `gapstudy train-rm` on a preference dataset; `labeller=judge`
swaps in a pairwise LLM judge (`gapstudy.judge`). Both reward-model trainers share one Bradley-Terry step:
loss = -log sigma(r(x, y_w) - r(x, y_l)), with r read at the last real token of prompt ++ response.
"""
from __future__ import annotations

import inspect
import json
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from gapstudy.errors import ConfigError, DataError, first_line

INFO_FILES = ("proxy.json", "rm_info.json")  # written by train_proxy / train_reward_model


def gold_labeller(world):
    return world.gold


class ProxyLabeller:
    """Scores with a sequence-classification reward model loaded by path."""

    def __init__(self, path: Path, device="cpu"):
        from transformers import AutoModelForSequenceClassification

        self.model = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
        info = next((Path(path) / name for name in INFO_FILES if (Path(path) / name).exists()), None)
        self.info = json.loads(info.read_text()) if info is not None else {}

    @torch.no_grad()
    def __call__(self, prompts, prompt_mask, responses, response_mask, tasks=None) -> torch.Tensor:
        return score(self.model, prompts, prompt_mask, responses, response_mask)


def score(model, prompts, prompt_mask, responses, response_mask) -> torch.Tensor:
    """[N] scalar scores read at the last real token of prompt ++ response.

    Left-padded prompts get position ids counted from their first real token (as in `logprobs`), so a score does
    not depend on how much padding its batch needed; models whose forward takes no `position_ids` (TinyGPT) count
    positions from the attention mask themselves."""
    pm = torch.ones_like(prompts) if prompt_mask is None else prompt_mask
    ids = torch.cat([prompts, responses], 1)
    mask = torch.cat([pm, response_mask.long()], 1)
    extra = {}
    if prompt_mask is not None and "position_ids" in inspect.signature(model.forward).parameters:
        extra["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=ids, attention_mask=mask, **extra).logits[:, 0].float()


# ---------------------------------------------------------------- the Bradley-Terry step (shared by both trainers)
def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Mean over pairs of -log sigma(r(x, y_w) - r(x, y_l)) (Bradley & Terry 1952; Ouyang et al. 2022, Eq. 1)."""
    return -F.logsigmoid(chosen - rejected).mean()


def pair_scores(rm, prompts, prompt_mask, responses, response_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward over a pair batch laid out as `sources.Batch`: rows [0, B) chosen, [B, 2B) rejected."""
    s = score(rm, prompts, prompt_mask, responses, response_mask)
    half = s.shape[0] // 2
    return s[:half], s[half:]


def bradley_terry_step(rm, optimizer, prompts, prompt_mask, responses, response_mask) -> float:
    """One optimizer step of the Bradley-Terry loss on a pair batch (chosen rows first); returns the loss."""
    loss = bradley_terry_loss(*pair_scores(rm, prompts, prompt_mask, responses, response_mask))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


@torch.no_grad()
def pair_accuracy(rm, batches) -> float | None:
    """Fraction of pairs whose chosen response outscores the rejected one (exact ties count 1/2); None if no pairs.
    `batches` yields (prompts, prompt_mask, responses, response_mask) pair batches, chosen rows first."""
    was_training = rm.training
    rm.eval()
    right, total = 0.0, 0
    for batch in batches:
        chosen, rejected = pair_scores(rm, *batch)
        right += float((chosen > rejected).sum() + 0.5 * (chosen == rejected).sum())
        total += chosen.shape[0]
    rm.train(was_training)
    return right / total if total else None


def vocab_size(model) -> int | None:
    """Rows of the model's input embedding (None when it cannot tell)."""
    try:
        return int(model.get_input_embeddings().num_embeddings)
    except (AttributeError, NotImplementedError):
        config = getattr(model.config, "text_config", None) or model.config
        value = getattr(config, "vocab_size", None)
        return value if isinstance(value, int) else None


def load_reward_model(base, device="cpu", pad_token_id=None):
    """An AutoModelForSequenceClassification (num_labels=1) from `base`: a causal LM's trunk gets a fresh scalar
    head, initialised to zero (every pair starts at margin 0, loss log 2); a saved reward model keeps its head."""
    from transformers import AutoModelForSequenceClassification

    rm, info = AutoModelForSequenceClassification.from_pretrained(
        str(base), num_labels=1, output_loading_info=True, ignore_mismatched_sizes=True)
    rm = rm.to(device)
    torch.manual_seed(0)
    head = getattr(rm, "score", None)  # the scalar head of transformers' *ForSequenceClassification
    if head is None:
        raise RuntimeError(f"{type(rm).__name__} has no `score` head to train as a reward model")
    fresh = [k[0] if isinstance(k, tuple) else k for k in (*info.get("missing_keys", ()),
                                                             *info.get("mismatched_keys", ()))]
    if any(k.split(".")[0] == "score" for k in fresh):
        torch.nn.init.zeros_(head.weight)
        if getattr(head, "bias", None) is not None:  # most transformers classification heads have no bias
            torch.nn.init.zeros_(head.bias)
    if getattr(rm.config, "pad_token_id", None) is None and pad_token_id is not None:
        rm.config.pad_token_id = pad_token_id  # sequence-classification models find the last token by padding
    return rm


def _gold_pairs(world, n_pairs: int, seed: int, device):
    """n_pairs prompts, two reference samples each, the gold reward of each, each prompt's task: the proxy's
    training data."""
    from transformers import AutoModelForCausalLM

    from gapstudy.generation import left_pad, sample

    policy = AutoModelForCausalLM.from_pretrained(world.policy_path).to(device).eval()
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(len(world.train_prompts), (n_pairs,), generator=g).tolist()
    prompts = [world.train_prompts[i] for i in index]
    tasks = [world.train_tasks[i] for i in index for _ in range(2)]
    ids, mask = left_pad(prompts, world.pad_token_id, device)
    s = sample(policy, ids, mask, 2, g, world.max_new_tokens, 1.0, world.eos_token_id, world.pad_token_id)
    gold = world.gold(s.prompts, s.prompt_mask, s.responses, s.response_mask, tasks).float()
    return s, gold.view(-1, 2), tasks[::2]


def _proxy_spec(cfg) -> dict:
    proxy = {k: v for k, v in OmegaConf.to_container(cfg.proxy, resolve=True).items() if k != "path"}
    return {"world": OmegaConf.to_container(cfg.world, resolve=True), "reward": cfg.reward, "proxy": proxy}


def _golden(world, cfg, device):
    """D_golden and the proxy's held-out pairs: (samples, gold [n, 2], tasks [n], loser [n] (offset of the losing
    sample in its pair), train index, held-out index), ties dropped from both indices. Deterministic (seed 12345),
    so the proxy and data=golden see exactly the same pairs."""
    pairs = int(cfg.proxy.pairs)
    s, gold, tasks = _gold_pairs(world, pairs + max(64, pairs // 8), seed=12345, device=device)
    keep = gold[:, 0] != gold[:, 1]  # ties carry no preference
    loser = (gold[:, 0] > gold[:, 1]).long()
    n = gold.shape[0]
    return s, gold, tasks, loser, torch.arange(pairs)[keep[:pairs]], torch.arange(pairs, n)[keep[pairs:]]


def golden_pairs(world, cfg, cache_root: Path, device="cpu") -> Path:
    """Tang et al.'s D_golden as a pair file (cached like the proxy, under the same settings): the proxy.pairs
    gold-labelled pairs of SFT samples the proxy RM learns from, ties dropped. `data=golden` trains on it, so an
    offline run sees exactly the information the online run's proxy labeller was built from."""
    from gapstudy.cache import cached_artifact

    def build(directory: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        s, gold, tasks, loser, train_idx, _ = _golden(world, cfg, device)
        rows = []
        for i in train_idx.tolist():
            win, lose = 2 * i + 1 - int(loser[i]), 2 * i + int(loser[i])
            trim = lambda r: s.responses[r][s.response_mask[r]].tolist()
            prompt = s.prompts[win] if s.prompt_mask is None else s.prompts[win][s.prompt_mask[win].bool()]
            rows.append({"step": -1, "prompt": prompt.tolist(), "chosen": trim(win), "rejected": trim(lose),
                         "chosen_reward": float(gold[i].max()), "rejected_reward": float(gold[i].min()),
                         "task": tasks[i]})
        pq.write_table(pa.Table.from_pylist(rows), directory / "pairs.parquet")

    return cached_artifact(cache_root, f"golden_{world.name}", _proxy_spec(cfg), build) / "pairs.parquet"


def train_proxy(world, cfg, cache_root: Path, device="cpu") -> Path:
    """Train (once; cached by a hash of the world and proxy settings) and return the proxy RM directory."""
    from gapstudy.cache import cached_artifact

    def build(directory: Path) -> None:
        p = cfg.proxy
        s, gold, _, loser, train_idx, test_idx = _golden(world, cfg, device)
        # the reward model starts from the SFT policy's trunk (as in Tang et al. and Gao et al.), a fresh scalar head
        rm = load_reward_model(world.policy_path, device)
        opt = torch.optim.Adam(rm.parameters(), lr=float(p.lr))
        first = torch.arange(0, 2 * gold.shape[0], 2)

        def pairs(idx):  # a pair batch: the winners' rows, then the losers'
            rows = torch.cat([first[idx] + 1 - loser[idx], first[idx] + loser[idx]])
            return (s.prompts[rows], None if s.prompt_mask is None else s.prompt_mask[rows], s.responses[rows],
                    s.response_mask[rows])

        size = int(p.batch_size)
        g = torch.Generator().manual_seed(0)
        rm.train()
        for _ in range(int(p.epochs)):
            perm = train_idx[torch.randperm(len(train_idx), generator=g)]
            for start in range(0, len(perm), size):
                bradley_terry_step(rm, opt, *pairs(perm[start : start + size]))
        rm.eval()
        accuracy = pair_accuracy(rm, (pairs(test_idx[i : i + size]) for i in range(0, len(test_idx), size)))
        rm.save_pretrained(directory)
        (directory / "proxy.json").write_text(json.dumps(
            {"train_pairs": len(train_idx), "held_out_pairs": len(test_idx), "held_out_accuracy": accuracy}, indent=1))

    return cached_artifact(cache_root, f"proxy_{world.name}", _proxy_spec(cfg), build)


# ---------------------------------------------------------------- gapstudy train-rm
def _rm_tokenizer(cfg):
    """(tokenizer, prompt encoder or None, eos id, pad id, the world's policy) for `gapstudy train-rm`: world=hf
    loads only world.model's tokenizer (prompts rendered as its world renders them: the chat template, the
    system prompt); the built worlds are built (cached) for theirs."""
    if cfg.world.name == "hf":
        from gapstudy.worlds.hf import prompt_encoder

        tokenizer, encoder = prompt_encoder(cfg.world)
        return tokenizer, encoder.ids, tokenizer.eos_token_id, tokenizer.pad_token_id, str(cfg.world.model)
    from gapstudy.worlds import build_world

    world = build_world(cfg, Path(cfg.paths.results))
    return world.tokenizer, world.encode_prompt, world.eos_token_id, world.pad_token_id, str(world.policy_path)


def train_reward_model(cfg, command: str | None = None, log=print) -> Path:
    """`gapstudy train-rm`: a Bradley-Terry reward model on the preference dataset at data.path.

    The pairs are tokenised with the world's tokenizer (as `data=dataset` reads them, with world=hf's chat template
    for text prompts), a seeded `rm.eval_fraction` of them is held out, and an AutoModelForSequenceClassification
    (num_labels=1) from `rm.base` (null: the world's policy) trains `rm.epochs` epochs of Adam at `rm.lr` on batches
    of `rm.batch_size` pairs. Each epoch logs the mean train loss and the held-out pair accuracy. The model, the
    world's tokenizer and rm_info.json go to `rm.out`, a directory `labeller=proxy proxy.path=...` loads."""
    from gapstudy.runtime import resolve_device
    from gapstudy.sources import collate, dataset_cache_dir, read_preference_rows

    r = cfg.rm
    torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    tokenizer, encode, eos, pad, policy = _rm_tokenizer(cfg)
    pairs = read_preference_rows(cfg.data, tokenizer, eos, encode, dataset_cache_dir(cfg))
    order = list(range(len(pairs)))
    random.Random(int(cfg.seed)).shuffle(order)
    fraction = float(r.eval_fraction)
    n_eval = max(1, round(fraction * len(pairs))) if fraction > 0 else 0
    if len(pairs) - n_eval < 1:
        raise DataError(f"dataset {cfg.data.path} has {len(pairs)} pair(s): none left to train on after holding out "
                        f"rm.eval_fraction={fraction}")
    held_out = [pairs[i] for i in order[:n_eval]]
    train = [pairs[i] for i in order[n_eval:]]
    size = int(r.batch_size)

    def batches(rows, index):
        for start in range(0, len(index), size):
            b = collate([rows[i] for i in index[start : start + size]], pad).to(device)
            yield b.prompts, b.prompt_mask, b.responses, b.response_mask

    base = str(r.base) if r.base is not None else policy
    try:
        rm = load_reward_model(base, device, pad)
    except (OSError, ValueError) as e:  # not a model directory, not on the hub (or its cache), no classification class
        raise ConfigError(f"rm.base={base!r} could not be loaded as a sequence-classification model: "
                          f"{first_line(e)}") from None
    vocab = vocab_size(rm)
    if vocab is not None and vocab < len(tokenizer):
        raise ConfigError(f"rm.base={base!r} has a vocabulary of {vocab} tokens, the world's tokenizer {len(tokenizer)}:"
                          " the reward model reads the policy's token ids, so it must share its tokenizer")
    opt = torch.optim.Adam(rm.parameters(), lr=float(r.lr))
    g = torch.Generator().manual_seed(int(cfg.seed))
    log(f"train-rm: {len(train)} training pairs, {len(held_out)} held out; base {base}; {r.epochs} epoch(s)")
    history = []
    for epoch in range(int(r.epochs)):
        rm.train()
        total, count = 0.0, 0
        for batch in batches(train, torch.randperm(len(train), generator=g).tolist()):
            n = batch[0].shape[0] // 2  # pairs in the batch
            total += bradley_terry_step(rm, opt, *batch) * n
            count += n
        accuracy = pair_accuracy(rm, batches(held_out, list(range(len(held_out)))))
        history.append({"epoch": epoch + 1, "train_loss": total / count, "held_out_accuracy": accuracy})
        shown = "n/a" if accuracy is None else f"{accuracy:.3f}"
        log(f"epoch {epoch + 1}/{r.epochs}  train_loss={total / count:.4f}  held_out_accuracy={shown}")
    out = Path(r.out)
    out.mkdir(parents=True, exist_ok=True)
    rm.eval()
    rm.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {"pairs": len(pairs), "train_pairs": len(train), "held_out_pairs": len(held_out),
            "accuracy": history[-1]["held_out_accuracy"] if history else None, "history": history,
            "base": base, "world": cfg.world.name, "data": str(cfg.data.path),
            "rm": OmegaConf.to_container(r, resolve=True), "seed": int(cfg.seed), "command": command}
    (out / "rm_info.json").write_text(json.dumps(info, indent=1))
    return out


# ---------------------------------------------------------------- choosing the labeller
def _load_proxy(path, world, device) -> "ProxyLabeller":
    """A reward model directory given as proxy.path: it must load, and share the world's vocabulary."""
    if not (Path(path) / "config.json").exists():
        raise ConfigError(f"proxy.path={str(path)!r} is not a reward model directory (no config.json); valid: a "
                          "directory written by gapstudy train-rm or save_pretrained")
    try:
        proxy = ProxyLabeller(Path(path), device)
    except Exception as e:
        raise ConfigError(f"proxy.path={str(path)!r} could not be loaded as a sequence-classification model: "
                          f"{first_line(e)}") from None
    vocab = vocab_size(proxy.model)
    if vocab is not None and vocab < len(world.tokenizer):
        raise ConfigError(f"proxy.path={str(path)!r} has a vocabulary of {vocab} tokens, the world's tokenizer "
                          f"{len(world.tokenizer)}: the proxy scores the policy's token ids, so it must share its "
                          "tokenizer (train it with gapstudy train-rm on the same world)")
    return proxy


def make_labeller(cfg, world, cache_root: Path, device="cpu"):
    """(labeller of training samples, proxy scored at evaluation or None) for cfg.labeller."""
    if cfg.labeller == "gold":
        return gold_labeller(world), None
    if cfg.labeller == "judge":
        from gapstudy.judge import PairwiseJudge

        return PairwiseJudge.from_config(cfg, world, device), None
    path = cfg.proxy.get("path")
    if path is not None:
        proxy = _load_proxy(path, world, device)  # trained beforehand (gapstudy train-rm): nothing is trained here
    else:
        proxy = ProxyLabeller(train_proxy(world, cfg, cache_root, device), device)
    return proxy, proxy
