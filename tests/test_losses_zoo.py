"""The objectives of issue 14's zoo (KTO, SimPO, ORPO, RWR, SFT): values worked out by hand in each docstring, the
direction of their gradients, detached stats, and their reductions to known cases."""
from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from gapstudy.losses import (best_of_2_loss, dpo_loss, kto_loss, kto_reference_point, orpo_loss, rwr_loss,
                             simpo_loss)


def t(*values, grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_simpo_hand_worked():
    """beta 2, gamma 1: s_w - s_l = -0.5 - -1 = 0.5, so beta * 0.5 - gamma = 0 and the loss is log 2; a second pair
    with s_w - s_l = -1 gives -log sigmoid(-3) = 3.048587; margin = mean beta * delta = (1 - 2)/2 = -0.5."""
    loss, stats = simpo_loss(t(-0.5, -2.0), t(-1.0, -1.0), beta=2.0, gamma=1.0)
    assert_close(loss, t(math.log(2.0), 3.0485873515737420))
    assert_close(stats["margin"], torch.tensor(-0.5, dtype=torch.float64))
    assert float(stats["accuracy"]) == 0.5


def test_simpo_with_gamma_zero_and_summed_log_probs_is_dpo_against_a_uniform_reference():
    pc, pr = t(-3.0, -1.2, -7.0), t(-2.0, -4.0, -7.5)
    zero = torch.zeros(3, dtype=torch.float64)
    assert_close(simpo_loss(pc, pr, beta=0.3, gamma=0.0)[0], dpo_loss(pc, pr, zero, zero, beta=0.3)[0])


def test_orpo_hand_worked():
    """P(y_w) = 0.5 (odds 1), P(y_l) = 0.2 (odds 0.25): log odds ratio = log 4 = 1.386294, sigmoid(log 4) = 0.8;
    loss = -log 0.5 - 0.1 log 0.8 = 0.693147 + 0.022314 = 0.715461; nll = 0.693147."""
    loss, stats = orpo_loss(t(math.log(0.5)), t(math.log(0.2)), lam=0.1)
    assert_close(loss, t(math.log(2.0) - 0.1 * math.log(0.8)))
    assert_close(stats["log_odds_ratio"], torch.tensor(math.log(4.0), dtype=torch.float64))
    assert_close(stats["nll"], torch.tensor(math.log(2.0), dtype=torch.float64))
    assert_close(orpo_loss(t(-1e-12), t(-30.0), lam=1.0)[0].isfinite(), torch.tensor([True]))  # P -> 1: finite


def test_orpo_with_lambda_zero_is_sft_on_the_chosen():
    pc, pr = t(-0.3, -2.0), t(-0.1, -0.5)
    assert_close(orpo_loss(pc, pr, lam=0.0)[0], best_of_2_loss(pc)[0])


def test_kto_hand_worked():
    """beta 0.5, lambda_D 1, lambda_U 2. r_c = -1 - -1.6 = 0.6, r_r = -2 - -2.2 = 0.2, z0 = max(0, (0.6 + 0.2)/2) = 0.4.
    desirable = 1 - sigmoid(0.5 (0.6 - 0.4)) = 1 - sigmoid(0.1) = 0.475021; undesirable = 2 (1 - sigmoid(0.5 (0.4 -
    0.2))) = 0.950042; the pair's loss is their mean 0.712531."""
    pc, pr, rc, rr = t(-1.0), t(-2.0), t(-1.6), t(-2.2)
    z0 = kto_reference_point(torch.cat([pc, pr]), torch.cat([rc, rr]))
    assert_close(z0, torch.tensor(0.4, dtype=torch.float64))
    loss, stats = kto_loss(pc, pr, rc, rr, beta=0.5, z0=z0, desirable_weight=1.0, undesirable_weight=2.0)
    expected = 0.5 * ((1 - sigmoid(0.1)) + 2 * (1 - sigmoid(0.1)))
    assert_close(loss, t(expected))
    assert_close(stats["reference_point"], torch.tensor(0.4, dtype=torch.float64))
    # reference samples (the policy less likely than pi_ref on them): the estimate is negative, clamped to 0
    assert kto_reference_point(t(-3.0, -2.0), t(-1.0, -1.5)) == 0.0


def test_rwr_hand_worked_and_at_small_temperature_best_of_n():
    """One prompt with rewards (1, 0), tau 1: w = (e/(e+1), 1/(e+1)) = (0.731059, 0.268941); log-probs (-1, -2):
    example losses -2 w log pi = (1.462117, 1.075766), mean 1.268941 = 0.731059 * 1 + 0.268941 * 2."""
    logps = t(-1.0, -2.0, grad=True)
    loss, stats = rwr_loss(logps, t(1.0, 0.0), torch.tensor([3, 3]), temperature=1.0)
    w = math.e / (math.e + 1)
    assert_close(loss, t(2 * w * 1.0, 2 * (1 - w) * 2.0))
    assert_close(stats["effective_samples"], torch.tensor(1 / (w ** 2 + (1 - w) ** 2), dtype=torch.float64))
    # tau -> 0: all weight on each prompt's best sample, the batch mean is Best-of-N's mean NLL of the winners
    logps = t(-1.0, -2.0, -0.5, -3.0, -4.0, -1.5)
    rewards, group = t(0.2, 0.9, 0.1, 0.0, 0.4, 0.3), torch.tensor([0, 0, 0, 5, 5, 5])
    small, _ = rwr_loss(logps, rewards, group, temperature=1e-4)
    assert_close(small.mean(), best_of_2_loss(t(-2.0, -4.0))[0].mean())


@pytest.mark.parametrize("name", ["simpo", "orpo", "kto", "sft"])
def test_preferring_the_chosen_lowers_the_loss(name):
    """d loss / d log pi(y_w) < 0 for every pair objective; d / d log pi(y_l) > 0 for the contrastive ones (SimPO,
    ORPO, KTO: Tajwar et al.'s negative gradient) and exactly 0 for SFT, which never looks at the rejected."""
    pc, pr = t(-1.5, -0.7, grad=True), t(-1.0, -2.5, grad=True)
    rc, rr = t(-1.2, -1.0), t(-1.1, -2.0)
    if name == "simpo":
        loss, _ = simpo_loss(pc, pr, beta=2.0, gamma=0.5)
    elif name == "orpo":
        loss, _ = orpo_loss(pc, pr, lam=0.5)
    elif name == "kto":
        loss, _ = kto_loss(pc, pr, rc, rr, beta=0.1, z0=kto_reference_point(torch.cat([pc, pr]), torch.cat([rc, rr])))
    else:
        loss = best_of_2_loss(pc)[0] + 0 * pr
    loss.sum().backward()
    assert (pc.grad < 0).all()
    assert (pr.grad == 0).all() if name == "sft" else (pr.grad > 0).all()


def test_rwr_raises_every_sample_in_proportion_to_its_weight():
    logps = t(-1.0, -2.0, -3.0, grad=True)
    loss, stats = rwr_loss(logps, t(0.5, 0.2, 0.9), torch.tensor([0, 0, 0]), temperature=0.5)
    loss.mean().backward()
    weights = torch.softmax(t(0.5, 0.2, 0.9) / 0.5, 0)
    assert_close(logps.grad, -weights)  # d mean / d log pi_i = -w_i (the 3 in the loss and the 1/3 of the mean cancel)
    for value in stats.values():
        assert value.ndim == 0 and not value.requires_grad
