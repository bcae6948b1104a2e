"""`gapstudy train-rm`: a Bradley-Terry reward model trained on a preference dataset, beside the loop.

The result is a directory `labeller=proxy proxy.path=...` loads (gapstudy.rewards.ProxyLabeller). The pairs are
read and tokenised exactly as `data=dataset` reads them, and the Bradley-Terry step is the proxy trainer's.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from omegaconf import OmegaConf

from gapstudy import worlds
from gapstudy.config import check_name_or_path, validate_rm
from gapstudy.data.batches import collate
from gapstudy.data.preference import read_preference_rows
from gapstudy.errors import ConfigError, DataError, first_line
from gapstudy.rewards import bradley_terry_step, load_reward_model, pair_accuracy, vocab_size
from gapstudy.runtime import resolve_device
from gapstudy.sources import check_dataset
from gapstudy.worlds.hf import check_chat_template, prompt_encoder
from gapstudy.worlds.records import dataset_cache_dir


def validate(cfg):
    """Every setting `gapstudy train-rm` reads: config.validate_rm's, then the preference dataset's and the
    world's (world=hf loads only world.model's tokenizer, so only world.model and world.chat_template matter)."""
    cfg = validate_rm(cfg)
    check_dataset(cfg.data)
    if cfg.world.name == "hf":
        check_chat_template(cfg.world.chat_template)
        check_name_or_path("world.model", cfg.world.model)
    else:
        worlds.check(cfg)  # the built worlds' own settings (token_bandit's reward, synth_lm's task)
    return cfg


def _rm_tokenizer(cfg):
    """(tokenizer, prompt encoder or None, eos id, pad id, the world's policy) for `gapstudy train-rm`: world=hf
    loads only world.model's tokenizer (prompts rendered as its world renders them: the chat template, the
    system prompt); the built worlds are built (cached) for theirs."""
    if cfg.world.name == "hf":
        tokenizer, encoder = prompt_encoder(cfg.world)
        return tokenizer, encoder.ids, tokenizer.eos_token_id, tokenizer.pad_token_id, str(cfg.world.model)
    world = worlds.build_world(cfg, Path(cfg.paths.results))
    return world.tokenizer, world.encode_prompt, world.eos_token_id, world.pad_token_id, str(world.policy_path)


def train_reward_model(cfg, command: str | None = None, log=print) -> Path:
    """`gapstudy train-rm`: a Bradley-Terry reward model on the preference dataset at data.path.

    The pairs are tokenised with the world's tokenizer (as `data=dataset` reads them, with world=hf's chat template
    for text prompts), a seeded `rm.eval_fraction` of them is held out, and an AutoModelForSequenceClassification
    (num_labels=1) from `rm.base` (null: the world's policy) trains `rm.epochs` epochs of Adam at `rm.lr` on batches
    of `rm.batch_size` pairs. Each epoch logs the mean train loss and the held-out pair accuracy. The model, the
    world's tokenizer and rm_info.json go to `rm.out`, a directory `labeller=proxy proxy.path=...` loads."""
    r = cfg.rm
    torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    tokenizer, encode, eos, pad, policy = _rm_tokenizer(cfg)
    pairs = read_preference_rows(cfg.data, tokenizer, eos, encode, dataset_cache_dir(cfg.paths.results))
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
