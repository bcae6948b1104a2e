"""The loop's guarantees: replay reproduces the online run, staleness follows sync_every, resume is exact."""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from conftest import crash_then_resume, read, series, train_run

REPRODUCED = ("train/loss", "train/margin", "train/accuracy", "train/chosen_logratio", "train/rejected_logratio",
              "train/grad_norm", "train/reward", "gen/staleness", "eval/kl", "eval/kl_k1", "eval/kl_k3",
              "eval/win_rate", "eval/gold_reward", "eval/entropy", "eval/classification_accuracy",
              "train/clip_fraction", "train/kl", "train/advantage_abs", "train/reference_point", "train/log_odds_ratio",
              "train/nll", "train/effective_samples")


def assert_same_metrics(a: list[dict], b: list[dict], rel=1e-5, abs_=1e-6) -> int:
    compared = 0
    for key in REPRODUCED:
        x, y = series(a, key), series(b, key)
        assert len(x) == len(y), key
        for u, v in zip(x, y):
            assert u == pytest.approx(v, rel=rel, abs=abs_), key
            compared += 1
    return compared


@pytest.mark.parametrize("algo", ["dpo", "grpo", "kto", "simpo", "orpo", "rwr", "sft"])
def test_replay_in_original_order_reproduces_the_online_run(results, algo):
    """Tang et al. App. F: offline training on the online run's pair log, in order, is the online run."""
    common = [f"algo={algo}", "steps=12", "eval.every=4", "batch_size=8", "seed=3"]
    online_dir, online_final, online = train_run(results, common + ["sync_every=1"])
    _, replay_final, replay = train_run(results, common + ["data=replay", f"data.path={online_dir}"])
    assert assert_same_metrics(online, replay) > 50
    for key, value in online_final.items():
        assert replay_final[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert online_final["eval/kl"] > 0.1  # the policy moved: the match is not trivially at the reference


def test_shuffled_replay_keeps_the_rows_but_not_the_run(results):
    from gapstudy.data.pair_log import read_pair_log

    online_dir, _, online = train_run(results, ["steps=12", "eval.every=4", "batch_size=8", "seed=4"])
    shuffled_dir, _, shuffled = train_run(results, ["steps=12", "eval.every=4", "batch_size=8", "seed=4",
                                                    "data=replay", f"data.path={online_dir}", "replay.order=shuffled"])
    assert series(online, "train/examples") == series(shuffled, "train/examples")  # batch sizes kept

    def rows(run_dir):  # the trained pairs, in training order
        return [(tuple(r["prompt"]), tuple(r["chosen"]), tuple(r["rejected"]), r["chosen_reward"], r["rejected_reward"])
                for batch in read_pair_log(run_dir) for r in batch]

    online_rows, shuffled_rows = rows(online_dir), rows(shuffled_dir)
    assert len(online_rows) == 12 * 8
    assert Counter(shuffled_rows) == Counter(online_rows)  # exactly the same rows, each as often ...
    assert shuffled_rows != online_rows  # ... in another order
    assert series(online, "train/loss")[1:] != pytest.approx(series(shuffled, "train/loss")[1:], rel=1e-3)


def test_shuffled_replay_in_windows_of_one_batch_is_the_online_run(results):
    """Tang et al.'s window of one batch moves no row out of its batch, and keeps each batch's log order, so it
    trains exactly what the online run trained (a check, not a finding; rows permuted inside a batch would differ
    only by rounding, which Adam amplifies over a long run)."""
    common = ["steps=12", "eval.every=4", "batch_size=8", "seed=5"]
    online_dir, online_final, online = train_run(results, common)
    _, window_final, window = train_run(results, common + ["data=replay", f"data.path={online_dir}",
                                                           "replay.order=shuffled", "replay.shuffle_window=1"])
    assert assert_same_metrics(online, window) > 50
    for key, value in online_final.items():
        assert window_final[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_log_every_thins_train_rows_but_keeps_those_before_each_evaluation(results):
    """log_every=5 over 12 steps, evaluating every 4: train rows at 0, 5, 10 (every 5), 3, 7, 11 (the step before
    each evaluation, so its counters are exact; 11 is also the last), each equal to the row the full log has there;
    the evaluations and the final metrics are untouched (logging changes no arithmetic)."""
    common = ["steps=12", "eval.every=4", "batch_size=8", "seed=6"]
    _, full_final, full = train_run(results, common)
    _, thin_final, thin = train_run(results, common + ["log_every=5"])
    train_rows = lambda records: {r["step"]: {k: v for k, v in r.items() if k != "time/seconds"}  # wall clock
                                  for r in records if "train/loss" in r}
    assert sorted(train_rows(thin)) == [0, 3, 5, 7, 10, 11]
    assert all(train_rows(thin)[step] == train_rows(full)[step] for step in train_rows(thin))
    evals = lambda records: [r for r in records if "eval/kl" in r]
    assert evals(thin) == evals(full) and thin_final == full_final


@pytest.mark.parametrize("sync_every, expected", [
    ("1", [0, 0, 0, 0, 0, 0, 0]),
    ("3", [0, 1, 2, 0, 1, 2, 0]),
    ("inf", [0, 1, 2, 3, 4, 5, 6]),
])
def test_staleness_follows_sync_every(results, sync_every, expected):
    _, _, records = train_run(results, [f"sync_every={sync_every}", "steps=7", "eval.every=0", "batch_size=4"])
    assert series(records, "gen/staleness") == expected


def test_offline_sampler_never_moves_while_online_does(results):
    """sync_every=inf samples from the initial policy for ever: its training rewards stay at the reference level."""
    _, _, off = train_run(results, ["sync_every=inf", "steps=40", "eval.every=0", "lr=0.003"])
    _, _, on = train_run(results, ["sync_every=1", "steps=40", "eval.every=0", "lr=0.003"])
    late = lambda r: sum(series(r, "train/reward")[-10:]) / 10
    early = lambda r: sum(series(r, "train/reward")[:10]) / 10
    assert abs(late(off) - early(off)) < 0.03
    assert late(on) > early(on) + 0.05


@pytest.mark.parametrize("regime", [["sync_every=1"], ["sync_every=3"], ["sync_every=inf", "sampler_from=[sft,sft]"]],
                         ids=["online", "stale_sampler", "fixed_mixture"])
def test_resume_after_a_crash_matches_the_uninterrupted_run(regime, results, monkeypatch):
    common = ["steps=10", "eval.every=3", "batch_size=8", "checkpoint_every=4", "seed=5", *regime]
    results = results / f"resume_{len(regime)}_{regime[0].replace('=', '')}"
    _, _, whole = train_run(results, common + ["paths.results=" + str(results / "whole")])
    run_dir, resumed = crash_then_resume(results, common + ["paths.results=" + str(results / "crashed")], 7,
                                         monkeypatch)
    assert (run_dir / "final.json").exists() and not (run_dir / "state.pt").exists()
    assert [r["step"] for r in resumed] == [r["step"] for r in whole]
    assert_same_metrics(whole, resumed, rel=1e-6)
    from gapstudy.data.pair_log import read_pair_log

    assert len(read_pair_log(run_dir)) == 10  # the redone steps replaced, not duplicated, in the pair log


def test_reuse_collects_once_per_T_steps(results):
    _, _, records = train_run(results, ["reuse=4", "steps=8", "eval.every=0", "batch_size=4", "sync_every=inf"])
    samples = series(records, "counters/samples")
    assert samples == [8, 8, 8, 8, 16, 16, 16, 16]
    assert series(records, "gen/staleness") == [0, 1, 2, 3, 4, 5, 6, 7]


def test_reference_sync_resets_the_log_ratio(results):
    """ref_sync_every=k: right after a sync, the policy equals its reference on the fresh batch."""
    _, _, records = train_run(results, ["ref_sync_every=3", "steps=7", "eval.every=0", "batch_size=8"])
    chosen = series(records, "train/chosen_logratio")
    assert chosen[0] == 0 and chosen[3] == 0 and chosen[6] == 0
    assert chosen[1] != 0 and chosen[4] != 0


def test_every_algorithm_learns_on_the_bandit(results):
    """A short online run of each algorithm raises the R2 gold reward above the reference's."""
    for algo in ["dpo", "ipo", "best_of_2", "grpo", "reinforce", "kto", "simpo", "orpo", "rwr", "sft"]:
        _, final, records = train_run(results, [f"algo={algo}", "reward=R2", "steps=50", "eval.every=0", "lr=0.001"])
        start = series(records, "eval/gold_reward")[0]
        assert final["eval/gold_reward"] > start + 0.02, algo
        trained = [r for r in records if r.get("train/examples", 0) > 0]  # a step of only ties logs no loss
        assert len(trained) > 40 and [math.isfinite(r["train/loss"]) for r in trained] == [True] * len(trained), algo
    assert torch.get_num_threads() == 1


def test_bf16_precision_trains_float32_master_weights_under_autocast(results):
    """precision=bf16 (bf16 autocast on the CPU here): the policy and its saved checkpoint stay float32, the frozen
    copies are bf16, so the step-0 KL is bf16 rounding (not exactly 0), and training moves the policy as in float32."""
    from omegaconf import OmegaConf

    from gapstudy.runtime import frozen, precision
    from gapstudy.model import TinyGPTConfig, TinyGPTForCausalLM

    cpu = torch.device("cpu")
    assert precision(OmegaConf.create({"precision": "auto"}), cpu)[0] is None  # auto: float32 off CUDA
    dtype, _ = precision(OmegaConf.create({"precision": "bf16"}), cpu)
    model = TinyGPTForCausalLM(TinyGPTConfig(vocab_size=8, n_positions=4, n_embd=8, n_layer=1, n_head=2))
    assert {p.dtype for p in frozen(model, dtype).parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}

    common = ["algo=dpo", "steps=8", "eval.every=4", "save_checkpoint=true"]
    run_dir, final, records = train_run(results / "bf16", [*common, "precision=bf16"])
    _, final32, _ = train_run(results / "fp32", common)
    kl = series(records, "eval/kl")
    assert 0 < kl[0] < 1e-3 and kl[-1] > 0.5  # rounding at step 0, then a real move
    assert final["eval/kl"] == pytest.approx(final32["eval/kl"], rel=0.2)
    trained = [r for r in records if r.get("train/examples", 0) > 0]
    assert len(trained) > 4 and [math.isfinite(r["train/loss"]) for r in trained] == [True] * len(trained)
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(run_dir / "checkpoint")
    assert {p.dtype for p in saved.parameters()} == {torch.float32}


def test_a_step_where_every_prompt_ties_still_writes_its_snapshot_and_checkpoint(results, monkeypatch):
    """A step that trains nothing (every prompt a tie) used to `continue` past the snapshot and the checkpoint due
    after it: an arm needing that snapshot failed, and a crash later lost the checkpoint. Step 2 ties here; the
    snapshot (0.5 of 6 steps) and the checkpoint (every 3) both fall after it. A crash at step 4 then resumes from
    that checkpoint to the uninterrupted run."""
    from gapstudy import sources

    original = sources.OnPolicySource.rows

    def ties_at_step_2(self, at, sampler):  # the same draws, every pair then dropped as a tie
        rows, info = original(self, at, sampler)
        return ([], {**info, "skipped": info["skipped"] + len(rows)}) if at == 2 else (rows, info)

    def ties_then_crash_at_step_4(self, at, sampler):
        if at == 4:
            raise KeyboardInterrupt("killed")
        return ties_at_step_2(self, at, sampler)

    common = ["steps=6", "eval.every=3", "batch_size=4", "checkpoint_every=3", "snapshots=[0.5]", "seed=6"]
    monkeypatch.setattr(sources.OnPolicySource, "rows", ties_at_step_2)
    whole_dir, _, whole = train_run(results / "ties_whole", common)
    assert [r for r in whole if r["step"] == 2 and "train/examples" in r] == [
        {"step": 2, "train/examples": 0, "train/skipped": 4}]  # the tie step logs only that it skipped
    assert (whole_dir / "snapshot-0.5" / "config.json").exists()

    monkeypatch.setattr(sources.OnPolicySource, "rows", ties_then_crash_at_step_4)
    with pytest.raises(KeyboardInterrupt, match="resume from step 3"):
        train_run(results / "ties_crashed", common)
    run_dir = results / "ties_crashed" / whole_dir.name
    assert torch.load(run_dir / "state.pt", weights_only=False)["step"] == 3
    assert (run_dir / "snapshot-0.5" / "config.json").exists()

    monkeypatch.setattr(sources.OnPolicySource, "rows", ties_at_step_2)
    _, _, resumed = train_run(results / "ties_crashed", common)
    assert [r["step"] for r in resumed] == [r["step"] for r in whole]
    assert assert_same_metrics(whole, resumed, rel=1e-6) > 20
