"""The limits of a suite's worlds: for each world its runs train in (one per build seed in the full profile), the
best any policy can do there (gapstudy/limits.py), written to <results>/<suite>/limits-<profile>.json for the
figures (`gapstudy limits suite=NAME`)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from experiments.plan import world_seed
from experiments.suite import PROFILE_BASE, PROFILES, Suite, SuiteError


def suite_limits(suite: Suite, profile: str = "full", extra: list[str] | tuple[str, ...] = (), log=print) -> Path:
    """Compute the limit of every world of `suite` under `profile` (the suite's base and profile overrides, each
    build seed's, then `extra`) and write them; returns the file written."""
    from gapstudy.config import compose
    from gapstudy.limits import compute_limit

    if profile not in PROFILES:
        raise SuiteError(f"profile={profile!r} is invalid; valid choices: {', '.join(PROFILES)}")
    seeds = sorted(set(suite.seeds[profile])) if world_seed(suite, profile, 0) else [None]  # None: one world
    curves = []
    for seed in seeds:
        cfg = compose([*suite.base, *PROFILE_BASE.get(profile, ()), *suite.profiles.get(profile, ()),
                       *(world_seed(suite, profile, seed) if seed is not None else ()), *extra])
        curve = compute_limit(cfg, cfg.paths.results)
        curves.append(curve)
        log(f"{suite.name}: world build seed {curve['build_seed']}: {curve['kind']} frontier, gold "
            f"{min(curve['gold_reward']):.3f} .. {max(curve['gold_reward']):.3f} over KL {min(curve['kl']):.2f} .. "
            f"{max(curve['kl']):.2f}")
    out = Path(compose([*suite.base, *extra]).paths.results) / suite.name / f"limits-{profile}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "gapstudy " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["limits"] else None
    out.write_text(json.dumps({"command": command, "suite": suite.name, "profile": profile, "curves": curves},
                              indent=1) + "\n")
    return out
