"""The metric-key vocabulary, defined once, and the loggers that write it (jsonl always; wandb as a mirror).

Every key the loop logs is listed here with its meaning. `metrics.jsonl` holds one JSON object per logged step,
always with an explicit integer `step`, flushed line by line so a crash leaves every earlier line whole.
Per-task evaluation keys follow the pattern `eval/<task>/<name>` (e.g. `eval/math/accuracy`) for worlds with
several prompt families.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

KEYS: dict[str, str] = {
    # training, per optimizer step
    "train/loss": "mean objective over the batch",
    "train/margin": "mean implicit-reward margin beta*h, h = log-ratio(chosen) - log-ratio(rejected) (pair losses)",
    "train/accuracy": "fraction of pairs with h > 0: the policy ranks chosen above rejected (pair losses)",
    "train/chosen_logratio": "mean log pi(chosen) - log pi_ref(chosen): change of the chosen log-prob vs the reference",
    "train/rejected_logratio": "mean log pi(rejected) - log pi_ref(rejected)",
    "train/reward": "mean labeller reward of the responses in the batch",
    "train/advantage_abs": "mean |advantage| (group losses)",
    "train/clip_fraction": "fraction of tokens whose ratio was clipped (GRPO)",
    "train/kl": "mean per-sequence k3 KL to the reference on the batch (GRPO)",
    "train/reference_point": "KTO's z0: max(0, mean log pi/pi_ref over the batch's responses), detached",
    "train/log_odds_ratio": "ORPO: mean log odds(chosen) - log odds(rejected), odds = P/(1-P) of the length-normalised P",
    "train/nll": "ORPO: mean negative log-likelihood (per token) of the chosen responses",
    "train/effective_samples": "RWR: mean over prompts of 1 / sum of squared weights (1 = one sample counts, n = all)",
    "train/grad_norm": "gradient norm before clipping",
    "train/examples": "pairs or groups in the batch after skipping ties",
    "train/skipped": "prompts skipped by the pair builder (ties, all-correct, all-incorrect)",
    "gen/staleness": "optimizer step minus the sampler's weight version for the trained batch",
    "gen/length": "mean response length (tokens) of the trained batch",
    "counters/samples": "responses generated or read so far",
    "counters/updates": "optimizer steps taken so far",
    "time/seconds": "wall-clock seconds spent in training steps so far (setup and evaluation excluded)",
    # evaluation on held-out prompts, every eval_every steps and at the end
    "eval/kl": "KL(pi || pi_init) per sequence: exact over the vocabulary at each position along samples of pi, summed",
    "eval/kl_k1": "same samples: mean of sum_t log pi/pi_init (the k1 estimator)",
    "eval/kl_k3": "same samples: mean of sum_t (r - 1 - log r), r = pi_init/pi (the k3 estimator)",
    "eval/win_rate": "P(gold(pi sample) > gold(baseline sample)) on the same prompt; ties count 1/2",
    "eval/win_rate_a": "eval/win_rate on the even positions of the evaluated prompts (one half: select on it)",
    "eval/win_rate_b": "eval/win_rate on the odd positions, disjoint from _a (the other half: report on it)",
    "eval/gold_reward": "mean gold reward of pi's samples",
    "eval/proxy_reward": "mean proxy-RM reward of pi's samples (labeller=proxy only)",
    "eval/proxy_accuracy": "agreement of proxy and gold on (pi sample, baseline sample) pairs (labeller=proxy only)",
    "eval/accuracy": "fraction of verifiable prompts answered correctly",
    "eval/length": "mean response length in tokens",
    "eval/entropy": "mean per-token entropy of pi along its own samples (nats)",
    "eval/classification_accuracy": "pi as a classifier, sign(h), against gold labels on held-out pairs of reference samples",
    "eval/heldout_chosen_logratio": "mean log pi(chosen) - log pi_init(chosen) on those fixed gold-labelled pairs",
    "eval/heldout_rejected_logratio": "mean log pi(rejected) - log pi_init(rejected) on the same pairs",
    # world=toy8x8 only: exact softmax masses over the 8 responses, averaged over the 8 prompts
    "eval/diagonal_mass": "pi's mass on the optimal (diagonal) response",
    "eval/diagonal_mass_ref": "pi_init's mass on the diagonal (the same every evaluation)",
    "eval/uncovered_mass": "pi's mass on the responses that appear in no pair of the prompt in the fixed dataset",
    "eval/uncovered_mass_ref": "pi_init's mass on those uncovered responses (the same every evaluation)",
    "eval/uncovered_raised": "fraction of uncovered (prompt, response) cells where pi > pi_init",
}
TASK_KEY = re.compile(r"^eval/[a-z_]+/(win_rate|gold_reward|accuracy|length|entropy|kl)$")


def check_key(key: str) -> None:
    if key not in KEYS and not TASK_KEY.match(key):
        raise KeyError(f"metric key {key!r} is not in gapstudy.metrics.KEYS")


def _plain(value):
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        return None  # strict JSON has no NaN; analysis reads null as missing
    return value


class JsonlLogger:
    """Appends one object per call to metrics.jsonl; `truncate_after` cuts lines past a resumed step."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "metrics.jsonl"
        self._file = open(self.path, "a", encoding="utf-8")

    def log(self, metrics: dict, step: int) -> None:
        for key in metrics:
            check_key(key)
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class WandbLogger(JsonlLogger):
    """jsonl as always, mirrored to wandb (offline mode unless WANDB_MODE or the config says otherwise)."""

    def __init__(self, run_dir: Path, name: str, config: dict, project: str, mode: str | None):
        super().__init__(run_dir)
        import os

        import wandb

        self._wandb = wandb
        self._run = wandb.init(
            project=project, name=name, config=config, dir=str(run_dir),
            mode=mode or os.environ.get("WANDB_MODE", "offline"), reinit="finish_previous",
        )

    def log(self, metrics: dict, step: int) -> None:
        super().log(metrics, step)
        self._run.log({k: float(v) for k, v in metrics.items()}, step=int(step))

    def close(self) -> None:
        super().close()
        self._run.finish()


def read_metrics(path: Path, bad: list | None = None) -> list[dict]:
    """The whole records of a metrics.jsonl. A line that is not a JSON object with an integer step (a crash
    mid-write leaves a truncated last line; a disk or an editor can garble one in the middle) is skipped, never the
    records after it; `bad`, when given, receives (line number, text) of each skipped line."""
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or isinstance(record.get("step"), bool) \
                    or not isinstance(record.get("step"), int):
                if bad is not None:
                    bad.append((number, line.rstrip("\n")))
                continue
            records.append(record)
    return records


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only records with step <= last_step (resuming from a checkpoint taken at last_step). Unreadable lines
    are moved to metrics.corrupt.jsonl beside it, with one warning line; every readable record is kept."""
    import sys

    path = Path(path)
    if not path.exists():
        return
    bad: list = []
    kept = [r for r in read_metrics(path, bad) if r["step"] <= last_step]
    # a torn last line is what a crash mid-write leaves: expected, dropped quietly; any other is kept aside
    data = path.read_bytes()
    torn = None if data.endswith(b"\n") else data.count(b"\n") + 1  # the number of an unfinished last line
    garbled = [(n, text) for n, text in bad if n != torn]
    if garbled:
        with open(path.with_name("metrics.corrupt.jsonl"), "a", encoding="utf-8") as f:
            f.writelines(text + "\n" for _, text in garbled)
        print(f"gapstudy: warning: {path}: skipped {len(garbled)} unreadable line(s) (line "
              f"{', '.join(str(n) for n, _ in garbled[:5])}{', ...' if len(garbled) > 5 else ''}), kept in "
              f"{path.with_name('metrics.corrupt.jsonl').name}; every readable record is kept", file=sys.stderr)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    tmp.replace(path)
