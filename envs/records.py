"""Prompt datasets: prompts with per-row columns (a ground-truth answer, a label, a reference).

``load_prompt_records`` accepts what ``prompts=`` accepts and returns the prompts and their
columns as parallel lists:

* plain prompts: a list of strings, token-id lists, or chat messages (no columns);
* records: a list of dicts, each with a ``prompt`` field plus any other columns (the same columns
  in every record);
* a path to a ``.jsonl`` file, one record per line (blank lines skipped);
* a ``datasets.Dataset`` with a ``prompt`` column (if that package is installed).

A prompt is a string, a list of token ids, or chat messages (a list of ``{"role", "content"}``
dicts, which the env encodes with the tokenizer's chat template).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokengym.lm.io import read_jsonl

__all__ = ["PromptRecords", "load_prompt_records", "read_jsonl_records"]


@dataclass(frozen=True)
class PromptRecords:
    """N prompts and their columns, each column N values long."""

    prompts: list
    """Strings, token-id lists or chat messages."""
    columns: dict[str, list] = field(default_factory=dict)
    """Column name -> one value per prompt (no ``prompt`` key)."""

    def __len__(self) -> int:
        return len(self.prompts)


def load_prompt_records(source: Any) -> PromptRecords:
    """Prompts and columns from a list of prompts or records, a ``.jsonl`` path, or a ``Dataset``."""
    if isinstance(source, PromptRecords):
        return source
    if isinstance(source, (str, os.PathLike)):
        return _from_records(read_jsonl_records(source), where=lambda i: f"{os.fspath(source)}: record {i}")
    if type(source).__module__.split(".")[0] == "datasets" and hasattr(source, "column_names"):
        if "prompt" not in source.column_names:
            raise ValueError(f"the dataset has no 'prompt' column; its columns: {source.column_names}")
        return _from_records(source.to_list(), where=lambda i: f"dataset row {i}")
    if not isinstance(source, (list, tuple)) or len(source) == 0:
        raise ValueError(
            "prompts must be a non-empty list of strings, token-id lists, chat messages or records "
            f"({{'prompt': ..., <columns>}}), a .jsonl path, or a datasets.Dataset; got {source!r:.80}"
        )
    is_record = [isinstance(item, dict) for item in source]
    if all(is_record):
        return _from_records(list(source), where=lambda i: f"record {i}")
    if any(is_record):
        i = is_record.index(True)
        raise ValueError(f"prompts mixes records (dicts, e.g. item {i}) with plain prompts; use one kind")
    return PromptRecords(prompts=list(source))


def read_jsonl_records(path: str | os.PathLike) -> list[dict]:
    """The records of a ``.jsonl`` file; errors name the file, the line and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {os.fspath(path)!r}: no such file")
    records = []
    for number, record in read_jsonl(path, what="a JSON object with a 'prompt' field"):
        if "prompt" not in record:
            raise ValueError(f"{path}:{number}: the record has no 'prompt' field (keys: {sorted(record)})")
        if records and set(record) != set(records[0]):
            raise ValueError(
                f"{path}:{number}: columns {sorted(record)} differ from the first record's {sorted(records[0])}"
            )
        records.append(record)
    if not records:
        raise ValueError(f"{path}: no records (the file is empty)")
    return records


def _from_records(records: list[dict], where) -> PromptRecords:
    if not records:
        raise ValueError("prompts: no records")
    keys = set(records[0])
    for i, record in enumerate(records):
        if "prompt" not in record:
            raise ValueError(f"{where(i)} has no 'prompt' field (keys: {sorted(record)})")
        if set(record) != keys:
            raise ValueError(f"{where(i)} has columns {sorted(record)}, but {where(0)} has {sorted(keys)}")
    names = [k for k in records[0] if k != "prompt"]
    return PromptRecords(
        prompts=[record["prompt"] for record in records],
        columns={name: [record[name] for record in records] for name in names},
    )
