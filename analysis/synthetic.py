"""Fake run directories in the exact on-disk format of the training loop, for tests and for previewing
figures and reports before real results exist. Never write them into a real results root.

The curves are invented: each arm has a `quality` (a multiplier of its gain over the starting policy), and the
effects that are not an arm's gain have a strength in EFFECTS; the defaults are shaped like the papers' findings, so
a test can make a claim hold (defaults) or remove or reverse its effect (overrides) and see its verdict follow.
Each run draws its noise from its own random stream (keyed by suite, arm, seed); the ordered replay of the online
log reuses the online run's stream only when `faithful_replay` says that the replay is the online run.
"""
from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import yaml

from experiments import SUITES

# Default gain multipliers per suite and arm (1.0 = the online reference).
QUALITY: dict[str, dict[str, float]] = {
    "kl_budget": {"online_ipo": 1.0, "offline_ipo": 0.55, "offline_ipo_golden": 0.5, "online_dpo": 0.95,
                  "offline_dpo": 0.5},
    "data_coverage": {"online": 1.0, "offline_dataset": 0.5, "replay_original": 1.0, "replay_shuffled": 0.6},
    "shuffle_degree": {"online": 1.0, "window_1": 1.0, "window_4": 0.97, "window_32": 0.85, "window_256": 0.7,
                       "window_all": 0.6},
    "suboptimal_data": {"online": 1.0, "offline_dataset": 0.55, "final_vs_final": 0.1, "sft_vs_mid": 0.75,
                        "mid_vs_final": 0.35, "sft_vs_final": 0.65},
    "best_of_2": {"ipo_online": 1.0, "ipo_offline": 0.55, "bo2_online": 0.9, "bo2_offline": 0.5, "bo2_shuffled": 0.85},
    "sync_period": {"math_s1": 1.0, "math_s10": 1.0, "math_s100": 0.98, "math_sinf": 0.5, "math_grpo": 0.97,
                    "math_s1_no_ref_sync": 0.6, "chat_s1": 1.0, "chat_s5": 0.98, "chat_s10": 0.99, "chat_sinf": 0.6,
                    "chat_grpo": 0.9},
    # curriculum: (math gain, chat gain) as fractions of the specialists' gains
    "curriculum": {"nv": 0.0, "v": 1.0, "nv_then_v": 0.8, "v_then_nv": 0.45, "mixed": 0.7},
    "bandit": {**{f"{a}_onpolicy_R1": 1.0 for a in ("dpo", "ipo", "best_of_n", "reinforce")},
               **{f"{a}_offline_R1": 0.25 for a in ("dpo", "ipo", "best_of_n", "reinforce")},
               **{f"{a}_onpolicy_R2": 1.0 for a in ("dpo", "ipo", "best_of_n", "reinforce")},
               **{f"{a}_offline_R2": 0.97 for a in ("dpo", "ipo", "best_of_n", "reinforce")}},
    "sample_reuse": {"T1_R1": 1.0, "T2_R1": 0.85, "T4_R1": 0.6, "T8_R1": 0.35,
                     "T1_R2": 1.0, "T2_R2": 0.99, "T4_R2": 0.97, "T8_R2": 0.95},
    # toy8x8: dpo_offline = rise of the uncovered mass above pi_ref's; the others = gain of the diagonal mass
    "toy8x8": {"dpo_offline": 1.0, "ppo_kl": 1.0, "dpo_online": 1.0},
}
# Strengths of the effects that are not an arm's gain (the papers' findings); 0 removes one, a sign flip reverses it.
EFFECTS: dict[str, float] = {
    "overoptimisation": 0.3,  # claim 2: β of the gold score d(0.5 − β log d); 0: gold keeps rising with KL
    "classification_gap": 0.16,  # claim 8: offline − online classification accuracy on gold-labelled pairs
    "accuracy_tracks_win_rate": 0.0,  # claim 9: 0: classification accuracy is noise around its level; 1: a
                                      # function of the checkpoint's win rate (noise scaled by 1 − this)
    "chosen_logratio_fall": 1.0,  # claim 10: fall of log π(y_w) − log π_ref(y_w), in training and on the held-out
                                  # pairs (offline 3× online's); < 0: rises
    "proxy_accuracy_decay": 0.15,  # claim 11: fall of the proxy's accuracy on policy samples over training
    "entropy_fall": 0.6,  # claim 16: fall of the token entropy of the non-offline sync_period arms over training
    "no_ref_sync_shortening": 0.8,  # claim 16: fall of math_s1_no_ref_sync's response length over training
    "replay_drift": 1e-3,  # claim 3 and window 1 of claim 5: relative float noise of a faithful ordered replay (Tang et al.: ~0.1% on TPU)
}
_TOY_BETAS = (0.1, 0.2, 0.3)  # the toy8x8 suite's beta sweep of dpo_offline and ppo_kl
_CURRICULUM_CHAT = {"nv": 1.0, "v": 0.0, "nv_then_v": 0.97, "v_then_nv": 0.9, "mixed": 0.75}


def write_run(run_dir: str | Path, config: Mapping, records: Iterable[Mapping], complete: bool = True,
              truncate_last_line: bool = False) -> Path:
    """Write config.yaml, metrics.jsonl (one JSON object per record) and, if `complete`, final.json holding
    the last evaluation record. `truncate_last_line` cuts the last line in half, as a crash mid-write would."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    lines = [json.dumps(dict(r)) for r in records]
    if truncate_last_line and lines:
        lines[-1] = lines[-1][: max(1, len(lines[-1]) // 2)]
    (run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    if complete:
        evals = [r for r in records if any(k.startswith("eval/") for k in r)]
        if evals:
            (run_dir / "final.json").write_text(json.dumps(dict(evals[-1])), encoding="utf-8")
    return run_dir


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("/".join(map(str, key)).encode()))


def _gold_shape(d: np.ndarray, beta: float = EFFECTS["overoptimisation"]) -> np.ndarray:
    """Gao et al.'s RL form d(α − β log d) with α = 0.5, zero at d = 0; at β = 0.3 it peaks at KL ≈ 3.8 nats."""
    safe = np.where(d > 0, d, 1.0)
    return np.where(d > 0, d * (0.5 - beta * np.log(safe)), 0.0)


def _config(suite: str, arm: str, seed: int, run_name: str, **extra) -> dict:
    config = {"suite": suite, "arm": arm, "seed": seed, "run_name": run_name, "overrides": [f"arm={arm}"],
              "world": {"name": {"bandit": "token_bandit", "sample_reuse": "token_bandit", "toy8x8": "toy8x8"}.get(suite, "synth_lm"),
                        "task": "chat"},
              "algo": {"name": "ipo", "beta": 0.1}, "sync_every": 1, "data": {"name": "policy"},
              "replay": {"order": "original", "shuffle_window": 1}, "reward": "R1", "labeller": "gold",
              "lr": 1e-5, "steps": 200, "reuse": 1, "batch_size": 32}
    for key, value in extra.items():
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return config


def _records(steps: int, eval_every: int, train_every: int, eval_fn, train_fn) -> list[dict]:
    records = []
    for step in range(0, steps + 1):
        if step > 0 and step % train_every == 0:
            records.append({"step": step, **train_fn(step / steps, step)})
        if step % eval_every == 0:
            records.append({"step": step, **eval_fn(step / steps)})
    return records


def fake_suite(root: str | Path, suite: str, seeds: Sequence[int] = (0, 1, 2), quality: Mapping[str, float] | None = None,
               drop_arms: Iterable[str] = (), steps: int = 200, eval_every: int = 20, train_every: int = 5,
               in_suite_folder: bool = True, noise: float = 0.01, effects: Mapping[str, float] | None = None,
               faithful_replay: bool = True, environment: Mapping | None = None) -> list[Path]:
    """Write fake runs of every arm of `suite` (experiments.SUITES) for each seed; returns the run directories.

    `quality` overrides the default gain multiplier of named arms; `effects` the strengths of EFFECTS; `drop_arms`
    leaves arms out. `faithful_replay` (data_coverage): the ordered replay is the online run (its random stream,
    its curves at its own quality) up to EFFECTS["replay_drift"]; False: a run of its own, with its own noise.
    `environment`: the `environment:` mapping every run's config.yaml records (None: none, like runs made before the
    loop recorded it).
    """
    qualities = {**QUALITY[suite], **dict(quality or {})}
    unknown = set(effects or {}) - set(EFFECTS)
    if unknown:
        raise KeyError(f"unknown effects {sorted(unknown)}; known: {sorted(EFFECTS)}")
    strengths = {**EFFECTS, **dict(effects or {})}
    dropped = set(drop_arms)
    base = Path(root) / suite if in_suite_folder else Path(root)
    written = []
    for arm in [a.name for a in SUITES[suite].arms]:
        if arm in dropped:
            continue
        for seed in seeds:
            for config, records in _runs(suite, arm, seed, qualities[arm], steps, eval_every, train_every, noise,
                                         strengths, faithful_replay):
                if environment is not None:
                    config["environment"] = json.loads(json.dumps(dict(environment)))  # a deep copy per run
                written.append(write_run(base / config["run_name"], config, records))
    return written


def _drifted(records: list[dict], rng: np.random.Generator, drift: float) -> list[dict]:
    """Every float metric of `records` times (1 + drift · N(0, 1)): a replay that matches up to float noise."""
    return [{k: v * (1 + drift * rng.normal()) if isinstance(v, float) else v for k, v in r.items()} for r in records]


def _runs(suite, arm, seed, q, steps, eval_every, train_every, noise, effects, faithful_replay):
    """(config, records) of every run of one arm and seed."""
    # a faithful replay in original order is the online run, up to float noise (it is, by construction, in gapstudy):
    # it draws from the online run's stream and then drifts by its own; an unfaithful one is a run of its own
    replay = (suite, arm) in {("data_coverage", "replay_original"), ("shuffle_degree", "window_1")}  # the online order
    key_arm = "online" if replay and faithful_replay else arm
    offline = any(word in arm for word in ("offline", "sinf", "final_vs", "sft_vs", "mid_vs")) or arm == "window_all"
    if suite in ("kl_budget", "data_coverage", "shuffle_degree", "suboptimal_data", "best_of_2"):
        grid = [(0.1, 1e-5, 10.0), (0.5, 3e-6, 4.0)] if suite == "kl_budget" else [(0.1, 1e-5, 6.0)]
        for index, (beta, lr, kl_max) in enumerate(grid):
            kl_max = kl_max * (0.8 if offline else 1.0)
            labeller = "proxy" if suite == "kl_budget" and index == 0 else "gold"
            rng = _rng(suite, key_arm, seed, index)
            seed_shift = rng.normal(0, noise)
            name = f"{suite}__{arm}__b{beta}__s{seed}"

            def eval_fn(frac, rng=rng, kl_max=kl_max, labeller=labeller, seed_shift=seed_shift):
                kl = kl_max * frac ** 1.3
                d = math.sqrt(kl)
                gold = float(q * _gold_shape(np.array(d), effects["overoptimisation"]))
                # two disjoint halves of the held-out prompts, each with its own noise; the win rate is their mean
                halves = np.clip(0.5 + 0.45 * math.tanh(gold) + seed_shift + rng.normal(0, noise * math.sqrt(2), 2), 0, 1)
                win_rate = float(halves.mean())
                tracks = effects["accuracy_tracks_win_rate"]
                accuracy = (0.5 + (effects["classification_gap"] if offline else 0.0)
                            + (1 - tracks) * rng.normal(0, 0.01) + tracks * (win_rate - 0.5) - 0.02 * frac)
                record = {"eval/kl": kl, "eval/kl_k1": kl * 1.02, "eval/kl_k3": kl * 0.97, "eval/win_rate": win_rate,
                          "eval/gold_reward": gold + rng.normal(0, noise), "eval/length": 40 + 10 * frac,
                          "eval/entropy": 1.5 - 0.5 * frac, "eval/classification_accuracy": accuracy,
                          "eval/win_rate_a": float(halves[0]), "eval/win_rate_b": float(halves[1]),
                          # claim 10 on fixed gold-labelled SFT pairs: falls, offline 3x online's (< 0: rises)
                          "eval/heldout_chosen_logratio": -(3.0 if offline else 1.0) * effects["chosen_logratio_fall"]
                                                          * frac + rng.normal(0, 0.05)}
                if labeller == "proxy":
                    record["eval/proxy_reward"] = 0.35 * d + rng.normal(0, noise)
                    record["eval/proxy_accuracy"] = 0.78 - effects["proxy_accuracy_decay"] * frac + rng.normal(0, 0.005)
                return record

            def train_fn(frac, step, rng=rng):
                return {"train/loss": 0.25 * math.exp(-2 * frac) + rng.normal(0, 0.002),
                        "train/margin": 0.5 * frac, "train/accuracy": 0.5 + 0.3 * frac,
                        "train/chosen_logratio": -(3.0 if offline else 1.0) * effects["chosen_logratio_fall"] * frac
                                                 + rng.normal(0, 0.05),
                        "train/rejected_logratio": -(5.0 if offline else 3.0) * frac,
                        "counters/samples": step * 64, "counters/updates": step}

            window = arm.removeprefix("window_") if arm.startswith("window_") else 1
            config = _config(suite, arm, seed, name, **{"algo.beta": beta, "lr": lr, "labeller": labeller,
                                                        "replay.shuffle_window": int(window) if window != "all" else "all"})
            records = _records(steps, eval_every, train_every, eval_fn, train_fn)
            if replay and faithful_replay:
                records = _drifted(records, _rng(suite, arm, seed, index, "drift"), effects["replay_drift"])
            yield config, records
    elif suite == "sync_period":
        task = arm.split("_")[0]
        rng = _rng(suite, arm, seed)
        seed_shift = rng.normal(0, noise)
        sync = {"sinf": "inf", "s1": 1, "s5": 5, "s10": 10, "s100": 100}.get(arm.split("_")[1], 1)
        no_sync = arm.endswith("no_ref_sync")

        def eval_fn(frac):
            start = 0.34 if task == "math" else 0.5
            gain = (0.24 if task == "math" else 0.35) * q * (1 - math.exp(-4 * frac))
            score = start + (gain + seed_shift + rng.normal(0, noise) if frac > 0 else rng.normal(0, noise / 3))
            length = 300 * (1 - effects["no_ref_sync_shortening"] * frac if no_sync else 1 + 0.1 * frac)
            entropy = (1.0 if sync == "inf" else 1.0 - effects["entropy_fall"] * frac) + rng.normal(0, 0.01)
            # like synth_lm: every run is evaluated on both prompt families; the generic keys mix them
            record = {"eval/kl": 8 * q * frac, f"eval/{task}/kl": 8 * q * frac,
                      f"eval/{task}/{'accuracy' if task == 'math' else 'win_rate'}": score,
                      f"eval/{task}/length": length, "eval/length": (length + 100) / 2,
                      f"eval/{task}/entropy": entropy, "eval/entropy": (entropy + 1.0) / 2}
            if task == "chat":
                record["eval/chat/gold_reward"] = 2 * (score - 0.5)
            return record

        def train_fn(frac, step):
            return {"train/loss": 0.6 - 0.2 * frac, "counters/samples": step * 64, "gen/staleness": 0 if sync == 1 else 1}

        yield (_config(suite, arm, seed, f"{suite}__{arm}__s{seed}", sync_every=sync, **{"world.task": task}),
               _records(steps, eval_every, train_every, eval_fn, train_fn))
    elif suite == "curriculum":
        rng = _rng(suite, arm, seed)
        chat_q = _CURRICULUM_CHAT.get(arm, q)

        def eval_fn(frac):
            return {"eval/kl": 6 * frac, "eval/math/accuracy": 0.34 + 0.25 * q * frac + rng.normal(0, noise),
                    "eval/chat/win_rate": 0.5 + 0.35 * chat_q * frac + rng.normal(0, noise)}

        yield (_config(suite, arm, seed, f"{suite}__{arm}__s{seed}"),
               _records(steps, eval_every, train_every, eval_fn, lambda frac, step: {"train/loss": 0.5}))
    elif suite in ("bandit", "sample_reuse"):
        reward = arm.rsplit("_", 1)[1]
        rng = _rng(suite, arm, seed)
        start = 0.05 if reward == "R1" else 0.4

        def eval_fn(frac):
            return {"eval/gold_reward": start + (0.85 - start) * q * (1 - math.exp(-3 * frac)) + rng.normal(0, noise),
                    "eval/kl": 20 * frac}

        def train_fn(frac, step):
            return {"train/loss": 1 - frac, "counters/samples": step * 10}

        reuse = int(arm[1:].split("_")[0]) if suite == "sample_reuse" else 1
        yield (_config(suite, arm, seed, f"{suite}__{arm}__s{seed}", reward=reward, reuse=reuse),
               _records(steps, eval_every, train_every, eval_fn, train_fn))
    elif suite == "toy8x8":
        diagonal_ref, uncovered_ref = 0.1, 0.3
        for beta in (_TOY_BETAS if arm != "dpo_online" else (0.1,)):
            rng = _rng(suite, arm, seed, beta)

            def eval_fn(frac, rng=rng, beta=beta):
                rise = 1 - math.exp(-5 * frac)
                if arm == "dpo_offline":
                    uncovered = uncovered_ref + 0.2 * q * rise * (1 + beta)
                    diagonal = diagonal_ref + 0.4 * rise
                else:
                    diagonal = diagonal_ref + 0.8 * q * rise * (1 - beta)
                    uncovered = uncovered_ref * (1 - 0.8 * rise)
                return {"eval/diagonal_mass": diagonal + rng.normal(0, noise),
                        "eval/uncovered_mass": uncovered + rng.normal(0, noise),
                        "eval/diagonal_mass_ref": diagonal_ref, "eval/uncovered_mass_ref": uncovered_ref,
                        "eval/uncovered_raised": 0.5 * rise if arm == "dpo_offline" else 0.0,
                        "eval/kl": 2 * rise, "eval/gold_reward": diagonal}

            def train_fn(frac, step):
                return {"train/loss": 0.7 - 0.2 * frac, "counters/samples": step * 64}

            config = _config(suite, arm, seed, f"{suite}__{arm}__b{beta}__s{seed}", **{"algo.beta": beta})
            yield config, _records(steps, eval_every, train_every, eval_fn, train_fn)
    else:
        raise KeyError(suite)
