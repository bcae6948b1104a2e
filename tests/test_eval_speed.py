"""The fast evaluation path: forwards over length groups cut to their own widths, the classification pairs' non-tied
rows only, the proxy's baseline scores computed once, and the per-process cache of the fixed samples. Every metric
must equal the plain computation (one forward over the whole padded batch, as the evaluator did before) up to float
rounding, and a cache hit must give exactly what a fresh draw gives."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

VOCAB, PAD, EOS, LENGTH = 7, 0, 6, 5


def _lm(seed: int, vocab: int = VOCAB):
    from gapstudy.model import TinyGPTConfig, TinyGPTForCausalLM

    torch.manual_seed(seed)
    model = TinyGPTForCausalLM(TinyGPTConfig(vocab_size=vocab, n_positions=12, n_embd=16, n_layer=2, n_head=2))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model.eval()


def _gold(prompts, prompt_mask, responses, response_mask, tasks):
    """Rewards short responses of high tokens: ties happen (same first token and length), most pairs are decided."""
    return (responses[:, 0] % 3).float() - 0.1 * response_mask.sum(-1).float()


def _world(n: int = 96, gold=_gold, max_new_tokens: int = LENGTH):
    # prompts of 1 to 4 tokens, so prompts are left-padded and responses (EOS-terminated) vary in length
    prompts = [[1 + (i + j) % 5 for j in range(1 + i % 4)] for i in range(n)]
    tasks = ["x", "y"] * (n // 2)
    return SimpleNamespace(eval_prompts=prompts, eval_tasks=tasks, tasks=("x", "y"), pad_token_id=PAD,
                           eos_token_id=EOS, max_new_tokens=max_new_tokens, binary_tasks=frozenset(),
                           extra_metrics=None, gold=gold)


def _cfg(n: int = 96, seed: int = 0, temperature: float = 1.0):
    return OmegaConf.create({"eval": {"prompts": n, "tasks": None}, "seed": seed, "temperature": temperature})


@pytest.fixture(autouse=True)
def empty_cache():
    from gapstudy.evaluation import FIXED_SAMPLES

    FIXED_SAMPLES.clear()
    yield
    FIXED_SAMPLES.clear()


@torch.no_grad()
def _plain_metrics(evaluator, policy, step: int) -> dict:
    """The evaluator's KL, entropy and classification metrics computed the plain way: one forward over the whole
    batch padded to max_new_tokens, every pair row scored (the code before the fast path, kept as the reference)."""
    from gapstudy.logprobs import entropy, exact_kl, response_logits

    g = torch.Generator().manual_seed(evaluator.seed + step)
    s = evaluator._sample(policy, 1, g)
    mask = s.response_mask
    logits_p = response_logits(policy, s.prompts, s.prompt_mask, s.responses)
    logits_q = response_logits(evaluator.anchor, s.prompts, s.prompt_mask, s.responses)
    logp = torch.log_softmax(logits_p, -1).gather(-1, s.responses.unsqueeze(-1)).squeeze(-1)
    logq = torch.log_softmax(logits_q, -1).gather(-1, s.responses.unsqueeze(-1)).squeeze(-1)
    log_r = (logq - logp) * mask
    per_seq = {"kl": exact_kl(logits_p, logits_q, mask), "kl_k1": -log_r.sum(-1),
               "kl_k3": ((log_r.exp() - 1 - log_r) * mask).sum(-1),
               "entropy": entropy(logits_p, mask).sum(-1) / mask.sum(-1).clamp(min=1)}
    metrics = {f"eval/{k}": float(v.mean()) for k, v in per_seq.items()}
    for task in evaluator.world.tasks:
        rows = torch.tensor([t == task for t in evaluator.tasks])
        metrics[f"eval/{task}/kl"] = float(per_seq["kl"][rows].mean())
        metrics[f"eval/{task}/entropy"] = float(per_seq["entropy"][rows].mean())

    def seq_logps(model, pairs):
        logits = response_logits(model, pairs.prompts, pairs.prompt_mask, pairs.responses)
        logps = torch.log_softmax(logits, -1).gather(-1, pairs.responses.unsqueeze(-1)).squeeze(-1)
        return (logps * pairs.response_mask).sum(-1)

    pairs, index = evaluator.class_pairs, evaluator.class_index
    h = seq_logps(policy, pairs)[index] - seq_logps(evaluator.anchor, pairs)[index]
    k = len(h) // 2
    margin = h[:k] - h[k:]
    metrics["eval/classification_accuracy"] = float(((margin > 0).float() + 0.5 * (margin == 0).float()).mean())
    metrics["eval/heldout_chosen_logratio"] = float(h[:k].mean())
    metrics["eval/heldout_rejected_logratio"] = float(h[k:].mean())
    return metrics


@torch.no_grad()
def test_the_fast_metrics_equal_the_plain_padded_computation_up_to_rounding():
    """Every KL / entropy / classification metric equals one forward over the padded batch within 1e-5 relative
    (the tolerance the fast path was accepted under); the sample-only metrics (gold, length, win rates) come from
    the same samples, so the gold reward and length equal the samples' own exactly."""
    from gapstudy.evaluation import Evaluator

    world, anchor, policy = _world(), _lm(1), _lm(2)
    evaluator = Evaluator(_cfg(), world, anchor, anchor)
    assert evaluator.prompt_mask is not None  # left padding is exercised
    assert 0 < len(evaluator.class_index) // 2 < 96  # some pairs tie and are dropped
    for model, step in ((policy, 0), (policy, 7), (anchor, 3)):
        fast, plain = evaluator(model, step), _plain_metrics(evaluator, model, step)
        for key, value in plain.items():
            assert fast[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (key, step)
        s = evaluator._sample(model, 1, torch.Generator().manual_seed(evaluator.seed + step))
        assert s.response_mask.sum(-1).min() < s.response_mask.shape[1]  # responses of several lengths
        assert fast["eval/length"] == float(s.response_mask.sum(-1).float().mean())
        assert fast["eval/gold_reward"] == float(_gold(None, None, s.responses, s.response_mask, None).mean())
    at_anchor = evaluator(anchor, 3)  # the same passes for policy and anchor: exactly 0, not rounding noise
    assert at_anchor["eval/kl"] == 0.0 and at_anchor["eval/kl_k1"] == 0.0 and at_anchor["eval/kl_k3"] == 0.0
    assert at_anchor["eval/heldout_chosen_logratio"] == 0.0 and at_anchor["eval/classification_accuracy"] == 0.5


@torch.no_grad()
def test_scoring_logits_and_length_groups_change_nothing_but_rounding():
    """scoring_logits (last token not fed, LM head on the scored positions) equals response_logits; the length
    groups partition the rows, each with one prompt length (no attention mask left) and no real token cut."""
    from gapstudy.generation import left_pad
    from gapstudy.logprobs import length_groups, response_logits, scoring_logits, trim

    model = _lm(3)
    prompts, prompt_mask = left_pad([[1, 2, 3], [4], [2, 2], [5, 1, 1], [3]], PAD)
    responses = torch.tensor([[1, 6, 0, 0], [2, 3, 6, 0], [6, 0, 0, 0], [1, 2, 3, 4], [4, 6, 0, 0]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]]).bool()
    full = response_logits(model, prompts, prompt_mask, responses)
    assert torch.allclose(scoring_logits(model, prompts, prompt_mask, responses), full, atol=1e-5)
    assert torch.allclose(model(input_ids=torch.cat([prompts, responses], 1), logits_to_keep=3).logits,
                          model(input_ids=torch.cat([prompts, responses], 1)).logits[:, -3:])
    groups = length_groups(prompt_mask, mask, rows=1) + length_groups(prompt_mask, mask)
    assert sorted(torch.cat(length_groups(prompt_mask, mask)).tolist()) == [0, 1, 2, 3, 4]
    assert len(length_groups(prompt_mask, mask, rows=1)) == 5
    for index in groups:
        p, pm, r, m = trim(prompts, prompt_mask, responses, mask, index)
        assert pm is None  # one prompt length per group: the padding columns are gone
        assert int(m.sum()) == int(mask[index].sum())  # no real response token is cut
        assert r.shape[1] == int(mask[index].sum(-1).max()) and p.shape[1] == int(prompt_mask[index].sum(-1).max())
        logits = scoring_logits(model, p, pm, r)
        assert torch.allclose(logits * m[..., None], full[index, : r.shape[1]] * m[..., None], atol=1e-5)


def _fixed(evaluator):
    return evaluator.baseline.responses, evaluator.class_pairs.responses, evaluator.class_anchor


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(_fixed(a), _fixed(b)))


@torch.no_grad()
def test_a_rebuilt_evaluator_reuses_the_fixed_samples_and_gets_exactly_a_fresh_draw():
    """Same anchor weights (a separate copy), baseline, seed, prompts, temperature: a cache hit, and the samples,
    the anchor's pair log-probs and the metrics are bit-identical to an evaluator drawn with the cache empty."""
    import copy

    from gapstudy.evaluation import FIXED_SAMPLES, Evaluator

    world, anchor = _world(), _lm(1)
    first = Evaluator(_cfg(), world, anchor, anchor)
    assert len(FIXED_SAMPLES) == 1
    hit = Evaluator(_cfg(), _world(), copy.deepcopy(anchor), copy.deepcopy(anchor))
    assert len(FIXED_SAMPLES) == 1  # the same key: nothing drawn
    FIXED_SAMPLES.clear()
    fresh = Evaluator(_cfg(), world, anchor, anchor)
    assert _same(hit, fresh) and _same(first, fresh)
    policy = _lm(2)
    assert hit(policy, 4) == fresh(policy, 4)
    hit.baseline.responses.fill_(PAD)  # a caller writing into its samples does not reach the cached copy
    assert _same(Evaluator(_cfg(), world, anchor, anchor), fresh)


def _perturbed(seed: int):
    model = _lm(1)
    with torch.no_grad():
        model.transformer.h[0].c_fc.bias[seed] += 1e-3  # one parameter, slightly
    return model


# each case changes one part of the key; the rest as in the first evaluator
MISSES = {
    "anchor weights": lambda: dict(anchor=_perturbed(0)),
    "baseline weights": lambda: dict(baseline=_perturbed(1)),
    "anchor dtype": lambda: dict(anchor=_lm(1).to(torch.float64), baseline=_lm(1).to(torch.float64)),
    "seed": lambda: dict(cfg=_cfg(seed=1)),
    "temperature": lambda: dict(cfg=_cfg(temperature=0.7)),
    "prompt rows": lambda: dict(cfg=_cfg(n=94)),
    "prompts": lambda: dict(world=SimpleNamespace(**{**vars(_world()),
                                                     "eval_prompts": [[2]] + _world().eval_prompts[1:]})),
    "tasks": lambda: dict(world=SimpleNamespace(**{**vars(_world()), "eval_tasks": ["y", "x"] * 48})),
    "max_new_tokens": lambda: dict(world=_world(max_new_tokens=LENGTH - 1)),
    "eos token": lambda: dict(world=SimpleNamespace(**{**vars(_world()), "eos_token_id": 5})),
    "config": lambda: dict(anchor=_with_config(), baseline=_with_config()),
}


def _with_config():
    model = _lm(1)
    model.config.output_token_ids = [1, 2, 3, 4, 5, 6]  # changes what the LM head may emit, not the weights
    return model


@pytest.mark.parametrize("part", list(MISSES))
@torch.no_grad()
def test_a_change_in_any_key_part_misses_the_cache_and_draws_afresh(part):
    """Each part of the key, changed alone, makes a new entry, and the evaluator equals one built with the cache
    empty (so a stale entry can never stand in for it)."""
    from gapstudy.evaluation import FIXED_SAMPLES, Evaluator

    anchor = _lm(1)
    Evaluator(_cfg(), _world(), anchor, anchor)
    args = dict(cfg=_cfg(), world=_world(), anchor=anchor, baseline=anchor)
    args.update(MISSES[part]())
    build = lambda: Evaluator(args["cfg"], args["world"], args["anchor"], args["baseline"])
    changed = build()
    assert len(FIXED_SAMPLES) == 2, part
    FIXED_SAMPLES.clear()
    assert _same(changed, build()), part


@torch.no_grad()
def test_thread_count_and_training_mode_keep_the_cache_out():
    """Another thread count is another key (kernels may round differently); a model in training mode (dropout
    would draw from the global stream) is never cached."""
    from gapstudy.evaluation import FIXED_SAMPLES, Evaluator

    anchor, threads = _lm(1), torch.get_num_threads()
    Evaluator(_cfg(), _world(), anchor, anchor)
    try:
        torch.set_num_threads(threads + 1)
        Evaluator(_cfg(), _world(), anchor, anchor)
    finally:
        torch.set_num_threads(threads)
    assert len(FIXED_SAMPLES) == 2
    FIXED_SAMPLES.clear()
    training = _lm(1).train()
    Evaluator(_cfg(), _world(), training, training)
    assert len(FIXED_SAMPLES) == 0


@torch.no_grad()
def test_gold_labels_are_recomputed_on_a_hit():
    """The cache holds samples, never gold labels: another gold reward on the same samples gives other chosen /
    rejected rows, and the anchor's log-probs on them, exactly as a fresh evaluator would."""
    from gapstudy.evaluation import FIXED_SAMPLES, Evaluator

    anchor, policy = _lm(1), _lm(2)
    flipped = lambda *a: -_gold(*a)
    first = Evaluator(_cfg(), _world(), anchor, anchor)
    hit = Evaluator(_cfg(), _world(gold=flipped), anchor, anchor)
    assert len(FIXED_SAMPLES) == 1 and torch.equal(hit.class_pairs.responses, first.class_pairs.responses)
    k = len(first.class_index) // 2
    assert torch.equal(hit.class_index[:k], first.class_index[k:])  # chosen and rejected swap
    FIXED_SAMPLES.clear()
    fresh = Evaluator(_cfg(), _world(gold=flipped), anchor, anchor)
    assert _same(hit, fresh) and hit(policy, 1) == fresh(policy, 1)
    assert hit(policy, 1)["eval/heldout_chosen_logratio"] == first(policy, 1)["eval/heldout_rejected_logratio"]


@torch.no_grad()
def test_the_cache_is_bounded():
    from gapstudy.evaluation import FIXED_SAMPLES, FIXED_SAMPLES_MAX, Evaluator

    anchor = _lm(1)
    for seed in range(FIXED_SAMPLES_MAX + 2):
        Evaluator(_cfg(n=16, seed=seed), _world(), anchor, anchor)
    assert len(FIXED_SAMPLES) == FIXED_SAMPLES_MAX


class _CountingProxy:
    """A frozen proxy that counts the rows it scores: the baseline must be scored once per evaluator."""

    def __init__(self):
        self.rows = []

    def __call__(self, prompts, prompt_mask, responses, response_mask, tasks=None):
        self.rows.append(len(responses))
        return responses[:, 0].float() + 0.01 * response_mask.sum(-1)


@torch.no_grad()
def test_the_proxy_scores_the_baseline_once_and_its_metrics_are_unchanged():
    """Two evaluations: the baseline's 96 rows are scored at the first only; eval/proxy_accuracy and
    eval/proxy_reward equal what scoring the baseline every time gives."""
    from gapstudy.evaluation import Evaluator

    proxy, anchor, policy = _CountingProxy(), _lm(1), _lm(2)
    evaluator = Evaluator(_cfg(), _world(), anchor, anchor, proxy=proxy)
    first, second = evaluator(policy, 0), evaluator(policy, 5)
    assert proxy.rows == [96, 96, 96]  # policy, baseline, policy
    b = evaluator.baseline
    base = proxy(b.prompts, b.prompt_mask, b.responses, b.response_mask)
    for step, m in ((0, first), (5, second)):
        s = evaluator._sample(policy, 1, torch.Generator().manual_seed(evaluator.seed + step))
        mine = proxy(s.prompts, s.prompt_mask, s.responses, s.response_mask)
        gold, base_gold = _gold(None, None, s.responses, s.response_mask, None), evaluator.baseline_gold
        decided = gold != base_gold
        agree = ((mine > base) == (gold > base_gold))[decided].float().mean()
        assert m["eval/proxy_accuracy"] == float(agree)
        assert m["eval/proxy_reward"] == pytest.approx(float(mine.mean()), rel=1e-6)
