"""Evaluation on held-out prompts: exact KL to the initial policy, win rate against a baseline, gold reward, ...

The evaluator samples the policy once per prompt with a generator seeded by (run seed, step), so evaluation never
touches the training random streams and a replayed run sees exactly the same evaluation samples. The baseline's
samples and the classification pairs are drawn once, at start-up: they never change during a run.
"""
from __future__ import annotations

import torch

from gapstudy.errors import ConfigError
from gapstudy.generation import left_pad, sample
from gapstudy.logprobs import entropy, exact_kl, response_logits


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
        g = torch.Generator().manual_seed(self.seed - 1)
        self.baseline = self._sample(baseline, 1, g)
        self.baseline_gold = self._gold(self.baseline)
        # classification pairs (Tang et al. Figs. 6-8): two anchor samples per prompt, gold-labelled, ties dropped
        pairs = self._sample(anchor, 2, g)
        gold = self._gold(pairs).view(-1, 2)
        keep = gold[:, 0] != gold[:, 1]
        first_wins = (gold[:, 0] > gold[:, 1])[keep]
        rows = torch.arange(2 * n).view(-1, 2)[keep]
        chosen = torch.where(first_wins, rows[:, 0], rows[:, 1])
        rejected = torch.where(first_wins, rows[:, 1], rows[:, 0])
        self.class_index = torch.cat([chosen, rejected])
        self.class_pairs = pairs
        self.class_anchor = self._seq_logps(anchor, pairs)[self.class_index] if keep.any() else None

    def _sample(self, model, n, g):
        w = self.world
        return sample(model, self.prompts, self.prompt_mask, n, g, w.max_new_tokens, self.temperature,
                      w.eos_token_id, w.pad_token_id)

    def _gold(self, s) -> torch.Tensor:
        n = s.prompts.shape[0] // len(self.tasks)
        tasks = [t for t in self.tasks for _ in range(n)]
        return self.world.gold(s.prompts, s.prompt_mask, s.responses, s.response_mask, tasks).float()

    @staticmethod
    def _seq_logps(model, s) -> torch.Tensor:
        logits = response_logits(model, s.prompts, s.prompt_mask, s.responses)
        logps = torch.log_softmax(logits, -1).gather(-1, s.responses.unsqueeze(-1)).squeeze(-1)
        return (logps * s.response_mask).sum(-1)

    @torch.no_grad()
    def __call__(self, policy, step: int) -> dict:
        policy.eval()
        g = torch.Generator().manual_seed(self.seed + int(step))
        s = self._sample(policy, 1, g)
        mask = s.response_mask
        logits_p = response_logits(policy, s.prompts, s.prompt_mask, s.responses)
        logits_q = response_logits(self.anchor, s.prompts, s.prompt_mask, s.responses)
        logp = torch.log_softmax(logits_p, -1).gather(-1, s.responses.unsqueeze(-1)).squeeze(-1)
        logq = torch.log_softmax(logits_q, -1).gather(-1, s.responses.unsqueeze(-1)).squeeze(-1)
        log_r = (logq - logp) * mask  # log pi_init/pi at each sampled token
        per_seq = {
            "kl": exact_kl(logits_p, logits_q, mask),
            "kl_k1": -log_r.sum(-1),
            "kl_k3": ((log_r.exp() - 1 - log_r) * mask).sum(-1),
            "gold_reward": self._gold(s),
            "length": mask.sum(-1).float(),
            "entropy": entropy(logits_p, mask).sum(-1) / mask.sum(-1).clamp(min=1),
        }
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
            proxy = self.proxy(s.prompts, s.prompt_mask, s.responses, mask, self.tasks)
            proxy_base = self.proxy(self.baseline.prompts, self.baseline.prompt_mask, self.baseline.responses,
                                    self.baseline.response_mask, self.tasks)
            metrics["eval/proxy_reward"] = float(proxy.mean())
            decided = per_seq["gold_reward"] != self.baseline_gold
            if decided.any():  # Tang et al. Fig. 6: does the proxy still rank on-policy samples like gold?
                agree = (proxy > proxy_base) == (per_seq["gold_reward"] > self.baseline_gold)
                metrics["eval/proxy_accuracy"] = float(agree[decided].float().mean())
        if self.class_anchor is not None:
            h = self._seq_logps(policy, self.class_pairs)[self.class_index] - self.class_anchor
            k = len(h) // 2
            margin = h[:k] - h[k:]
            metrics["eval/classification_accuracy"] = float(((margin > 0).float() + 0.5 * (margin == 0).float()).mean())
            # Tang et al.'s log pi(y_w) - log pi_ref(y_w) on fixed gold-labelled SFT pairs, the same for every arm
            metrics["eval/heldout_chosen_logratio"] = float(h[:k].mean())
            metrics["eval/heldout_rejected_logratio"] = float(h[k:].mean())
        if self.world.extra_metrics is not None:  # the world's own exact metrics, against the anchor (pi_init)
            metrics.update(self.world.extra_metrics(policy, self.anchor))
        return metrics
