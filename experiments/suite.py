"""What a suite is: an `Arm` (one ablation's difference from the defaults) and a `Suite` (the arms that answer one
question of PAPERS.md), as plain frozen dataclasses the paper modules fill in.

An arm value may name another arm's run directory as `@arm` (for the same seed): `data.path=@online` replays the
online arm's pair log, `sampler_from=[@online/checkpoint]` samples from its final policy. Such an arm lists that
arm in `needs`, and a `Suite` refuses needs that are undeclared, unknown, ambiguous (a sweeping arm) or circular.
This module imports nothing of the project (and no torch): the analysis package reads the registry built from it.
"""
from __future__ import annotations

import graphlib
import re
from dataclasses import dataclass, field

PROFILES = ("quick", "full")  # quick: one seed, short runs (smoke tests); full: the reproduction
PLACEHOLDER = re.compile(r"@([A-Za-z0-9_]+)")  # `@arm` in an override: that arm's run directory, same seed
# The replication unit is the seed (issue 12): every claim gets at least 5 seeds in the full profile, and 10 where the
# claim is a null ("≈", "does not predict", "nearly matches"), which needs a tighter interval to be told from a gap.
NULL_CLAIMS = frozenset({5, 9, 12, 13, 15})  # the numbered claims of PAPERS.md that assert no difference
SEEDS = {"quick": (0,), "full": tuple(range(5))}
NULL_SEEDS = {"quick": (0,), "full": tuple(range(10))}
# The full profile's evaluation on synth_lm, where win rates decide claims: evaluations also at steps 1, 2, 4, 8, ...
# (every arm has points under the low KL budgets) and 512 held-out prompts of a family (s.e. of a win rate near 0.9
# about 0.013, not 0.027 as with 128). world.eval_prompts is the total held-out set, half math and half chat, so
# 1024 gives each family 512; every synth_lm suite uses the same 1024, so a build seed's world is one cache entry.
SYNTH_FULL_EVAL = ("eval.log_spaced=true", "world.eval_prompts=1024", "eval.prompts=512")
# Every suite's full profile logs a train/ row every 10 steps (and before each evaluation and at the end), not every
# step: the committed metrics.jsonl of ~700 runs then stays a few tens of MB (every step's row made a full
# reproduction too large to submit); evaluations and the arithmetic are unchanged (tests/test_loop.py).
PROFILE_BASE = {"full": ("log_every=10",)}  # overrides every suite's profile starts with, before its own


class SuiteError(ValueError):
    """A bad suite request (unknown suite, arm or profile; bad seeds, jobs or executor)."""


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: tuple[str, ...] = ()  # hydra overrides: the arm's difference from the suite's base
    needs: tuple[str, ...] = ()  # arms whose artifacts (pair log, checkpoints) this arm consumes
    sweep: tuple[tuple[str, tuple], ...] = ()  # (key, values): one run per grid point (quick: first values only)
    note: str = ""  # one line: what the arm stands for in the paper

    def grid(self, profile: str) -> list[list[str]]:
        """Override lists of the arm's sweep points under `profile` (quick keeps the first value of each key)."""
        points: list[list[str]] = [[]]
        for key, values in self.sweep:
            values = values[:1] if profile == "quick" else values
            points = [p + [f"{key}={v}"] for p in points for v in values]
        return points


@dataclass(frozen=True)
class Suite:
    name: str
    question: str  # one sentence; also the figure caption
    paper: str  # e.g. "Tang et al. 2024 [A], Fig. 1"
    arms: tuple[Arm, ...]  # in plot order
    base: tuple[str, ...] = ()  # overrides shared by every arm
    profiles: dict[str, tuple[str, ...]] = field(default_factory=dict)  # profile -> overrides on top of base
    seeds: dict[str, tuple[int, ...]] = field(default_factory=lambda: dict(SEEDS))  # NULL_SEEDS for a null claim
    claims: tuple[int, ...] = ()  # the numbered claims of PAPERS.md this suite tests
    # full profile: seed s also rebuilds the world (world.build_seed=s: its SFT policy / pi_ref, proxy RM and
    # D_golden), so the seeds' spread includes the world's, not only the optimiser's; quick keeps build seed 0
    world_per_seed: bool = True

    def __post_init__(self):
        full = len(set(self.seeds.get("full", ())))
        if self.claims and full < (need := 10 if NULL_CLAIMS & set(self.claims) else 5):
            raise ValueError(f"suite {self.name}: claims {self.claims} need at least {need} full-profile seeds, not {full}")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"suite {self.name}: duplicate arm names")
        for arm in self.arms:
            used = {m for o in arm.overrides for m in PLACEHOLDER.findall(o)}
            for dep in (*arm.needs, *used):
                if dep not in names or dep == arm.name:
                    raise ValueError(f"suite {self.name}: arm {arm.name} needs unknown arm {dep!r}")
                if any(d.sweep for d in self.arms if d.name == dep):
                    raise ValueError(f"suite {self.name}: arm {arm.name} needs {dep}, which sweeps (ambiguous run)")
            if not used <= set(arm.needs):
                raise ValueError(f"suite {self.name}: arm {arm.name} uses @{sorted(used - set(arm.needs))} "
                                 "without listing it in needs")
        try:  # a circle of needs could never start (and planning it would recurse forever)
            graphlib.TopologicalSorter({a.name: a.needs for a in self.arms}).prepare()
        except graphlib.CycleError as e:
            raise ValueError(f"suite {self.name}: the needs of arms {' -> '.join(e.args[1])} form a cycle") from None

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)
