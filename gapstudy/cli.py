"""The face of gapstudy: `gapstudy run | train-rm | list | demo | figures | compare | bench`. The only module that knows
about the command line.

`gapstudy run KEY=VALUE ...` hands its arguments to hydra (override syntax, `-m` multirun, `--cfg job`), so a
sweep is `gapstudy run -m algo=dpo,ipo sync_every=1,inf`. Bad settings end with one line on stderr and status 2.
"""
from __future__ import annotations

import sys
from pathlib import Path

from gapstudy.runs import quiet_libraries

USAGE = """usage: gapstudy COMMAND [ARGS]

commands:
  run KEY=VALUE ...   one training run (hydra overrides; -m for a multirun sweep)
  run suite=NAME ...  every arm of a registered suite (profile=quick|full seeds=0,1,2 jobs=N arm=A,B); suite=A,B
                      or suite=all: several suites as one schedule (identical runs trained once, then copied)
  train-rm KEY=VALUE ...
                      a Bradley-Terry reward model on a preference dataset (data.path=... rm.out=DIR; rm.* in
                      configs/config.yaml), for labeller=proxy proxy.path=DIR
  list                the worlds, algorithms, regimes, data sources and labellers
  demo [seeds=0,1,2,3,4] [jobs=N] [paths.results=DIR] [KEY=VALUE]
                      online vs offline DPO on token_bandit R1 over seeds: mean and 95% t-interval of final
                      gold reward, win rate, KL (runs go to a fresh scratch root unless paths.results=DIR)
  figures [suite=NAME] [paths.results=DIR] [profile=full|quick|all]
                      paper-style figures, tables and REPORT.md from the runs under the results root
  compare PATH ... [by=KEY,KEY] [out=DIR] [y=METRIC]
                      win rate against KL, KL-matched and final tables for any runs (run dirs or folders of them),
                      seeds pooled per configuration (or per value of the config keys in by=)
  limits suite=NAME [profile=full|quick] [paths.results=DIR]
                      the best any policy can do in each of the suite's worlds: the exact KL-regularised
                      gold-vs-KL frontier (toy8x8) or the gold best-of-n frontier, to <suite>/limits-<profile>.json
  bench [case=bandit|chat] [KEY=VALUE]
                      time online DPO steps on token_bandit (32 prompts x 2 samples x 9 tokens), or (case=chat)
                      online IPO steps and 512-prompt evaluations on synth_lm chat
"""


def _fail(message: str) -> None:
    print(f"gapstudy: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _guarded(fn):
    """Known user errors become one line and exit 2; anything else is a real bug and keeps its traceback."""
    from experiments.suite import SuiteError
    from gapstudy.errors import ConfigError, DataError, RewardError

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

    from gapstudy.config import CONFIG_DIR, check_group_overrides, check_keys, sweep_size
    from gapstudy.runs import execute, prepare

    if any(a.startswith("suite=") for a in argv):  # a registered suite: the registry's runner takes over
        multirun = "-m" in argv or "--multirun" in argv
        raise SystemExit(run_suite([a for a in argv if a not in ("-m", "--multirun")], multirun))
    check_group_overrides([a for a in argv if not a.startswith("-")])
    check_keys(argv)  # a typo is refused here, before hydra's advice to add it with `+`
    total = sweep_size([a for a in argv if not a.startswith("-")])

    @hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base=None)
    @_guarded
    def _task(cfg) -> None:
        from hydra.types import RunMode

        quiet_libraries()  # again: a launcher (joblib, submitit, ray) may run this in a fresh process
        hydra_cfg = HydraConfig.get()
        overrides = list(hydra_cfg.overrides.task)
        cfg, run_dir = prepare(overrides, cfg)
        counter = ""
        if hydra_cfg.mode == RunMode.MULTIRUN:  # "[i/N]": this job's place in the sweep
            i = int(hydra_cfg.job.num) + 1
            counter = f"[{i}/{total if total is not None and i <= total else '?'}] "
            if os.environ.get("RANK", "0") == "0":
                print(f"{counter}{cfg.run_name}", flush=True)
        final = execute(cfg, run_dir)
        if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 alone reports
            return
        print(f"{counter}{run_dir}")
        keys = ("eval/gold_reward", "eval/win_rate", "eval/kl", "eval/accuracy")
        print("  " + "  ".join(f"{k.split('/')[1]}={final[k]:.3f}" for k in keys if k in final))

    sys.argv = ["gapstudy run", *argv]
    _task()


SUITE_KEYS = ("suite", "profile", "seeds", "jobs", "arm", "executor", "address")  # the suite runner's, not a run's


def get_suite(name: str):
    """The registered suite `name`; an unknown name is refused with the valid ones."""
    from experiments import SUITES
    from experiments.suite import SuiteError

    if name not in SUITES:
        raise SuiteError(f"suite={name!r} is invalid; valid choices: {', '.join(SUITES)}")
    return SUITES[name]


def get_suites(names: str) -> list:
    """`suite=NAME`, `suite=A,B` (in that order) or `suite=all` (every registered suite, in registry order)."""
    from experiments import SUITES

    if names == "all":
        return list(SUITES.values())
    wanted = [n for n in names.split(",") if n]
    if not wanted or len(set(wanted)) != len(wanted):
        from experiments.suite import SuiteError

        raise SuiteError(f"suite={names!r} is invalid; valid: a registered suite, several separated by commas "
                         f"(each once), or all")
    return [get_suite(n) for n in wanted]


def run_suite(argv: list[str], multirun: bool = False) -> int:
    """`gapstudy run suite=NAME|A,B|all [profile=quick|full] [seeds=0,1,2] [jobs=N] [arm=A,B]
    [executor=process|submitit_local|submitit_slurm|ray [address=HOST:PORT]] [overrides]`: the suites' runs (every
    other KEY=VALUE goes to each of them; with -m a comma list multiplies every arm) as one schedule, one "[i/N]"
    line per run, then a summary per suite; status 1 when a run failed, was busy or was skipped."""
    from experiments.schedule import DONE, NOT_DONE
    from experiments.schedule import run_suites as run_planned
    from experiments.suite import SuiteError
    from gapstudy.config import compose

    opts, rest = {}, []
    for item in argv:
        key, eq, value = item.partition("=")
        if eq and key in SUITE_KEYS:
            opts[key] = value
        else:
            rest.append(item)
    suites = get_suites(opts["suite"])
    try:
        seeds = [int(s) for s in opts["seeds"].split(",")] if "seeds" in opts else None
    except ValueError:
        raise SuiteError(f"seeds={opts['seeds']!r} is invalid; valid: integers separated by commas, e.g. seeds=0,1,2")
    try:
        jobs = int(opts.get("jobs", 1))
        if jobs < 1:
            raise ValueError
    except ValueError:
        raise SuiteError(f"jobs={opts.get('jobs')!r} is invalid; valid: an integer >= 1")
    arms = opts["arm"].split(",") if "arm" in opts else None
    if arms is not None and len(suites) > 1:
        raise SuiteError("arm= selects arms of one suite; with several suites, run them all (or one suite at a time)")
    extra, grid = [], {}
    for item in rest:
        key, _, value = item.partition("=")
        if multirun and "," in value and not value.startswith("["):
            grid[key] = value.split(",")
        else:
            extra.append(item)
    root = Path(compose([*suites[0].base, *extra]).paths.results).resolve()  # absolute: cluster workers run elsewhere
    outcomes = run_planned(suites, opts.get("profile", "full"), seeds, arms, extra, grid or None, jobs, root,
                           executor=opts.get("executor", "process"), address=opts.get("address"))
    failures = 0
    for suite in suites:
        status = outcomes[suite.name]
        failed = {k: v for k, v in status.items() if v.startswith(NOT_DONE)}
        failures += len(failed)
        done = sum(v.startswith(DONE) for v in status.values())
        print(f"{suite.name}: {done}/{len(status)} runs complete under {root / suite.name}"
              + (f"; {len(failed)} failed, busy or skipped:" if failed else ""))
        for key, outcome in failed.items():
            print(f"  {key}: {outcome}")
    return 1 if failures else 0


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
    from gapstudy.rewards import LABELLERS

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
    from gapstudy.config import ConfigError, compose
    from gapstudy.train_rm import train_reward_model, validate

    flags = [a for a in argv if a.startswith("-")]
    if flags:
        raise ConfigError(f"train-rm: {flags[0]!r} is invalid; valid: KEY=VALUE overrides (no multirun)")
    overrides = argv if any(a.lstrip("+").startswith("data=") for a in argv) else ["data=dataset", *argv]
    cfg = validate(compose(overrides))
    out = train_reward_model(cfg, command=" ".join(["gapstudy train-rm", *argv]))
    print(out)


DEMO = ["world=token_bandit", "reward=R1", "algo=dpo", "suite=demo"]  # runs land in <results>/demo/
DEMO_REGIMES = (("online", "1"), ("offline", "inf"))
DEMO_SEEDS = "0,1,2,3,4"
DEMO_METRICS = (("gold_reward", "eval/gold_reward", 3), ("win_rate", "eval/win_rate", 3), ("kl", "eval/kl", 2))


def _demo_run(overrides: list[str]) -> tuple[dict, float | None]:
    """One demo run (in this process or a worker): (final metrics, wall seconds, or None if it was already done)."""
    import time

    from gapstudy.runs import execute, is_complete, prepare, quiet_libraries

    quiet_libraries()
    cfg, run_dir = prepare(overrides)
    done = is_complete(run_dir)
    tic = time.perf_counter()
    final = execute(cfg, run_dir)
    return final, None if done else time.perf_counter() - tic


def _interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds (scipy.stats.t with n - 1 degrees of freedom)."""
    import numpy as np
    from scipy import stats

    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    sem = float(stats.sem(values))
    if sem == 0.0:  # every seed agrees exactly: the interval is the point
        return mean, mean, mean
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def cmd_demo(argv: list[str]) -> None:
    """The README's main job: the same loop with the sampler synced every step (online) or never (offline), over
    several seeds; prints mean and 95% t-interval over seeds per regime. Runs go to a fresh scratch results root
    unless `paths.results=DIR` is given (finished runs there are reused, never deleted)."""
    import tempfile
    import time
    from concurrent.futures import ProcessPoolExecutor

    from gapstudy.errors import ConfigError

    opts, overrides = {"seeds": DEMO_SEEDS, "jobs": "1"}, []
    for item in argv:
        key, eq, value = item.partition("=")
        if key in opts and eq:
            opts[key] = value
        elif item.startswith("-") or not eq:
            raise ConfigError(f"demo: {item!r} is invalid; valid: KEY=VALUE overrides, seeds=0,1,..., jobs=N")
        elif key.lstrip("+") in ("seed", "sync_every", "suite"):
            raise ConfigError(f"demo: {key}= is set by the demo; valid: seeds=0,1,... (default {DEMO_SEEDS})")
        else:
            overrides.append(item)
    try:
        seeds = sorted({int(s) for s in opts["seeds"].split(",")})
    except ValueError:
        raise ConfigError(f"seeds={opts['seeds']!r} is invalid; valid: comma-separated integers") from None
    if len(seeds) < 2:
        raise ConfigError(f"seeds={opts['seeds']!r} is invalid; an interval over seeds needs at least 2")
    if not opts["jobs"].isdigit() or int(opts["jobs"]) < 1:
        raise ConfigError(f"jobs={opts['jobs']!r} is invalid; valid: a positive integer")
    jobs = int(opts["jobs"])
    root = next((o.partition("=")[2] for o in overrides if o.startswith("paths.results=")), None)
    given = root is not None
    if not given:
        root = tempfile.mkdtemp(prefix="gapstudy-demo-")
        overrides.append(f"paths.results={root}")
    if not any(o.startswith("progress=") for o in overrides):
        overrides.append("progress=false")  # one line per finished run instead of ten progress bars
    plan = [(label, sync, seed, [*DEMO, f"sync_every={sync}", f"seed={seed}", *overrides])
            for label, sync in DEMO_REGIMES for seed in seeds]
    from gapstudy.runs import prepare

    try:
        for *_, run_overrides in plan:
            prepare(run_overrides)  # every bad setting stops here, before anything trains
    except Exception:
        if not given:
            Path(root).rmdir()  # the empty scratch root this call made; nothing else is removed
        raise
    print(f"{len(plan)} runs ({len(seeds)} seeds x online, offline; jobs={jobs}) under {Path(root) / 'demo'}",
          flush=True)
    outcomes: dict[int, tuple[dict, float | None]] = {}

    def report(i: int, outcome: tuple[dict, float | None]) -> None:
        outcomes[i] = outcome
        label, _, seed, _ = plan[i]
        final, seconds = outcome
        spent = "reused" if seconds is None else f"{seconds:.1f} s"
        print(f"[{len(outcomes)}/{len(plan)}] {label:<8} seed {seed}  gold_reward={final['eval/gold_reward']:.3f} "
              f"win_rate={final['eval/win_rate']:.3f} kl={final['eval/kl']:.2f}  ({spent})", flush=True)

    tic = time.perf_counter()
    report(0, _demo_run(plan[0][3]))  # the first run builds the world (cached under the root) before any worker
    if jobs == 1:
        for i in range(1, len(plan)):
            report(i, _demo_run(plan[i][3]))
    else:
        from concurrent.futures import as_completed

        from experiments.executors import spawn_context

        with ProcessPoolExecutor(max_workers=jobs, mp_context=spawn_context()) as pool:
            futures = {pool.submit(_demo_run, plan[i][3]): i for i in range(1, len(plan))}
            for future in as_completed(futures):
                report(futures[future], future.result())
    wall = time.perf_counter() - tic

    header = f"{'regime':<9}{'sync_every':>11}{'seeds':>6}" + "".join(f"{name:>24}" for name, _, _ in DEMO_METRICS)
    print(f"\n{header}{'seconds':>9}")
    for label, sync in DEMO_REGIMES:
        mine = [outcomes[i] for i, (lab, *_) in enumerate(plan) if lab == label]
        cells = []
        for _, key, digits in DEMO_METRICS:
            mean, low, high = _interval([final[key] for final, _ in mine])
            cells.append(f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]".rjust(24))
        spent = [s for _, s in mine if s is not None]
        seconds = f"{sum(spent) / len(spent):.1f}" if spent else "reused"
        print(f"{label:<9}{sync:>11}{len(mine):>6}{''.join(cells)}{seconds:>9}")
    print(f"\nmean [95% t-interval over seeds {','.join(map(str, seeds))}]; win rate: against the reference (SFT) "
          "policy, judged by the gold reward; kl: KL(policy || reference), nats; seconds: per run (world build, "
          "training, evaluation)")
    print(f"{len(plan)} runs in {wall:.0f} s (jobs={jobs}), written under {Path(root) / 'demo'}")
    if not given:
        print("(a fresh scratch results root; paths.results=DIR to choose one, where finished runs are reused)")


def cmd_figures(argv: list[str]) -> None:
    """`gapstudy figures [suite=NAME] [paths.results=DIR] [profile=full|quick|all]`: figures, tables, REPORT.md."""
    from pathlib import Path

    from experiments import PROFILES
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
    from analysis.regenerate import regenerate

    written = regenerate(root, suite, None if profile == "all" else profile)
    if not written:
        raise ConfigError(f"no runs{' of suite ' + suite if suite else ''} under {root} (profile {profile})")
    for path in written:
        print(path)


def cmd_compare(argv: list[str]) -> None:
    """`gapstudy compare PATH ... [by=KEY,KEY] [out=DIR] [y=METRIC]`: figures and tables of any runs, side by side."""
    from analysis.compare import CompareError, compare
    from analysis.report import markdown_table
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
    """`gapstudy bench [case=bandit|chat] [measured=N] [repeats=N] [KEY=VALUE]`: milliseconds per step of the real
    loop (case=chat also per evaluation, and the seconds of a run's set-up)."""
    from gapstudy.bench import bench

    bench(argv)


def cmd_limits(argv: list[str]) -> None:
    """`gapstudy limits suite=NAME [profile=full|quick] [paths.results=DIR]`: the limit of every world the suite's
    runs train in (one per build seed): the exact KL-regularised gold-vs-KL frontier where it can be enumerated
    (toy8x8), else the gold best-of-n frontier of the SFT policy (gapstudy/limits.py), written to
    <results>/<suite>/limits-<profile>.json."""
    from experiments.limits import suite_limits
    from gapstudy.errors import ConfigError

    opts = dict(a.split("=", 1) for a in argv if a.startswith(("suite=", "profile=")))
    if "suite" not in opts:
        raise ConfigError("limits: suite=NAME is required")
    print(suite_limits(get_suite(opts["suite"]), opts.get("profile", "full"),
                       [a for a in argv if not a.startswith(("suite=", "profile="))], log=lambda line: print(line, flush=True)))


COMMANDS = {"run": cmd_run, "train-rm": cmd_train_rm, "list": cmd_list, "demo": cmd_demo, "figures": cmd_figures,
            "compare": cmd_compare, "bench": cmd_bench, "limits": cmd_limits}


def command_help(command: str) -> str:
    """`gapstudy COMMAND --help`: the command's lines of USAGE and its docstring (`run --help` is hydra's own)."""
    import inspect

    blocks: list[list[str]] = []
    for line in USAGE.split("commands:\n", 1)[1].splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            blocks.append([line])
        elif blocks and line.strip():
            blocks[-1].append(line)
    mine = ["\n".join(b) for b in blocks if b[0].split()[0] == command]
    doc = inspect.getdoc(COMMANDS[command]) or ""
    return f"usage: gapstudy {command} ...\n\n" + "\n".join(mine) + (f"\n\n{doc}" if doc else "")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        _fail(f"unknown command {command!r}; valid commands: {', '.join(COMMANDS)}")
    if command != "run" and any(a in ("-h", "--help") for a in rest):
        print(command_help(command))
        return
    quiet_libraries()
    _guarded(COMMANDS[command])(rest)


if __name__ == "__main__":
    main()
