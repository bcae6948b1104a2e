"""Worlds: where a run's prompts, initial policy and gold rewards come from (the first stage of the flow).

A world builds (once, cached under the results root by a hash of its config) a tokenizer and an initial policy
saved with `save_pretrained`; the loop loads them back by path with the Auto classes, exactly as it would load a
hub model. Add a world by writing a module with a `build(cfg, cache_dir) -> World` and listing it in `WORLDS`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from gapstudy.errors import ConfigError

# world name -> (module, one-line description); modules are imported lazily
WORLDS: dict[str, tuple[str, str]] = {
    "token_bandit": ("gapstudy.worlds.token_bandit", "Tajwar et al.'s GPT-nano token bandit: 1-token prompts, 9-token responses, gold rewards R1/R2"),
    "synth_lm": ("gapstudy.worlds.synth_lm", "a tiny GPT pretrained in-process on math (verifiable) and chat (gold RM) prompts"),
    "toy8x8": ("gapstudy.worlds.toy8x8", "Xu et al.'s 8x8 toy: 8 one-hot prompts, 8 one-token responses, diagonal optimum, a fixed dataset covering few pairs"),
    "hf": ("gapstudy.worlds.hf", "a transformers causal LM by hub name or local path, prompts from a hub or local dataset, math-verify / GSM8K / reward-model rewards"),
}


@dataclass
class World:
    name: str
    policy_path: Path  # save_pretrained directory of the initial (SFT) policy and its tokenizer
    tokenizer: object  # a transformers tokenizer (decode, pad/eos ids)
    train_prompts: list[list[int]]  # token ids, one list per prompt
    train_tasks: list[str]  # the prompt family of each training prompt
    eval_prompts: list[list[int]]  # held-out prompts for evaluation
    eval_tasks: list[str]
    max_new_tokens: int  # response length limit
    eos_token_id: int | None  # None: responses always run to max_new_tokens
    pad_token_id: int
    # gold(prompts [N, P] left-padded, prompt_mask [N, P] | None, responses [N, L], response_mask [N, L] bool,
    #      tasks list[N] of str) -> rewards [N] float: the labeller signature
    gold: Callable[..., torch.Tensor]
    binary_tasks: frozenset = field(default_factory=frozenset)  # tasks whose gold reward is a 0/1 verifier
    tasks: tuple[str, ...] = ("default",)
    # text or chat messages -> prompt token ids as the policy sees them (world=hf: its chat template); None: the
    # tokenizer's plain encoding. Used for the text and chat-message prompts of preference datasets (data=dataset,
    # train-rm).
    encode_prompt: Callable | None = None
    # (policy, reference) -> {eval/ key: value}: metrics only this world can compute, added to every evaluation
    # (toy8x8: exact probability masses on the diagonal and on the dataset's uncovered cells); None: none
    extra_metrics: Callable | None = None


def check(cfg) -> None:
    """The world's settings (on a config that config.validate passed): world.name names a world, the world's own
    `validate` (token_bandit's reward, synth_lm's task, ...), eval.tasks among its prompt families."""
    if cfg.world.name not in WORLDS:
        raise ConfigError(f"world={cfg.world.name!r} is invalid; valid choices: {', '.join(WORLDS)}")
    module = importlib.import_module(WORLDS[cfg.world.name][0])
    if hasattr(module, "validate"):
        module.validate(cfg)
    tasks = cfg.eval.get("tasks")
    if tasks is not None:
        # worlds with fixed families check names here; world=hf's come from its data (checked by the Evaluator)
        world_tasks = getattr(module, "TASKS", None)
        names = [tasks] if isinstance(tasks, str) else list(tasks)
        bad = [t for t in names if not isinstance(t, str) or (world_tasks is not None and t not in world_tasks)]
        if bad or isinstance(tasks, str) or not names:
            valid = f"a list of {', '.join(world_tasks)}" if world_tasks else "a non-empty list of task names"
            raise ConfigError(f"eval.tasks={tasks if isinstance(tasks, str) else names!r} is invalid; valid: {valid}")


def build_world(cfg, cache_root: Path) -> World:
    """The world cfg.world names, its settings checked, built (or loaded from the cache under cache_root)."""
    check(cfg)
    return importlib.import_module(WORLDS[cfg.world.name][0]).build(cfg, Path(cache_root))


def word_level_tokenizer(words: list[str], specials: list[str], directory: Path | None = None):
    """A real transformers tokenizer over a fixed word list (ids follow `words`, then `specials`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(list(words) + list(specials))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>" if "<unk>" in vocab else None))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    kwargs = {s.strip("<>") + "_token": s for s in specials if s.strip("<>") in ("pad", "eos", "bos", "unk", "sep")}
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
    if directory is not None:
        tok.save_pretrained(directory)
    return tok


# test hook: called with the number of finished steps after each pretraining step (a test raises there to
# interrupt a build at a chosen step)
_after_step: Callable[[int], None] | None = None
CHECKPOINTS = 20  # a checkpointed pretraining saves its state this many times over its steps


def pretrain(model, batches: Callable[[int], tuple], steps: int, lr: float, seed: int, *,
             generators: tuple = (), checkpoint: Path | None = None, progress: bool = False,
             desc: str = "pretraining") -> list[float]:
    """Plain supervised warm start: batches(i) -> (input_ids, attention_mask or None, soft or hard targets, mask).

    With `checkpoint` (a file in the cache's RESUME folder) the state is saved atomically every steps/CHECKPOINTS
    steps: model, optimizer, schedule, the torch RNG, the states of `generators` (the torch.Generators `batches`
    draws from), the losses and the step. A later call with the same file resumes from it and ends bit-identical to
    an uninterrupted run. `progress`: a bar on stderr."""
    import sys

    from tqdm.auto import tqdm

    def fresh():
        torch.manual_seed(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / 50) * max(0.05, 1 - i / steps))
        return opt, sched

    opt, sched = fresh()
    losses: list[float] = []
    start = 0
    every = max(1, -(-steps // CHECKPOINTS))
    settings = {"steps": steps, "lr": lr, "seed": seed}
    if checkpoint is not None and Path(checkpoint).exists():
        initial = ({k: v.clone() for k, v in model.state_dict().items()}, [g.get_state() for g in generators])
        try:
            state = torch.load(checkpoint, weights_only=False)
            if state["settings"] != settings:
                raise ValueError(f"it was made with {state['settings']}")
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            for generator, saved in zip(generators, state["generators"], strict=True):
                generator.set_state(saved)
            torch.set_rng_state(state["rng"])
            start, losses = int(state["step"]), list(state["losses"])
            if progress:
                print(f"{desc}: resuming at step {start}/{steps}", file=sys.stderr)
        except Exception as error:  # noqa: BLE001 -- an unusable checkpoint costs the time it saved, nothing else
            print(f"gapstudy: warning: {desc}: cannot resume from {checkpoint} ({type(error).__name__}: {error}); "
                  "starting over", file=sys.stderr)
            model.load_state_dict(initial[0])
            for generator, saved in zip(generators, initial[1]):
                generator.set_state(saved)
            opt, sched = fresh()
    bar = tqdm(total=steps, initial=start, desc=desc, file=sys.stderr, disable=not progress, leave=False,
               dynamic_ncols=True)
    model.train()
    try:
        for i in range(start, steps):
            input_ids, attention_mask, targets, loss_mask = batches(i)
            logits = model(input_ids, attention_mask=attention_mask).logits[:, :-1]
            if targets.dtype.is_floating_point:  # soft targets [B, T-1, V]
                per_token = -(targets * torch.log_softmax(logits, -1)).sum(-1)
            else:
                per_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
            loss = (per_token * loss_mask).sum() / loss_mask.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
            if checkpoint is not None and (i + 1) % every == 0 and i + 1 < steps:
                _save_pretrain_state(Path(checkpoint), {
                    "settings": settings, "step": i + 1, "losses": losses, "model": model.state_dict(),
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": torch.get_rng_state(),
                    "generators": [g.get_state() for g in generators]})
            if _after_step is not None:
                _after_step(i + 1)
    finally:
        bar.close()
    model.eval()
    return losses


def _save_pretrain_state(path: Path, state: dict) -> None:
    """torch.save, then rename: a kill mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
