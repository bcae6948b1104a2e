"""Algorithms: a dict from name to what the loop needs to know (pairs or groups, and how a batch meets its loss).

Each `objective` slices a collated Batch and its per-token log-probs into the arguments of a pure loss in
losses.py and returns (scalar loss, stats). The loop calls `objective` and nothing else algorithm-specific.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from gapstudy import losses
from gapstudy.errors import ConfigError


@dataclass(frozen=True)
class Algorithm:
    kind: str  # "pairs" (chosen/rejected) | "groups" (all n samples of a prompt)
    needs_reference: bool  # False: the reference forward pass is skipped entirely
    description: str
    objective: Callable  # (batch, policy_logps [N, L], reference_logps [N, L] | None, algo cfg) -> (loss, stats)


def _pair_logps(batch, token_logps, reduction):
    seq = losses.sequence_logps(token_logps, batch.response_mask, reduction)  # [2B]
    return seq[: batch.n_pairs], seq[batch.n_pairs :]


def _dpo(batch, policy, reference, a):
    pc, pr = _pair_logps(batch, policy, a.logp_reduction)
    rc, rr = _pair_logps(batch, reference, a.logp_reduction)
    loss, stats = losses.dpo_loss(pc, pr, rc, rr, float(a.beta))
    return loss.mean(), stats


def _ipo(batch, policy, reference, a):
    pc, pr = _pair_logps(batch, policy, a.logp_reduction)
    rc, rr = _pair_logps(batch, reference, a.logp_reduction)
    loss, stats = losses.ipo_loss(pc, pr, rc, rr, float(a.beta), form=a.form)
    return loss.mean(), stats


def _best_of_2(batch, policy, reference, a):
    pc, _ = _pair_logps(batch, policy, a.logp_reduction)
    rc, _ = _pair_logps(batch, reference, a.logp_reduction)
    loss, _ = losses.best_of_2_loss(pc)
    return loss.mean(), {"chosen_logratio": (pc - rc).mean().detach()}  # logged for Tang et al.'s Fig. 8 (claim 10)


def _simpo(batch, policy, reference, a):
    pc, pr = _pair_logps(batch, policy, a.logp_reduction)
    loss, stats = losses.simpo_loss(pc, pr, float(a.beta), float(a.gamma))
    return loss.mean(), stats


def _orpo(batch, policy, reference, a):
    pc, pr = _pair_logps(batch, policy, a.logp_reduction)
    loss, stats = losses.orpo_loss(pc, pr, float(a.lam))
    return loss.mean(), stats


def _kto(batch, policy, reference, a):
    pc, pr = _pair_logps(batch, policy, a.logp_reduction)
    rc, rr = _pair_logps(batch, reference, a.logp_reduction)
    z0 = losses.kto_reference_point(torch.cat([pc, pr]), torch.cat([rc, rr])) if a.reference_point == "batch" \
        else torch.zeros(())
    loss, stats = losses.kto_loss(pc, pr, rc, rr, float(a.beta), z0, float(a.desirable_weight),
                                  float(a.undesirable_weight))
    return loss.mean(), stats


def _sft(batch, policy, reference, a):
    pc, _ = _pair_logps(batch, policy, a.logp_reduction)
    loss, stats = losses.best_of_2_loss(pc)  # -log pi(y_w|x): the same likelihood term, on whatever chose y_w
    return loss.mean(), stats


def _rwr(batch, policy, reference, a):
    seq = losses.sequence_logps(policy, batch.response_mask, a.logp_reduction)
    loss, stats = losses.rwr_loss(seq, batch.rewards, batch.group, float(a.temperature))
    return loss.mean(), stats


def _grpo(batch, policy, reference, a):
    advantages = losses.group_advantages(batch.rewards, batch.group)
    loss, stats = losses.grpo_loss(policy, batch.sampler_logps, reference, advantages, batch.response_mask,
                                   float(a.clip_eps), float(a.beta), length_normalize=a.logp_reduction == "mean")
    return loss.mean(), stats


def _reinforce(batch, policy, reference, a):
    seq = losses.sequence_logps(policy, batch.response_mask, a.logp_reduction)
    loss, stats = losses.reinforce_loss(seq, batch.rewards, batch.group)
    return loss.mean(), stats


ALGORITHMS: dict[str, Algorithm] = {
    "dpo": Algorithm("pairs", True, "DPO, -log sigmoid(beta h) (Rafailov et al. 2023)", _dpo),
    "ipo": Algorithm("pairs", True, "IPO, squared loss to h = 1/(2 beta) (Azar et al. 2023; Tang et al.'s form)", _ipo),
    "best_of_2": Algorithm("pairs", True, "Best-of-N: NLL of the best of n samples, no KL (Tang et al. Fig. 9)", _best_of_2),
    "grpo": Algorithm("groups", True, "GRPO: group-mean advantage, clipped ratio, k3 KL (Lanchantin et al.)", _grpo),
    "reinforce": Algorithm("groups", False, "REINFORCE with a leave-one-out baseline (RLOO)", _reinforce),
    "kto": Algorithm("pairs", True, "KTO: chosen desirable, rejected undesirable, reference point z0 "
                                    "(Ethayarajh et al. 2024)", _kto),
    "simpo": Algorithm("pairs", False, "SimPO: -log sigmoid(beta (s_w - s_l) - gamma), length-normalised, no "
                                       "reference (Meng et al. 2024)", _simpo),
    "orpo": Algorithm("pairs", False, "ORPO: NLL of the chosen + lambda log-odds-ratio loss, no reference "
                                      "(Hong et al. 2024)", _orpo),
    "rwr": Algorithm("groups", False, "reward-weighted regression: NLL weighted by softmax(r/tau) per prompt "
                                      "(Peters & Schaal 2007)", _rwr),
    "sft": Algorithm("pairs", False, "SFT: NLL of the chosen response of a dataset, log or pair builder", _sft),
}

def check(cfg) -> None:
    """The algorithm's settings: algo.name names one; a pair objective needs two responses per prompt."""
    if cfg.algo.name not in ALGORITHMS:
        raise ConfigError(f"algo={cfg.algo.name!r} is invalid; valid choices: {', '.join(ALGORITHMS)}")
    n, minimum = cfg.algo.samples_per_prompt, 2 if ALGORITHMS[cfg.algo.name].kind == "pairs" else 1
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise ConfigError(f"algo.samples_per_prompt={n!r} is invalid; valid: an integer >= {minimum}")


# stats key -> metric key (losses.py speaks the papers' words; metrics.py holds the vocabulary)
STAT_KEYS = {
    "margin": "train/margin", "accuracy": "train/accuracy", "chosen_logratio": "train/chosen_logratio",
    "rejected_logratio": "train/rejected_logratio", "clip_fraction": "train/clip_fraction", "kl": "train/kl",
    "advantage_abs": "train/advantage_abs", "reference_point": "train/reference_point",
    "log_odds_ratio": "train/log_odds_ratio", "nll": "train/nll", "effective_samples": "train/effective_samples",
}


def stats_to_metrics(stats: dict) -> dict:
    return {STAT_KEYS[k]: float(v) for k, v in stats.items() if k in STAT_KEYS}


