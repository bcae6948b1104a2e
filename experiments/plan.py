"""Planning a suite: every run it asks for (arm x sweep point x seed), in dependency order, named and placed.

Runs land in <results root>/<suite>/<run name>; the name is the arm, then every other varying choice (sweep values,
extra overrides, a non-full profile), then the seed (which in the full profile is also the world's build seed:
`world_seed`). `@arm` in an override becomes that arm's run directory for the same seed, and the job lists the job it reads from in `needs` (experiments/schedule.py runs them in that order).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from experiments.suite import PLACEHOLDER, PROFILE_BASE, PROFILES, Suite, SuiteError
from gapstudy.config import run_name, shorten


@dataclass
class Job:
    key: str  # "<arm>/<run name>"
    arm: str
    seed: int
    name: str
    overrides: list[str]
    needs: list[str] = field(default_factory=list)  # keys of the jobs whose artifacts this one reads
    run_dir: Path | None = None


def _name_part(overrides: list[str], seed: int) -> str:
    body = run_name(overrides, seed)
    return body[len("defaults__"):] if body.startswith("defaults__") else body


def world_seed(suite: Suite, profile: str, seed: int) -> list[str]:
    """The world's build seed of a run: its own seed in the full profile (each seed a freshly built world, so a
    world is a random effect), the world's default in quick. It comes before the arm's and the caller's overrides, so
    an arm or `extra` that fixes world.build_seed wins (and is then in the run name); it is not in the name
    otherwise: the name's seed already says it. A replay, sampler_from or init_from arm reads the run of the same
    seed, hence of the same world."""
    return [f"world.build_seed={seed}"] if profile == "full" and suite.world_per_seed else []


def _wanted_arms(suite: Suite, arms: list[str] | None) -> list[str]:
    """The selected arms (all by default) with the arms they need, each after its needs (depth first)."""
    selected = [a.name for a in suite.arms] if arms is None else list(arms)
    for name in selected:
        if name not in [a.name for a in suite.arms]:
            raise SuiteError(f"arm={name!r} is not an arm of {suite.name}; valid: {', '.join(a.name for a in suite.arms)}")
    wanted: list[str] = []

    def add(name: str) -> None:
        for dep in suite.arm(name).needs:
            add(dep)
        if name not in wanted:
            wanted.append(name)

    for name in selected:
        add(name)
    return wanted


def plan(suite: Suite, profile: str = "full", seeds: list[int] | None = None, arms: list[str] | None = None,
         extra: list[str] | tuple[str, ...] = (), grid: dict[str, list[str]] | None = None,
         root: str | Path | None = None) -> list[Job]:
    """Every run of the suite in dependency order. `arms` selects arms (their needs come along); `extra` are
    overrides for every run; `grid` (key -> values, from `-m`) multiplies every arm's sweep; with a results `root`
    each job gets its run directory and its `@arm` placeholders are resolved."""
    if profile not in PROFILES:
        raise SuiteError(f"profile={profile!r} is invalid; valid choices: {', '.join(PROFILES)}")
    seeds = list(suite.seeds[profile]) if seeds is None else seeds
    if not seeds:
        raise SuiteError("seeds= is empty; give e.g. seeds=0,1,2")
    wanted = _wanted_arms(suite, arms)
    grid_points = [[f"{k}={v}" for k, v in zip(grid, values)] for values in itertools.product(*grid.values())] \
        if grid else [[]]
    jobs: list[Job] = []
    by_arm_seed: dict[tuple[str, int, tuple], Job] = {}  # each grid point keeps its own dependency chain
    for name in wanted:
        arm = suite.arm(name)
        for point in arm.grid(profile):  # seeds innermost: neighbouring jobs build different worlds side by side
            for extra_point in grid_points:
                for seed in seeds:
                    varying = [*point, *extra_point, *extra]
                    run = ("" if profile == "full" else f"__profile-{profile}")
                    job_name = shorten(f"{name}{run}__{_name_part(varying, seed)}")
                    overrides = [*suite.base, *PROFILE_BASE.get(profile, ()), *suite.profiles.get(profile, ()),
                                 *world_seed(suite, profile, seed),
                                 *arm.overrides, *varying,
                                 f"suite={suite.name}", f"arm={name}", f"profile={profile}", f"seed={seed}"]
                    job = Job(f"{name}/{job_name}", name, seed, job_name, overrides)
                    for dep in arm.needs:
                        job.needs.append(by_arm_seed[(dep, seed, tuple(extra_point))].key)
                    by_arm_seed[(name, seed, tuple(extra_point))] = job
                    jobs.append(job)
    if root is not None:
        _place(jobs, suite, Path(root))
    return jobs


def _place(jobs: list[Job], suite: Suite, results: Path) -> None:
    """Give every job its run directory under `results` and replace each `@arm` by the directory of the job of that
    arm it needs."""
    for job in jobs:
        job.run_dir = results / suite.name / job.name
        job.overrides.append(f"paths.results={results}")
    dirs = {j.key: j.run_dir for j in jobs}
    for job in jobs:
        deps = {other.arm: dirs[other.key] for other in jobs if other.key in job.needs}
        job.overrides = [PLACEHOLDER.sub(lambda m: str(deps[m.group(1)]), o) for o in job.overrides]
