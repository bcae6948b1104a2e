"""Xu et al. 2024's 8×8 toy, as in PAPERS.md [D]: does DPO on a dataset that covers few responses move mass onto
responses it never saw, while PPO with a KL penalty recovers the optimum?

Prompt = one of 8 tokens p0..p7 (one-hot, as in the paper); response = exactly one of 8 tokens r0..r7; gold reward
= 1 iff the response index equals the prompt index (the diagonal is the optimum), else 0. The paper's binary
diagonal reward is kept: a graded reward would let the dataset rank off-diagonal responses too and blur "covered".
The policy is a 1-layer TinyGPT (32 dims, 2 heads): with a one-token prompt its attention sees only that token, so
it is an MLP of the prompt's embedding with a softmax head tied to the response embeddings; like Xu's MLP (whose
sizes were not published) it shares parameters across prompts and responses, which is what lets an update on the
covered cells move the uncovered ones. Its head may emit only r0..r7 (`output_token_ids`), so the masses below are
exact softmaxes over the 8 responses.

π_ref (the warm-started policy) is a fixed, prompt-dependent table, not concentrated on the diagonal: for prompt i
it puts `ref_diagonal_mass` on r_i, `ref_rejected_mass` on the k rejected responses r_{i+1..i+k} (mod 8) and the rest
on the 8 - 1 - k uncovered ones, split within each group by seeded Dirichlet draws.
The fixed preference dataset (`world.pairs_path`, jsonl of token ids for data=dataset) compares, for each prompt i,
the optimum r_i with π_ref's most likely responses r_{i+1..i+k}, as a dataset sampled from π_ref would mostly
contain: `pairs_per_cell` rows per covered cell, labelled by Bradley-Terry on the gold reward, so round(σ(s)·n) of
them prefer r_i (11 of 15 at s = 1) and the rest prefer the other response. With s = 1 the labels carry exactly
the reward the PPO arm maximises, so DPO and PPO at the same β target the same KL-regularised optimum on the covered
cells (Rafailov et al.'s equivalence; Xu et al.'s Thm 4.1 compares exactly these solution sets), and DPO's loss has
a finite minimiser: a run settles at a fixed point instead of drifting with the training length, as it does with
deterministic labels (`label_scale` large), whose margin grows without bound. The remaining 8 - 1 - k responses of
each prompt appear in no pair of that prompt: they are its uncovered cells.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from gapstudy.cache import cached_artifact
from gapstudy.model import TinyGPTConfig, TinyGPTForCausalLM
from gapstudy.worlds import World, pretrain, word_level_tokenizer

SIZE = 8  # prompts = responses = 8
PROMPT_IDS = list(range(SIZE))  # token ids of p0..p7
RESPONSE_IDS = list(range(SIZE, 2 * SIZE))  # token ids of r0..r7
WORDS = [f"p{i}" for i in range(SIZE)] + [f"r{j}" for j in range(SIZE)]  # ids follow this order, then <pad>


def rejected_responses(prompt: int, k: int) -> list[int]:
    """Response indices the dataset rejects against the diagonal for `prompt`: the k cyclically next ones."""
    return [(prompt + o) % SIZE for o in range(1, k + 1)]


def uncovered_cells(k: int) -> np.ndarray:
    """[8, 8] bool: cell (i, j) is true when response j appears in no pair of prompt i."""
    covered = np.eye(SIZE, dtype=bool)
    for i in range(SIZE):
        covered[i, rejected_responses(i, k)] = True
    return ~covered


def reference_table(k: int, diagonal: float, rejected: float, concentration: float, seed: int) -> np.ndarray:
    """[8, 8] π_ref(r_j | p_i): `diagonal` on r_i, `rejected` on the k rejected responses, the rest on the uncovered
    ones; within each group the split is a seeded Dirichlet(concentration) draw, so every prompt differs."""
    rng = np.random.default_rng(seed)
    table = np.zeros((SIZE, SIZE))
    uncovered = uncovered_cells(k)
    for i in range(SIZE):
        table[i, i] = diagonal
        table[i, rejected_responses(i, k)] = rejected * rng.dirichlet([concentration] * k)
        cells = np.flatnonzero(uncovered[i])
        table[i, cells] = (1.0 - diagonal - rejected) * rng.dirichlet([concentration] * len(cells))
    return table


def pair_rows(k: int, pairs_per_cell: int, label_scale: float) -> list[dict]:
    """The fixed preference dataset as rows of token ids (the format `read_preference_rows` reads): per covered cell
    (i, j), round(σ(label_scale) · pairs_per_cell) rows r_i ≻ r_j and the rest r_j ≻ r_i (Bradley-Terry labels)."""
    wins = round(pairs_per_cell / (1.0 + np.exp(-label_scale)))
    rows = []
    for i in range(SIZE):
        for j in rejected_responses(i, k):
            best, other = {"response": [RESPONSE_IDS[i]], "reward": 1.0}, {"response": [RESPONSE_IDS[j]], "reward": 0.0}
            for chosen, rejected in [(best, other)] * wins + [(other, best)] * (pairs_per_cell - wins):
                rows.append({"prompt": [PROMPT_IDS[i]], "chosen": chosen["response"], "rejected": rejected["response"],
                             "chosen_reward": chosen["reward"], "rejected_reward": rejected["reward"],
                             "task": "default"})
    return rows


def write_pairs(w) -> Path:
    """Write the dataset to world.pairs_path unless it already holds exactly these rows. Atomic (write, then rename), and
    parallel runs write identical bytes, so no lock is needed."""
    path = Path(w.pairs_path)
    rows = pair_rows(int(w.rejected_per_prompt), int(w.pairs_per_cell), float(w.label_scale))
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def gold_reward(prompts, prompt_mask, responses, response_mask, tasks=None) -> torch.Tensor:
    """1 iff the response index equals the prompt index (prompts [N, P] left-padded, responses [N, 1])."""
    prompt_index = prompts[:, -1] - PROMPT_IDS[0]
    response_index = responses[:, 0] - RESPONSE_IDS[0]
    return (response_index == prompt_index).float()


@torch.no_grad()
def response_probabilities(model) -> torch.Tensor:
    """[8, 8] exact π(r_j | p_i): the softmax at the prompt position, read on the response tokens."""
    from gapstudy.logprobs import response_logits

    device = next(model.parameters()).device
    prompts = torch.tensor(PROMPT_IDS, device=device)[:, None]
    placeholder = torch.full_like(prompts, RESPONSE_IDS[0])  # only the logits that predict it are read
    logits = response_logits(model, prompts, None, placeholder)[:, 0]  # [8, V]
    return torch.softmax(logits, dim=-1)[:, RESPONSE_IDS]


def mass_metrics(k: int):
    """The world's exact evaluation: masses on the diagonal and on the uncovered cells, policy and π_ref."""
    uncovered = torch.from_numpy(uncovered_cells(k))

    def metrics(policy, reference) -> dict:
        p = response_probabilities(policy).cpu()
        q = response_probabilities(reference).cpu()
        return {
            "eval/diagonal_mass": float(p.diagonal().mean()),
            "eval/diagonal_mass_ref": float(q.diagonal().mean()),
            "eval/uncovered_mass": float((p * uncovered).sum(1).mean()),
            "eval/uncovered_mass_ref": float((q * uncovered).sum(1).mean()),
            "eval/uncovered_raised": float((p[uncovered] > q[uncovered]).float().mean()),
        }

    return metrics


def _build_policy(w, directory: Path) -> None:
    k = int(w.rejected_per_prompt)
    table = reference_table(k, float(w.ref_diagonal_mass), float(w.ref_rejected_mass), float(w.ref_concentration),
                            int(w.build_seed))
    tokenizer = word_level_tokenizer(WORDS, ["<pad>"], directory)
    config = TinyGPTConfig(
        vocab_size=len(tokenizer), n_positions=2, n_embd=int(w.n_embd), n_layer=int(w.n_layer),
        n_head=int(w.n_head), pad_token_id=tokenizer.pad_token_id, eos_token_id=None, output_token_ids=RESPONSE_IDS,
    )
    torch.manual_seed(int(w.build_seed))
    model = TinyGPTForCausalLM(config)
    target = torch.zeros(SIZE, 1, len(tokenizer))  # [8 prompts, 1 position, V]; prompts and <pad> get no mass
    target[:, 0, RESPONSE_IDS] = torch.tensor(table, dtype=torch.float32)
    ids = torch.tensor([[p, RESPONSE_IDS[0]] for p in PROMPT_IDS])  # the response token is never a target

    def batches(i):
        return ids, None, target, torch.ones(SIZE, 1)

    pretrain(model, batches, int(w.pretrain_steps), float(w.pretrain_lr), int(w.build_seed))
    model.save_pretrained(directory)
    np.save(directory / "reference_table.npy", table)


def validate(cfg) -> None:
    from omegaconf import OmegaConf

    from gapstudy.errors import ConfigError

    w = cfg.world
    k = w.rejected_per_prompt
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= SIZE - 2:
        raise ConfigError(f"world.rejected_per_prompt={k!r} is invalid; valid: an integer in [1, {SIZE - 2}] "
                          "(at least one response of each prompt must stay uncovered)")
    d, r = w.ref_diagonal_mass, w.ref_rejected_mass
    if not (0 < d < 1 and 0 < r < 1 and d + r < 1):
        raise ConfigError(f"world.ref_diagonal_mass={d!r}, world.ref_rejected_mass={r!r} are invalid; valid: positive "
                          "masses whose sum is below 1 (the rest is π_ref's mass on the uncovered responses)")
    n = w.pairs_per_cell
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"world.pairs_per_cell={n!r} is invalid; valid: an integer >= 1")
    if cfg.data.name == "dataset" and OmegaConf.select(cfg, "data.path") == w.pairs_path:
        # config validation checks that data.path exists before any world is built: write the world's own dataset
        # (a pure function of the world's settings, a few kilobytes) now
        write_pairs(w)


def build(cfg, cache_root: Path) -> World:
    w = cfg.world
    validate(cfg)
    spec = {k: w[k] for k in ("rejected_per_prompt", "ref_diagonal_mass", "ref_rejected_mass", "ref_concentration",
                              "n_embd", "n_layer", "n_head", "pretrain_steps", "pretrain_lr", "build_seed")}
    path = cached_artifact(cache_root, "toy8x8", spec, lambda d: _build_policy(w, d))
    k = int(w.rejected_per_prompt)
    write_pairs(w)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    prompts = [[p] for p in PROMPT_IDS]
    return World(
        name="toy8x8",
        policy_path=path,
        tokenizer=tokenizer,
        train_prompts=prompts,
        train_tasks=["default"] * SIZE,
        eval_prompts=prompts,
        eval_tasks=["default"] * SIZE,
        max_new_tokens=1,
        eos_token_id=None,  # every response is exactly one token
        pad_token_id=tokenizer.pad_token_id,
        gold=gold_reward,
        binary_tasks=frozenset({"default"}),
        extra_metrics=mass_metrics(k),
    )
