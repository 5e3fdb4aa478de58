"""Config helpers every layer shares: the one range check, the one value parser, and the field
docstrings that document a config dataclass (and become its command-line help).

* :func:`check_range`: a ValueError naming the field, the value and the interval, unless the value
  is a number (or an integer) in it. Config dataclasses call it in ``__post_init__``; the command
  line turns its message into one line about the flag.
* :func:`parse_value`: a value typed on a command line or in an ablation (``--set lr=0.1``,
  ``--ablate beta=0.1,0.5``): a TOML literal (``0.5``, ``true``, ``"x"``, ``[1, 2]``), ``none``
  for None, else the bare string.
* :func:`field_docs`: ``{field: docstring}`` from the one-line string under each field of a
  dataclass (the attribute-docstring convention), read from its source.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
import tomllib
from functools import cache
from typing import Any

__all__ = ["check_range", "parse_value", "field_docs"]


def check_range(name: str, value: Any, low: float, high: float, *, low_open=False, high_open=False, integer=False):
    """Raise a ValueError naming ``name`` unless ``low (<|<=) value (<|<=) high``."""
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and not (isinstance(value, float) and math.isnan(value))
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        what = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {what} in {interval}, got {value!r}")


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
        except (OSError, TypeError):  # no source (built in a REPL): no docstrings
            continue
        body = tree.body[0].body
        for node, following in zip(body, body[1:] + [None]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                is_doc = (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                          and isinstance(following.value.value, str))
                docs[node.target.id] = " ".join(following.value.value.split()) if is_doc else docs.get(node.target.id, "")
    return {f.name: docs.get(f.name, "") for f in dataclasses.fields(cls)}
