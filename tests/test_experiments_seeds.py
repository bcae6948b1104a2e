"""The full profile's protocol (issue 12): enough seeds per claim, a world rebuilt per seed with every cached
artifact (world, proxy RM, D_golden) keyed by its build seed, 512 held-out prompts and log-spaced evaluations where
win rates decide a claim, and equal numbers of configurations in arms compared at matched KL. Planning only (no
run), plus one tiny token-bandit world built under two build seeds."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from experiments import SUITES
from experiments.plan import plan
from experiments.suite import NULL_CLAIMS, Arm, Suite
from gapstudy.config import compose

BUILD_SEED = "world.build_seed="


def _build_seeds(job) -> list[str]:
    return [o for o in job.overrides if o.startswith(BUILD_SEED)]


def test_every_claim_has_five_full_seeds_and_every_null_ten():
    assert NULL_CLAIMS == {5, 9, 12, 13, 15}
    for suite in SUITES.values():
        full = suite.seeds["full"]
        assert len(set(full)) == len(full)
        assert len(full) == (10 if NULL_CLAIMS & set(suite.claims) else 5), suite.name
        assert suite.seeds["quick"] == (0,)  # the quick profile stays cheap
    assert {n for n, s in SUITES.items() if len(s.seeds["full"]) == 10} == {
        "kl_budget", "shuffle_degree", "best_of_2", "bandit", "sync_period"}
    with pytest.raises(ValueError, match=r"claims \(13,\) need at least 10 full-profile seeds, not 5"):
        Suite("s", "q?", "p", (Arm("a"),), claims=(13,))
    with pytest.raises(ValueError, match="need at least 5 full-profile seeds, not 3"):
        Suite("s", "q?", "p", (Arm("a"),), claims=(4,), seeds={"quick": (0,), "full": (0, 1, 2)})


@pytest.mark.parametrize("name", list(SUITES))
def test_a_full_seed_rebuilds_its_world_and_its_needs_share_it(name, tmp_path):
    suite = SUITES[name]
    jobs = plan(suite, "full", root=tmp_path)
    by_key = {j.key: j for j in jobs}
    for job in jobs:
        assert _build_seeds(job) == [f"{BUILD_SEED}{job.seed}"]
        assert "build_seed" not in job.name and job.name.endswith(f"__seed-{job.seed}")  # the seed already says it
        for dep in job.needs:  # a replay / sampler_from / init_from arm reads the same seed's run: the same world
            assert by_key[dep].seed == job.seed and _build_seeds(by_key[dep]) == _build_seeds(job)
    assert len({j.run_dir for j in jobs}) == len(jobs)
    assert {j.seed for j in jobs} == set(suite.seeds["full"])
    assert not any(_build_seeds(j) for j in plan(suite, "quick"))  # quick: the world's default build seed


def test_an_explicit_build_seed_wins_and_is_named_and_a_suite_may_keep_one_world():
    suite = SUITES["bandit"]
    job = plan(suite, "full", [3], arms=[suite.arms[0].name], extra=["world.build_seed=7"])[0]
    assert compose(job.overrides).world.build_seed == 7 and "world.build_seed-7" in job.name
    fixed = Suite("s", "q?", "p", (Arm("a"),), world_per_seed=False)
    assert not _build_seeds(plan(fixed, "full", [2])[0])


def test_full_composed_configs_carry_the_seed_as_the_build_seed():
    suite = SUITES["data_coverage"]
    jobs = plan(suite, "full", [4], arms=["replay_shuffled"])
    cfgs = [compose(j.overrides) for j in jobs]
    assert [(c.arm, c.seed, c.world.build_seed) for c in cfgs] == [("online", 4, 4), ("replay_shuffled", 4, 4)]


def _evaluated_families(cfg) -> Counter:
    """The families of the held-out prompts the evaluator scores (gapstudy.evaluation.Evaluator: the world's
    held-out rows of eval.tasks, the first eval.prompts of them), from synth_lm's prompt draw (no SFT run)."""
    from omegaconf import OmegaConf

    from gapstudy.worlds.synth_lm import make_prompts

    world = OmegaConf.merge(cfg.world, {"train_prompts": 1})  # the held-out prompts are drawn first: the same rows
    rows = make_prompts(world, np.random.default_rng(int(cfg.world.build_seed)))["eval"]
    keep = cfg.eval.tasks
    tasks = [t for t, _ in rows if keep is None or t in keep]
    return Counter(tasks[: int(cfg.eval.prompts)])


SYNTH_SUITES = [n for n, s in SUITES.items() if "world=synth_lm" in s.base]


@pytest.mark.parametrize("name", SYNTH_SUITES)
def test_full_synth_lm_evaluations_are_log_spaced_on_512_prompts_of_each_family(name):
    suite = SUITES[name]
    checked = set()
    for arm in suite.arms:
        job = plan(suite, "full", [1], arms=[arm.name])[-1]
        cfg = compose(job.overrides)
        assert cfg.eval.log_spaced is True and cfg.world.eval_prompts == 1024  # one world per build seed
        setting = (str(cfg.eval.tasks), cfg.eval.prompts)
        if setting in checked:
            continue
        checked.add(setting)
        families = _evaluated_families(cfg)
        expected = set(cfg.eval.tasks) if cfg.eval.tasks is not None else {"math", "chat"}
        assert set(families) == expected and min(families.values()) >= 512, (arm.name, families)
    quick = compose(plan(suite, "quick", arms=[suite.arms[0].name])[0].overrides)
    assert not quick.eval.log_spaced and quick.world.eval_prompts == 256  # quick: the default (cached) world


def test_full_bandit_evaluates_512_draws_of_its_prompts():
    cfg = compose(plan(SUITES["bandit"], "full", [0])[0].overrides)
    assert (cfg.world.eval_prompts, cfg.eval.prompts) == (512, 512)


def test_arms_compared_at_matched_kl_pool_the_same_number_of_configurations():
    suite = SUITES["kl_budget"]
    configs = {arm.name: len(arm.grid("full")) for arm in suite.arms}
    assert configs == {"online_ipo": 3, "offline_ipo": 3, "offline_ipo_golden": 3, "online_dpo": 3, "offline_dpo": 3}
    ipo = {arm.name: arm.sweep for arm in suite.arms if "ipo" in arm.name}
    assert len(set(ipo.values())) == 1  # the same betas, at the base LR
    jobs = plan(suite, "full")
    per_arm_seed = Counter((j.arm, j.seed) for j in jobs)
    assert set(per_arm_seed.values()) == {3}  # a configuration is replicated over seeds, never counted as one
    assert all(compose(j.overrides).lr == 0.001 for j in plan(suite, "full", [0], arms=["offline_ipo"]))


# ------------------------------------------------------------------ cached artifacts are keyed by the build seed
@pytest.mark.parametrize("world, module", [("synth_lm", "synth_lm"), ("token_bandit", "token_bandit"),
                                           ("toy8x8", "toy8x8")])
def test_every_worlds_cache_key_includes_its_build_seed(world, module, monkeypatch, tmp_path):
    """The spec each world hashes into its cache key differs between two build seeds (and only there)."""
    import importlib

    mod = importlib.import_module(f"gapstudy.worlds.{module}")
    specs = []

    class Captured(Exception):
        pass

    def capture(root, kind, spec, build):
        specs.append(dict(spec))
        raise Captured

    monkeypatch.setattr(mod, "cached_artifact", capture)
    for seed in (0, 1):
        with pytest.raises(Captured):
            mod.build(compose([f"world={world}", f"world.build_seed={seed}", f"paths.results={tmp_path}"]), tmp_path)
    a, b = specs
    assert {k for k in a if a[k] != b[k]} == {"build_seed"}


def test_two_build_seeds_share_no_world_proxy_or_d_golden(tmp_path):
    """A tiny token bandit built under build seeds 0 and 1: distinct cached policies (with different weights),
    proxy RMs and D_golden pair files; the same build seed again reuses its artifacts."""
    import pyarrow.parquet as pq
    import torch
    from safetensors.torch import load_file

    from gapstudy import golden, rewards
    from gapstudy.runs import validate
    from gapstudy.worlds import build_world

    def artifacts(seed):
        cfg = validate(compose(["world=token_bandit", "world.pretrain_steps=5", f"world.build_seed={seed}",
                                "proxy.pairs=64", "proxy.epochs=1", "eval.prompts=32", f"paths.results={tmp_path}"]))
        world = build_world(cfg, tmp_path)
        return (world.policy_path, rewards.train_proxy(world, cfg, tmp_path),
                golden.golden_pairs(world, cfg, tmp_path), world.eval_prompts)

    zero, one = artifacts(0), artifacts(1)
    for a, b in zip(zero[:3], one[:3]):
        assert a != b
    weights = [load_file(str(next(p.glob("*.safetensors")))) for p in (zero[0], one[0])]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    pairs = [pq.read_table(p).to_pylist() for p in (zero[2], one[2])]
    assert pairs[0] != pairs[1]
    assert zero[3] != one[3]  # the held-out prompts are drawn from the build seed too
    assert artifacts(0)[:3] == zero[:3]  # cached: the same build seed reuses them


@pytest.mark.parametrize("name", list(SUITES))
def test_full_runs_log_train_rows_every_ten_steps_and_seeds_are_innermost(name):
    """Every full-profile run thins its train/ rows (log_every=10, before the suite's own overrides, so an arm may
    still set it); quick runs log every step. Plan order puts the seeds innermost: consecutive jobs of an arm and
    sweep point are different seeds, so two workers build two worlds side by side rather than one waiting."""
    full, quick = plan(SUITES[name], "full"), plan(SUITES[name], "quick")
    assert all("log_every=10" in job.overrides for job in full)
    assert not any(o.startswith("log_every=") for job in quick for o in job.overrides)
    seeds = SUITES[name].seeds["full"]
    for start in range(0, len(full), len(seeds)):
        block = full[start:start + len(seeds)]
        assert [job.seed for job in block] == list(seeds) and len({job.arm for job in block}) == 1
