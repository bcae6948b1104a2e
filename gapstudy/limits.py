"""The limit a run can reach at best: the highest gold reward any policy has at a given KL from π_ref (issue 13).

Exact, where π_ref and the gold reward are known cell by cell (toy8x8: 8 prompts x 8 one-token responses): the
KL-regularised optimum

    π*_β(y|x) = π_ref(y|x) exp(r(x, y)/β) / Z_β(x)            (Rafailov et al. 2023, Eq. 4; Korbak et al. 2022)

maximises E_π[r] − β KL(π || π_ref) over all policies, so no policy has a higher expected reward at the KL of π*_β:
as β runs over (0, ∞) the points (KL(π*_β || π_ref), E_{π*_β}[r]) trace the upper boundary of what training can
reach (`kl_optimal_frontier`). Prompt-averaged (uniform prompts, as the evaluation's) with one β for every prompt,
it is the frontier of the prompt-averaged problem; `optimal_reward_at_kl` finds the β whose KL is a given value.

Best of n, where the optimum cannot be enumerated (synth_lm, world=hf): the policy that draws n samples of the SFT
policy and keeps the gold-best has KL(π_bon || π_sft) = log n − (n − 1)/n (Stiennon et al. 2020, App. G.3; Gao et
al. 2022, Sec. 2; exact for continuous rewards, an upper bound otherwise: Beirami et al. 2024, Thm 1) and gold reward
E[max of n draws], estimated without bias from N ≥ n draws per prompt (`expected_max_of_n`). It is a reachable
frontier, not the optimum: a trained policy may lie above it.

The functions of this module are pure numpy; `compute_limit` builds a world (torch) and writes nothing.
"""
from __future__ import annotations

import math

import numpy as np

BETAS = np.logspace(-3, 3, 241)  # β grid of the drawn exact frontier: KL from ~0 to its maximum (β → 0)
BEST_OF = tuple(2 ** k for k in range(9))  # n = 1 ... 256 (Gao et al.'s best-of-n range)


def _optimum(ref: np.ndarray, reward: np.ndarray, beta: float) -> tuple[float, float]:
    """(prompt-mean KL(π*_β || π_ref), prompt-mean E_{π*_β}[r]) for ref, reward [P, K] (rows: prompts)."""
    with np.errstate(divide="ignore"):
        log_ref = np.log(ref)
    logits = log_ref + reward / beta
    top = logits.max(axis=1, keepdims=True)
    log_pi = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    pi = np.exp(log_pi)
    support = ref > 0  # π* is 0 wherever π_ref is: those cells add nothing to the KL
    kl = np.where(support, pi * (log_pi - np.where(support, log_ref, 0.0)), 0.0).sum(axis=1)
    return float(kl.mean()), float((pi * reward).sum(axis=1).mean())


def _check(ref: np.ndarray, reward: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref, reward = np.asarray(ref, dtype=np.float64), np.asarray(reward, dtype=np.float64)
    if ref.ndim != 2 or ref.shape != reward.shape:
        raise ValueError(f"ref and reward must be [prompts, responses] of one shape, not {ref.shape} and {reward.shape}")
    if (ref < 0).any() or not np.allclose(ref.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("every row of ref must be a probability distribution")
    return ref, reward


def kl_optimal_frontier(ref, reward, betas=BETAS) -> dict[str, list[float]]:
    """The exact frontier: {"beta", "kl", "gold_reward"} of π*_β for each β (KL falls and reward falls as β grows)."""
    ref, reward = _check(ref, reward)
    points = [_optimum(ref, reward, float(b)) for b in betas]
    return {"beta": [float(b) for b in betas], "kl": [p[0] for p in points], "gold_reward": [p[1] for p in points]}


def optimal_reward_at_kl(ref, reward, kl: float, iterations: int = 200) -> float:
    """The highest prompt-mean expected reward of any policy whose prompt-mean KL from ref is at most `kl`: π*_β
    with KL(π*_β) = kl (bisection on log β: the KL of π*_β falls monotonically as β grows), or the maximum reward
    when even β → 0 stays within `kl`."""
    ref, reward = _check(ref, reward)
    if kl <= 0:
        return _optimum(ref, reward, 1e12)[1]
    low, high = math.log(1e-6), math.log(1e6)  # log β
    if _optimum(ref, reward, math.exp(low))[0] <= kl:
        return _optimum(ref, reward, math.exp(low))[1]
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        if _optimum(ref, reward, math.exp(middle))[0] > kl:
            low = middle
        else:
            high = middle
    return _optimum(ref, reward, math.exp(high))[1]


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || base) = log n − (n − 1)/n nats (Stiennon et al. 2020; Gao et al. 2022)."""
    if n < 1:
        raise ValueError(f"n={n} is invalid; valid: n >= 1")
    return math.log(n) - (n - 1) / n


def expected_max_of_n(rewards, n: int) -> float:
    """Prompt-mean E[max of n iid draws], from N >= n draws per prompt (rewards [P, N]): the U-statistic
    sum_k r_(k) C(k−1, n−1) / C(N, n) over each prompt's sorted rewards r_(1) <= ... <= r_(N) (the mean over every
    n-subset of its maximum), unbiased for the max of n draws of the distribution the N were drawn from."""
    rewards = np.sort(np.asarray(rewards, dtype=np.float64), axis=1)
    N = rewards.shape[1]
    if not 1 <= n <= N:
        raise ValueError(f"n={n} is invalid for {N} draws per prompt; valid: 1 <= n <= {N}")
    k = np.arange(1, N + 1)
    # C(k−1, n−1) / C(N, n) in log space (0 where k < n)
    log_weight = np.full(N, -np.inf)
    ok = k >= n
    log_weight[ok] = (_log_comb(k[ok] - 1, n - 1) - _log_comb(np.array([N]), n))
    weight = np.exp(log_weight)
    return float((rewards * weight).sum(axis=1).mean())


def _log_comb(a, b: int) -> np.ndarray:
    from scipy.special import gammaln

    a = np.asarray(a, dtype=np.float64)
    return gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)


def best_of_n_frontier(rewards, ns=BEST_OF) -> dict[str, list[float]]:
    """{"n", "kl", "gold_reward"}: the best-of-n policy's KL and expected gold reward for each n <= N."""
    N = np.asarray(rewards).shape[1]
    ns = [int(n) for n in ns if n <= N]
    return {"n": ns, "kl": [best_of_n_kl(n) for n in ns], "gold_reward": [expected_max_of_n(rewards, n) for n in ns]}


# ------------------------------------------------------------------------------------------- a world's limit
BEST_OF_SAMPLES = 256  # N: SFT samples per prompt behind the best-of-n frontier (n up to N)
BEST_OF_PROMPTS = 128  # held-out prompts it averages over (of the families the runs evaluate)


def compute_limit(cfg, results_root) -> dict:
    """The limit of the world `cfg` builds (cached under results_root like every run's): the exact KL-regularised
    frontier on toy8x8 (π_ref read from the world's initial policy, exactly, cell by cell), else the gold best-of-n
    frontier of its SFT policy on the first BEST_OF_PROMPTS held-out prompts of eval.tasks. The KL is against the
    world's initial policy, as every run's eval/kl."""
    from pathlib import Path

    import torch

    from gapstudy.generation import left_pad, sample
    from gapstudy.runtime import load_policy
    from gapstudy.worlds import build_world

    world = build_world(cfg, Path(results_root))
    policy = load_policy(world.policy_path, "cpu").eval()
    spec = {"world": world.name, "build_seed": int(cfg.world.build_seed)}
    if world.name == "toy8x8":
        from gapstudy.worlds.toy8x8 import SIZE, response_probabilities

        ref = response_probabilities(policy).double().numpy()
        ref = ref / ref.sum(axis=1, keepdims=True)
        return {**spec, "kind": "kl_optimal", "reference": ref.tolist(),
                **kl_optimal_frontier(ref, np.eye(SIZE))}
    keep = cfg.eval.get("tasks")
    rows = [i for i, t in enumerate(world.eval_tasks) if keep is None or t in keep][:BEST_OF_PROMPTS]
    prompts, mask = left_pad([world.eval_prompts[i] for i in rows], world.pad_token_id)
    tasks = [world.eval_tasks[i] for i in rows]
    generator = torch.Generator().manual_seed(int(cfg.world.build_seed) * 1_000_003 + 11)
    torch.set_num_threads(int(cfg.threads))
    with torch.no_grad():
        s = sample(policy, prompts, mask, BEST_OF_SAMPLES, generator, world.max_new_tokens, float(cfg.temperature),
                   world.eos_token_id, world.pad_token_id)
        gold = world.gold(s.prompts, s.prompt_mask, s.responses, s.response_mask,
                          [t for t in tasks for _ in range(BEST_OF_SAMPLES)]).double()
    rewards = gold.view(len(rows), BEST_OF_SAMPLES).numpy()
    return {**spec, "kind": "best_of_n", "prompts": len(rows), "samples": BEST_OF_SAMPLES,
            "tasks": sorted(set(tasks)), **best_of_n_frontier(rewards)}
