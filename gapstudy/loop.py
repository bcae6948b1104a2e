"""train(): the one loop every regime runs through — the scientific control of the whole project.

The regime lives in two places only: when the sampler syncs to the policy (`sync_every`) and where batches come
from (`data`: the on-policy stream, a fixed dataset, or a replayed pair log). Nothing else here knows whether a
run is online or offline. `setup` builds what the step needs; `train` is the step, top to bottom. How several
processes share the work is the parallelism strategy's business (parallel.py), what a resumed run needs the
checkpoint's (checkpoint.py): the loop asks them and never branches on ranks.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf, open_dict

from gapstudy import provenance
from gapstudy.algorithms import ALGORITHMS, stats_to_metrics
from gapstudy.checkpoint import Checkpoint
from gapstudy.data.batches import collate
from gapstudy.data.pair_log import PairLogWriter
from gapstudy.evaluation import Evaluator
from gapstudy.generation import HFGenerator, MixtureGenerator
from gapstudy.logprobs import token_logps
from gapstudy.metrics import JsonlLogger, WandbLogger
from gapstudy.parallel import make_strategy
from gapstudy.rewards import make_labeller
from gapstudy.runtime import disable_dropout, frozen, load_policy, precision, resolve_device
from gapstudy.sources import make_source
from gapstudy.worlds import build_world


def due(step: int, every) -> bool:
    """True every `every` steps; never for inf or 0."""
    return not (every == 0 or math.isinf(every)) and step % int(every) == 0


def eval_due(step: int, eval_cfg) -> bool:
    """Evaluate before training step `step`? Always at step 0, every `eval.every` steps and, with `eval.log_spaced`,
    at every power of two, so a fast arm has points under low KL budgets. The end of a run is evaluated apart."""
    power_of_two = step > 0 and step & (step - 1) == 0
    return step == 0 or due(step, eval_cfg.every) or (bool(eval_cfg.get("log_spaced", False)) and power_of_two)


def eval_steps(eval_cfg, steps: int) -> set[int]:
    """Every step at which a run of `steps` steps logs an evaluation: the due steps below `steps`, and the end."""
    return {step for step in range(steps) if eval_due(step, eval_cfg)} | {steps}


def _policy_path(value: str, world) -> str:
    """A checkpoint directory, or `sft` for the world's initial policy (even when init_from starts elsewhere)."""
    return str(world.policy_path) if value == "sft" else value


def stale_at_checkpoints(cfg) -> bool:
    """Can a checkpoint (every checkpoint_every steps, at multiples of reuse) fall on a step that does not sync?
    Then a resumed run must restore the sampler's stale weights. Never with sync_every=inf: the sampler keeps the
    initial weights, which a resumed run loads again."""
    every, sync = int(cfg.checkpoint_every), cfg.sync_every
    if every == 0 or math.isinf(sync):
        return False
    period = every * int(cfg.reuse) // math.gcd(every, int(cfg.reuse))  # checkpoints land on multiples of this
    return period % int(sync) != 0


def make_sampler(cfg, world, policy, device, dtype=None):
    """The generator of training rollouts: a copy of the policy (synced every sync_every steps), or with
    `sampler_from` one or more fixed policies (sync_every=inf), e.g. the final online policy for Tang et al.'s
    sub-optimal data."""
    make = lambda model: HFGenerator(model, world.max_new_tokens, cfg.temperature, world.eos_token_id,
                                     world.pad_token_id, dtype)
    if cfg.generator == "vllm":
        from gapstudy import generation

        engine, params = generation.vllm_engine(cfg.init_from or world.policy_path, float(cfg.vllm.gpu_memory_utilization),
                                                str(cfg.vllm.dtype), int(cfg.seed))
        return generation.VLLMGenerator(policy, engine, params, world.max_new_tokens, cfg.temperature,
                                        world.eos_token_id, world.pad_token_id, stale_at_checkpoints(cfg))
    sources = cfg.get("sampler_from")
    if sources is None:
        return make(policy)
    paths = [sources] if isinstance(sources, str) else list(sources)
    members = [make(load_policy(_policy_path(p, world), device)) for p in paths]
    for member in members:
        member.version = -1  # not a version of the trained policy: no staleness is logged
    return members[0] if len(members) == 1 else MixtureGenerator(members)


def make_optimizer(cfg, policy):
    params = [p for p in policy.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr)


class NullLogger:
    """The logger of ranks other than 0: rank 0 writes every metric."""

    def log(self, metrics: dict, step: int) -> None:
        pass

    def close(self) -> None:
        pass


def make_logger(cfg, run_dir: Path, main: bool):
    if not main:
        return NullLogger()
    if cfg.logger.name == "wandb":
        return WandbLogger(run_dir, cfg.get("run_name") or run_dir.name,
                           OmegaConf.to_container(cfg, resolve=True), cfg.logger.project, cfg.logger.mode)
    return JsonlLogger(run_dir)


@dataclass
class Run:
    """What the step needs, built by setup()."""

    world: object  # tokenizer, prompts, gold reward (worlds/)
    algorithm: object  # the objective and whether it needs reference log-probs (algorithms.py)
    strategy: object  # single process, replicated or sharded (parallel.py)
    policy: torch.nn.Module  # the trained module (sharded in place with parallel=fsdp)
    optimizer: torch.optim.Optimizer
    reference: torch.nn.Module  # pi_ref of the loss: the anchor, or a copy that syncs every ref_sync_every steps
    source: object  # where batches come from: the on-policy stream, a dataset, D_golden, a replayed log
    sampler: object | None  # the generator of rollouts; None when the source reads fixed rows
    evaluator: Evaluator
    pair_log: PairLogWriter
    checkpoint: Checkpoint
    autocast: object  # the precision context of forward passes
    steps: int  # cfg.steps, or fewer when a replayed log runs out
    snapshots: dict[int, list]  # step after which to save the policy -> fractions of `steps`


def setup(cfg, run_dir: Path) -> Run:
    """Build the world, labeller, policies, source, sampler, evaluator, optimizer and checkpoint of one run.
    Everything that can reject the config runs before anything is written to run_dir; then rank 0 writes
    config.yaml with the environment the run runs under."""
    torch.set_num_threads(int(cfg.threads))
    strategy = make_strategy(cfg.get("parallel", "ddp"), resolve_device(cfg.device))
    device, results = strategy.device, Path(cfg.paths.results)
    with strategy.rank_zero_first():
        world = build_world(cfg, results)
        labeller, proxy = make_labeller(cfg, world, results, device)
    algorithm = ALGORITHMS[cfg.algo.name]
    torch.manual_seed(int(cfg.seed))  # the global stream (dropout, if kept) starts from the run's seed
    frozen_dtype, autocast = precision(cfg, device)
    policy = load_policy(cfg.init_from or world.policy_path, device)
    if cfg.get("disable_dropout", True):
        disable_dropout(policy)
    anchor = frozen(policy, frozen_dtype)  # pi_init: the KL anchor of evaluation and, unless it syncs, the reference
    reference = anchor if math.isinf(cfg.ref_sync_every) else frozen(policy, frozen_dtype)
    baseline = anchor if cfg.eval.baseline is None else frozen(load_policy(_policy_path(cfg.eval.baseline, world),
                                                                            device), frozen_dtype)
    source = make_source(cfg, world, labeller, algorithm.kind, int(cfg.seed))
    sampler = make_sampler(cfg, world, policy, device, frozen_dtype) if source.needs_sampler else None
    steps = int(cfg.steps) if source.length is None else min(int(cfg.steps), source.length)  # a log can run out
    evaluator = Evaluator(cfg, world, anchor, baseline, proxy, device)
    policy = strategy.wrap(policy, frozen_dtype)  # after the sampler and frozen copies took the whole policy
    optimizer = make_optimizer(cfg, policy)
    if strategy.main:
        with open_dict(cfg):
            cfg.environment = provenance.environment(device)  # versions, CPU kernels, device, threads
        provenance.warn_if_environment_changed(run_dir, cfg.environment)
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / "config.yaml")
    pair_log = PairLogWriter(run_dir, bool(cfg.save_pair_log) and strategy.main)
    checkpoint = Checkpoint(run_dir, cfg.checkpoint_every, cfg.reuse, strategy, optimizer, pair_log, source=source,
                            sampler=sampler, reference=reference, anchor=anchor)
    snapshots: dict[int, list] = {}
    for fraction in cfg.get("snapshots") or ():
        snapshots.setdefault(max(1, round(float(fraction) * steps)), []).append(fraction)
    return Run(world, algorithm, strategy, policy, optimizer, reference, source, sampler, evaluator, pair_log,
               checkpoint, autocast, steps, snapshots)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training, with the step it reached and the checkpoint a re-run resumes from."""


@contextlib.contextmanager
def naming_the_step(run_dir: Path, checkpoint: Checkpoint):
    """Turn Ctrl-C inside the block into Interrupted, naming the step reached (the block keeps where["step"] up to
    date) and the checkpoint a re-run resumes from; before the first step it passes unchanged."""
    where = {"step": None}
    try:
        yield where
    except KeyboardInterrupt as e:
        if isinstance(e, Interrupted) or where["step"] is None:
            raise
        resume = (f"re-run the same command to resume from step {checkpoint.step}" if checkpoint.step else
                  "no checkpoint yet (checkpoint_every), a re-run starts over")
        raise Interrupted(f"interrupted at step {where['step']} of {Path(run_dir).name}; {resume}") from None


def train(cfg, run_dir: Path) -> dict:
    """Run (or resume) one training run into run_dir; returns the final evaluation metrics ({} on ranks other
    than 0). Ctrl-C ends it with Interrupted, naming the step and the checkpoint a re-run resumes from."""
    run_dir = Path(run_dir)
    run = setup(cfg, run_dir)
    strategy, policy, optimizer, algorithm = run.strategy, run.policy, run.optimizer, run.algorithm
    sampler, reference, autocast = run.sampler, run.reference, run.autocast
    start, counters = run.checkpoint.restore()  # where the last checkpoint left off, else step 0
    logger = make_logger(cfg, run_dir, strategy.main)
    bar = _progress(cfg, start, run.steps, disable=not strategy.main)
    last_eval: dict = {}
    rows, batch, reference_logps = [], None, None

    with naming_the_step(run_dir, run.checkpoint) as where:
        for step in range(start, run.steps):
            where["step"] = step
            #### BEGIN EVALUATION ####
            if eval_due(step, cfg.eval):
                model = strategy.full_policy()  # every rank joins the gather when sharded
                if strategy.main:
                    with autocast:
                        last_eval = run.evaluator(model, step)
                    logger.log(last_eval, step)
            #### END EVALUATION ####
            tic = time.perf_counter()
            policy.train()

            #### DATA: the regime ####
            if sampler is not None and due(step, cfg.sync_every):  # 1 = online, k = semi-online, inf = offline
                sampler.sync_weights(strategy.full_policy(), version=step)
            if step > 0 and due(step, cfg.ref_sync_every):
                reference.load_state_dict(strategy.full_policy().state_dict())
            if step % int(cfg.reuse) == 0:  # a fresh batch, then `reuse` gradient steps on it
                with autocast:
                    rows, info = run.source.rows(step, sampler)  # the global batch: the same on every rank
                run.pair_log.write(rows)
                counters["samples"] += info["samples"]
                batch = collate(strategy.shard(rows), run.world.pad_token_id).to(strategy.device) if rows else None
                reference_logps = None
                if batch is not None and algorithm.needs_reference:
                    with torch.no_grad(), autocast:
                        reference_logps = token_logps(reference, batch.prompts, batch.prompt_mask, batch.responses,
                                                      batch.response_mask)

            #### LOSS AND UPDATE: none when every prompt was a tie ####
            log_due = due(step, cfg.log_every) or eval_due(step + 1, cfg.eval) or step + 1 == run.steps
            if not rows:
                if log_due:
                    logger.log({"train/examples": 0, "train/skipped": info["skipped"]}, step)
            else:
                optimizer.zero_grad(set_to_none=True)
                with autocast:
                    policy_logps = token_logps(policy, batch.prompts, batch.prompt_mask, batch.responses,
                                               batch.response_mask)
                    loss, stats = algorithm.objective(batch, policy_logps, reference_logps, cfg.algo)
                strategy.scale(loss).backward()  # this shard's share of the global-batch mean
                means = batch_means(loss, stats, batch)
                strategy.reduce_gradients()
                grad_norm = strategy.clip_gradients(cfg.grad_clip)
                strategy.step(optimizer)
                counters["updates"] += 1
                counters["seconds"] += time.perf_counter() - tic

                #### LOG ####
                metrics = {**strategy.means(means), "train/grad_norm": grad_norm, "train/examples": len(rows),
                           "train/skipped": info["skipped"], "counters/samples": counters["samples"],
                           "counters/updates": counters["updates"], "time/seconds": counters["seconds"],
                           **staleness(rows, step)}
                if log_due:  # every log_every steps, and before each evaluation (its counters are then exact)
                    logger.log(metrics, step)
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", refresh=False,
                                win=f"{last_eval.get('eval/win_rate', math.nan):.2f}",
                                kl=f"{last_eval.get('eval/kl', math.nan):.2f}")

            #### SNAPSHOTS AND CHECKPOINT: on every step, a step of ties included ####
            for fraction in run.snapshots.get(step + 1, ()):  # e.g. Tang et al.'s step-800 policy
                model = strategy.full_policy()
                if strategy.main:
                    model.save_pretrained(run_dir / f"snapshot-{fraction}")
            if run.checkpoint.due(step + 1):
                run.checkpoint.save(step + 1, counters)

        #### FINAL EVALUATION AND ARTIFACTS ####
        model = strategy.full_policy()
        final: dict = {}
        if strategy.main:
            with autocast:
                final = run.evaluator(model, run.steps)
            logger.log(final, run.steps)
            run.pair_log.flush()
            if cfg.save_checkpoint:
                model.save_pretrained(run_dir / "checkpoint")
                run.world.tokenizer.save_pretrained(run_dir / "checkpoint")
            (run_dir / "final.json").write_text(json.dumps({"step": run.steps, **final}, indent=1))
            run.checkpoint.drop()
    logger.close()
    bar.close()
    strategy.teardown()
    return final


def batch_means(loss: torch.Tensor, stats: dict, batch) -> dict[str, float]:
    """This rank's means over its batch: the loss, the objective's statistics, reward and response length."""
    rewards = batch.rewards
    return {"train/loss": loss.item(), **stats_to_metrics(stats),
            "train/reward": float(rewards.nanmean()) if not rewards.isnan().all() else math.nan,
            "gen/length": float(batch.response_mask.sum(-1).float().mean())}


def staleness(rows: list[dict], step: int) -> dict[str, float]:
    """gen/staleness: the step minus the sampler's weight version, over the rows whose version is known."""
    versions = torch.tensor([-1 if r.get("sampler_version") is None else int(r["sampler_version"]) for r in rows])
    known = versions >= 0
    return {"gen/staleness": float((step - versions[known]).float().mean())} if known.any() else {}


def _progress(cfg, start: int, steps: int, disable: bool = False):
    from tqdm.auto import tqdm

    return tqdm(total=steps, initial=start, disable=disable or not cfg.progress, desc=cfg.get("run_name") or "train",
                dynamic_ncols=True, leave=False)
