"""train(): the one loop every regime runs through — the scientific control of the whole project.

The regime lives in two places only: when the sampler syncs to the policy (`sync_every`) and where batches come
from (`data`: the on-policy stream, a fixed dataset, or a replayed pair log). Nothing else here knows whether a
run is online or offline.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf, open_dict

from gapstudy import distributed, provenance
from gapstudy.algorithms import ALGORITHMS, stats_to_metrics
from gapstudy.data.batches import collate
from gapstudy.data.pair_log import PairLogWriter
from gapstudy.evaluation import Evaluator
from gapstudy.generation import HFGenerator, MixtureGenerator
from gapstudy.logprobs import token_logps
from gapstudy.metrics import JsonlLogger, WandbLogger, truncate_metrics
from gapstudy.rewards import make_labeller
from gapstudy.runtime import disable_dropout, frozen, load_policy, precision, resolve_device
from gapstudy.sources import make_source
from gapstudy.worlds import build_world


def due(step: int, every) -> bool:
    """True every `every` steps; never for inf or 0."""
    return not (every == 0 or math.isinf(every)) and step % int(every) == 0


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


def make_logger(cfg, run_dir: Path):
    if cfg.logger.name == "wandb":
        return WandbLogger(run_dir, cfg.get("run_name") or run_dir.name,
                           OmegaConf.to_container(cfg, resolve=True), cfg.logger.project, cfg.logger.mode)
    return JsonlLogger(run_dir)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training, with the step it reached and the checkpoint a re-run resumes from."""


def train(cfg, run_dir: Path) -> dict:
    """Run (or resume) one training run into run_dir; returns the final evaluation metrics."""
    where = {"step": None, "checkpoint": 0}  # kept up to date by _train, for the message of an interruption
    try:
        return _train(cfg, run_dir, where)
    except KeyboardInterrupt as e:
        if isinstance(e, Interrupted) or where["step"] is None:
            raise
        resume = (f"re-run the same command to resume from step {where['checkpoint']}" if where["checkpoint"] else
                  "no checkpoint yet (checkpoint_every), a re-run starts over")
        raise Interrupted(f"interrupted at step {where['step']} of {Path(run_dir).name}; {resume}") from None


def _train(cfg, run_dir: Path, where: dict) -> dict:
    run_dir = Path(run_dir)
    torch.set_num_threads(int(cfg.threads))
    rank, world_size, device = distributed.setup(resolve_device(cfg.device))
    main = rank == 0  # evaluates, logs and writes; every rank trains on its shard of the global batch
    sharded = world_size > 1 and cfg.get("parallel", "ddp") == "fsdp"
    results = Path(cfg.paths.results)

    #### SET-UP: everything that can reject the config runs before anything is written to run_dir ####
    with distributed.rank_zero_first(rank, world_size):
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
    whole = distributed.FullPolicy(policy, sharded, frozen_dtype)  # the policy as one model: syncs, evaluation, saving
    if sharded:
        policy = distributed.shard_model(policy)
    optimizer = make_optimizer(cfg, policy)

    if main:
        with open_dict(cfg):
            cfg.environment = provenance.environment(device)  # versions, CPU kernels, device, threads
        provenance.warn_if_environment_changed(run_dir, cfg.environment)
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / "config.yaml")
    pair_log = PairLogWriter(run_dir, bool(cfg.save_pair_log) and main)
    counters = {"samples": 0, "updates": 0, "seconds": 0.0}
    start = 0
    state_path = run_dir / "state.pt"
    state = load_state(run_dir, main)
    if state is not None:  # resume where the last checkpoint left off (every rank reads rank 0's file)
        start, counters = state["step"], state["counters"]
        where["checkpoint"] = start
        distributed.load_policy_state(policy, optimizer, state, sharded)
        source.load_state_dict(state["source"])
        if sampler is not None:
            sampler.load_state_dict(state["sampler"])
        if reference is not anchor:
            reference.load_state_dict(state["reference"])
        pair_log.drop_after(start)
        if main:
            truncate_metrics(run_dir / "metrics.jsonl", start - 1)
    elif main and (run_dir / "metrics.jsonl").exists():
        (run_dir / "metrics.jsonl").unlink()  # a run that died before its first checkpoint starts over
        pair_log.drop_after(0)
    logger = make_logger(cfg, run_dir) if main else NullLogger()
    bar = _progress(cfg, start, steps, disable=not main)
    snapshots: dict[int, list] = {}  # step after which to save -> fractions of `steps`
    for fraction in cfg.get("snapshots") or ():
        snapshots.setdefault(max(1, round(float(fraction) * steps)), []).append(fraction)
    last_eval: dict = {}
    batch = reference_logps = None

    for step in range(start, steps):
        where["step"] = step
        #### BEGIN EVALUATION ####
        if step == 0 or due(step, cfg.eval.every):
            model = whole(counters["updates"])  # every rank joins the gather when sharded
            if main:
                with autocast:
                    last_eval = evaluator(model, step)
                logger.log(last_eval, step)
        #### END EVALUATION ####
        tic = time.perf_counter()
        policy.train()

        #### DATA: the regime ####
        if sampler is not None and due(step, cfg.sync_every):  # 1 = online, k = semi-online, inf = never (offline)
            sampler.sync_weights(whole(counters["updates"]), version=step)
        if step > 0 and due(step, cfg.ref_sync_every):
            reference.load_state_dict(whole(counters["updates"]).state_dict())
        if step % int(cfg.reuse) == 0:  # a fresh batch, then `reuse` gradient steps on it
            with autocast:
                rows, info = source.rows(step, sampler)  # the global batch: the same on every rank
            pair_log.write(rows)
            counters["samples"] += info["samples"]
            local = distributed.shard(rows, rank, world_size)
            # an empty shard computes on one row with weight 0, so that it joins every collective
            batch = collate(local or rows[:1], world.pad_token_id).to(device) if rows else None
            n_local = batch.responses.shape[0] if local else 0
            reference_logps = None
            if batch is not None and algorithm.needs_reference:
                with torch.no_grad(), autocast:
                    reference_logps = token_logps(reference, batch.prompts, batch.prompt_mask, batch.responses,
                                                  batch.response_mask)
        if not rows:  # every prompt was a tie: nothing to learn from this step
            logger.log({"train/examples": 0, "train/skipped": info["skipped"]}, step)
            continue

        #### LOSS AND UPDATE ####
        optimizer.zero_grad(set_to_none=True)
        n_total = distributed.total(n_local, world_size, device)
        with autocast:
            policy_logps = token_logps(policy, batch.prompts, batch.prompt_mask, batch.responses, batch.response_mask)
            loss, stats = algorithm.objective(batch, policy_logps, reference_logps, cfg.algo)
        # this shard's share of the global-batch mean (exactly 1 with one process)
        (loss * (n_local * world_size / n_total) if world_size > 1 else loss).backward()
        local_means = {"train/loss": loss.item(), **stats_to_metrics(stats),
                       "train/reward": float(batch.rewards.nanmean()) if not batch.rewards.isnan().all() else math.nan,
                       "gen/length": float(batch.response_mask.sum(-1).float().mean())} if n_local else {}
        distributed.average_gradients(policy, world_size, sharded)
        clip = float("inf") if cfg.grad_clip is None else float(cfg.grad_clip)
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), clip)
        optimizer.step()
        counters["updates"] += 1
        counters["seconds"] += time.perf_counter() - tic

        #### LOG ####
        metrics = {
            **distributed.weighted_means(local_means, n_local, n_total, world_size, device),
            "train/grad_norm": float(grad_norm.full_tensor() if sharded else grad_norm),
            "train/examples": len(rows), "train/skipped": info["skipped"],
            "counters/samples": counters["samples"], "counters/updates": counters["updates"],
            "time/seconds": counters["seconds"],
        }
        versions = torch.tensor([-1 if r.get("sampler_version") is None else int(r["sampler_version"]) for r in rows])
        known = versions >= 0
        if known.any():
            metrics["gen/staleness"] = float((step - versions[known]).float().mean())
        logger.log(metrics, step)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", win=f"{last_eval.get('eval/win_rate', math.nan):.2f}",
                        kl=f"{last_eval.get('eval/kl', math.nan):.2f}", refresh=False)
        for fraction in snapshots.get(step + 1, ()):  # e.g. Tang et al.'s step-800 policy
            model = whole(counters["updates"])
            if main:
                model.save_pretrained(run_dir / f"snapshot-{fraction}")
        if cfg.checkpoint_every and (step + 1) % int(cfg.checkpoint_every) == 0 and (step + 1) % int(cfg.reuse) == 0:
            state = distributed.policy_state(policy, optimizer, sharded)  # every rank joins when sharded
            if main:
                pair_log.flush()
                _save_state(state_path, step + 1, counters, state, source, sampler, reference, anchor)
                where["checkpoint"] = step + 1

    #### FINAL EVALUATION AND ARTIFACTS ####
    model = whole(counters["updates"])
    if not main:
        bar.close()
        distributed.teardown(world_size)
        return {}
    with autocast:
        final = evaluator(model, steps)
    logger.log(final, steps)
    pair_log.flush()
    if cfg.save_checkpoint:
        model.save_pretrained(run_dir / "checkpoint")
        world.tokenizer.save_pretrained(run_dir / "checkpoint")
    (run_dir / "final.json").write_text(json.dumps({"step": steps, **final}, indent=1))
    _drop_states(run_dir)
    logger.close()
    bar.close()
    distributed.teardown(world_size)
    return final


def _save_state(path, step, counters, policy_state, source, sampler, reference, anchor) -> None:
    state = {"step": step, "counters": dict(counters), **policy_state, "source": source.state_dict()}
    if sampler is not None:
        state["sampler"] = sampler.state_dict()
    if reference is not anchor:
        state["reference"] = reference.state_dict()
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    if path.exists():  # the previous checkpoint stays, for when this one turns out unreadable
        path.replace(path.with_name(PREVIOUS_STATE))
    tmp.replace(path)


PREVIOUS_STATE = "state.prev.pt"
STATE_KEYS = ("step", "counters", "source")


def load_state(run_dir: Path, main: bool = True) -> dict | None:
    """The newest readable resumable state: state.pt, else the checkpoint before it (state.prev.pt). A file passed
    over is said in one line on stderr and removed (by rank 0), so the next checkpoint keeps the readable one as
    its previous. None when there is none: then the run starts over (a warning says so when unreadable files were
    there), which gives the same run an uninterrupted one would have."""
    import sys

    skipped = []
    for name in ("state.pt", PREVIOUS_STATE):
        path = Path(run_dir) / name
        if not path.exists():
            continue
        try:
            state = torch.load(path, weights_only=False)
            if not isinstance(state, dict) or any(k not in state for k in STATE_KEYS):
                raise ValueError("not a gapstudy checkpoint")
        except Exception as e:  # noqa: BLE001 -- a truncated or corrupt file: pass it over, say why
            reason = str(e).strip().splitlines()[0][:80] if str(e).strip() else ""
            skipped.append(f"{name} is unreadable ({type(e).__name__}: {reason}), removed")
            if main:
                path.unlink(missing_ok=True)
            continue
        if skipped and main:
            print(f"gapstudy: warning: {Path(run_dir).name}: {'; '.join(skipped)}; resuming from {name} "
                  f"(step {state['step']})", file=sys.stderr)
        return state
    if skipped and main:
        print(f"gapstudy: warning: {Path(run_dir).name}: {'; '.join(skipped)}; no readable checkpoint, the run "
              "starts over", file=sys.stderr)
    return None


def _drop_states(run_dir: Path) -> None:
    for name in ("state.pt", PREVIOUS_STATE):
        (Path(run_dir) / name).unlink(missing_ok=True)


def _progress(cfg, start: int, steps: int, disable: bool = False):
    from tqdm.auto import tqdm

    return tqdm(total=steps, initial=start, disable=disable or not cfg.progress, desc=cfg.get("run_name") or "train",
                dynamic_ncols=True, leave=False)
