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
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from gapstudy import golden, judge
from gapstudy.cache import cached_artifact
from gapstudy.errors import ConfigError, first_line

INFO_FILES = ("proxy.json", "rm_info.json")  # written by train_proxy / gapstudy.train_rm


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
    """One forward over a pair batch laid out as `data.batches.Batch`: rows [0, B) chosen, [B, 2B) rejected."""
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


def train_proxy(world, cfg, cache_root: Path, device="cpu") -> Path:
    """Train (once; cached by a hash of the world and proxy settings) and return the proxy RM directory."""
    def build(directory: Path) -> None:
        p = cfg.proxy
        s, gold, _, loser, train_idx, test_idx = golden.draw(world, cfg, device)
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

    return cached_artifact(cache_root, f"proxy_{world.name}", golden.spec(cfg), build)


# ---------------------------------------------------------------- choosing the labeller
LABELLERS = {
    "gold": "the world's gold reward",
    "proxy": "a Bradley-Terry RM trained on gold-labelled reference pairs, or proxy.path (gapstudy train-rm)",
    "judge": "a pairwise LLM judge (judge.model), both response orders, inconsistent verdicts are ties",
}


def check(cfg) -> None:
    """The labeller's settings: labeller names one, proxy.path is a directory, labeller=judge has a usable judge."""
    if cfg.labeller not in LABELLERS:
        raise ConfigError(f"labeller={cfg.labeller!r} is invalid; valid choices: {', '.join(LABELLERS)}")
    path = OmegaConf.select(cfg, "proxy.path")
    if path is not None:
        if not Path(str(path)).expanduser().exists():
            raise ConfigError(f"proxy.path={path!r} does not exist")
        if not Path(str(path)).expanduser().is_dir():
            raise ConfigError(f"proxy.path={path!r} is not a directory; valid: a reward model directory written by "
                              "gapstudy train-rm")
    if cfg.labeller == "judge":
        judge.check(cfg)


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
    """(labeller of training samples, proxy scored at evaluation or None) for cfg.labeller, its settings checked."""
    check(cfg)
    if cfg.labeller == "gold":
        return gold_labeller(world), None
    if cfg.labeller == "judge":
        return judge.PairwiseJudge.from_config(cfg, world, device), None
    path = cfg.proxy.get("path")
    if path is not None:
        proxy = _load_proxy(path, world, device)  # trained beforehand (gapstudy train-rm): nothing is trained here
    else:
        proxy = ProxyLabeller(train_proxy(world, cfg, cache_root, device), device)
    return proxy, proxy
