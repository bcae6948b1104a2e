"""The face of gapstudy: `gapstudy run | train-rm | list | demo | figures | compare | bench`. The only module that knows
about the command line.

`gapstudy run KEY=VALUE ...` hands its arguments to hydra (override syntax, `-m` multirun, `--cfg job`), so a
sweep is `gapstudy run -m algo=dpo,ipo sync_every=1,inf`. Bad settings end with one line on stderr and status 2.
"""
from __future__ import annotations

import sys

from gapstudy.runs import quiet_libraries

USAGE = """usage: gapstudy COMMAND [ARGS]

commands:
  run KEY=VALUE ...   one training run (hydra overrides; -m for a multirun sweep)
  run suite=NAME ...  every arm of a registered suite (profile=quick|full seeds=0,1,2 jobs=N arm=A,B)
  train-rm KEY=VALUE ...
                      a Bradley-Terry reward model on a preference dataset (data.path=... rm.out=DIR; rm.* in
                      configs/config.yaml), for labeller=proxy proxy.path=DIR
  list                the worlds, algorithms, regimes, data sources and labellers
  demo [KEY=VALUE]    online vs offline DPO on token_bandit R1: a table of final gold reward, win rate, KL
  figures [suite=NAME] [paths.results=DIR] [profile=full|quick|all]
                      paper-style figures, tables and REPORT.md from the runs under the results root
  compare PATH ... [by=KEY,KEY] [out=DIR] [y=METRIC]
                      win rate against KL, KL-matched and final tables for any runs (run dirs or folders of them),
                      seeds pooled per configuration (or per value of the config keys in by=)
  bench [KEY=VALUE]   time online DPO steps on token_bandit (32 prompts x 2 samples x 9 tokens)
"""


def _fail(message: str) -> None:
    print(f"gapstudy: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _guarded(fn):
    """Known user errors become one line and exit 2; anything else is a real bug and keeps its traceback."""
    from gapstudy.config import ConfigError
    from experiments.runner import SuiteError
    from gapstudy.sources import DataError, RewardError

    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConfigError, DataError, RewardError, SuiteError, FileNotFoundError, ImportError) as e:
            _fail(" ".join(str(e).split()))
        except OSError as e:  # a results root, cache file or output this user cannot read or write
            where = f": {e.filename}" if e.filename else ""
            _fail(f"{e.strerror or type(e).__name__}{where}" if e.strerror else " ".join(str(e).split()))
        except KeyboardInterrupt as e:
            # Ctrl-C: one line, and the conventional status of a process stopped by SIGINT (128 + 2); status 2 is
            # kept for bad input. The loop's interruption names the step and the checkpoint a re-run resumes from.
            message = str(e) if str(e) else "interrupted; re-run the same command to resume"
            print(f"gapstudy: error: {message}", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper


def cmd_run(argv: list[str]) -> None:
    import os

    import hydra
    from hydra.core.hydra_config import HydraConfig

    from gapstudy.config import CONFIG_DIR, check_group_overrides, check_keys
    from gapstudy.runs import execute, prepare

    if any(a.startswith("suite=") for a in argv):  # a registered suite: the registry's runner takes over
        from experiments.runner import main as run_suite

        code = run_suite([a for a in argv if a not in ("-m", "--multirun")], multirun="-m" in argv or "--multirun" in argv)
        raise SystemExit(code)
    check_group_overrides([a for a in argv if not a.startswith("-")])
    check_keys(argv)  # a typo is refused here, before hydra's advice to add it with `+`

    @hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base=None)
    @_guarded
    def _task(cfg) -> None:
        quiet_libraries()  # again: a launcher (joblib, submitit, ray) may run this in a fresh process
        overrides = list(HydraConfig.get().overrides.task)
        cfg, run_dir = prepare(overrides, cfg)
        final = execute(cfg, run_dir)
        if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 alone reports
            return
        print(f"{run_dir}")
        keys = ("eval/gold_reward", "eval/win_rate", "eval/kl", "eval/accuracy")
        print("  " + "  ".join(f"{k.split('/')[1]}={final[k]:.3f}" for k in keys if k in final))

    sys.argv = ["gapstudy run", *argv]
    _task()


def cmd_list(argv: list[str]) -> None:
    from gapstudy.algorithms import ALGORITHMS
    from gapstudy.sources import SOURCES
    from gapstudy.worlds import WORLDS

    print("worlds (world=...):")
    for name, (_, desc) in WORLDS.items():
        print(f"  {name:<12} {desc}")
    print("algorithms (algo=...):")
    for name, a in ALGORITHMS.items():
        print(f"  {name:<12} [{a.kind}] {a.description}")
    print("regimes (sync_every=...):")
    print(f"  {'1':<12} online: the sampler is the current policy at every step")
    print(f"  {'k':<12} semi-online: the sampler's weights are synced from the policy every k steps")
    print(f"  {'inf':<12} offline: the sampler stays the initial policy (fresh samples from it every step)")
    print("data sources (data=...):")
    for name, (_, desc) in SOURCES.items():
        print(f"  {name:<12} {desc}")
    from gapstudy.config import LABELLERS

    print("labellers (labeller=...):")
    for name, desc in LABELLERS.items():
        print(f"  {name:<12} {desc}")
    from experiments import SUITES

    print("suites (gapstudy run suite=NAME [profile=quick|full] [seeds=0,1,2] [jobs=N] [arm=A,B]):")
    for suite in SUITES.values():
        print(f"  {suite.name:<16} {suite.question}")
        print(f"  {'':<16} {suite.paper}; claims {', '.join(map(str, suite.claims))}; arms: "
              f"{', '.join(a.name for a in suite.arms)}")


def cmd_train_rm(argv: list[str]) -> None:
    """`gapstudy train-rm KEY=VALUE ...`: hydra-style overrides composed like `run`'s (data=dataset by default)."""
    from gapstudy.config import ConfigError, compose, validate_rm
    from gapstudy.rewards import train_reward_model

    flags = [a for a in argv if a.startswith("-")]
    if flags:
        raise ConfigError(f"train-rm: {flags[0]!r} is invalid; valid: KEY=VALUE overrides (no multirun)")
    overrides = argv if any(a.lstrip("+").startswith("data=") for a in argv) else ["data=dataset", *argv]
    cfg = validate_rm(compose(overrides))
    out = train_reward_model(cfg, command=" ".join(["gapstudy train-rm", *argv]))
    print(out)


DEMO = ["world=token_bandit", "reward=R1", "algo=dpo", "suite=demo"]  # runs land in <results>/demo/


def cmd_demo(argv: list[str]) -> None:
    """The README's main job: the same loop twice, the sampler synced every step (online) or never (offline)."""
    import shutil
    import time

    from gapstudy.runs import execute, prepare

    rows = []
    for label, sync in (("online", "1"), ("offline", "inf")):
        tic = time.perf_counter()
        cfg, run_dir = prepare([*DEMO, f"sync_every={sync}", *argv])
        if run_dir.exists():  # the demo always trains: its own earlier run (e.g. the committed one) is replaced
            shutil.rmtree(run_dir)
        final = execute(cfg, run_dir)
        rows.append((label, sync, final, time.perf_counter() - tic, run_dir))
    print(f"\n{'regime':<9}{'sync_every':>11}{'gold_reward':>13}{'win_rate':>10}{'kl':>9}{'seconds':>9}")
    for label, sync, final, seconds, _ in rows:
        print(f"{label:<9}{sync:>11}{final['eval/gold_reward']:>13.3f}{final['eval/win_rate']:>10.3f}"
              f"{final['eval/kl']:>9.2f}{seconds:>9.1f}")
    print("\nwin rate: against the reference (SFT) policy, judged by the gold reward; kl: KL(policy || reference), nats")
    for *_, run_dir in rows:
        print(f"  {run_dir}")


def cmd_figures(argv: list[str]) -> None:
    """`gapstudy figures [suite=NAME] [paths.results=DIR] [profile=full|quick|all]`: figures, tables, REPORT.md."""
    from pathlib import Path

    from experiments import PROFILES
    from experiments.runner import get_suite
    from gapstudy.config import ConfigError, check_results_root

    opts = {}
    for item in argv:
        key, eq, value = item.partition("=")
        if not eq or key not in ("suite", "paths.results", "profile"):
            raise ConfigError(f"figures: {item!r} is invalid; valid: suite=NAME, paths.results=DIR, profile=full|quick|all")
        opts[key] = value
    suite = opts.get("suite")
    if suite is not None:
        get_suite(suite)  # an unknown name stops here, naming the valid ones
    profile = opts.get("profile", "full")
    if profile not in (*PROFILES, "all"):
        raise ConfigError(f"profile={profile!r} is invalid; valid choices: {', '.join(PROFILES)}, all")
    root = Path(opts.get("paths.results", "results"))
    check_results_root(str(root), must_exist=True)  # a file, or a folder figures/ cannot be written into
    from analysis.figures import regenerate

    written = regenerate(root, suite, None if profile == "all" else profile)
    if not written:
        raise ConfigError(f"no runs{' of suite ' + suite if suite else ''} under {root} (profile {profile})")
    for path in written:
        print(path)


def cmd_compare(argv: list[str]) -> None:
    """`gapstudy compare PATH ... [by=KEY,KEY] [out=DIR] [y=METRIC]`: figures and tables of any runs, side by side."""
    from analysis.compare import CompareError, compare
    from analysis.scorecard import markdown_table
    from gapstudy.config import ConfigError, check_results_root

    paths, opts = [], {"out": "compare", "y": "eval/win_rate", "by": ""}
    for item in argv:
        key, eq, value = item.partition("=")
        if eq and key in opts:
            opts[key] = value
        elif eq and "/" not in key:
            raise ConfigError(f"compare: {item!r} is invalid; valid: run directories or folders, by=KEY,KEY, out=DIR, "
                              "y=METRIC")
        else:
            paths.append(item)
    if not paths:
        raise ConfigError("compare needs at least one run directory or folder of runs")
    check_results_root(opts["out"], key="out")
    by = [k for k in opts["by"].split(",") if k]
    try:
        written, tables = compare(paths, opts["out"], by or None, opts["y"])
    except CompareError as e:
        raise ConfigError(str(e)) from None
    for name, table in tables.items():
        print(f"\n{name}:\n{markdown_table(table) if not table.empty else '(empty)'}")
    print()
    for path in written:
        print(path)


def cmd_bench(argv: list[str]) -> None:
    from gapstudy.bench import bench

    bench(argv)


COMMANDS = {"run": cmd_run, "train-rm": cmd_train_rm, "list": cmd_list, "demo": cmd_demo, "figures": cmd_figures,
            "compare": cmd_compare, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        _fail(f"unknown command {command!r}; valid commands: {', '.join(COMMANDS)}")
    quiet_libraries()
    _guarded(COMMANDS[command])(rest)


if __name__ == "__main__":
    main()
