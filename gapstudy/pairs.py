"""Pair and group builder: pure functions from scored samples to preference pairs (or kept groups).

Rewards arrive as [B, n]: n responses for each of B prompts. Continuous rewards make a best-vs-worst pair
(Lanchantin et al.'s non-verifiable recipe; with n = 2 this is Tang et al.'s labelled pair); binary verifier
rewards make a random-correct-vs-random-incorrect pair, skipping prompts where all responses agree
(Lanchantin et al.'s verifiable recipe). Nothing from the project is imported.
"""
from __future__ import annotations

import random

import torch


def best_vs_worst(rewards: torch.Tensor) -> tuple[list[tuple[int, int, int]], int]:
    """rewards [B, n] -> ([(prompt, chosen index, rejected index)], skipped); exact ties are skipped."""
    best = rewards.argmax(dim=1).tolist()
    worst = rewards.argmin(dim=1).tolist()
    tie = (rewards.max(dim=1).values == rewards.min(dim=1).values).tolist()
    pairs = [(b, best[b], worst[b]) for b in range(rewards.shape[0]) if not tie[b]]
    return pairs, rewards.shape[0] - len(pairs)


def correct_vs_incorrect(rewards: torch.Tensor, rng: random.Random, threshold: float = 0.5):
    """rewards [B, n] of a 0/1 verifier -> ([(prompt, a correct index, an incorrect index)], skipped)."""
    pairs, skipped = [], 0
    for b, row in enumerate(rewards.tolist()):
        correct = [i for i, r in enumerate(row) if r >= threshold]
        wrong = [i for i, r in enumerate(row) if r < threshold]
        if not correct or not wrong:  # all correct or all incorrect: no preference to learn
            skipped += 1
            continue
        pairs.append((b, rng.choice(correct), rng.choice(wrong)))
    return pairs, skipped


def select_pairs(rewards: torch.Tensor, binary: list[bool], rng: random.Random):
    """Per prompt, the verifiable recipe where `binary[b]`, best vs worst elsewhere; pairs keep prompt order."""
    if not any(binary):
        return best_vs_worst(rewards)
    if all(binary):
        return correct_vs_incorrect(rewards, rng)
    pairs, skipped = [], 0
    for b in range(rewards.shape[0]):
        chosen, s = (correct_vs_incorrect if binary[b] else _best_vs_worst_rng)(rewards[b : b + 1], rng)
        pairs += [(b, i, j) for _, i, j in chosen]
        skipped += s
    return pairs, skipped


def _best_vs_worst_rng(rewards, rng):
    return best_vs_worst(rewards)
