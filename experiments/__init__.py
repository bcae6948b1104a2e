"""The experiment registry: every ablation of the papers as a named suite of arms, as plain Python data.

A `Suite` (experiments/suite.py) answers one question of PAPERS.md; its `Arm`s hold only their difference from the
defaults (plus the suite's `base` and the chosen profile's settings). One module per paper defines its suites;
this package only gathers them into `SUITES`, in registry order. Running a suite is planning (experiments/plan.py:
arm x sweep point x seed, in dependency order), executors (experiments/executors.py: this process, a local process
pool, submitit or Ray) and scheduling (experiments/schedule.py). Importing the registry imports no torch and none
of the training code: the analysis package reads it.
"""
from __future__ import annotations

from experiments import lanchantin2025, tajwar2024, tang2024, xu2024
from experiments.suite import PROFILES, Arm, Suite

SUITES: dict[str, Suite] = {s.name: s for s in (*tang2024.SUITES, *lanchantin2025.SUITES, *tajwar2024.SUITES,
                                                *xu2024.SUITES)}

__all__ = ["PROFILES", "SUITES", "Arm", "Suite"]
