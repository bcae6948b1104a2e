"""The settings' types, ranges and choices, declared once as dataclasses (hydra structured configs), and the one
checker that walks them.

configs/*.yaml hold every default with its comment, and hydra composes them as before; this module says what each
setting may hold. The dataclasses are structured configs (`OmegaConf.structured(Config)` accepts them, and a composed
config merges into them), but they are not registered as hydra's schema, for four reasons:
* a typed field converts what it holds: a float field turns the yaml's `chat_length_mean: 5` into 5.0, which
  would change the composed configs and the hashes of the worlds cached from them;
* OmegaConf's errors run over several lines in its own words ("Value 'abc' of type 'str' could not be converted
  to Integer / full_key: seed / object_type=Config"), where gapstudy says `seed='abc' is invalid; valid: an
  integer >= 0`;
* OmegaConf 2.3 has neither bounds (a positive lr, a fraction in [0, 1]) nor `Literal` choices, nor the unions a
  few settings are (sync_every: an integer or inf, replay.shuffle_window: an integer or all, chat_template: auto
  or a boolean);
* unknown keys are already refused, with the closest real names, by config.check_keys.
So each field's metadata holds its check (`integer`, `number`, `flag`, `choice`, `period`), and `check(cfg)` walks
the declaration: the top level, its sections (proxy, rm, eval, ...), and the variant of each group (world, algo,
data, logger) that the config's `name` picks. A field without a check (a path, a name, free text) is declared for
its type only; registry-backed choices (world.reward.kind, world.task, reward, labeller) and cross-field rules are
checked by the code that owns them.
"""
import math
from dataclasses import dataclass, field, fields
from typing import Any, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from gapstudy.errors import ConfigError


# ---------------------------------------------------------------- the kinds of check
def integer(low: int | None = None, high: int | None = None, null: str | None = None, why: str = ""):
    """An integer in [low, high]; `null` (its meaning, "" for none) allows null; `why` is said after the range."""
    return field(default=MISSING, metadata={"kind": "int", "low": low, "high": high, "null": null, "why": why})


def number(low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False,
           null: str | None = None):
    """A real number between low and high (each bound included unless open)."""
    return field(default=MISSING, metadata={"kind": "number", "low": low, "high": high, "low_open": low_open,
                                            "high_open": high_open, "null": null})


def choice(*options):
    return field(default=MISSING, metadata={"kind": "choice", "options": options})


def flag():
    """A boolean: true or false, never 1 or "yes"."""
    return choice(True, False)


def period(inf: bool = True, words: tuple[str, ...] = ()):
    """sync_every-style: a positive integer, or inf (written inf, infinity or never) unless `inf` is false, or one
    of `words` (replay.shuffle_window's all)."""
    return field(default=MISSING, metadata={"kind": "period", "inf": inf, "words": words})


def free():
    """Declared for its type only: a path, a name or text, checked (if at all) where it is used."""
    return field(default=MISSING)


def section(cls):
    """A section of settings (proxy.*, world.prompts.*), declared by its own dataclass."""
    return field(default_factory=cls, metadata={"section": cls})


def variants(**options):
    """A config group: the dataclass of each option, picked by the group's `name`."""
    return field(default=MISSING, metadata={"variants": options})


# ---------------------------------------------------------------- the groups (configs/<group>/*.yaml)
@dataclass
class TokenBanditWorld:
    name: str = free()
    vocab: int = integer(1)
    response_tokens: int = integer(1)
    histogram_draws: int = integer(1)
    cauchy_loc: float = number()
    cauchy_scale: float = number(0, low_open=True)
    reward_width: float = number(0, low_open=True)
    n_layer: int = integer(1)
    n_embd: int = integer(1)  # a multiple of n_head: config.validate
    n_head: int = integer(1)
    pretrain_steps: int = integer(0)
    pretrain_lr: float = number(0, low_open=True)
    build_seed: int = integer(0)
    eval_prompts: int = integer(1)


@dataclass
class SynthLmWorld:
    name: str = free()
    task: str = free()  # worlds/synth_lm.TASK_CHOICES
    n_layer: int = integer(1)
    n_embd: int = integer(1)
    n_head: int = integer(1)
    max_new_tokens: int = integer(1)  # at least the longest SFT response: worlds/synth_lm.validate
    build_seed: int = integer(0)
    train_prompts: int = integer(1)
    eval_prompts: int = integer(1)
    corpus_size: int = integer(1)
    corpus_math_fraction: float = number(0, 1)
    math_max_digits: int = integer(1)
    math_scratchpad_prob: float = number(0, 1)
    math_correct_scratchpad: float = number(0, 1)
    math_correct_direct: float = number(0, 1)
    chat_prompt_min_words: int = integer(1)  # at most chat_prompt_max_words: config.validate
    chat_prompt_max_words: int = integer(1)
    chat_length_mean: float = number(0)
    chat_max_words: int = integer(1)
    chat_repeat_prob: float = number(0, 1)
    pretrain_steps: int = integer(0)
    pretrain_batch_size: int = integer(1)
    pretrain_lr: float = number(0, low_open=True)
    chat_target_length: float = number(0, low_open=True)
    chat_overlength_width: float = number(0, low_open=True)
    chat_relevance_power: float = number(0)
    chat_repeat_power: float = number(0)


@dataclass
class Toy8x8World:
    name: str = free()
    rejected_per_prompt: int = integer(1, 6, why="at least one response of each prompt must stay uncovered")
    pairs_per_cell: int = integer(1)
    label_scale: float = number(0, low_open=True)
    ref_diagonal_mass: float = number()  # positive, and with ref_rejected_mass below 1: worlds/toy8x8.validate
    ref_rejected_mass: float = number()
    ref_concentration: float = number(0, low_open=True)
    n_layer: int = integer(1)
    n_embd: int = integer(1)
    n_head: int = integer(1)
    pretrain_steps: int = integer(0)
    pretrain_lr: float = number(0, low_open=True)
    build_seed: int = integer(0)
    pairs_path: str = free()


@dataclass
class HfPrompts:
    path: str = free()
    subset: Optional[str] = free()
    split: str = free()
    field: str = free()
    answer_field: Optional[str] = free()
    task_field: Optional[str] = free()
    task: str = free()
    eval_path: Optional[str] = free()
    eval_split: Optional[str] = free()
    eval_size: int = integer(1)
    limit: Optional[int] = integer(1, null="")


@dataclass
class HfReward:
    kind: str = free()  # worlds/hf.REWARD_KINDS: the verifiers and model
    model: Optional[str] = free()
    batch_size: int = integer(1)


@dataclass
class HfWorld:
    name: str = free()
    model: str = free()
    chat_template: Any = choice("auto", True, False)
    system_prompt: Optional[str] = free()
    prompts: HfPrompts = section(HfPrompts)
    reward: HfReward = section(HfReward)
    max_new_tokens: int = integer(1)
    max_prompt_tokens: int = integer(1)
    build_seed: int = integer(0)


@dataclass
class Algo:
    """best_of_2, reinforce and sft: no KL strength."""
    name: str = free()
    logp_reduction: str = choice("sum", "mean")
    samples_per_prompt: int = integer(1)  # at least 2 for pair objectives: algorithms


@dataclass
class DpoAlgo(Algo):
    # DPO's and IPO's beta is the KL strength; at 0 the DPO gradient vanishes and IPO's target 1/(2 beta) is
    # infinite, and a negative beta reverses the preference
    beta: float = number(0, low_open=True)


@dataclass
class IpoAlgo(DpoAlgo):
    form: str = choice("tang", "azar")


@dataclass
class GrpoAlgo(Algo):
    beta: float = number(0)  # beta=0 is a known choice: GRPO without its KL term
    clip_eps: float = number(0, low_open=True)


@dataclass
class KtoAlgo(DpoAlgo):
    desirable_weight: float = number(0, low_open=True)
    undesirable_weight: float = number(0, low_open=True)
    reference_point: str = choice("batch", "zero")


@dataclass
class SimpoAlgo(DpoAlgo):
    gamma: float = number(0)  # gamma = 0: no target margin (a known choice)


@dataclass
class OrpoAlgo(Algo):
    lam: float = number(0)  # lambda = 0: plain SFT on the chosen responses


@dataclass
class RwrAlgo(Algo):
    temperature: float = number(0, low_open=True)


@dataclass
class Data:
    """data=policy."""
    name: str = free()


@dataclass
class DatasetData(Data):
    path: str = free()
    split: str = free()
    subset: Optional[str] = free()
    prompt_field: Optional[str] = free()
    chosen_field: str = free()
    rejected_field: str = free()
    shuffle: bool = flag()
    max_prompt_tokens: Optional[int] = integer(1, null="")
    max_response_tokens: Optional[int] = integer(1, null="")


@dataclass
class GoldenData(Data):
    shuffle: bool = flag()


@dataclass
class ReplayData(Data):
    path: str = free()


@dataclass
class Logger:
    """logger=jsonl."""
    name: str = free()


@dataclass
class WandbLogger(Logger):
    project: str = free()
    mode: Optional[str] = free()


# ---------------------------------------------------------------- the top level (configs/config.yaml)
@dataclass
class Proxy:
    pairs: int = integer(1)
    epochs: int = integer(1)
    lr: float = number(0, low_open=True)
    batch_size: int = integer(1)
    path: Optional[str] = free()


@dataclass
class Judge:
    model: Optional[str] = free()
    template: str = free()
    tokens: List[str] = free()
    batch_size: int = integer(1)


@dataclass
class RewardModel:
    base: Optional[str] = free()
    out: Optional[str] = free()
    epochs: int = integer(1)
    lr: float = number(0, low_open=True)
    batch_size: int = integer(1)
    eval_fraction: float = number(0, 1, high_open=True)


@dataclass
class Replay:
    order: str = choice("original", "shuffled")
    shuffle_window: Any = period(inf=False, words=("all",))


@dataclass
class Eval:
    every: int = integer(0)
    log_spaced: bool = flag()
    prompts: int = integer(1)
    tasks: Optional[List[str]] = free()
    baseline: Optional[str] = free()


@dataclass
class Vllm:
    gpu_memory_utilization: float = number(0, 1, low_open=True)
    dtype: str = free()


@dataclass
class Paths:
    results: str = free()  # a writable directory: config.check_results_root


@dataclass
class Config:
    world: Any = variants(token_bandit=TokenBanditWorld, synth_lm=SynthLmWorld, toy8x8=Toy8x8World, hf=HfWorld)
    algo: Any = variants(dpo=DpoAlgo, ipo=IpoAlgo, best_of_2=Algo, grpo=GrpoAlgo, reinforce=Algo, kto=KtoAlgo,
                         simpo=SimpoAlgo, orpo=OrpoAlgo, rwr=RwrAlgo, sft=Algo)
    data: Any = variants(policy=Data, dataset=DatasetData, replay=ReplayData, golden=GoldenData)
    logger: Any = variants(jsonl=Logger, wandb=WandbLogger)
    seed: int = integer(0)
    steps: int = integer(0)
    sync_every: Any = period()
    ref_sync_every: Any = period()
    batch_size: int = integer(1)
    reuse: int = integer(1)
    optimizer: str = choice("adam", "adamw", "sgd")
    lr: float = number(0, low_open=True)
    weight_decay: float = number(0)
    disable_dropout: bool = flag()
    # the max gradient norm: clip_grad_norm_ with 0 zeroes every gradient (nothing is learned) and a negative one
    # flips them; "no clipping" is written grad_clip=null
    grad_clip: Optional[float] = number(0, low_open=True, null="no clipping")
    temperature: float = number(0, low_open=True)
    reward: str = free()  # worlds/token_bandit.REWARD_CENTRES
    labeller: str = free()  # config.LABELLERS
    sampler_from: Any = free()
    snapshots: List[float] = free()  # fractions in (0, 1]: config.validate
    init_from: Optional[str] = free()
    proxy: Proxy = section(Proxy)
    judge: Judge = section(Judge)
    rm: RewardModel = section(RewardModel)
    replay: Replay = section(Replay)
    eval: Eval = section(Eval)
    checkpoint_every: int = integer(0)
    log_every: int = integer(1)
    save_pair_log: bool = flag()
    save_checkpoint: bool = flag()
    progress: bool = flag()
    generator: str = choice("hf", "vllm")
    vllm: Vllm = section(Vllm)
    threads: int = integer(1)
    device: str = choice("cpu", "cuda", "auto")
    precision: str = choice("auto", "fp32", "bf16")
    parallel: str = choice("ddp", "fsdp")  # replicate the policy and all-reduce its gradients | shard it (FSDP2)
    suite: Optional[str] = free()
    arm: Optional[str] = free()
    profile: Optional[str] = free()
    paths: Paths = section(Paths)


# ---------------------------------------------------------------- the checker
def check(cfg: DictConfig, *keys: str, schema=Config, prefix: str = "") -> None:
    """Every declared setting of cfg (or only those at or under `keys`, e.g. "world", "rm.lr") holds what its
    declaration allows; the first that does not stops with a one-line ConfigError. Settings absent from cfg or
    still ??? are skipped: missing ones are reported as such by config.validate."""
    for f in fields(schema):
        path = prefix + f.name
        if keys and not any(path == k or path.startswith(k + ".") or k.startswith(path + ".") for k in keys):
            continue
        if f.name not in cfg or OmegaConf.is_missing(cfg, f.name):
            continue
        value = cfg[f.name]
        if ("section" in f.metadata or "variants" in f.metadata) and not isinstance(value, DictConfig):
            raise ConfigError(f"{path}={value!r} is invalid; valid: a group of settings ({path}.*)")
        if "section" in f.metadata:
            check(value, *keys, schema=f.metadata["section"], prefix=path + ".")
        elif "variants" in f.metadata:
            options = f.metadata["variants"]
            name = value.get("name")
            if name not in options:
                raise ConfigError(f"{path}={name!r} is invalid; valid choices: {', '.join(options)}")
            check(value, *keys, schema=options[name], prefix=path + ".")
        elif "kind" in f.metadata:
            _check_value(value, path, f.metadata)


def _check_value(value, key: str, spec: dict) -> None:
    kind = spec["kind"]
    if kind == "choice":
        if not any(isinstance(value, bool) == isinstance(o, bool) and value == o for o in spec["options"]):
            raise ConfigError(f"{key}={value!r} is invalid; valid choices: {', '.join(map(_word, spec['options']))}")
    elif kind == "period":
        if value not in spec["words"]:
            as_period(value, key, spec["inf"])
    elif not (value is None and spec["null"] is not None or _in_range(value, spec)):
        raise ConfigError(f"{key}={value!r} is invalid; valid: {_valid(spec)}")


def _word(option) -> str:
    return str(option).lower() if isinstance(option, bool) else str(option)


def _in_range(value, spec: dict) -> bool:
    if isinstance(value, bool) or not isinstance(value, int if spec["kind"] == "int" else (int, float)):
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    low, high = spec["low"], spec["high"]
    if low is not None and (value <= low if spec.get("low_open") else value < low):
        return False
    return high is None or (value < high if spec.get("high_open") else value <= high)


def _valid(spec: dict) -> str:
    """The words of today's messages: `an integer >= 1`, `a positive number`, `a number in [0, 1)`."""
    what = "an integer" if spec["kind"] == "int" else "a number"
    low, high, low_open = spec["low"], spec["high"], spec.get("low_open")
    if low is not None and high is not None:
        valid = f"{what} in {'(' if low_open else '['}{low}, {high}{')' if spec.get('high_open') else ']'}"
    elif low is not None and low_open:
        valid = "a positive number" if spec["kind"] == "number" and low == 0 else f"{what} > {low}"
    elif low is not None:
        valid = f"{what} >= {low}"
    elif high is not None:
        valid = f"{what} <= {high}"
    else:
        valid = what
    if spec.get("why"):
        valid += f" ({spec['why']})"
    if spec["null"] is not None:
        valid += f", or null ({spec['null']})" if spec["null"] else " or null"
    return valid


def as_period(value, key: str, allow_inf: bool = True) -> float:
    """A sync_every-style setting as a number: a positive integer, or math.inf for inf (`inf`, `never`)."""
    if allow_inf and isinstance(value, str) and value.lower() in ("inf", "infinity", "never"):
        return math.inf
    if allow_inf and isinstance(value, float) and math.isinf(value) and value > 0:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value) or value <= 0:
        raise ConfigError(f"{key}={value!r} is invalid; valid: a positive integer" + (" or inf" if allow_inf else ""))
    return int(value)
