"""The errors a user can cause, and how one is told in a line. A leaf: imports nothing of the project.

The CLI prints the message of a ConfigError, DataError or RewardError alone (no traceback) and exits with status 2.
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A bad setting; the CLI prints the message alone and exits with status 2."""


class DataError(ValueError):
    """A dataset or pair log that cannot be used; the CLI prints the message and exits with status 2."""


class RewardError(RuntimeError):
    """The labeller returned NaN or inf."""


def first_line(e: BaseException, limit: int | None = None) -> str:
    """`Type: first line of the message` (truncated to `limit` characters when given): how gapstudy quotes an error
    it wraps, so that a user sees the cause without the traceback."""
    text = str(e).strip().splitlines()
    line = f"{type(e).__name__}: {text[0] if text else ''}"
    return line if limit is None else line[:limit]
