"""Losses: values worked out by hand (in each docstring) and properties the papers rely on."""
import math

import pytest
import torch
from torch.testing import assert_close

from gapstudy.losses import (
    best_of_2_loss,
    dpo_loss,
    group_advantages,
    grpo_loss,
    ipo_loss,
    reinforce_loss,
    sequence_logps,
)


def t(*values, grad=False):
    return torch.tensor(values, dtype=torch.float32, requires_grad=grad)


def two_pairs(grad=False):
    """(policy_chosen, policy_rejected, reference_chosen, reference_rejected) for two pairs.
    Pair 1: h = (-1 - -2) - (-3 - -2.5) = 1 - (-0.5) = 1.5.
    Pair 2: h = (-2 - -1.5) - (-1 - -1.5) = -0.5 - 0.5 = -1.
    """
    return t(-1.0, -2.0, grad=grad), t(-3.0, -1.0), t(-2.0, -1.5), t(-2.5, -1.5)


# ---------------------------------------------------------------- DPO


def test_dpo_hand_worked():
    """beta = 0.5.  Pair 1: h = 1.5, beta*h = 0.75, -log sigmoid(0.75) = log(1 + e^-0.75) = 0.386871.
    Pair 2: h = -1, beta*h = -0.5, -log sigmoid(-0.5) = log(1 + e^0.5) = 0.974077.
    margin = (0.75 - 0.5)/2 = 0.125; accuracy = 1/2; chosen_logratio = (1 - 0.5)/2 = 0.25;
    rejected_logratio = (-0.5 + 0.5)/2 = 0.
    """
    loss, stats = dpo_loss(*two_pairs(), beta=0.5)
    assert_close(loss, t(0.386871, 0.974077), atol=1e-6, rtol=0)
    assert_close(stats["margin"], torch.tensor(0.125))
    assert_close(stats["accuracy"], torch.tensor(0.5))
    assert_close(stats["chosen_logratio"], torch.tensor(0.25))
    assert_close(stats["rejected_logratio"], torch.tensor(0.0))


def test_dpo_stable_for_large_margins():
    """beta*h = -100: -log sigmoid(-100) = 100 + log(1 + e^-100) = 100 (a naive log(sigmoid) gives inf)."""
    loss, _ = dpo_loss(t(-1000.0), t(0.0), t(0.0), t(0.0), beta=0.1)
    assert_close(loss, t(100.0))


def test_dpo_preferring_chosen_lowers_loss():
    policy_chosen = torch.linspace(-5.0, 5.0, 11)
    zeros = torch.zeros(11)
    loss, _ = dpo_loss(policy_chosen, zeros, zeros, zeros, beta=0.1)
    assert torch.all(loss[1:] < loss[:-1])


# ---------------------------------------------------------------- IPO


def test_ipo_hand_worked():
    """beta = 0.1, so h* = 1/(2 beta) = 5.  Pair 1: h = 1.5: tang (0.15 - 0.5)^2 = 0.1225, azar (1.5 - 5)^2 = 12.25.
    Pair 2: h = -1: tang (-0.1 - 0.5)^2 = 0.36, azar (-1 - 5)^2 = 36.  tang = beta^2 * azar = azar / 100.
    """
    tang, stats = ipo_loss(*two_pairs(), beta=0.1, form="tang")
    azar, _ = ipo_loss(*two_pairs(), beta=0.1, form="azar")
    assert_close(tang, t(0.1225, 0.36))
    assert_close(azar, t(12.25, 36.0))
    assert_close(stats["margin"], torch.tensor((0.15 - 0.1) / 2))
    assert_close(stats["accuracy"], torch.tensor(0.5))


def test_ipo_default_form_is_tang():
    assert_close(ipo_loss(*two_pairs(), beta=0.1)[0], ipo_loss(*two_pairs(), beta=0.1, form="tang")[0])


@pytest.mark.parametrize("beta", [0.1, 0.5, 1.0])
def test_ipo_forms_share_the_minimiser_and_differ_by_beta_squared(beta):
    """Both forms are minimised at h* = 1/(2 beta); (beta*h - 1/2)^2 = beta^2 (h - 1/(2 beta))^2, gradient too."""
    h_star = 1.0 / (2.0 * beta)
    h = torch.linspace(h_star - 4.0, h_star + 4.0, 81, dtype=torch.float64)  # h* is grid point 40
    zeros = torch.zeros_like(h)
    losses, grads = {}, {}
    for form in ("tang", "azar"):
        policy_chosen = h.clone().requires_grad_(True)
        losses[form], _ = ipo_loss(policy_chosen, zeros, zeros, zeros, beta=beta, form=form)
        losses[form].sum().backward()
        grads[form] = policy_chosen.grad
        assert int(losses[form].argmin()) == 40
        assert_close(grads[form][40], torch.tensor(0.0, dtype=torch.float64))
    assert_close(losses["tang"], beta**2 * losses["azar"])
    assert_close(grads["tang"], beta**2 * grads["azar"])


@pytest.mark.parametrize("form", ["tang", "azar"])
def test_ipo_preferring_chosen_lowers_loss_below_the_minimiser(form):
    """beta = 0.1: h from -5 to 4, all below h* = 5, where the quadratic is still decreasing."""
    policy_chosen = torch.linspace(-5.0, 4.0, 10)
    zeros = torch.zeros(10)
    loss, _ = ipo_loss(policy_chosen, zeros, zeros, zeros, beta=0.1, form=form)
    assert torch.all(loss[1:] < loss[:-1])


def test_ipo_unknown_form_names_the_choices():
    with pytest.raises(ValueError, match="tang.*azar"):
        ipo_loss(*two_pairs(), beta=0.1, form="tau")


# ---------------------------------------------------------------- Best-of-2


def test_best_of_2_hand_worked():
    """-log pi(y_w|x): log-probs (-1, -3) give losses (1, 3), gradient -1 each; chosen_logp = -2."""
    policy_chosen = t(-1.0, -3.0, grad=True)
    loss, stats = best_of_2_loss(policy_chosen)
    assert_close(loss, t(1.0, 3.0))
    assert_close(stats["chosen_logp"], torch.tensor(-2.0))
    loss.sum().backward()
    assert_close(policy_chosen.grad, t(-1.0, -1.0))


# ---------------------------------------------------------------- stats are detached


@pytest.mark.parametrize("name", ["dpo", "ipo_tang", "ipo_azar", "best_of_2", "grpo", "reinforce"])
def test_stats_are_detached_while_the_loss_has_a_gradient(name):
    pc, pr, rc, rr = two_pairs(grad=True)
    token_logps = torch.full((2, 3), -1.0, requires_grad=True)
    mask = torch.ones(2, 3, dtype=torch.bool)
    if name == "dpo":
        loss, stats = dpo_loss(pc, pr, rc, rr, beta=0.1)
    elif name.startswith("ipo"):
        loss, stats = ipo_loss(pc, pr, rc, rr, beta=0.1, form=name.split("_")[1])
    elif name == "best_of_2":
        loss, stats = best_of_2_loss(pc)
    elif name == "grpo":
        loss, stats = grpo_loss(token_logps, token_logps, token_logps, t(1.0, -1.0), mask, clip_eps=0.2, beta=0.1)
    else:
        loss, stats = reinforce_loss(pc, t(1.0, 0.0, grad=True), torch.tensor([0, 0]))
    assert loss.shape == (2,)
    assert loss.requires_grad
    assert stats
    for key, value in stats.items():
        assert value.ndim == 0, key
        assert not value.requires_grad, key


# ---------------------------------------------------------------- group advantages


def test_group_advantages_hand_worked():
    """Labels need not be contiguous or sorted.  Group 7 = rewards (1, 0, 5), mean 2 -> (-1, -2, 3);
    group 2 = rewards (3, 2), mean 2.5 -> (0.5, -0.5).  No division by the std.
    """
    advantages = group_advantages(t(1.0, 0.0, 3.0, 2.0, 5.0), torch.tensor([7, 7, 2, 2, 7]))
    assert_close(advantages, t(-1.0, -2.0, 0.5, -0.5, 3.0))


def test_group_advantages_sum_to_zero_within_each_group():
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randn(24, generator=generator)
    group = torch.randint(0, 5, (24,), generator=generator) * 3 + 11
    advantages = group_advantages(rewards, group)
    for label in group.unique():
        assert_close(advantages[group == label].sum(), torch.tensor(0.0), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- GRPO


def test_grpo_on_policy_equals_minus_advantage():
    """policy == sampler == reference: ratio = 1 (no clipping), k3 = e^0 - 0 - 1 = 0, so every token's loss is -A.
    A = (1, -2); sequence 1 has 3 response tokens, sequence 2 has 2.
    length-normalised: (3 * -1)/3 = -1, (2 * 2)/2 = 2.  Summed: -3, 4.
    Gradient of the summed batch loss w.r.t. a response token: -A/len = -1/3 (seq 1), 2/2 = 1 (seq 2); 0 on padding.
    """
    logps = torch.tensor([[-0.5, -1.0, -2.0, -7.0], [-0.1, -0.2, -3.0, -3.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    policy = logps.clone().requires_grad_(True)
    loss, stats = grpo_loss(policy, logps, logps, t(1.0, -2.0), mask, clip_eps=0.2, beta=0.1)
    assert_close(loss, t(-1.0, 2.0))
    loss.sum().backward()
    assert_close(policy.grad, torch.tensor([[-1 / 3, -1 / 3, -1 / 3, 0.0], [1.0, 1.0, 0.0, 0.0]]))
    assert_close(stats["clip_fraction"], torch.tensor(0.0))
    assert_close(stats["kl"], torch.tensor(0.0))
    assert_close(stats["advantage_abs"], torch.tensor(1.5))

    summed, _ = grpo_loss(logps, logps, logps, t(1.0, -2.0), mask, clip_eps=0.2, beta=0.1, length_normalize=False)
    assert_close(summed, t(-3.0, 4.0))


def test_grpo_clipped_token_has_no_gradient():
    """One token per sequence, ratio = e^{log 1.5} = 1.5 > 1 + eps = 1.2, beta = 0.
    A = +1: min(1.5 * 1, 1.2 * 1) = 1.2 (clipped term chosen) -> loss -1.2, gradient 0.
    A = -1: min(-1.5, -1.2) = -1.5 (unclipped) -> loss 1.5, gradient d(-ratio*A)/dlogp = ratio = 1.5.
    clip_fraction = 1/2.
    """
    sampler = torch.zeros(2, 1)
    policy = torch.full((2, 1), math.log(1.5), requires_grad=True)
    mask = torch.ones(2, 1, dtype=torch.bool)
    loss, stats = grpo_loss(policy, sampler, sampler, t(1.0, -1.0), mask, clip_eps=0.2, beta=0.0)
    assert_close(loss, t(-1.2, 1.5))
    loss.sum().backward()
    assert_close(policy.grad, torch.tensor([[0.0], [1.5]]))
    assert_close(stats["clip_fraction"], torch.tensor(0.5))


def test_grpo_k3_penalty_hand_worked():
    """A = 0, policy == sampler, reference - policy = log 2 on 2 tokens, beta = 0.1.
    k3 = e^{log 2} - log 2 - 1 = 1 - 0.693147 = 0.306853 per token; kl stat = sum = 0.613706.
    loss = beta * k3 averaged over tokens = 0.0306853.
    d k3 / d policy = -e^{ref - policy} + 1 = -1, so the gradient is beta * -1 / 2 = -0.05 per token.
    """
    policy = torch.zeros(1, 2, requires_grad=True)
    reference = torch.full((1, 2), math.log(2.0))
    mask = torch.ones(1, 2)
    loss, stats = grpo_loss(policy, torch.zeros(1, 2), reference, t(0.0), mask, clip_eps=0.2, beta=0.1)
    assert_close(loss, t(0.0306853))
    assert_close(stats["kl"], torch.tensor(0.613706))
    loss.sum().backward()
    assert_close(policy.grad, torch.tensor([[-0.05, -0.05]]))


def test_grpo_ignores_garbage_on_padding():
    """exp(0 - -1000) overflows to inf; a padding token must not turn the loss or the gradient into NaN."""
    policy = torch.tensor([[-1.0, 0.0]], requires_grad=True)
    sampler = torch.tensor([[-1.0, -1000.0]])
    mask = torch.tensor([[True, False]])
    loss, stats = grpo_loss(policy, sampler, sampler, t(1.0), mask, clip_eps=0.2, beta=0.1)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(policy.grad).all()
    assert torch.isfinite(stats["kl"])
    assert_close(loss, t(-1.0))


# ---------------------------------------------------------------- REINFORCE / RLOO


def test_reinforce_leave_one_out_hand_worked():
    """rewards (1, 0, 2 | 4), groups (0, 0, 0 | 9); log-probs (-1, -2, -3, -4).
    Group 0: baselines (0+2)/2 = 1, (1+2)/2 = 1.5, (1+0)/2 = 0.5 -> advantages 0, -1.5, 1.5.
    Group 9 has one member: baseline = batch mean (1+0+2+4)/4 = 1.75 -> advantage 2.25.
    loss = -A * logp = (0, -3, 4.5, 9); gradient w.r.t. logp = -A = (0, 1.5, -1.5, -2.25).
    advantage_abs = (0 + 1.5 + 1.5 + 2.25)/4 = 1.3125.  Rewards get no gradient.
    """
    logps = t(-1.0, -2.0, -3.0, -4.0, grad=True)
    rewards = t(1.0, 0.0, 2.0, 4.0, grad=True)
    loss, stats = reinforce_loss(logps, rewards, torch.tensor([0, 0, 0, 9]))
    assert_close(loss, t(0.0, -3.0, 4.5, 9.0))
    assert_close(stats["advantage_abs"], torch.tensor(1.3125))
    loss.sum().backward()
    assert_close(logps.grad, t(0.0, 1.5, -1.5, -2.25))
    assert rewards.grad is None


# ---------------------------------------------------------------- sequence log-probs


def test_sequence_logps_sum_and_mean_with_mask():
    """Response tokens (-1, -2, -3) and (-4, -5); padding holds -inf and 0 and must be left out.
    sum: -6, -9.  mean: -6/3 = -2, -9/2 = -4.5.
    """
    token_logps = torch.tensor([[-1.0, -2.0, -3.0, -math.inf], [-4.0, -5.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert_close(sequence_logps(token_logps, mask), t(-6.0, -9.0))
    assert_close(sequence_logps(token_logps, mask, reduction="mean"), t(-2.0, -4.5))
    with pytest.raises(ValueError, match="sum.*mean"):
        sequence_logps(token_logps, mask, reduction="max")
