"""Config dataclasses: each field declares its default, its range or choices, and a docstring,
once; the command line's flags are generated from them (``tokengym/flags.py``).

* :func:`bounded` and :func:`one_of` declare a field with its check (:func:`text`, a string's metavar); :func:`check_fields` (called
  by a config's ``__post_init__``) runs every check and raises :class:`ConfigError`, which names
  the field, the value and what was expected.
* :func:`check_range`: the same check for a value that is not a field.
* :func:`parse_value`: a value typed on a command line (``--ablate beta=0.1,0.5``): a TOML literal
  (``0.5``, ``true``, ``"x"``, ``[1, 2]``), ``none`` for None, else the bare string.
* :func:`field_docs`: ``{field: docstring}`` from the one-line string under each field (the
  attribute-docstring convention), read from the class's source.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
import tomllib
from dataclasses import dataclass
from functools import cache
from typing import Any, Sequence

__all__ = [
    "ConfigError", "Range", "bounded", "one_of", "text", "check_fields", "check_range", "parse_value", "field_docs",
]


class ConfigError(ValueError):
    """A value outside what a field accepts. ``field``, ``value`` and ``expected`` (a phrase such as
    "an integer ≥ 1") let the command line say it as ``--field VALUE: expected ...``."""

    def __init__(self, field: str, value: Any, expected: str):
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field} must be {expected}, got {value!r}")


@dataclass(frozen=True)
class Range:
    """The numbers a field accepts: ``low <(=) value <(=) high``, optionally integers only."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def describe(self) -> str:
        """``"an integer ≥ 1"``, ``"a number > 0"``, ``"a number in (0, 1]"``."""
        what = "an integer" if self.integer else "a number"
        if math.isinf(self.high):
            return what if math.isinf(self.low) else f"{what} {'>' if self.low_open else '≥'} {_show(self.low)}"
        if math.isinf(self.low):
            return f"{what} {'<' if self.high_open else '≤'} {_show(self.high)}"
        return f"{what} in {'(' if self.low_open else '['}{_show(self.low)}, {_show(self.high)}{')' if self.high_open else ']'}"

    def contains(self, value: Any) -> bool:
        ok = isinstance(value, int if self.integer else (int, float)) and not isinstance(value, bool)
        ok = ok and not (isinstance(value, float) and math.isnan(value))
        return ok and (value > self.low if self.low_open else value >= self.low) and (
            value < self.high if self.high_open else value <= self.high)


def _show(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def bounded(default: Any, *, above: float | None = None, at_least: float | None = None, below: float | None = None,
            at_most: float | None = None, integer: bool = False) -> Any:
    """A dataclass field whose value must lie in a range (``None`` passes when the default is None)::

        lr: float = bounded(3e-4, above=0)
        gae_lambda: float = bounded(0.95, at_least=0, at_most=1)
        n_epochs: int = bounded(1, at_least=1, integer=True)
    """
    low, low_open = (above, True) if above is not None else (at_least if at_least is not None else -math.inf, False)
    high, high_open = (below, True) if below is not None else (at_most if at_most is not None else math.inf, False)
    return dataclasses.field(default=default, metadata={"range": Range(low, high, low_open, high_open, integer)})


def text(default: str | None, metavar: str) -> Any:
    """A string field shown on the command line as ``metavar`` (``--prompts FILE``)."""
    return dataclasses.field(default=default, metadata={"metavar": metavar})


def one_of(default: Any, choices: Sequence[Any]) -> Any:
    """A dataclass field whose value must be one of ``choices``; for a list field (a list
    ``default``), each of its items."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"choices": tuple(choices)})
    return dataclasses.field(default=default, metadata={"choices": tuple(choices)})


def check_fields(config: Any) -> None:
    """Raise :class:`ConfigError` for the first field of ``config`` outside its :func:`bounded`
    range or its :func:`one_of` choices (None passes a field whose type allows it, ``X | None``)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None and "None" in str(f.type):
            continue
        if "range" in f.metadata and not f.metadata["range"].contains(value):
            raise ConfigError(f.name, value, f.metadata["range"].describe())
        if "choices" in f.metadata:
            items = value if isinstance(value, list) else [value]
            for item in items:
                if item not in f.metadata["choices"]:
                    raise ConfigError(f.name, item, f"one of {', '.join(map(str, f.metadata['choices']))}")


def check_range(name: str, value: Any, low: float, high: float, *, low_open=False, high_open=False, integer=False):
    """Raise :class:`ConfigError` naming ``name`` unless ``low (<|<=) value (<|<=) high``."""
    bounds = Range(low, high, low_open, high_open, integer)
    if not bounds.contains(value):
        raise ConfigError(name, value, bounds.describe())


def parse_value(text: str) -> Any:
    """A TOML literal (``0.5``, ``true``, ``"x"``, ``[1, 2]``), ``none``/``null`` for None, else
    the bare string (``k3``, ``leave-one-out``)."""
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


@cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field name: its docstring}`` for a dataclass and its bases (a subclass's docstring wins;
    a field without one maps to ``""``)."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # no source (a class built in a REPL): no docstrings
            continue
        body = tree.body[0].body
        for node, following in zip(body, body[1:] + [None]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                is_doc = (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                          and isinstance(following.value.value, str))
                docs[node.target.id] = " ".join(following.value.value.split()) if is_doc else docs.get(node.target.id, "")
    return {f.name: docs.get(f.name, "") for f in dataclasses.fields(cls)}
