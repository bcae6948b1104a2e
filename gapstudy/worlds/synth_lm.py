"""synth_lm: a tiny GPT pretrained in-process by SFT on two prompt families, one verifiable and one judged by a gold
reward model -- the CPU stand-in for Lanchantin et al.'s NuminaMath + WildChat mix and Tang et al.'s gold-PM setup.

*math* (verifiable; gold = a 0/1 verifier). Prompt `<bos> math 3 7 + 4 5 =`: two operands of 1..math_max_digits
digits, one token per digit. Response `[scratchpad] answer <eos>`. The optional scratchpad writes the column sums
from the ones column up, each with the incoming carry and closed by `;` (37 + 45 -> `1 2 ; 8 ; 8 2 <eos>`); a
direct answer is just `8 2 <eos>`. The SFT corpus shows the scratchpad on half of its answers, and only part of its
answers are right: worked answers more often (math_correct_scratchpad) than direct ones (math_correct_direct). The
wrong ones hold realistic mistakes made inside the column computation, so a scratchpad stays consistent with its
answer: a dropped carry (the carry is never added to the next column) or an off-by-one column sum. Hence the SFT
policy is only partly right at temperature 1, the right answer is in its support, and response length (2 to 10
tokens) is free to change under training: dropping the scratchpad shortens responses and costs accuracy, which makes
Lanchantin et al.'s collapse to short outputs observable. Gold = 1 iff the response ends with <eos> and the digits
after its last `;` (the whole response if there is none) are exactly the sum.

*chat* (non-verifiable; gold = a fixed reward model, continuous in [0, 1]). Prompt `<bos> chat rain cold fog <sep>`:
2..4 distinct words of one of 8 topics (12 words each). Response: words, then <eos>. The SFT corpus responses are
short (chat_length_mean words) and partly off-topic (a per-response on-topic fraction ~ U(0.1, 0.9); the rest are
filler words or words of another topic), and some repeat a word. Gold, with n the number of response words (tokens
before <eos>, every token counts):
    gold = relevance^chat_relevance_power * length_score * distinct^chat_repeat_power
    relevance    = fraction of the n words in the word set of the prompt's topic(s)
    length_score = n / T for n <= T (T = chat_target_length, above the SFT length), then falling linearly to 0 over
                   chat_overlength_width more words
    distinct     = (number of distinct words) / n: repetition is penalised
The best responses (about T distinct on-topic words) are very unlikely under the SFT policy, so on-policy training
has something to find. A proxy RM trained on pairs of SFT samples sees few long or repetitive responses and tends to
learn "more on-topic words is better"; optimising it past the target length or into repeating topic words lowers the
gold reward (Gao et al.'s over-optimisation).

Both families share one SFT model; `world.task` only picks which families the training prompts come from.
Held-out prompts are disjoint from training prompts and from the SFT corpus, and always cover both families
(interleaved math, chat, math, ... so that any prefix of them is balanced).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from gapstudy.cache import RESUME, cached_artifact
from gapstudy.model import TinyGPTConfig, TinyGPTForCausalLM, param_count
from gapstudy.worlds import World, pretrain, word_level_tokenizer

TASKS = ("math", "chat")
TASK_CHOICES = ("mixed", "math", "chat")  # world.task: the families of the training prompts

TOPICS = {
    "food": "bread cheese soup apple rice salt sugar cake tea milk egg fish",
    "sport": "ball goal team run swim race coach match kick jump win bike",
    "weather": "rain snow wind sun cloud storm cold warm fog ice heat sky",
    "music": "song drum piano guitar band tune voice choir note beat dance radio",
    "travel": "train plane road map hotel ticket bag trip city beach bus port",
    "animals": "cat dog bird horse cow mouse lion bear frog duck wolf sheep",
    "tech": "code phone screen chip data laptop robot wifi cable disk app web",
    "garden": "tree flower seed leaf grass rose soil pot fence bee root weed",
}
TOPIC_WORDS = [words.split() for words in TOPICS.values()]  # [topic][12]
FILLER = "the a and is it i so very like good nice ok think really".split()
DIGITS = [str(d) for d in range(10)]
WORDS = DIGITS + ["+", "=", ";", "math", "chat"] + FILLER + [w for ws in TOPIC_WORDS for w in ws]
SPECIALS = ["<pad>", "<eos>", "<bos>", "<sep>"]

# settings that do not change the built artifact (they are applied when the world is loaded)
NOT_IN_SPEC = ("name", "task")
REWARD_KEYS = ("chat_target_length", "chat_overlength_width", "chat_relevance_power", "chat_repeat_power")


# ---------------------------------------------------------------- math: column addition with realistic mistakes
def column_sums(a: int, b: int, mistake: str | None = None, column: int = 0, delta: int = 1) -> tuple[list[int], int]:
    """Column sums from the ones column up (carry included) and the resulting answer.

    mistake=None is exact; "dropped_carry" never adds the carry to the next column; "off_by_one" adds `delta` to
    the sum of `column` and carries on correctly from there.
    """
    da, db = str(a)[::-1], str(b)[::-1]
    sums, digits, carry = [], [], 0
    for i in range(max(len(da), len(db))):
        s = (int(da[i]) if i < len(da) else 0) + (int(db[i]) if i < len(db) else 0)
        if mistake != "dropped_carry":
            s += carry
        if mistake == "off_by_one" and i == column:
            s = s + delta if s + delta >= 0 else s + 1  # a zero sum can only go up
        sums.append(s)
        digits.append(s % 10)
        carry = s // 10
    last = sums[-1]
    answer = int(str(last) + "".join(str(d) for d in reversed(digits[:-1])))
    return sums, answer


def math_response(a: int, b: int, scratchpad: bool, correct: bool, rng: np.random.Generator) -> list[str]:
    mistake, column, delta = None, 0, 1
    if not correct:
        has_carry = column_sums(a, b)[0] != column_sums(a, b, "dropped_carry")[0]
        mistake = "dropped_carry" if has_carry and rng.random() < 0.5 else "off_by_one"
        column = int(rng.integers(0, max(len(str(a)), len(str(b)))))
        delta = int(rng.choice([-1, 1]))
    sums, answer = column_sums(a, b, mistake, column, delta)
    words = []
    if scratchpad:
        for s in sums:
            words += list(str(s)) + [";"]
    return words + list(str(answer)) + ["<eos>"]


def math_prompt(a: int, b: int) -> list[str]:
    return ["<bos>", "math", *str(a), "+", *str(b), "="]


def _operand(rng: np.random.Generator, max_digits: int) -> int:
    digits = int(rng.integers(1, max_digits + 1))
    return int(rng.integers(0 if digits == 1 else 10 ** (digits - 1), 10**digits))


# ---------------------------------------------------------------- chat: topic words, short and partly off-topic
def chat_prompt(topic: int, words: tuple[str, ...]) -> list[str]:
    return ["<bos>", "chat", *words, "<sep>"]


def _chat_prompt_words(rng: np.random.Generator, w) -> tuple[int, tuple[str, ...]]:
    topic = int(rng.integers(len(TOPIC_WORDS)))
    k = int(rng.integers(int(w.chat_prompt_min_words), int(w.chat_prompt_max_words) + 1))
    return topic, tuple(rng.choice(TOPIC_WORDS[topic], size=k, replace=False).tolist())


def chat_response(topic: int, rng: np.random.Generator, w) -> list[str]:
    n = int(np.clip(1 + rng.poisson(float(w.chat_length_mean) - 1), 1, int(w.chat_max_words)))
    on_fraction = rng.uniform(0.1, 0.9)
    others = [t for t in range(len(TOPIC_WORDS)) if t != topic]
    words: list[str] = []
    while len(words) < n:
        if rng.random() < on_fraction:
            word = str(rng.choice(TOPIC_WORDS[topic]))
        elif rng.random() < 0.6:
            word = str(rng.choice(FILLER))
        else:
            word = str(rng.choice(TOPIC_WORDS[int(rng.choice(others))]))
        if word not in words:
            words.append(word)
    if n >= 2 and rng.random() < float(w.chat_repeat_prob):  # one word said twice
        i, j = rng.choice(n, size=2, replace=False)
        words[int(i)] = words[int(j)]
    return words + ["<eos>"]


# ---------------------------------------------------------------- prompts and the SFT corpus
def make_prompts(w, rng: np.random.Generator) -> dict:
    """Distinct train and held-out prompts of both families (as word lists); held-out ones are drawn first."""
    n_eval = int(w.eval_prompts)
    n_eval_math, n_eval_chat = (n_eval + 1) // 2, n_eval // 2
    n_train = int(w.train_prompts)
    max_digits = int(w.math_max_digits)
    n_problems = sum(10**d - (10 ** (d - 1) if d > 1 else 0) for d in range(1, max_digits + 1)) ** 2
    if n_eval_math + n_train > n_problems:
        raise ValueError(f"world.train_prompts + eval_prompts/2 = {n_eval_math + n_train} exceed the "
                         f"{n_problems} distinct math problems of math_max_digits={max_digits}")

    def distinct(draw, count: int, seen: set) -> list:
        out = []
        while len(out) < count:
            item = draw()
            if item not in seen:
                seen.add(item)
                out.append(item)
        return out

    seen_math: set = set()
    seen_chat: set = set()
    math_draw = lambda: (_operand(rng, max_digits), _operand(rng, max_digits))
    chat_draw = lambda: _chat_prompt_words(rng, w)
    eval_math = distinct(math_draw, n_eval_math, seen_math)
    eval_chat = distinct(chat_draw, n_eval_chat, seen_chat)
    train_math = distinct(math_draw, n_train, seen_math)
    train_chat = distinct(chat_draw, n_train, seen_chat)
    eval_rows = []
    for i in range(max(n_eval_math, n_eval_chat)):  # interleaved: any prefix covers both families
        if i < n_eval_math:
            eval_rows.append(("math", math_prompt(*eval_math[i])))
        if i < n_eval_chat:
            eval_rows.append(("chat", chat_prompt(*eval_chat[i])))
    return {
        "eval": eval_rows,
        "train": {"math": [math_prompt(a, b) for a, b in train_math], "chat": [chat_prompt(*p) for p in train_chat]},
        "eval_keys": {"math": set(eval_math), "chat": set(eval_chat)},
    }


def make_corpus(w, rng: np.random.Generator, eval_keys: dict) -> list[tuple[list[str], list[str]]]:
    """(prompt, response) word lists; prompts are drawn afresh (never a held-out one), so the corpus also covers
    problems outside the RL training prompts."""
    corpus = []
    max_digits = int(w.math_max_digits)
    for _ in range(int(w.corpus_size)):
        if rng.random() < float(w.corpus_math_fraction):
            while (a_b := (_operand(rng, max_digits), _operand(rng, max_digits))) in eval_keys["math"]:
                pass
            scratchpad = rng.random() < float(w.math_scratchpad_prob)
            p_correct = float(w.math_correct_scratchpad if scratchpad else w.math_correct_direct)
            corpus.append((math_prompt(*a_b), math_response(*a_b, scratchpad, rng.random() < p_correct, rng)))
        else:
            while (key := _chat_prompt_words(rng, w)) in eval_keys["chat"]:
                pass
            corpus.append((chat_prompt(*key), chat_response(key[0], rng, w)))
    return corpus


def _lengths(w) -> tuple[int, int]:
    """(longest prompt, longest SFT response) in tokens."""
    d = int(w.math_max_digits)
    prompt = max(2 * d + 4, int(w.chat_prompt_max_words) + 3)
    response = max(4 * d + 2, int(w.chat_max_words) + 1)  # d columns of <= 3 tokens, d + 1 answer digits, <eos>
    return prompt, response


def _build(w, directory: Path, progress: bool = False) -> None:
    """The tokenizer, prompts and SFT policy into `directory`. The SFT run checkpoints itself under
    directory/RESUME, so a build killed part-way resumes on the next attempt (bit-identical to an uninterrupted
    one); `progress` shows it as a bar on stderr."""
    start = time.perf_counter()
    rng = np.random.default_rng(int(w.build_seed))
    tokenizer = word_level_tokenizer(WORDS, SPECIALS, directory)
    vocab = tokenizer.get_vocab()
    ids = lambda words: [vocab[x] for x in words]
    prompts = make_prompts(w, rng)
    corpus = make_corpus(w, rng, prompts["eval_keys"])
    (directory / "prompts.json").write_text(json.dumps({
        "train": {task: [ids(p) for p in ps] for task, ps in prompts["train"].items()},
        "eval": [{"task": task, "prompt": ids(p)} for task, p in prompts["eval"]],
    }))

    longest_prompt, longest_response = _lengths(w)
    T = longest_prompt + longest_response
    data = torch.full((len(corpus), T), tokenizer.pad_token_id, dtype=torch.long)  # [N, T] right-padded
    target_mask = torch.zeros(len(corpus), T - 1)  # [N, T-1] 1 where the next token is a response token
    lengths = torch.zeros(len(corpus), dtype=torch.long)
    for i, (p, r) in enumerate(corpus):
        row = ids(p) + ids(r)
        data[i, : len(row)] = torch.tensor(row)
        target_mask[i, len(p) - 1 : len(row) - 1] = 1
        lengths[i] = len(row)

    config = TinyGPTConfig(
        vocab_size=len(tokenizer), n_positions=longest_prompt + int(w.max_new_tokens), n_embd=int(w.n_embd),
        n_layer=int(w.n_layer), n_head=int(w.n_head), pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(int(w.build_seed))
    model = TinyGPTForCausalLM(config)
    gen = torch.Generator().manual_seed(int(w.build_seed))
    batch = int(w.pretrain_batch_size)

    def batches(i):
        rows = torch.randint(len(corpus), (batch,), generator=gen)
        width = int(lengths[rows].max())  # right padding sits after every real token: causal attention needs no mask
        x = data[rows, :width]
        return x, None, x[:, 1:], target_mask[rows, : width - 1]

    losses = pretrain(model, batches, int(w.pretrain_steps), float(w.pretrain_lr), int(w.build_seed),
                      generators=(gen,), checkpoint=directory / RESUME / "pretrain.pt", progress=progress,
                      desc="building world synth_lm")
    model.save_pretrained(directory)
    (directory / "build_info.json").write_text(json.dumps({
        "build_seconds": round(time.perf_counter() - start, 1), "parameters": param_count(model),
        "corpus_size": len(corpus), "final_loss": float(np.mean(losses[-20:])), "loss_every_50": losses[::50],
    }, indent=1))


# ---------------------------------------------------------------- the gold reward
class GoldReward:
    """The labeller signature; per row: the math verifier or the chat reward model, by task."""

    def __init__(self, tokenizer, w):
        vocab = tokenizer.get_vocab()
        self.eos = tokenizer.eos_token_id
        self.plus, self.equals, self.semicolon, self.math = vocab["+"], vocab["="], vocab[";"], vocab["math"]
        self.digit_of = {vocab[d]: d for d in DIGITS}  # token id -> digit character
        self.token_of = {d: vocab[d] for d in DIGITS}
        self.topic_of = torch.full((len(tokenizer),), -1, dtype=torch.long)  # [V] topic index, -1 for non-topic
        for t, words in enumerate(TOPIC_WORDS):
            self.topic_of[[vocab[x] for x in words]] = t
        self.n_topics = len(TOPIC_WORDS)
        self.target = float(w.chat_target_length)
        self.overlength_width = float(w.chat_overlength_width)
        self.relevance_power = float(w.chat_relevance_power)
        self.repeat_power = float(w.chat_repeat_power)
        self._answers: dict[tuple, list[int] | None] = {}

    def __call__(self, prompts, prompt_mask, responses, response_mask, tasks) -> torch.Tensor:
        out = torch.zeros(len(tasks))
        prompts, responses, response_mask = prompts.cpu(), responses.cpu(), response_mask.cpu().bool()
        prompt_mask = None if prompt_mask is None else prompt_mask.cpu()
        math_rows = [i for i, t in enumerate(tasks) if t == "math"]
        chat_rows = [i for i, t in enumerate(tasks) if t == "chat"]
        if len(math_rows) + len(chat_rows) != len(tasks):
            bad = next(t for t in tasks if t not in TASKS)
            raise ValueError(f"synth_lm gold reward: unknown task {bad!r}; valid: {', '.join(TASKS)}")
        if math_rows:
            out[math_rows] = self.math_reward(prompts[math_rows], responses[math_rows], response_mask[math_rows])
        if chat_rows:
            pm = None if prompt_mask is None else prompt_mask[chat_rows]
            out[chat_rows] = self.chat_reward(prompts[chat_rows], pm, responses[chat_rows], response_mask[chat_rows])
        return out.to(responses.device)

    def _answer(self, prompt: tuple) -> list[int] | None:
        """Digit tokens of the right sum, or None if the prompt is not `... math A + B =`."""
        if prompt not in self._answers:
            answer = None
            try:
                m, p, e = prompt.index(self.math), prompt.index(self.plus), prompt.index(self.equals)
                a = "".join(self.digit_of[t] for t in prompt[m + 1 : p])
                b = "".join(self.digit_of[t] for t in prompt[p + 1 : e])
                answer = [self.token_of[d] for d in str(int(a) + int(b))]
            except (ValueError, KeyError):
                pass
            self._answers[prompt] = answer
        return self._answers[prompt]

    def math_reward(self, prompts, responses, response_mask) -> torch.Tensor:
        """1.0 iff the response ends with <eos> and the tokens after its last ';' are exactly the sum's digits."""
        rewards = []
        lengths = response_mask.sum(1).tolist()
        for prompt, response, n in zip(prompts.tolist(), responses.tolist(), lengths):
            response = response[:n]
            right = self._answer(tuple(prompt))
            ok = bool(response) and response[-1] == self.eos and right is not None
            if ok:
                body = response[:-1]
                cut = len(body) - body[::-1].index(self.semicolon) if self.semicolon in body else 0
                ok = body[cut:] == right
            rewards.append(float(ok))
        return torch.tensor(rewards)

    def chat_reward(self, prompts, prompt_mask, responses, response_mask) -> torch.Tensor:
        """relevance^p * length_score * distinct^q, vectorised over rows."""
        N = responses.shape[0]
        prompt_topics = self.topic_of[prompts]  # [N, P]
        if prompt_mask is not None:
            prompt_topics = prompt_topics.masked_fill(prompt_mask == 0, -1)
        on_topic_set = torch.zeros(N, self.n_topics + 1, dtype=torch.bool)  # last column collects non-topic (-1)
        on_topic_set.scatter_(1, prompt_topics % (self.n_topics + 1), True)
        on_topic_set[:, -1] = False
        words = response_mask & (responses != self.eos)  # [N, L] every token before <eos> is a word
        n = words.sum(1).float()
        word_topics = self.topic_of[responses] % (self.n_topics + 1)  # [N, L]
        on = (on_topic_set.gather(1, word_topics) & words).sum(1).float()
        ranked = torch.sort(torch.where(words, responses, -1), dim=1).values
        first = (ranked >= 0) & torch.cat([torch.ones(N, 1, dtype=torch.bool), ranked[:, 1:] != ranked[:, :-1]], 1)
        distinct = first.sum(1).float()
        safe = n.clamp(min=1)
        relevance = on / safe
        length_score = torch.where(n <= self.target, n / self.target,
                                   (1 - (n - self.target) / self.overlength_width).clamp(min=0))
        gold = relevance**self.relevance_power * length_score * (distinct / safe) ** self.repeat_power
        return torch.where(n > 0, gold, torch.zeros_like(gold))


def validate(cfg) -> None:
    from gapstudy.errors import ConfigError

    w = cfg.world
    if w.task not in TASK_CHOICES:
        raise ConfigError(f"world.task={w.task!r} is invalid; valid choices: {', '.join(TASK_CHOICES)}")
    longest_response = _lengths(w)[1]
    if longest_response > int(w.max_new_tokens):
        raise ConfigError(f"world.max_new_tokens={w.max_new_tokens} is shorter than the longest SFT response "
                          f"({longest_response} tokens); raise it or lower math_max_digits / chat_max_words")


def build(cfg, cache_root: Path) -> World:
    w = cfg.world
    validate(cfg)
    spec = {k: w[k] for k in w if k not in NOT_IN_SPEC and k not in REWARD_KEYS}
    path = cached_artifact(cache_root, "synth_lm", spec, lambda d: _build(w, d, bool(cfg.get("progress", False))))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    prompts = json.loads((path / "prompts.json").read_text())
    families = TASKS if w.task == "mixed" else (w.task,)
    train_prompts, train_tasks = [], []
    for i in range(int(w.train_prompts)):  # interleaved, like the held-out prompts
        for task in families:
            train_prompts.append(prompts["train"][task][i])
            train_tasks.append(task)
    return World(
        name="synth_lm",
        policy_path=path,
        tokenizer=tokenizer,
        train_prompts=train_prompts,
        train_tasks=train_tasks,
        eval_prompts=[row["prompt"] for row in prompts["eval"]],
        eval_tasks=[row["task"] for row in prompts["eval"]],
        max_new_tokens=int(w.max_new_tokens),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        gold=GoldReward(tokenizer, w),
        binary_tasks=frozenset({"math"}),
        tasks=TASKS,
    )
