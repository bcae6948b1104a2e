"""Verifiable rewards on text: (response text, reference answer text) -> 1.0 if the response's answer is right, else 0.0.

* `math_verify_reward`: Hugging Face's math-verify — extracts the answer from the response (a `\\boxed{}` first,
  then the last LaTeX or plain expression) and checks mathematical equivalence with the reference (0.5 = 1/2 =
  \\frac{1}{2}, x^2 = x*x), not string equality. A bare reference such as `1/2` is parsed as `$1/2$`.
* `gsm8k_reward`: GSM8K's convention — the reference is a number or a full solution ending in `#### 42`; the
  response's answer is the number after its `####`, else its last number; compared as numbers (commas, `$` ignored).

Pure functions, no torch. Any parsing error or timeout counts as a wrong answer (0.0), never an exception.
"""
from __future__ import annotations

import re
import threading
from decimal import Decimal, InvalidOperation

MATH_TIMEOUT_SECONDS = 5  # per parse / comparison; math-verify's timeout uses SIGALRM, so only on the main thread


def _timeout() -> int | None:
    """math-verify's signal-based timeout works only on the main thread; elsewhere it is switched off (None)."""
    return MATH_TIMEOUT_SECONDS if threading.current_thread() is threading.main_thread() else None


def _is_bare(answer: str) -> bool:
    """A reference with no math delimiters or \\boxed{} (e.g. `1/2`, `\\frac{1}{2}`, `0.5`)."""
    return not any(mark in answer for mark in ("$", "\\(", "\\[", "\\boxed", "\\begin{"))


def _parse(text: str, timeout):
    from math_verify import parse

    return parse(text, parsing_timeout=timeout)


def math_verify_reward(response_text: str, answer_text: str) -> float:
    """1.0 iff math-verify finds the response's answer equivalent to the reference answer."""
    from math_verify import verify
    from math_verify.errors import TimeoutException

    if not response_text or not str(answer_text).strip():
        return 0.0
    answer_text = str(answer_text).strip()
    timeout = _timeout()
    try:
        gold = _parse(f"${answer_text}$", timeout) if _is_bare(answer_text) else []
        if not gold:
            gold = _parse(answer_text, timeout)
        if not gold:
            return 0.0
        predicted = _parse(response_text, timeout)
        if not predicted:
            return 0.0
        return float(bool(verify(gold, predicted, timeout_seconds=timeout)))
    except (Exception, TimeoutException):  # TimeoutException is a BaseException
        return 0.0


# a number: optional sign and $, digits with optional thousands commas, optional decimals (also `.5`)
_NUMBER = re.compile(r"-?\$?\s?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")


def _to_number(token: str) -> Decimal | None:
    cleaned = token.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


def _numbers(text: str) -> list[Decimal]:
    return [n for n in (_to_number(m) for m in _NUMBER.findall(text)) if n is not None]


def extract_gsm8k_answer(text: str) -> Decimal | None:
    """The number after the last `####`, else the last number in the text; None if there is none."""
    text = str(text)
    if "####" in text:
        after = _numbers(text.rsplit("####", 1)[1])
        if after:
            return after[0]
    found = _numbers(text)
    return found[-1] if found else None


def gsm8k_reward(response_text: str, answer_text: str) -> float:
    """1.0 iff the response's final number equals the reference's (`#### N` or its last number)."""
    try:
        right = extract_gsm8k_answer(answer_text)
        given = extract_gsm8k_answer(response_text)
        return float(right is not None and given is not None and given == right)
    except Exception:
        return 0.0


VERIFIERS = {"math_verify": math_verify_reward, "gsm8k": gsm8k_reward}
