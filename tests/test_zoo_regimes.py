"""Issue 14's objectives run through the one loop in every regime: the sampler synced every step, every k steps or
never, a replayed pair (or group) log, a fixed dataset, D_golden; no change to the loop, no other code path."""
from __future__ import annotations

import math

import pytest

from conftest import SMALL_SYNTH, series, train_run

ZOO = ["kto", "simpo", "orpo", "rwr", "sft"]
PAIRS = ["kto", "simpo", "orpo", "sft"]


def _trained(records) -> list[float]:
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert losses and all(isinstance(x, float) and math.isfinite(x) for x in losses), losses
    return losses


@pytest.mark.parametrize("algo", ZOO)
def test_each_objective_trains_online_semi_online_offline_and_on_its_own_replayed_log(results, algo):
    online_dir = None
    for regime in ("sync_every=1", "sync_every=3", "sync_every=inf"):
        run_dir, final, records = train_run(results, [f"algo={algo}", regime, "steps=6", "eval.every=3"])
        assert len(_trained(records)) == 6 and final["eval/kl"] > 1e-6, regime  # it moved off the reference
        online_dir = online_dir or run_dir
    _, final, records = train_run(results, [f"algo={algo}", "data=replay", f"data.path={online_dir}", "steps=6",
                                            "eval.every=3"])
    assert len(_trained(records)) == 6


@pytest.mark.parametrize("algo", PAIRS)
def test_each_pair_objective_trains_on_a_fixed_dataset_and_on_d_golden(results, algo):
    _, final, records = train_run(results, ["world=toy8x8", f"algo={algo}", "data=dataset",
                                            "data.path=${world.pairs_path}", "steps=5", "eval.every=0"])
    assert len(_trained(records)) == 5 and final["eval/kl"] > 1e-6
    small = [*SMALL_SYNTH, "world.task=chat", "proxy.pairs=64", "eval.prompts=16", "progress=false",
             "checkpoint_every=0", "save_checkpoint=false"]
    _, final, records = train_run(results, ["world=synth_lm", f"algo={algo}", "data=golden", "steps=3",
                                            "batch_size=4", "eval.every=0"], fast=small)
    assert len(_trained(records)) == 3


def test_reference_free_objectives_skip_the_reference_pass(results, monkeypatch):
    """SimPO, ORPO, RWR and SFT never call the reference (their Algorithm says so); KTO does (its r = log pi/pi_ref)."""
    from gapstudy import loop

    calls = {"n": 0}
    original = loop.token_logps

    def counting(model, *args, **kwargs):
        calls["n"] += 1
        return original(model, *args, **kwargs)

    monkeypatch.setattr(loop, "token_logps", counting)
    for algo, passes in (("simpo", 1), ("orpo", 1), ("rwr", 1), ("sft", 1), ("kto", 2)):
        calls["n"] = 0
        train_run(results, [f"algo={algo}", "steps=2", "eval.every=0"])
        assert calls["n"] == 2 * passes, algo  # per step: the policy's pass, and the reference's where needed
