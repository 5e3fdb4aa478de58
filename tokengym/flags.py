"""Command-line flags generated from config dataclasses, so an option is written once.

A field's name becomes its flag (``batch_size`` → ``--batch-size``), its type the parser (an
``int``, a ``float``, a string; ``X | None`` also takes ``none``; a ``bool`` gives ``--x`` and
``--no-x``; a ``list`` takes several values), its :func:`~tokengym.lm.config.one_of` choices the
choices, and its docstring and default the help. Every flag defaults to ``argparse.SUPPRESS``, so
the namespace holds exactly the flags the user typed; the dataclass itself checks the values
(its :func:`~tokengym.lm.config.bounded` ranges), once, whether they come from the command line,
a resumed ``run.json`` or Python.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Mapping, Sequence

from tokengym.lm.config import field_docs

__all__ = ["add_flags", "add_agent_flags", "given_flags", "flag_kwargs"]


def _named(parse: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    parse.__name__ = name  # argparse names the type in "invalid int value: 'x'" (tokengym.cli turns it into one line)
    return parse


def _optional(kind: type) -> Callable[[str], Any]:
    return _named(lambda text: None if text.lower() == "none" else kind(text), kind.__name__)


def flag_kwargs(field: dataclasses.Field) -> dict[str, Any]:
    """``add_argument`` keywords for a field: its parser, choices, metavar and arity."""
    kind = field.type  # a string under ``from __future__ import annotations``, else the type itself
    annotation = (kind if isinstance(kind, str) else kind.__name__ if isinstance(kind, type) else str(kind)).replace(" ", "")
    optional = annotation.endswith("|None")
    base = annotation.removesuffix("|None")
    choices = field.metadata.get("choices")
    if base == "bool":
        return {"action": argparse.BooleanOptionalAction}
    if base.startswith(("list[", "tuple[")):
        if choices is not None:  # each value one of them
            return {"nargs": "+", "choices": list(choices), "metavar": "{" + ",".join(choices) + "}"}
        return {"nargs": "+", "metavar": "NAME"}
    kind = {"int": int, "float": float, "str": str}.get(base)
    if kind is None:
        raise TypeError(f"field {field.name}: no command-line parser for type {field.type!r}")
    kwargs: dict[str, Any] = {"type": _optional(kind) if optional else kind}
    if choices is not None:
        kwargs["choices"] = [c for c in choices if c is not None]
        kwargs["metavar"] = "{" + ",".join(map(str, kwargs["choices"])) + "}"
    else:
        kwargs["metavar"] = field.metadata.get("metavar") or {"int": "N", "float": "F", "str": "NAME"}[base]
    return kwargs


def add_flags(group, cls: type, *, exclude: Sequence[str] = (), defaults: Mapping[str, str] | None = None) -> list[str]:
    """Add one flag per field of the dataclass ``cls`` (but ``exclude``) to ``group`` (a parser or
    an argument group); returns the fields added. ``defaults`` overrides the "(default: …)" text of
    a field (say, one default per agent)."""
    docs = field_docs(cls)
    added = []
    for field in dataclasses.fields(cls):
        if field.name in exclude:
            continue
        default = (defaults or {}).get(field.name) or _default_text(field)
        doc = docs[field.name].rstrip(".")
        shown = "" if "(default:" in doc else f" (default: {default})"
        group.add_argument("--" + field.name.replace("_", "-"), dest=field.name, default=argparse.SUPPRESS,
                           help=(doc + shown).replace("%", "%%"), **flag_kwargs(field))
        added.append(field.name)
    return added


def add_agent_flags(group, configs: Mapping[str, type], *, exclude: Sequence[str] = ()) -> list[str]:
    """One flag per field of any of the ``configs`` (``{agent name: config class}``), each once; its
    help names the agents that have it and each one's default when they differ."""
    owners: dict[str, list[tuple[str, dataclasses.Field]]] = {}
    for agent, cls in configs.items():
        for field in dataclasses.fields(cls):
            if field.name not in exclude:
                owners.setdefault(field.name, []).append((agent, field))
    added = []
    for name in sorted(owners):
        (first_agent, field), *others = owners[name]
        cls = configs[first_agent]
        doc = field_docs(cls)[name].rstrip(".")
        defaults = {agent: _default_text(f) for agent, f in owners[name]}
        if len(owners[name]) == len(configs) and len(set(defaults.values())) == 1:
            shown = next(iter(defaults.values()))
        elif len(set(defaults.values())) == 1:
            shown = f"{next(iter(defaults.values()))}; {', '.join(defaults)} only"
        else:
            shown = ", ".join(f"{agent}: {text}" for agent, text in defaults.items())
        group.add_argument("--" + name.replace("_", "-"), dest=name, default=argparse.SUPPRESS,
                           help=f"{doc} (default: {shown})".replace("%", "%%"), **flag_kwargs(field))
        added.append(name)
    return added


def _default_text(field: dataclasses.Field) -> str:
    value = field.default if field.default is not dataclasses.MISSING else None
    if field.default_factory is not dataclasses.MISSING:  # a list's default
        value = field.default_factory()
    return "none" if value is None else " ".join(map(str, value)) if isinstance(value, list) else str(value)


def given_flags(namespace: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """``{field: value}`` of the flags the user typed among ``names``."""
    return {name: value for name, value in vars(namespace).items() if name in names}
