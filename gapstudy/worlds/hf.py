"""hf: a real transformers causal LM and real prompts through the same loop.

The policy, reference and tokenizer come from `world.model` (a hub name or a local directory written with
`save_pretrained`); the loop loads it with `AutoModelForCausalLM.from_pretrained`, exactly like the built worlds.
Prompts come from `world.prompts.path` through `datasets`: a hub dataset name (with `world.prompts.subset`, its
config name, e.g. `main` for openai/gsm8k), a local .jsonl / .json / .parquet / .csv file, a folder of such files,
or a folder written by `datasets.save_to_disk` (a Dataset or a DatasetDict, whose `split` is taken). The field
mapping names the columns: `field` holds the prompt (a string, or a list of chat messages [{role, content}] whose
trailing assistant turns are dropped), `answer_field` the reference answer of verifiable rewards, `task_field`
(optional) the prompt family of each row.

Prompts are rendered with the tokenizer's chat template (`apply_chat_template(add_generation_prompt=True)`, then
tokenised without added special tokens) when `world.chat_template` is auto and the tokenizer has one, or is true;
with false, the raw text is tokenised with the tokenizer's special tokens. Prompts longer than
`world.max_prompt_tokens` tokens are dropped (a warning gives the count). With no separate evaluation source, the
last `eval_size` prompts after a shuffle seeded by `world.build_seed` are held out; training prompts whose tokens
equal a held-out prompt's are dropped, so the two sets never share a prompt.

Gold rewards (`world.reward.kind`):
* `math_verify` / `gsm8k` (verifiable, 0/1): each prompt's token ids map back to its reference answer; the response
  tokens are decoded (special tokens skipped) and judged by `gapstudy.verifiers`.
* `model`: an `AutoModelForSequenceClassification` reward model loaded from `world.reward.model` scores the
  conversation [prompt, response] (rendered with the reward model tokenizer's chat template when it has one, else
  the prompt text as the policy saw it followed by the response); the reward is `logits[:, 0]`.
"""
from __future__ import annotations

import random
import warnings
from pathlib import Path

import torch

from gapstudy import schema
from gapstudy.config import check_name_or_path
from gapstudy.errors import ConfigError, RewardError, first_line
from gapstudy.verifiers import VERIFIERS
from gapstudy.worlds import World
from gapstudy.worlds.records import dataset_cache_dir, load_records

REWARD_KINDS = (*VERIFIERS, "model")


def _check_fields(data, path, fields: dict[str, str | None], key: str = "world.prompts.path") -> None:
    if len(data) == 0:
        raise ConfigError(f"{key}={str(path)!r} is empty")
    for key, name in fields.items():
        if name is not None and name not in data.column_names:
            raise ConfigError(f"world.prompts.{key}={name!r} is not a column of {path}; available columns: "
                         f"{', '.join(data.column_names)}")


def _messages(value, system_prompt) -> list[dict] | None:
    """The chat messages of a prompt value (a string is one user turn); None for a string with no template."""
    if isinstance(value, str):
        messages = [{"role": "user", "content": value}]
    elif isinstance(value, (list, tuple)) and all(isinstance(m, dict) and "role" in m and "content" in m
                                                  for m in value) and value:
        messages = [{"role": str(m["role"]), "content": m["content"]} for m in value]
        while messages and messages[-1]["role"] == "assistant":  # the prompt ends before the answer
            messages.pop()
        if not messages:
            raise ConfigError("world.prompts.field: a prompt holds only assistant messages")
    else:
        raise ConfigError(f"world.prompts.field: a prompt is a {type(value).__name__}; valid: a string or a list of chat "
                     "messages [{role, content}]")
    if system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": str(system_prompt)}, *messages]
    return messages


class PromptEncoder:
    """prompt value -> (token ids, the prompt text as the policy sees it, chat messages)."""

    def __init__(self, tokenizer, use_template: bool, system_prompt):
        self.tokenizer = tokenizer
        self.use_template = use_template
        self.system_prompt = system_prompt

    def __call__(self, value) -> tuple[list[int], str, list[dict]]:
        messages = _messages(value, self.system_prompt)
        if self.use_template:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            if not isinstance(value, str):
                raise ConfigError("a prompt holds chat messages, which need a chat template; valid: "
                             "world.chat_template=auto|true with a tokenizer that has one")
            text = f"{self.system_prompt}\n\n{value}" if self.system_prompt else value
            ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        return list(ids), text, messages

    def ids(self, value) -> list[int]:
        """Only the token ids: the World's `encode_prompt` (preference datasets, train-rm)."""
        return self(value)[0]


# ---------------------------------------------------------------- gold rewards
def _rows(prompts, prompt_mask) -> list[tuple[int, ...]]:
    """Each left-padded prompt row as a tuple of its real token ids."""
    prompts = prompts.cpu()
    if prompt_mask is None:
        return [tuple(row) for row in prompts.tolist()]
    mask = prompt_mask.cpu().bool()
    return [tuple(prompts[i][mask[i]].tolist()) for i in range(prompts.shape[0])]


def _decode_responses(tokenizer, responses, response_mask) -> list[str]:
    responses, response_mask = responses.cpu(), response_mask.cpu().bool()
    ids = [responses[i][response_mask[i]].tolist() for i in range(responses.shape[0])]
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


class VerifierReward:
    """The labeller signature over a text verifier: prompt ids -> reference answer, decoded response -> 0/1."""

    def __init__(self, tokenizer, answers: dict[tuple, str], kind: str):
        self.tokenizer = tokenizer
        self.answers = answers
        self.kind = kind
        self.verify = VERIFIERS[kind]

    def __call__(self, prompts, prompt_mask, responses, response_mask, tasks=None) -> torch.Tensor:
        keys = _rows(prompts, prompt_mask)
        texts = _decode_responses(self.tokenizer, responses, response_mask)
        out = []
        for key, text in zip(keys, texts):
            answer = self.answers.get(key)
            if answer is None:

                raise RewardError(f"world hf ({self.kind}): a prompt that is not in world.prompts has no reference "
                                  f"answer: {self.tokenizer.decode(list(key))[:80]!r}")
            out.append(self.verify(text, answer))
        return torch.tensor(out, dtype=torch.float32, device=responses.device)


class RewardModelReward:
    """The labeller signature over a sequence-classification reward model: logits[:, 0] of [prompt, response]."""

    def __init__(self, path: str, policy_tokenizer, prompts: dict[tuple, tuple[str, list[dict]]], batch_size: int):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        except Exception as e:
            raise ConfigError(f"world.reward.model={path!r} could not be loaded as a sequence-classification model: "
                         f"{first_line(e)}") from None
        for p in self.model.parameters():
            p.requires_grad_(False)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except Exception:  # a reward model saved without its tokenizer shares the policy's vocabulary
            import copy

            tokenizer = copy.deepcopy(policy_tokenizer)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        tokenizer.truncation_side = "left"  # keep the response when a conversation is too long
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = tokenizer.pad_token_id
        self.tokenizer = tokenizer
        self.policy_tokenizer = policy_tokenizer
        self.prompts = prompts
        self.batch_size = int(batch_size)
        self.use_template = bool(getattr(tokenizer, "chat_template", None))
        limit = next((getattr(self.model.config, k) for k in ("n_positions", "max_position_embeddings")
                      if getattr(self.model.config, k, None)), None)
        self.max_length = limit or (tokenizer.model_max_length if tokenizer.model_max_length < 1e6 else None)

    def texts(self, prompts, prompt_mask, responses, response_mask) -> list[str]:
        out = []
        for key, response in zip(_rows(prompts, prompt_mask), _decode_responses(self.policy_tokenizer, responses,
                                                                                 response_mask)):
            if key in self.prompts:
                prompt_text, messages = self.prompts[key]
            else:  # not one of world.prompts (e.g. a fixed dataset's prompt): its decoded text as one user turn
                prompt_text = self.policy_tokenizer.decode(list(key), skip_special_tokens=True)
                messages = [{"role": "user", "content": prompt_text}]
            if self.use_template:
                out.append(self.tokenizer.apply_chat_template(
                    [*messages, {"role": "assistant", "content": response}], tokenize=False))
            else:
                out.append(prompt_text + response)
        return out

    @torch.no_grad()
    def __call__(self, prompts, prompt_mask, responses, response_mask, tasks=None) -> torch.Tensor:
        device = responses.device
        if next(self.model.parameters()).device != device:
            self.model.to(device)
        texts = self.texts(prompts, prompt_mask, responses, response_mask)
        scores = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[start : start + self.batch_size], return_tensors="pt", padding=True,
                                 truncation=self.max_length is not None, max_length=self.max_length,
                                 add_special_tokens=not self.use_template)
            enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            scores.append(self.model(**enc).logits[:, 0].float())
        return torch.cat(scores) if scores else torch.zeros(0, device=device)


# ---------------------------------------------------------------- config
def check_chat_template(value) -> None:
    if not (value == "auto" or isinstance(value, bool)):
        raise ConfigError(f"world.chat_template={value!r} is invalid; valid choices: auto, true, false")


def validate(cfg) -> None:
    """Cheap checks of world.* (nothing is loaded here)."""
    schema.check(cfg, "world")  # the declared types, ranges and choices (gapstudy/schema.py)
    w = cfg.world
    kind = w.reward.kind
    if kind not in REWARD_KINDS:
        raise ConfigError(f"world.reward.kind={kind!r} is invalid; valid choices: {', '.join(REWARD_KINDS)}")
    if kind == "model" and not w.reward.model:
        raise ConfigError("world.reward.kind=model needs world.reward.model (a reward model's hub name or directory)")
    if kind in VERIFIERS and not w.prompts.answer_field:
        raise ConfigError(f"world.reward.kind={kind} needs world.prompts.answer_field (the column of reference answers)")
    if not w.prompts.field:
        raise ConfigError("world.prompts.field is empty; valid: the name of the prompt column")
    for key, value in (("world.model", w.model), ("world.prompts.path", w.prompts.path),
                       ("world.prompts.eval_path", w.prompts.eval_path), ("world.reward.model", w.reward.model)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{key}={value!r} is invalid; valid: a hub name or a local path")
        if value is not None:
            check_name_or_path(key, value)


# ---------------------------------------------------------------- build
def _load_tokenizer(model: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
    except Exception as e:
        raise ConfigError(f"world.model={model!r} could not be loaded (not a local model directory, and not on the hub "
                     f"or in the local hub cache): {first_line(e)}") from None
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ConfigError(f"world.model={model!r}: its tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _context_length(model: str) -> int | None:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model)
    except Exception:
        return None
    config = getattr(config, "text_config", None) or config
    return next((getattr(config, k) for k in ("max_position_embeddings", "n_positions", "n_ctx")
                 if isinstance(getattr(config, k, None), int)), None)


def prompt_encoder(w) -> tuple[object, PromptEncoder]:
    """The tokenizer of `world.model` and the encoder that renders prompts as the policy sees them (the chat
    template per world.chat_template, world.system_prompt); shared by `build` and `gapstudy train-rm`."""
    model = str(w.model)
    tokenizer = _load_tokenizer(model)
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if w.chat_template is True and not has_template:
        raise ConfigError(f"world.chat_template=true but the tokenizer of {model} has no chat_template; valid: auto, false")
    return tokenizer, PromptEncoder(tokenizer, has_template if w.chat_template == "auto" else bool(w.chat_template),
                                    w.system_prompt)


def build(cfg, cache_root: Path) -> World:
    w = cfg.world
    validate(cfg)
    p = w.prompts
    kind = w.reward.kind
    model = str(w.model)
    tokenizer, encode = prompt_encoder(w)

    cache_dir = dataset_cache_dir(cache_root)
    fields = {"field": p.field, "answer_field": p.answer_field if kind in VERIFIERS else None,
              "task_field": p.task_field}
    data = load_records(p.path, p.split, p.get("subset"), cache_dir, key="world.prompts.path")
    _check_fields(data, p.path, fields)
    order = list(range(len(data)))
    random.Random(int(w.build_seed)).shuffle(order)
    eval_path = p.eval_path or p.path
    eval_split = p.eval_split or p.split
    eval_size = int(p.eval_size)
    if (str(eval_path), eval_split) != (str(p.path), p.split):  # a separate evaluation source
        eval_data = load_records(eval_path, eval_split, p.get("subset"), cache_dir, key="world.prompts.eval_path")
        _check_fields(eval_data, eval_path, fields, "world.prompts.eval_path" if p.eval_path else "world.prompts.path")
        eval_order = list(range(len(eval_data)))
        random.Random(int(w.build_seed)).shuffle(eval_order)
        eval_sets = [(eval_data, eval_order[:eval_size])]
        train_order = order
    else:
        if len(order) <= eval_size:
            raise ConfigError(f"world.prompts.eval_size={eval_size} leaves no training prompts: {p.path} has "
                         f"{len(order)}; lower eval_size or give world.prompts.eval_path / eval_split")
        eval_sets = [(data, order[-eval_size:])]
        train_order = order[:-eval_size]
    if p.limit is not None:
        train_order = train_order[: int(p.limit)]

    max_prompt = int(w.max_prompt_tokens)
    answers: dict[tuple, str] = {}
    texts: dict[tuple, tuple[str, list[dict]]] = {}
    dropped = {"long": 0, "conflict": 0, "overlap": 0}

    def encode_rows(dataset, index, exclude=frozenset()):
        ids_out, tasks_out = [], []
        if not index:
            return ids_out, tasks_out
        rows = dataset.select(index)
        columns = {name: rows[name] for name in {p.field, fields["answer_field"], p.task_field} - {None}}
        for j in range(len(index)):
            ids, text, messages = encode(columns[p.field][j])
            if len(ids) > max_prompt:
                dropped["long"] += 1
                continue
            key = tuple(ids)
            if key in exclude:
                dropped["overlap"] += 1
                continue
            if fields["answer_field"] is not None:
                answer = str(columns[fields["answer_field"]][j])
                if answers.setdefault(key, answer) != answer:
                    dropped["conflict"] += 1
            texts.setdefault(key, (text, messages))
            ids_out.append(list(ids))
            tasks_out.append(str(columns[p.task_field][j]) if p.task_field else str(p.task))
        return ids_out, tasks_out

    eval_prompts, eval_tasks = encode_rows(*eval_sets[0])
    train_prompts, train_tasks = encode_rows(data, train_order, frozenset(map(tuple, eval_prompts)))
    if dropped["long"]:
        warnings.warn(f"world hf: dropped {dropped['long']} prompt(s) longer than world.max_prompt_tokens="
                      f"{max_prompt} tokens", stacklevel=2)
    if dropped["overlap"]:
        warnings.warn(f"world hf: dropped {dropped['overlap']} training prompt(s) identical to a held-out prompt",
                      stacklevel=2)
    if dropped["conflict"]:
        warnings.warn(f"world hf: {dropped['conflict']} repeated prompt(s) carry a different answer; the first "
                      "answer is used", stacklevel=2)
    if not train_prompts:
        raise ConfigError(f"world hf: no training prompts left in {p.path} (all longer than world.max_prompt_tokens="
                     f"{max_prompt}, or held out)")
    if not eval_prompts:
        raise ConfigError(f"world hf: no held-out prompts left in {eval_path} (all longer than world.max_prompt_tokens="
                     f"{max_prompt})")
    context = _context_length(model)
    longest = max(len(x) for x in train_prompts + eval_prompts)
    if context is not None and longest + int(w.max_new_tokens) > context:
        raise ConfigError(f"world.max_prompt_tokens={max_prompt} + world.max_new_tokens={w.max_new_tokens}: a prompt of "
                     f"{longest} tokens plus a response exceeds the {context} positions of {model}; lower them")

    if kind in VERIFIERS:
        gold = VerifierReward(tokenizer, answers, kind)
    else:
        gold = RewardModelReward(str(w.reward.model), tokenizer, texts, int(w.reward.batch_size))
    tasks = tuple(sorted(set(train_tasks) | set(eval_tasks)))
    return World(
        name="hf",
        policy_path=model,
        tokenizer=tokenizer,
        train_prompts=train_prompts,
        train_tasks=train_tasks,
        eval_prompts=eval_prompts,
        eval_tasks=eval_tasks,
        max_new_tokens=int(w.max_new_tokens),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        gold=gold,
        binary_tasks=frozenset(tasks) if kind in VERIFIERS else frozenset(),
        tasks=tasks,
        encode_prompt=encode.ids,
    )
