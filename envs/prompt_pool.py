"""The prompts an env draws from: kept as given (text, token ids, chat messages) with their
dataset columns, encoded once, checked against the vocabulary and the prompt width, and drawn for
a reset (uniformly with the env's ``np_random``, each repeated ``group_size`` times; or given
explicitly in the reset's options)."""
from __future__ import annotations

from typing import Any

import numpy as np

from tokengym.envs.records import PromptRecords, load_prompt_records
from tokengym.rewards.trl import is_conversation

__all__ = ["PromptPool"]


class PromptPool:
    """``records`` (anything :func:`~tokengym.envs.records.load_prompt_records` takes) encoded with
    ``tokenizer`` for a model of ``vocab_size`` logits. A prompt that is empty, out of the
    vocabulary, or text without a tokenizer raises a ValueError naming it."""

    def __init__(self, records: Any, tokenizer: Any, vocab_size: int):
        self.tokenizer, self.vocab_size = tokenizer, vocab_size
        self.records: PromptRecords = load_prompt_records(records)
        self.ids = self.encode(self.records.prompts)
        """Each prompt's token ids."""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def longest(self) -> int:
        """The longest prompt's number of tokens."""
        return max(len(p) for p in self.ids)

    def encode(self, prompts) -> list[list[int]]:
        """Token ids of ``prompts``: text through the tokenizer, chat messages through its chat
        template (with the generation prompt), token-id lists as they are."""
        if prompts is None or len(prompts) == 0:
            raise ValueError("prompts must be a non-empty list of strings or token-id lists")
        encoded = []
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, str):
                if self.tokenizer is None:
                    raise ValueError(f"prompt {i} is text but the env has no tokenizer")
                ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            elif is_conversation(prompt):
                if getattr(self.tokenizer, "chat_template", None) is None:
                    raise ValueError(f"prompt {i} is chat messages, but the env's tokenizer has no chat_template")
                text = self.tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False)
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            else:
                ids = [int(t) for t in prompt]
            if len(ids) == 0:
                raise ValueError(f"prompt {i} ({prompt!r}) is empty after tokenization")
            bad = [t for t in ids if not 0 <= t < self.vocab_size]
            if bad:
                raise ValueError(f"prompt {i} has token ids {bad} outside [0, {self.vocab_size})")
            encoded.append(ids)
        return encoded

    @staticmethod
    def check_lengths(prompt_ids: list[list[int]], max_prompt_tokens: int) -> None:
        """A ValueError naming the first prompt longer than ``max_prompt_tokens``."""
        for i, ids in enumerate(prompt_ids):
            if len(ids) > max_prompt_tokens:
                raise ValueError(f"prompt {i} has {len(ids)} tokens, more than max_prompt_tokens={max_prompt_tokens}")

    def draw(self, n: int, options: dict | None, rng: np.random.Generator, shard: tuple[int, int],
             max_prompt_tokens: int) -> tuple[list, list[list[int]], dict[str, list]]:
        """``n`` rows of (prompts as given, their token ids, their columns) for a reset with
        ``options`` (``group_size``: each prompt repeated in consecutive rows; ``prompts``: these
        instead of a draw). A draw takes the whole global batch's prompts from ``rng`` and keeps
        the rows of rank ``shard[0]`` of ``shard[1]``, so every rank's rows are those one process
        would have."""
        options = options or {}
        unknown = set(options) - {"group_size", "prompts"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; expected 'group_size' or 'prompts'")
        group_size = options.get("group_size", 1)
        if not isinstance(group_size, int) or group_size < 1 or n % group_size:
            raise ValueError(f"options['group_size'] must be a positive int dividing num_envs={n}, got {group_size!r}")
        if "prompts" in options:
            records = load_prompt_records(options["prompts"])
            raw, chosen, columns = records.prompts, self.encode(records.prompts), records.columns
            self.check_lengths(chosen, max_prompt_tokens)
            if len(chosen) * group_size != n:
                raise ValueError(f"options['prompts'] has {len(chosen)} prompts; with group_size={group_size} "
                                 f"it needs {n // group_size}")
        else:
            rank, world_size = shard
            idx = rng.integers(0, len(self.ids), size=world_size * n // group_size)
            idx = idx[rank * n // group_size : (rank + 1) * n // group_size].tolist()
            raw, chosen = [self.records.prompts[i] for i in idx], [self.ids[i] for i in idx]
            columns = {name: [values[i] for i in idx] for name, values in self.records.columns.items()}

        def repeat(values: list) -> list:
            return [v for v in values for _ in range(group_size)]

        return repeat(raw), repeat(chosen), {name: repeat(values) for name, values in columns.items()}
