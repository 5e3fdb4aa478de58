"""The errors the command line turns into one line on stderr and exit status 2 (no traceback).

``UsageError`` is for bad flags, values, names and files; ``ScorerError`` for a reward scorer that
raised during training (it names the scorer and the row). :func:`tokengym.cli.main` catches both.
"""
from __future__ import annotations

from typing import Any

__all__ = ["UsageError", "ScorerError", "bad_value"]


class UsageError(Exception):
    """A bad flag, value, name or file. ``str(error)`` is the whole one-line message."""


class ScorerError(RuntimeError):
    """A reward scorer raised; the message names the scorer, the row and the original error."""


def bad_value(flag: str, value: Any, expected: str) -> UsageError:
    """``UsageError("--flag VALUE: expected ...")``, the CLI's one message format."""
    shown = value if isinstance(value, str) and value and " " not in value else repr(value)
    return UsageError(f"{flag} {shown}: expected {expected}")
