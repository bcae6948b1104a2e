"""One look for every figure: a fixed colour and label per arm name (the same arm is the same colour in every
figure), offline arms dashed, readable font sizes without LaTeX, and saving to PNG + PDF.

The arm names, their order in figures and tables, and which arms are offline are read from the experiment registry
(experiments.SUITES); the colours and labels below are this module's own.
"""
from __future__ import annotations

import functools
import zlib
from collections.abc import Iterable
from pathlib import Path

import matplotlib
import seaborn as sns
from matplotlib.figure import Figure

from experiments import SUITES

_BANDIT_ALGOS = ("dpo", "ipo", "best_of_n", "reinforce")
_BANDIT_REGIMES = ("onpolicy", "offline")
_REWARDS = ("R1", "R2")
_REUSE = (1, 2, 4, 8)

# Colour-blind palette (seaborn "colorblind"): online blue, offline orange throughout.
_BLUE, _ORANGE, _GREEN, _VERMILLION, _PURPLE, _BROWN, _PINK, _GREY, _YELLOW, _SKY = (
    "#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494", "#ece133", "#56b4e9")
_SEQUENTIAL = ("#76b791", "#509e90", "#33858d", "#1d6c8a", "#234f81")  # seaborn "crest": small -> large

ARM_COLORS: dict[str, str] = {
    # kl_budget
    "online_ipo": _BLUE, "offline_ipo": _ORANGE, "offline_ipo_golden": _BROWN, "online_dpo": _SKY,
    "offline_dpo": _VERMILLION,
    # data_coverage, suboptimal_data
    "online": _BLUE, "offline_dataset": _ORANGE, "replay_original": _GREEN, "replay_shuffled": _PURPLE,
    "final_vs_final": _GREY, "sft_vs_mid": _GREEN, "mid_vs_final": _PURPLE, "sft_vs_final": _BROWN,
    # shuffle_degree: window size on a sequential scale
    "window_1": _SEQUENTIAL[0], "window_4": _SEQUENTIAL[1], "window_32": _SEQUENTIAL[2],
    "window_256": _SEQUENTIAL[3], "window_all": _SEQUENTIAL[4],
    # best_of_2
    "ipo_online": _BLUE, "ipo_offline": _ORANGE, "bo2_online": _SKY, "bo2_offline": _VERMILLION,
    "bo2_shuffled": _PURPLE,
    # sync_period: math and chat arms of the same regime share a colour (they never share a panel)
    **{f"{task}_{regime}": color for task in ("math", "chat") for regime, color in (
        ("s1", _BLUE), ("s5", _GREEN), ("s10", _PURPLE), ("s100", _BROWN), ("sinf", _ORANGE), ("grpo", _VERMILLION))},
    "math_s1_no_ref_sync": _GREY,
    # curriculum
    "nv": _PURPLE, "v": _GREEN, "nv_then_v": _BLUE, "v_then_nv": _ORANGE, "mixed": _BROWN,
    # bandit: colour = algorithm, line style = regime, panel = reward
    **{f"{a}_{r}_{w}": c for a, c in zip(_BANDIT_ALGOS, (_BLUE, _GREEN, _PURPLE, _VERMILLION))
       for r in _BANDIT_REGIMES for w in _REWARDS},
    # sample_reuse: T on a sequential scale
    **{f"T{t}_{w}": c for t, c in zip(_REUSE, _SEQUENTIAL[::-1][1:]) for w in _REWARDS},
    # toy8x8
    "dpo_offline": _ORANGE, "ppo_kl": _BLUE, "dpo_online": _SKY,
}
REWARD_COLORS = {"R1": _VERMILLION, "R2": _BLUE}

_ALGO_LABELS = {"dpo": "DPO", "ipo": "IPO", "best_of_n": "Best-of-N", "reinforce": "REINFORCE"}
_REGIME_LABELS = {"onpolicy": "on-policy", "offline": "offline"}
ARM_LABELS: dict[str, str] = {
    "online_ipo": "online IPO", "offline_ipo": "offline IPO", "offline_ipo_golden": "offline IPO, D_golden",
    "online_dpo": "online DPO", "offline_dpo": "offline DPO",
    "online": "online", "offline_dataset": "offline (dataset)", "replay_original": "replay, original order",
    "replay_shuffled": "replay, shuffled",
    "window_1": "window 1 (no shuffle)", "window_4": "window 4", "window_32": "window 32", "window_256": "window 256",
    "window_all": "uniform shuffle",
    "final_vs_final": "final vs final", "sft_vs_mid": "SFT vs mid", "mid_vs_final": "mid vs final",
    "sft_vs_final": "SFT vs final",
    "ipo_online": "IPO online", "ipo_offline": "IPO offline", "bo2_online": "Best-of-2 online",
    "bo2_offline": "Best-of-2 offline", "bo2_shuffled": "Best-of-2, shuffled log",
    **{f"{task}_{regime}": f"{task} {label}" for task in ("math", "chat") for regime, label in (
        ("s1", "s=1 (online)"), ("s5", "s=5"), ("s10", "s=10"), ("s100", "s=100"), ("sinf", "s=∞ (offline)"),
        ("grpo", "GRPO"))},
    "math_s1_no_ref_sync": "math s=1, no π_ref sync",
    "nv": "NV only", "v": "V only", "nv_then_v": "NV→V", "v_then_nv": "V→NV", "mixed": "V+NV mixed",
    **{f"{a}_{r}_{w}": f"{_ALGO_LABELS[a]} {_REGIME_LABELS[r]} ({w})"
       for a in _BANDIT_ALGOS for r in _BANDIT_REGIMES for w in _REWARDS},
    **{f"T{t}_{w}": f"T={t} ({w})" for t in _REUSE for w in _REWARDS},
    "dpo_offline": "DPO, fixed dataset", "ppo_kl": "PPO (GRPO) with KL", "dpo_online": "DPO, online",
}


def _offline(overrides: Iterable[str]) -> bool:
    """Trained on data that never follows the policy: sampling stays with the initial policy (sync_every=inf) or a
    fixed dataset (data=golden | dataset). Datasets sampled from chosen policies (sampler_from) and replays of an
    online log are the arms a suite studies, not its offline baseline."""
    settings = dict(override.partition("=")[::2] for override in overrides)
    return "sampler_from" not in settings and (settings.get("sync_every") == "inf"
                                               or settings.get("data") in ("golden", "dataset"))


_OFFLINE = {arm.name for suite in SUITES.values() for arm in suite.arms if _offline((*suite.base, *arm.overrides))}
_ORDER = {name: i for i, name in enumerate(dict.fromkeys(arm.name for suite in SUITES.values() for arm in suite.arms))}
SEED_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

METRIC_LABELS = {
    "eval/kl": "KL(π‖π$_{\\mathrm{SFT}}$) (nats)",
    "eval/win_rate": "win rate vs SFT (gold judge)",
    "eval/gold_reward": "gold reward",
    "eval/proxy_reward": "proxy reward",
    "eval/proxy_accuracy": "proxy accuracy on policy samples",
    "eval/accuracy": "accuracy",
    "eval/math/accuracy": "math accuracy",
    "eval/chat/win_rate": "chat win rate vs seed (gold judge)",
    "eval/chat/gold_reward": "chat gold reward",
    "eval/length": "response length (tokens)",
    "eval/entropy": "token entropy (nats)",
    "eval/classification_accuracy": "classification accuracy (gold pairs)",
    "train/loss": "training loss",
    "train/margin": "training margin β·h",
    "train/accuracy": "training pair accuracy",
    "train/chosen_logratio": "log π(y$_w$) − log π$_{\\mathrm{ref}}$(y$_w$)",
    "eval/diagonal_mass": "mass on the diagonal (optimal) responses",
    "eval/uncovered_mass": "mass on the uncovered responses",
    "eval/uncovered_raised": "uncovered cells above π$_{\\mathrm{ref}}$ (fraction)",
    "counters/samples": "samples generated",
    "step": "step",
}

STYLE_RC = {
    "text.usetex": False,  # mathtext only: no LaTeX installation needed
    "font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": 10, "ytick.labelsize": 10,
    "legend.fontsize": 9, "legend.framealpha": 0.85, "figure.titlesize": 13,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
    "lines.linewidth": 2.0, "savefig.dpi": 150, "savefig.bbox": "tight", "pdf.fonttype": 42,
    "figure.constrained_layout.use": True,
}


def arm_color(arm: str) -> str:
    """The arm's fixed colour; an unknown name hashes (stably, crc32) into a 20-colour palette."""
    if arm in ARM_COLORS:
        return ARM_COLORS[arm]
    palette = sns.color_palette("tab20", 20).as_hex()
    return palette[zlib.crc32(str(arm).encode()) % len(palette)]


def arm_label(arm: str) -> str:
    """The arm's name in figures and tables. An arm outside ARM_LABELS keeps its name as written, underscores included
    (`sync_every=1`, `token_bandit` are config names a reader looks up); only the `__` between the parts of a run
    name becomes ", " (algo-dpo__sync_every-1 -> "algo-dpo, sync_every-1")."""
    return ARM_LABELS.get(arm, str(arm).replace("__", ", "))


def arm_linestyle(arm: str) -> str:
    """Offline arms (fixed data: offline, s=∞) dashed; the ordered replay dotted, so that where it coincides
    with the online run (claim 3) both stay visible; everything else solid."""
    if arm == "replay_original":
        return ":"
    return "--" if arm in _OFFLINE else "-"


def metric_label(key: str) -> str:
    if key in METRIC_LABELS:
        return METRIC_LABELS[key]
    parts = key.split("/")
    if len(parts) == 3 and f"eval/{parts[2]}" in METRIC_LABELS:  # eval/<task>/<name>
        return f"{parts[1]} {METRIC_LABELS['eval/' + parts[2]]}"
    return key


def arm_order(arms: Iterable[str]) -> list[str]:
    """Arms in registry order (the suites of experiments.SUITES, each in its arms' order), unknown names after
    them alphabetically."""
    unique = list(dict.fromkeys(a for a in arms if isinstance(a, str)))
    return sorted(unique, key=lambda a: (_ORDER.get(a, len(_ORDER)), a))


def seed_marker(seed, seeds: Iterable) -> str:
    ordered = sorted({s for s in seeds}, key=str)
    index = ordered.index(seed) if seed in ordered else 0
    return SEED_MARKERS[index % len(SEED_MARKERS)]


def styled(function):
    """Decorator: draw the figure under STYLE_RC without touching the caller's global rcParams."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE_RC):
            return function(*args, **kwargs)
    return wrapper


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 4.4, **kwargs):
    """A pyplot-free Figure (no global figure registry, no GUI backend) and its axes array; width and height
    are per panel, in inches."""
    figure = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False, **kwargs)
    return figure, axes


# No timestamp and no software version in the files: re-drawing unchanged runs rewrites them byte for byte, whatever
# the date (a PDF's CreationDate, or SOURCE_DATE_EPOCH) or the matplotlib patch release that draws them
_PNG_METADATA = {"Software": None}
_PDF_METADATA = {"CreationDate": None, "Creator": None, "Producer": None}


def save(fig: Figure, out_dir: str | Path, name: str, dpi: int = 150) -> list[Path]:
    """Write `<out_dir>/<name>.png` (dpi 150) and `.pdf`, without timestamps or version strings; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    with matplotlib.rc_context(STYLE_RC):
        fig.savefig(paths[0], dpi=dpi, bbox_inches="tight", metadata=_PNG_METADATA)
        fig.savefig(paths[1], bbox_inches="tight", metadata=_PDF_METADATA)
    return paths
