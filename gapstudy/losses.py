"""The objective: pure losses over the log-probs of the policy and the reference (and the sampler, for GRPO).

Sits between the pair builder / buffer and the optimizer step: tensors in, `(per_example_loss, stats)` out,
where `per_example_loss` has one entry per pair or per sequence and `stats` holds detached scalars for the
metrics logger (`train/margin`, `train/accuracy`, `train/kl`, ...). No model calls, nothing from the project.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _pair_stats(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta):
    """Stats shared by the contrastive pair losses; h is the difference of the two log-ratios."""
    chosen_logratio = policy_chosen - reference_chosen  # [B]
    rejected_logratio = policy_rejected - reference_rejected  # [B]
    h = chosen_logratio - rejected_logratio  # [B]
    stats = {
        "margin": (beta * h).mean().detach(),
        "accuracy": (h > 0).float().mean().detach(),
        "chosen_logratio": chosen_logratio.mean().detach(),
        "rejected_logratio": rejected_logratio.mean().detach(),
    }
    return h, stats


def dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta: float):
    """DPO: -log sigmoid(beta * h), h = log-ratio(chosen) - log-ratio(rejected).

    Inputs are [B] sequence log-probs, already summed or averaged over tokens by the caller (`sequence_logps`).
    Returns ([B] loss, stats with margin, accuracy, chosen_logratio, rejected_logratio).
    """
    h, stats = _pair_stats(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)
    loss = -F.logsigmoid(beta * h)  # Eq. 7 of Rafailov et al. 2023 (DPO); logsigmoid for stability at large |h|
    return loss, stats


def ipo_loss(
    policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta: float, form: str = "tang"
):
    """IPO: a squared loss pulling h towards 1/(2 beta).

    form="tang":  (beta*h - 1/2)^2, as Tang et al. 2024 write IPO (used there with beta = 0.1).
    form="azar":  (h - 1/(2*beta))^2, Eq. 17 of Azar et al. 2023 with their tau = beta.
    Both have the same minimiser h* = 1/(2 beta); since (beta*h - 1/2)^2 = beta^2 (h - 1/(2 beta))^2, the
    tang form and its gradient are beta^2 times the azar ones, so for a fixed learning rate the two forms
    are different runs (at beta = 0.1 the tang step is 100x smaller).
    Inputs are [B] sequence log-probs. Returns ([B] loss, stats as for `dpo_loss`).
    """
    h, stats = _pair_stats(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)
    if form == "tang":
        loss = (beta * h - 0.5) ** 2  # IPO as written in Tang et al. 2024 (arXiv 2405.08448), E[(beta*h - 1/2)^2]
    elif form == "azar":
        loss = (h - 1.0 / (2.0 * beta)) ** 2  # Eq. 17 of Azar et al. 2023 (IPO), tau = beta
    else:
        raise ValueError(f"unknown IPO form {form!r}; valid choices: 'tang', 'azar'")
    return loss, stats


def best_of_2_loss(policy_chosen):
    """Best-of-2 (Best-of-N): maximum likelihood on the winner, no reference and no KL term.

    Input: [B] sequence log-probs of the chosen responses. Returns ([B] loss, stats with chosen_logp).
    """
    loss = -policy_chosen  # Tang et al. 2024 Sec. 5 / Fig. 9: -E log pi(y_w|x), non-contrastive
    return loss, {"chosen_logp": policy_chosen.mean().detach()}


def simpo_loss(policy_chosen, policy_rejected, beta: float, gamma: float):
    """SimPO: -log sigmoid(beta * (s_w - s_l) - gamma), reference-free, with target margin gamma.

    Inputs are [B] sequence log-probs of the policy alone; SimPO's s = log pi(y|x) / |y| is the caller's
    logp_reduction=mean (with sum and gamma = 0 this is DPO with a uniform reference: tests/test_losses.py).
    Returns ([B] loss, stats with margin = mean beta * (s_w - s_l) and accuracy = fraction s_w > s_l).
    """
    delta = policy_chosen - policy_rejected  # [B]
    loss = -F.logsigmoid(beta * delta - gamma)  # Eq. 6 of Meng et al. 2024 (SimPO); TRL CPOTrainer loss_type="simpo"
    return loss, {"margin": (beta * delta).mean().detach(), "accuracy": (delta > 0).float().mean().detach()}


def _log1mexp(x):
    """log(1 - exp(x)) for x < 0, stable at both ends (Maechler 2012): log(-expm1(x)) near 0, log1p(-exp(x)) below."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_loss(policy_chosen, policy_rejected, lam: float):
    """ORPO: NLL of the chosen response plus lam times the odds-ratio loss, reference-free.

    Inputs are [B] length-normalised log-probs log P(y|x) (the caller's logp_reduction=mean, as ORPO and TRL use):
    odds(y) = P / (1 - P); L = -log P(y_w|x) - lam * log sigmoid(log odds(y_w) - log odds(y_l)). A log-prob of
    exactly 0 (P = 1, infinite odds) is held at -1e-6. Returns ([B] loss, stats with log_odds_ratio, nll, accuracy).
    """
    pc, pr = policy_chosen.clamp(max=-1e-6), policy_rejected.clamp(max=-1e-6)
    log_odds = (pc - pr) - (_log1mexp(pc) - _log1mexp(pr))  # [B] Eq. 7 of Hong et al. 2024 (ORPO)
    nll = -policy_chosen  # [B] the SFT term (TRL averages it over the batch's tokens; here over each sequence's)
    loss = nll - lam * F.logsigmoid(log_odds)  # Eq. 6 of Hong et al. 2024: L_SFT + lambda * L_OR
    return loss, {"log_odds_ratio": log_odds.mean().detach(), "nll": nll.mean().detach(),
                  "accuracy": (log_odds > 0).float().mean().detach()}


def kto_reference_point(policy_logps, reference_logps):
    """KTO's z0, the policy's KL to the reference, estimated on the batch: max(0, mean log pi/pi_ref), detached.

    policy_logps, reference_logps: [N] sequence log-probs of every response of the batch. Ethayarajh et al. 2024
    (Sec. 4.1) and TRL estimate z0 on mismatched (prompt, completion) pairs of the batch; gapstudy scores only the
    batch's own pairs, so it uses them: on samples of the current policy the mean is an unbiased estimate of
    KL(pi || pi_ref); on reference samples it estimates -KL(pi_ref || pi) <= 0 and the clamp (TRL's too) makes it 0.
    """
    return (policy_logps - reference_logps).mean().clamp(min=0.0).detach()


def kto_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta: float, z0,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0):
    """KTO from pairs: the chosen response is a desirable example, the rejected one an undesirable example.

    r = log pi(y|x) - log pi_ref(y|x); v_D = lambda_D sigmoid(beta (r - z0)), v_U = lambda_U sigmoid(beta (z0 - r));
    the loss of an example is lambda_y - v (Eq. 8 of Ethayarajh et al. 2024; TRL: lambda_y (1 - sigmoid)). Inputs
    [B] sequence log-probs, z0 a detached scalar (`kto_reference_point`). Returns ([B] loss: the mean of the pair's
    two examples, so the batch mean is TRL's mean over desirable and undesirable examples, stats as `dpo_loss`'s).
    """
    h, stats = _pair_stats(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)
    chosen_r, rejected_r = policy_chosen - reference_chosen, policy_rejected - reference_rejected
    desirable = desirable_weight * (1.0 - torch.sigmoid(beta * (chosen_r - z0)))  # Eq. 8: lambda_D - v_D
    undesirable = undesirable_weight * (1.0 - torch.sigmoid(beta * (z0 - rejected_r)))  # lambda_U - v_U
    return 0.5 * (desirable + undesirable), {**stats, "reference_point": torch.as_tensor(z0).detach()}


def group_advantages(rewards, group):
    """GRPO advantage A_i = r_i - mean of the rewards in i's group; no std and no length normalisation.

    rewards: [N] float. group: [N] long, the prompt index of each response; any labels, in any order.
    Returns [N] advantages, which sum to zero within each group.
    """
    _, inverse = torch.unique(group, return_inverse=True)  # [N] labels -> 0..G-1
    n_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    sums = torch.zeros(n_groups, dtype=rewards.dtype, device=rewards.device).index_add_(0, inverse, rewards)
    counts = torch.zeros(n_groups, dtype=rewards.dtype, device=rewards.device).index_add_(
        0, inverse, torch.ones_like(rewards)
    )
    return rewards - (sums / counts)[inverse]  # Lanchantin et al. 2025 (arXiv 2506.21495) GRPO: r_i - group mean


def grpo_loss(
    policy_logps,
    sampler_logps,
    reference_logps,
    advantages,
    mask,
    clip_eps: float,
    beta: float,
    length_normalize: bool = True,
):
    """GRPO: clipped importance-weighted surrogate with a per-token k3 KL penalty to the reference.

    policy_logps, sampler_logps, reference_logps: [N, L] per-token log-probs of the sampled tokens;
    advantages: [N]; mask: [N, L] bool or 0/1, true on response tokens. The sampler's and the reference's
    log-probs and the advantages are constants (detached). Padding positions are masked before any exp, so
    garbage log-probs there cannot produce inf or NaN.
    Per-sequence loss = masked sum over tokens of -(surrogate - beta * k3), divided by the number of response
    tokens if `length_normalize` (DeepSeekMath's 1/|o_i|) else not.
    Stats: clip_fraction = fraction of response tokens where the clipped term is the one the min selects
    (ratio > 1+eps with A > 0, or ratio < 1-eps with A < 0: the tokens whose gradient the clip zeroes);
    kl = mean over sequences of the masked sum of k3; advantage_abs = mean |A|.
    Returns ([N] loss, stats).
    """
    mask = mask.to(torch.bool)  # [N, L]
    advantages = advantages.detach()[:, None]  # [N, 1]
    log_ratio = torch.where(mask, policy_logps - sampler_logps.detach(), 0.0)  # [N, L]
    ratio = torch.exp(log_ratio)  # [N, L]
    clipped_ratio = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)  # [N, L]
    # Eq. 3 of Shao et al. 2024 (DeepSeekMath), the PPO clipped surrogate:
    surrogate = torch.minimum(ratio * advantages, clipped_ratio * advantages)  # [N, L]
    ref_minus_policy = torch.where(mask, reference_logps.detach() - policy_logps, 0.0)  # [N, L]
    k3 = torch.exp(ref_minus_policy) - ref_minus_policy - 1.0  # Eq. 4 of Shao et al. 2024 (DeepSeekMath), Schulman's k3
    per_token = torch.where(mask, -(surrogate - beta * k3), 0.0)  # [N, L]
    n_tokens = mask.sum(dim=-1).clamp(min=1)  # [N]
    loss = per_token.sum(dim=-1)  # [N]
    if length_normalize:
        loss = loss / n_tokens

    is_clipped = ((ratio > 1.0 + clip_eps) & (advantages > 0)) | ((ratio < 1.0 - clip_eps) & (advantages < 0))
    stats = {
        "clip_fraction": ((is_clipped & mask).sum() / mask.sum().clamp(min=1)).detach(),
        "kl": torch.where(mask, k3, 0.0).sum(dim=-1).mean().detach(),
        "advantage_abs": advantages.abs().mean().detach(),
    }
    return loss, stats


def reinforce_loss(policy_seq_logps, rewards, group):
    """REINFORCE with a leave-one-out baseline (RLOO): loss_i = -(r_i - b_i) * log pi(y_i|x).

    policy_seq_logps: [N] sequence log-probs; rewards: [N] float; group: [N] long prompt labels (any order).
    b_i is the mean reward of the OTHER responses in i's group. A group with a single member has no other
    response; its baseline is the mean reward of the whole batch (itself included), a choice of gapstudy.
    The advantage is a constant (detached). Returns ([N] loss, stats with advantage_abs).
    """
    rewards = rewards.detach()
    _, inverse = torch.unique(group, return_inverse=True)  # [N]
    n_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    sums = torch.zeros(n_groups, dtype=rewards.dtype, device=rewards.device).index_add_(0, inverse, rewards)
    counts = torch.zeros(n_groups, dtype=rewards.dtype, device=rewards.device).index_add_(
        0, inverse, torch.ones_like(rewards)
    )
    others = counts[inverse] - 1  # [N]
    leave_one_out = (sums[inverse] - rewards) / others.clamp(min=1)  # [N]
    baseline = torch.where(others > 0, leave_one_out, rewards.mean())  # singleton groups: batch mean
    advantages = rewards - baseline  # [N]
    loss = -advantages * policy_seq_logps  # Ahmadian et al. 2024 (RLOO, arXiv 2402.14740), leave-one-out baseline
    return loss, {"advantage_abs": advantages.abs().mean().detach()}


def rwr_loss(policy_seq_logps, rewards, group, temperature: float):
    """Reward-weighted regression: maximum likelihood on each prompt's samples weighted by softmax(r / tau).

    policy_seq_logps: [N] sequence log-probs; rewards: [N]; group: [N] prompt labels (any order). The weights
    w_i = exp(r_i/tau) / sum over i's group are constants (detached); the example loss is -k w_i log pi(y_i|x)
    with k the group's size, so the batch mean is the mean over prompts of -sum_i w_i log pi(y_i|x) (Peters & Schaal
    2007, Eq. 8; Tajwar et al. 2024's maximum-likelihood family). As tau -> 0 the weight goes to the best sample
    (shared by ties): Best-of-N. Returns ([N] loss, stats with effective_samples = mean over prompts of
    1 / sum_i w_i^2).
    """
    rewards = rewards.detach()
    _, inverse = torch.unique(group, return_inverse=True)  # [N] labels -> 0..G-1
    n_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    scaled = rewards / temperature
    top = torch.full((n_groups,), -torch.inf, dtype=scaled.dtype, device=scaled.device)
    top = top.scatter_reduce(0, inverse, scaled, reduce="amax")  # [G]
    e = torch.exp(scaled - top[inverse])  # [N], the group's best at 1
    z = torch.zeros(n_groups, dtype=e.dtype, device=e.device).index_add_(0, inverse, e)
    weights = e / z[inverse]  # [N], summing to 1 within each group
    size = torch.zeros(n_groups, dtype=e.dtype, device=e.device).index_add_(0, inverse, torch.ones_like(e))
    loss = -size[inverse] * weights * policy_seq_logps  # Peters & Schaal 2007, Eq. 8: -E_w log pi
    effective = 1.0 / torch.zeros(n_groups, dtype=e.dtype, device=e.device).index_add_(0, inverse, weights ** 2)
    return loss, {"effective_samples": effective.mean().detach()}


def sequence_logps(token_logps, mask, reduction: str = "sum"):
    """[N, L] per-token log-probs -> [N] sequence log-probs over the response tokens in `mask`.

    "sum": log pi(y|x), as the original DPO code does. "mean": averaged over response tokens (length-normalised),
    as some IPO code does. Which one a reproduction uses is a config flag (PAPERS.md, [F]).
    """
    mask = mask.to(torch.bool)  # [N, L]
    summed = torch.where(mask, token_logps, 0.0).sum(dim=-1)  # [N]; where, not *, so -inf padding stays out
    if reduction == "sum":
        return summed
    if reduction == "mean":
        return summed / mask.sum(dim=-1).clamp(min=1)
    raise ValueError(f"unknown reduction {reduction!r}; valid choices: 'sum', 'mean'")
