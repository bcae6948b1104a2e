"""Evaluation on held-out prompts: exact KL to the initial policy, win rate against a baseline, gold reward, ...

The evaluator samples the policy once per prompt with a generator seeded by (run seed, step), so evaluation never
touches the training random streams and a replayed run sees exactly the same evaluation samples. The baseline's
samples and the classification pairs are drawn once, at start-up: they never change during a run, and a later run
of the same process with the same anchor, baseline, seed and prompts reuses them (`FIXED_SAMPLES`). Every forward
runs over groups of rows cut to their own prompt and response lengths (`length_groups`): padding costs nothing.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch

from gapstudy.errors import ConfigError
from gapstudy.generation import Samples, left_pad, sample
from gapstudy.logprobs import entropy, exact_kl, gather_logps, length_groups, scoring_logits, trim

FIXED_SAMPLES: OrderedDict = OrderedDict()  # cache key -> the fixed samples of a run (see Evaluator._fixed)
FIXED_SAMPLES_MAX = 4  # entries kept per process (a suite worker runs the arms of one seed in a row)


def win_rate(policy_rewards: torch.Tensor, baseline_rewards: torch.Tensor) -> float:
    """P(policy sample beats baseline sample on the same prompt); ties count 1/2."""
    wins = (policy_rewards > baseline_rewards).float() + 0.5 * (policy_rewards == baseline_rewards).float()
    return float(wins.mean())


class Evaluator:
    def __init__(self, cfg, world, anchor, baseline, proxy=None, device="cpu"):
        keep = cfg.eval.get("tasks")  # null = every family of the world
        if keep is not None and set(keep) - set(world.tasks):
            raise ConfigError(f"eval.tasks: {', '.join(sorted(set(keep) - set(world.tasks)))} not among this world's "
                              f"prompt families; valid: {', '.join(world.tasks)}")
        rows = [i for i, t in enumerate(world.eval_tasks) if keep is None or t in keep]
        n = min(int(cfg.eval.prompts), len(rows))
        rows = rows[:n]
        self.world = world
        self.anchor = anchor  # the initial (SFT) policy: eval/kl is KL(pi || anchor), as in Tang et al.
        self.proxy = proxy
        self.tasks = [world.eval_tasks[i] for i in rows]
        self.prompts, self.prompt_mask = left_pad([world.eval_prompts[i] for i in rows], world.pad_token_id, device)
        self.seed = int(cfg.seed) * 1_000_003 + 7
        self.temperature = float(cfg.temperature)
        self.baseline, pairs, anchor_logps = self._fixed(anchor, baseline, n)
        self.baseline_gold = self._gold(self.baseline)
        self.baseline_proxy = None  # the proxy's scores of the baseline: the proxy is frozen, so scored once
        # classification pairs (Tang et al. Figs. 6-8): two anchor samples per prompt, gold-labelled, ties dropped
        gold = self._gold(pairs).view(-1, 2)
        keep = gold[:, 0] != gold[:, 1]
        first_wins = (gold[:, 0] > gold[:, 1])[keep]
        rows = torch.arange(2 * n).view(-1, 2)[keep]
        chosen = torch.where(first_wins, rows[:, 0], rows[:, 1])
        rejected = torch.where(first_wins, rows[:, 1], rows[:, 0])
        self.class_pairs = pairs  # [2n, .] two anchor samples per prompt, rows 2i and 2i+1
        self.class_index = torch.cat([chosen, rejected])  # rows of class_pairs: the chosen ones, then the rejected
        # only the non-tied rows are ever scored: the policy's and the anchor's passes run over them alone
        self.class_groups = _groups(_rows(pairs, self.class_index)) if keep.any() else None
        self.class_anchor = None
        if self.class_groups is not None:
            key = self.class_index.numpy().tobytes()
            if key not in anchor_logps:
                with torch.no_grad():
                    anchor_logps[key] = self._seq_logps(anchor, self.class_groups, len(self.class_index))
            self.class_anchor = anchor_logps[key].clone()

    def _fixed(self, anchor, baseline, n: int):
        """(baseline samples, classification pair samples, {class rows -> the anchor's log-probs on them}): drawn
        here, or reused from an earlier evaluator of this process built from the same inputs. The key holds
        everything the samples depend on: both models' weights, dtypes and configs, the seed, the prompts and
        tasks, temperature, response length and special tokens, the thread count (kernels may round differently);
        gold labels are never cached (a run may change the gold reward's settings), so the pairs' labels and ties
        are recomputed and the anchor's log-probs are keyed by the rows they kept. A model in training mode
        (dropout draws from the global stream) is never cached."""
        w = self.world
        key = None
        if not (anchor.training or baseline.training):
            key = (_fingerprint(anchor), _fingerprint(baseline), self.seed, self.temperature, w.max_new_tokens,
                   w.eos_token_id, w.pad_token_id, tuple(self.tasks), _tensor_bytes(self.prompts),
                   _tensor_bytes(self.prompt_mask), torch.get_num_threads(), str(self.prompts.device))
        if key is not None and key in FIXED_SAMPLES:
            FIXED_SAMPLES.move_to_end(key)
            base, pairs, anchor_logps = FIXED_SAMPLES[key]
            return _copy(base), _copy(pairs), anchor_logps
        g = torch.Generator().manual_seed(self.seed - 1)
        base = self._sample(baseline, 1, g)
        pairs = self._sample(anchor, 2, g)
        anchor_logps: dict = {}
        if key is not None:
            FIXED_SAMPLES[key] = (_copy(base), _copy(pairs), anchor_logps)
            while len(FIXED_SAMPLES) > FIXED_SAMPLES_MAX:
                FIXED_SAMPLES.popitem(last=False)
        return base, pairs, anchor_logps

    def _sample(self, model, n, g):
        w = self.world
        return sample(model, self.prompts, self.prompt_mask, n, g, w.max_new_tokens, self.temperature,
                      w.eos_token_id, w.pad_token_id)

    def _gold(self, s) -> torch.Tensor:
        n = s.prompts.shape[0] // len(self.tasks)
        tasks = [t for t in self.tasks for _ in range(n)]
        return self.world.gold(s.prompts, s.prompt_mask, s.responses, s.response_mask, tasks).float()

    @staticmethod
    def _seq_logps(model, groups, n: int) -> torch.Tensor:
        """[n] summed log-probs of the responses, over the rows of `groups` (from `_groups`)."""
        out = torch.empty(n, device=groups[0][0].device)
        for index, prompts, prompt_mask, responses, mask in groups:
            out[index] = gather_logps(scoring_logits(model, prompts, prompt_mask, responses), responses, mask).sum(-1)
        return out

    @staticmethod
    def _kl_stats(policy, anchor, groups, n: int) -> dict:
        """[n] per-sequence exact KL, k1 and k3 KL estimates and summed entropy of the policy's samples."""
        out = {k: torch.empty(n, device=groups[0][0].device) for k in ("kl", "kl_k1", "kl_k3", "entropy")}
        for index, prompts, prompt_mask, responses, mask in groups:
            logits_p = scoring_logits(policy, prompts, prompt_mask, responses)
            logits_q = scoring_logits(anchor, prompts, prompt_mask, responses)
            # log pi_init/pi at each sampled token (0 past the response)
            log_r = gather_logps(logits_q, responses, mask) - gather_logps(logits_p, responses, mask)
            out["kl"][index] = exact_kl(logits_p, logits_q, mask)
            out["kl_k1"][index] = -log_r.sum(-1)
            out["kl_k3"][index] = ((log_r.exp() - 1 - log_r) * mask).sum(-1)
            out["entropy"][index] = entropy(logits_p, mask).sum(-1)
        return out

    @torch.no_grad()
    def __call__(self, policy, step: int) -> dict:
        policy.eval()
        g = torch.Generator().manual_seed(self.seed + int(step))
        s = self._sample(policy, 1, g)
        mask = s.response_mask
        length = mask.sum(-1).float()
        per_seq = self._kl_stats(policy, self.anchor, _groups(s), len(length))
        per_seq.update(gold_reward=self._gold(s), length=length)
        per_seq["entropy"] = per_seq["entropy"] / length.clamp(min=1)
        per_seq = {k: per_seq[k] for k in ("kl", "kl_k1", "kl_k3", "gold_reward", "length", "entropy")}  # log order
        metrics = {f"eval/{k}": float(v.mean()) for k, v in per_seq.items()}
        metrics["eval/win_rate"] = win_rate(per_seq["gold_reward"], self.baseline_gold)
        # two disjoint halves (even / odd positions among the evaluated prompts): select on one, report the other
        for half, start in (("a", 0), ("b", 1)):
            if len(self.tasks) > start:
                metrics[f"eval/win_rate_{half}"] = win_rate(per_seq["gold_reward"][start::2],
                                                            self.baseline_gold[start::2])
        binary = torch.tensor([t in self.world.binary_tasks for t in self.tasks])
        if binary.any():
            metrics["eval/accuracy"] = float((per_seq["gold_reward"][binary] >= 0.5).float().mean())
        if len(self.world.tasks) > 1:
            for task in self.world.tasks:
                rows = torch.tensor([t == task for t in self.tasks])
                if not rows.any():
                    continue
                for k in ("gold_reward", "length", "entropy", "kl"):
                    metrics[f"eval/{task}/{k}"] = float(per_seq[k][rows].mean())
                metrics[f"eval/{task}/win_rate"] = win_rate(per_seq["gold_reward"][rows], self.baseline_gold[rows])
                if task in self.world.binary_tasks:
                    metrics[f"eval/{task}/accuracy"] = float((per_seq["gold_reward"][rows] >= 0.5).float().mean())
        if self.proxy is not None:
            width = int(length.max())  # the padding after the longest response changes no score
            proxy = self.proxy(s.prompts, s.prompt_mask, s.responses[:, :width], mask[:, :width], self.tasks)
            if self.baseline_proxy is None:  # at the first evaluation, under the evaluations' precision context
                self.baseline_proxy = self.proxy(self.baseline.prompts, self.baseline.prompt_mask,
                                                 self.baseline.responses, self.baseline.response_mask, self.tasks)
            proxy_base = self.baseline_proxy
            metrics["eval/proxy_reward"] = float(proxy.mean())
            decided = per_seq["gold_reward"] != self.baseline_gold
            if decided.any():  # Tang et al. Fig. 6: does the proxy still rank on-policy samples like gold?
                agree = (proxy > proxy_base) == (per_seq["gold_reward"] > self.baseline_gold)
                metrics["eval/proxy_accuracy"] = float(agree[decided].float().mean())
        if self.class_anchor is not None:
            h = self._seq_logps(policy, self.class_groups, len(self.class_index)) - self.class_anchor
            k = len(h) // 2
            margin = h[:k] - h[k:]
            metrics["eval/classification_accuracy"] = float(((margin > 0).float() + 0.5 * (margin == 0).float()).mean())
            # Tang et al.'s log pi(y_w) - log pi_ref(y_w) on fixed gold-labelled SFT pairs, the same for every arm
            metrics["eval/heldout_chosen_logratio"] = float(h[:k].mean())
            metrics["eval/heldout_rejected_logratio"] = float(h[k:].mean())
        if self.world.extra_metrics is not None:  # the world's own exact metrics, against the anchor (pi_init)
            metrics.update(self.world.extra_metrics(policy, self.anchor))
        return metrics


def _rows(s: Samples, index: torch.Tensor) -> Samples:
    return Samples(s.prompts[index], None if s.prompt_mask is None else s.prompt_mask[index], s.responses[index],
                   s.response_mask[index], s.logps[index], s.version)


def _copy(s: Samples) -> Samples:
    return _rows(s, torch.arange(s.responses.shape[0], device=s.responses.device))


def _groups(s: Samples) -> list[tuple]:
    """(row index [n], prompts, prompt mask, responses, response mask), each group cut to its own widths."""
    groups = [index.to(s.responses.device) for index in length_groups(s.prompt_mask, s.response_mask)]
    return [(index, *trim(s.prompts, s.prompt_mask, s.responses, s.response_mask, index)) for index in groups]


def _tensor_bytes(t: torch.Tensor | None) -> tuple | None:
    return None if t is None else (str(t.dtype), tuple(t.shape), t.cpu().numpy().tobytes())


def _fingerprint(model) -> tuple:
    """What a model samples and scores with: its class, config and every parameter and buffer (values, dtypes)."""
    digest = hashlib.sha256()
    for name, t in model.state_dict().items():
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    config = getattr(model, "config", None)
    return type(model).__qualname__, repr(config) if config is None else config.to_json_string(), digest.hexdigest()
