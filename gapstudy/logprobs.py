"""Sequence log-probs and exact per-position KL: the only place that runs a model forward over prompt + response.

A batch of sequences is a left-padded prompt block [N, P] followed by a right-padded response block [N, L]; the
logits that predict response token t sit at position P - 1 + t.
"""
from __future__ import annotations

import inspect

import torch


def response_logits(model, prompts, prompt_mask, responses) -> torch.Tensor:
    """[N, L, V] logits predicting each response token (float32)."""
    P = prompts.shape[1]
    input_ids = torch.cat([prompts, responses], dim=1)
    if prompt_mask is None:
        attention_mask = position_ids = None
    else:
        attention_mask = torch.cat([prompt_mask, torch.ones_like(responses)], dim=1)
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    return logits[:, P - 1 : -1].float()


def scoring_logits(model, prompts, prompt_mask, responses) -> torch.Tensor:
    """[N, L, V] the same logits as `response_logits`, for passes that only score (evaluation): the last response
    token is not fed (by causality no other logit depends on it) and, where the model takes transformers'
    `logits_to_keep`, the LM head runs on the L scored positions only."""
    L = responses.shape[1]
    input_ids = torch.cat([prompts, responses[:, :-1]], dim=1)
    if prompt_mask is None:
        attention_mask = position_ids = None
    else:
        attention_mask = torch.cat([prompt_mask, torch.ones_like(responses[:, :-1])], dim=1)
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    extra = {"logits_to_keep": L} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **extra).logits
    return logits[:, -L:].float()


def length_groups(prompt_mask, response_mask, rows: int = 256) -> list[torch.Tensor]:
    """Row indices [n] of a batch in groups of at most `rows` that share one prompt length, longest responses first
    within it: cut to its own widths (`trim`), a group needs no attention mask and little response padding."""
    N, L = response_mask.shape
    prompt_len = torch.zeros(N, dtype=torch.long) if prompt_mask is None else prompt_mask.long().sum(-1).cpu()
    response_len = response_mask.long().sum(-1).cpu()
    order = torch.argsort(prompt_len * (L + 1) + (L - response_len), stable=True)
    groups = []
    for length in torch.unique(prompt_len).tolist():
        groups.extend(order[prompt_len[order] == length].split(rows))
    return groups


def trim(prompts, prompt_mask, responses, response_mask, index):
    """The rows `index` with the prompt block cut to their longest prompt (left padding dropped; None once no
    prompt is padded) and the response block to their longest response (no row's token is lost)."""
    prompts, responses, response_mask = prompts[index], responses[index], response_mask[index]
    if prompt_mask is not None:
        prompt_mask = prompt_mask[index]
        width = int(prompt_mask.long().sum(-1).max())
        prompts, prompt_mask = prompts[:, prompts.shape[1] - width:], prompt_mask[:, prompt_mask.shape[1] - width:]
        if bool(prompt_mask.all()):
            prompt_mask = None
    length = max(1, int(response_mask.long().sum(-1).max()))
    return prompts, prompt_mask, responses[:, :length], response_mask[:, :length]


def gather_logps(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0):
    """[N, L] log-prob of each token under softmax(logits / temperature); 0 where mask is False."""
    if temperature != 1.0:
        logits = logits / temperature
    logps = torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return logps * mask


def token_logps(model, prompts, prompt_mask, responses, response_mask, temperature: float = 1.0) -> torch.Tensor:
    """[N, L] per-token log-probs of the responses under `model` (differentiable unless called under no_grad)."""
    return gather_logps(response_logits(model, prompts, prompt_mask, responses), responses, response_mask, temperature)


def exact_kl(logits_p: torch.Tensor, logits_q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N] sum over response positions of KL(p(.|prefix) || q(.|prefix)), exact over the vocabulary.

    Along samples y ~ p this is Tang et al.'s estimator of the sequence KL(p || q): by the chain rule its
    expectation equals sum_y p(y) log p(y)/q(y) exactly.
    """
    logp = torch.log_softmax(logits_p, dim=-1)
    logq = torch.log_softmax(logits_q, dim=-1)
    per_position = (logp.exp() * (logp - logq)).sum(-1)  # [N, L]
    return (per_position * mask).sum(-1)


def entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N, L] exact next-token entropy (nats) at each response position; 0 where mask is False."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1) * mask
