"""labeller=judge: a pairwise LLM judge labels the training samples (online AI feedback, Guo et al. 2024).

The judge is a causal LM (`judge.model`: a hub name or a local `save_pretrained` directory). For a prompt x and
two of its sampled responses it reads `judge.template` with {prompt}, {response_a} and {response_b} filled in (the
texts decoded with the world's tokenizer: the prompt without its left padding, each response under its mask,
special tokens skipped). The default template (configs/config.yaml, `TEMPLATE` here):

    Which of the two responses below answers the user's prompt better? Judge helpfulness, correctness and
    clarity; ignore which response comes first and how long it is.

    [Prompt]
    {prompt}

    [Response A]
    {response_a}

    [Response B]
    {response_b}

    Which response is better? Answer with a single letter: A or B.

The filled template is one user message rendered with the judge tokenizer's chat template (with the generation
prompt) when it has one, else the raw text with the tokenizer's special tokens; a text longer than the judge's
context loses its start (the question at its end is kept). One forward pass, no sampling: the verdict is A when the
next-token logit of the first token of `judge.tokens[0]` ("A") is above that of `judge.tokens[1]` ("B"), B when
below, none when equal. A judge whose answer follows a space (a raw text template ending in "Answer:") wants
`judge.tokens=[' A',' B']`.

Position-swapped double judging: every pair (y_i, y_j) is judged twice, as (A=y_i, B=y_j) and as (A=y_j, B=y_i).
y_i wins only if both orders prefer it; inconsistent verdicts (a judge that follows the position, not the
content) are ties. The reward of each of a prompt's n samples is

    score_i = (wins_i + 0.5 * ties_i) / (n - 1)      over the n - 1 other samples of the same prompt,

so with n = 2 a consistent verdict gives 1 / 0 and a tie 0.5 / 0.5, which the pair builder skips (no
preference); with n = 1 every score is 0.5. A prompt's n samples cost n (n - 1) judge passes, in batches of
`judge.batch_size`. The judge labels training samples only: the gold reward still judges evaluation.
"""
from __future__ import annotations

import copy
import inspect
import re

import torch
from omegaconf import OmegaConf

from gapstudy.config import check_name_or_path
from gapstudy.errors import ConfigError, first_line

TEMPLATE = (
    "Which of the two responses below answers the user's prompt better? Judge helpfulness, correctness and "
    "clarity; ignore which response comes first and how long it is.\n\n"
    "[Prompt]\n{prompt}\n\n"
    "[Response A]\n{response_a}\n\n"
    "[Response B]\n{response_b}\n\n"
    "Which response is better? Answer with a single letter: A or B."
)
PLACEHOLDERS = ("prompt", "response_a", "response_b")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


def check_template(template) -> None:
    if not isinstance(template, str) or not template.strip():
        raise ConfigError(f"judge.template={template!r} is invalid; valid: a string with {{prompt}}, {{response_a}} and "
                     "{response_b}")
    missing = [f"{{{p}}}" for p in PLACEHOLDERS if f"{{{p}}}" not in template]
    if missing:
        raise ConfigError(f"judge.template lacks {', '.join(missing)}; valid: a string with {{prompt}}, {{response_a}} "
                     "and {response_b}")


def check(cfg) -> None:
    """labeller=judge's settings: judge.model names a causal LM, a usable template, two verdict strings."""
    j = cfg.judge
    if not j.model or not isinstance(j.model, str):
        raise ConfigError("labeller=judge needs judge.model (a causal LM's hub name or local directory)")
    check_name_or_path("judge.model", j.model)
    check_template(j.template)
    tokens = j.tokens
    if isinstance(tokens, str) or len(tokens) != 2 or not all(isinstance(t, str) and t for t in tokens):
        raise ConfigError(f"judge.tokens={OmegaConf.to_container(tokens) if not isinstance(tokens, str) else tokens!r}"
                          " is invalid; valid: two verdict strings, e.g. [A, B]")
    size = j.batch_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"judge.batch_size={size!r} is invalid; valid: an integer >= 1")


def fill(template: str, prompt: str, response_a: str, response_b: str) -> str:
    """The template with its placeholders filled in one pass (braces inside the texts are left alone)."""
    values = {"prompt": prompt, "response_a": response_a, "response_b": response_b}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def outcome(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Both orders of each pair -> the result for y_i: 1 win, 0 loss, 0.5 tie.

    first: verdicts on (A=y_i, B=y_j), second: on (A=y_j, B=y_i); +1 = A, -1 = B, 0 = no verdict."""
    win = (first > 0) & (second < 0)
    loss = (first < 0) & (second > 0)
    return torch.where(win, 1.0, torch.where(loss, 0.0, 0.5))


def group_scores(n: int, results: dict[tuple[int, int], float]) -> list[float]:
    """score_i = (wins + 0.5 ties) / (n - 1) from the result of y_i against y_j for every i < j."""
    if n == 1:
        return [0.5]
    points = [0.0] * n
    for (i, j), r in results.items():
        points[i] += r
        points[j] += 1.0 - r
    return [p / (n - 1) for p in points]


class PairwiseJudge:
    """The labeller signature over a pairwise LLM judge with position-swapped double judging."""

    def __init__(self, model, tokenizer, policy_tokenizer, template: str = TEMPLATE, tokens=("A", "B"),
                 batch_size: int = 8, samples_per_prompt: int | None = None):
        check_template(template)
        self.model = model
        self.tokenizer = tokenizer
        self.policy_tokenizer = policy_tokenizer
        self.template = template
        self.batch_size = int(batch_size)
        self.n = samples_per_prompt  # None: a group is a run of rows with the same prompt
        self.use_template = bool(getattr(tokenizer, "chat_template", None))
        tokens = list(tokens)
        if len(tokens) != 2 or not all(isinstance(t, str) and t for t in tokens):
            raise ConfigError(f"judge.tokens={tokens!r} is invalid; valid: two verdict strings, e.g. [A, B]")
        ids = [tokenizer.encode(t, add_special_tokens=False) for t in tokens]
        if not all(ids) or ids[0][0] == ids[1][0]:
            raise ConfigError(f"judge.tokens={tokens!r}: their first tokens must differ under the judge's tokenizer "
                         f"(got ids {[i[:1] for i in ids]})")
        self.verdict_ids = (ids[0][0], ids[1][0])
        config = getattr(model, "config", None)
        config = getattr(config, "text_config", None) or config
        self.max_length = next((getattr(config, k) for k in ("max_position_embeddings", "n_positions", "n_ctx")
                                if isinstance(getattr(config, k, None), int)), None)
        params = inspect.signature(model.forward).parameters
        self.takes_positions = "position_ids" in params
        self.takes_keep = "logits_to_keep" in params

    @classmethod
    def from_config(cls, cfg, world, device="cpu") -> "PairwiseJudge":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        j = cfg.judge
        path = str(j.model)
        try:
            model = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
        except Exception as e:
            raise ConfigError(f"judge.model={path!r} could not be loaded as a causal LM: {first_line(e)}") from None
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except Exception:  # a judge saved without its tokenizer shares the policy's vocabulary
            tokenizer = copy.deepcopy(world.tokenizer)
        return cls(model, tokenizer, world.tokenizer, template=str(j.template), tokens=tuple(j.tokens),
                   batch_size=int(j.batch_size), samples_per_prompt=int(cfg.algo.samples_per_prompt))

    # ------------------------------------------------------------ one judge pass
    def render(self, prompt: str, response_a: str, response_b: str) -> str:
        text = fill(self.template, prompt, response_a, response_b)
        if self.use_template:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                      add_generation_prompt=True)
        return text

    def verdicts(self, texts: list[str]) -> torch.Tensor:
        """Rendered judge prompts -> [M] +1 (A), -1 (B) or 0 (equal logits)."""
        return torch.sign(self.margins(texts))

    @torch.no_grad()
    def margins(self, texts: list[str]) -> torch.Tensor:
        """Rendered judge prompts -> [M] next-token logit of A minus that of B, one forward pass each (batched; the
        left padding is masked and position ids start at each text's first token, so batching changes nothing)."""
        tok = self.tokenizer
        device = next(self.model.parameters()).device
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            enc = [tok(t, add_special_tokens=not self.use_template)["input_ids"] for t in chunk]
            if self.max_length is not None:
                enc = [ids[-self.max_length:] for ids in enc]  # keep the end: the question and the answer slot
            width = max(len(ids) for ids in enc)
            input_ids = torch.full((len(enc), width), 0 if pad is None else pad, dtype=torch.long)
            mask = torch.zeros((len(enc), width), dtype=torch.long)
            for i, ids in enumerate(enc):  # left padding: every row's next-token position is the last one
                input_ids[i, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                mask[i, width - len(ids):] = 1
            kwargs = {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}
            if self.takes_positions:
                kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
            if self.takes_keep:
                kwargs["logits_to_keep"] = 1
            logits = self.model(**kwargs).logits[:, -1].float()
            a, b = self.verdict_ids
            out.append((logits[:, a] - logits[:, b]).cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def compare(self, prompts: list[str], first: list[str], second: list[str]) -> torch.Tensor:
        """[M] result of first[m] against second[m] on prompts[m] (1 win, 0 loss, 0.5 tie), judged in both orders."""
        texts = [self.render(x, a, b) for x, a, b in zip(prompts, first, second)]
        texts += [self.render(x, b, a) for x, a, b in zip(prompts, first, second)]
        v = self.verdicts(texts)
        return outcome(v[: len(prompts)], v[len(prompts):])

    # ------------------------------------------------------------ the labeller
    def _groups(self, keys: list[tuple]) -> list[range]:
        N = len(keys)
        if self.n is not None:
            if N % self.n:
                raise RuntimeError(f"labeller=judge: {N} rows are not whole groups of {self.n} samples per prompt")
            groups = [range(s, s + self.n) for s in range(0, N, self.n)]
            if any(keys[i] != keys[g[0]] for g in groups for i in g):
                raise RuntimeError(f"labeller=judge: rows are not grouped by prompt in runs of {self.n}")
            return groups
        groups, start = [], 0
        for i in range(1, N + 1):
            if i == N or keys[i] != keys[start]:
                groups.append(range(start, i))
                start = i
        return groups

    def __call__(self, prompts, prompt_mask, responses, response_mask, tasks=None) -> torch.Tensor:
        prompts_cpu = prompts.cpu()
        if prompt_mask is None:
            keys = [tuple(row) for row in prompts_cpu.tolist()]
        else:
            m = prompt_mask.cpu().bool()
            keys = [tuple(prompts_cpu[i][m[i]].tolist()) for i in range(prompts_cpu.shape[0])]
        r, rm = responses.cpu(), response_mask.cpu().bool()
        answers = self.policy_tokenizer.batch_decode([r[i][rm[i]].tolist() for i in range(r.shape[0])],
                                                     skip_special_tokens=True)
        groups = self._groups(keys)
        texts = self.policy_tokenizer.batch_decode([list(keys[g[0]]) for g in groups], skip_special_tokens=True)
        jobs = [(k, i, j) for k, g in enumerate(groups) for i in range(len(g)) for j in range(i + 1, len(g))]
        results = self.compare([texts[k] for k, _, _ in jobs], [answers[groups[k][i]] for k, i, _ in jobs],
                               [answers[groups[k][j]] for k, _, j in jobs]).tolist()
        per_group: list[dict] = [{} for _ in groups]
        for (k, i, j), res in zip(jobs, results):
            per_group[k][(i, j)] = res
        out = [s for g, res in zip(groups, per_group) for s in group_scores(len(g), res)]
        return torch.tensor(out, dtype=torch.float32, device=responses.device)
