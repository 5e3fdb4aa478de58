"""Segmenters: where the segments of a fine-grained reward end (Wu et al. 2023; docs/rewards.md).

A segmenter maps one row's response (token ids + tokenizer) to the token indices ``T_1 < T_2 < …``
that close its segments::

    Sentence()([...ids...], tokenizer)  ->  [4, 9, 13]

Segmentation works on the decoded text (``skip_special_tokens=True``,
``clean_up_tokenization_spaces=False``) and maps back to tokens: a segment closes on the token
whose decoded span covers the segment's closing (last) character. Text segmenters end a segment
right after its punctuation, so the closing character is the segment's last non-whitespace
character, and punctuation inside a multi-character token piece (``"ld."``, ``"d.N"``) closes the
segment on that piece. A line end is the exception: the newline itself closes the segment, because that is
the first step at which the end of the line is known (a reward cannot be paid retroactively).

Rewards arrive while the text is generated, so segmentation must be *causal*: where a segment
ends may depend only on the text up to that end. Consequences: "3.14" splits after "3.", and a run
of punctuation ("Wait...") closes on its first mark; the marks after it start the next segment.
A boundary mark closes a segment only if the segment has some content (a character that is
neither whitespace nor a boundary mark), so "?!" or ". ." do not make empty segments.

At episode end (``final=True``) a segment still open closes on the last step: for text segmenters
when the remaining text has a non-whitespace character, or when the response has no segment at
all (an empty or all-whitespace response is one segment); for count segmenters when tokens remain
since the last close.

Names for :func:`get_segmenter`: ``"token"``, ``"sub-sentence"``, ``"sentence"``, ``"span:N"``;
or a :class:`FixedSpan` (any segmenter object), or a callable ``text -> list[int]`` of character
end offsets (exclusive) for a custom segmenter. A custom callable must be causal in the same sense
and must report only segments that are closed (never the unfinished tail).
"""
from __future__ import annotations

import abc
from typing import Any, Callable, Sequence

import torch

__all__ = [
    "Segmenter",
    "TokenSegmenter",
    "FixedSpan",
    "TextSegmenter",
    "Sentence",
    "SubSentence",
    "CustomSegmenter",
    "get_segmenter",
    "SEGMENTER_NAMES",
    "decode_response",
]

SEGMENTER_NAMES = ("token", "sub-sentence", "sentence", "span:N")


def decode_response(tokenizer: Any, token_ids: Sequence[int]) -> str:
    return tokenizer.decode(list(token_ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


class Segmenter(abc.ABC):
    """Base class. Subclasses implement the offline map (``__call__``) and the online pieces the
    fine-grained reward uses step by step (``prepare``, ``might_close``, ``new_segments``)."""

    name: str

    @abc.abstractmethod
    def __call__(self, token_ids: Sequence[int], tokenizer: Any, final: bool = True) -> list[int]:
        """Token indices (0-based within the response) that close each segment."""

    def prepare(self, tokenizer: Any, device: torch.device) -> None:
        """Build per-tokenizer lookup tables (called at reset)."""

    def might_close(self, actions: torch.Tensor, response_lengths: torch.Tensor) -> torch.Tensor:
        """(B,) bool on device, conservative: False only where this step surely closes no segment."""
        return torch.ones_like(actions, dtype=torch.bool)

    @abc.abstractmethod
    def new_segments(self, text: str, start: int, n_tokens: int, final: bool) -> list[tuple[int, int]]:
        """Character spans of the segments that close on this step.

        ``text`` is the decoded response so far (``n_tokens`` tokens, this step's included),
        ``start`` the end of the last closed segment; ``final`` whether this step ends the episode.
        """


class FixedSpan(Segmenter):
    """A segment every ``n`` tokens (``n = 1`` is the token segmenter)."""

    def __init__(self, n: int):
        if int(n) != n or n < 1:
            raise ValueError(f"FixedSpan needs a positive integer span, got {n!r}")
        self.n = int(n)
        self.name = "token" if self.n == 1 else f"span:{self.n}"

    def __call__(self, token_ids: Sequence[int], tokenizer: Any = None, final: bool = True) -> list[int]:
        length = len(token_ids)
        ends = list(range(self.n - 1, length, self.n))
        if final and length % self.n:
            ends.append(length - 1)
        return ends

    def might_close(self, actions: torch.Tensor, response_lengths: torch.Tensor) -> torch.Tensor:
        return response_lengths % self.n == 0  # (B,)

    def new_segments(self, text: str, start: int, n_tokens: int, final: bool) -> list[tuple[int, int]]:
        if n_tokens % self.n == 0 or final:
            return [(start, len(text))]
        return []


class TokenSegmenter(FixedSpan):
    """Every token is a segment."""

    def __init__(self):
        super().__init__(1)


class TextSegmenter(Segmenter):
    """Segments from character end offsets of the decoded text (see :meth:`ends`)."""

    boundary_chars: str | None = None
    """Characters that can close a segment; lets the reward skip steps whose token has none.
    ``None``: any token may close one (custom segmenters)."""

    def __init__(self):
        self._tables: dict[tuple[int, str], tuple[Any, torch.Tensor]] = {}
        self._table: torch.Tensor | None = None

    @abc.abstractmethod
    def ends(self, text: str) -> list[int]:
        """Exclusive character end offsets of the closed segments of ``text``, increasing."""

    def _clean_ends(self, text: str, start: int = 0) -> list[int]:
        out, last = [], start
        for end in self.ends(text):
            if last < end <= len(text):
                out.append(end)
                last = end
        return out

    def _final_open(self, text: str, last: int, any_closed: bool) -> bool:
        return bool(text[last:].strip()) or not any_closed

    # offline -------------------------------------------------------------------------------------
    def __call__(self, token_ids: Sequence[int], tokenizer: Any, final: bool = True) -> list[int]:
        ids = list(token_ids)
        if not ids:
            return []
        prefixes = [decode_response(tokenizer, ids[: i + 1]) for i in range(len(ids))]
        text = prefixes[-1]
        ends = self._clean_ends(text)
        steps = [self._covering_token(prefixes, text, end - 1) for end in ends]
        if final and self._final_open(text, ends[-1] if ends else 0, bool(ends)):
            steps.append(len(ids) - 1)
        return steps

    @staticmethod
    def _covering_token(prefixes: list[str], text: str, char: int) -> int:
        """The first token whose prefix decoding contains ``text[:char+1]`` (so its span covers
        ``char``; a character split over several byte tokens is covered by the one completing it)."""
        target = text[: char + 1]
        for i, prefix in enumerate(prefixes):
            if prefix.startswith(target):
                return i
        return len(prefixes) - 1

    # online --------------------------------------------------------------------------------------
    def prepare(self, tokenizer: Any, device: torch.device) -> None:
        if self.boundary_chars is None:
            self._table = None
            return
        key = (id(tokenizer), str(device))
        if key not in self._tables:  # once per tokenizer: decode every token on its own
            n = len(tokenizer)
            pieces = tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            flags = [any(c in piece for c in self.boundary_chars) for piece in pieces]
            # keep the tokenizer referenced so its id cannot be reused by another object
            self._tables[key] = (tokenizer, torch.tensor(flags, dtype=torch.bool, device=device))
        self._table = self._tables[key][1]

    def might_close(self, actions: torch.Tensor, response_lengths: torch.Tensor) -> torch.Tensor:
        if self._table is None:
            return torch.ones_like(actions, dtype=torch.bool)
        n = self._table.shape[0]
        known = actions < n
        return ~known | self._table[actions.clamp(max=n - 1)]  # (B,) ids beyond the tokenizer: check

    def new_segments(self, text: str, start: int, n_tokens: int, final: bool) -> list[tuple[int, int]]:
        spans, last = [], start
        for end in self._clean_ends(text, start):
            spans.append((last, end))
            last = end
        if final and self._final_open(text, last, any_closed=last > 0):
            spans.append((last, len(text)))
        return spans


def _punctuation_ends(text: str, marks: str) -> list[int]:
    """End offsets after each mark in ``marks`` that closes a segment with content (causal scan)."""
    ends, has_content = [], False
    for i, ch in enumerate(text):
        if ch in marks:
            if has_content:
                ends.append(i + 1)
                has_content = False
        elif not ch.isspace():
            has_content = True
    return ends


class Sentence(TextSegmenter):
    """Sentences end at ``.``, ``!``, ``?`` and newlines."""

    name = "sentence"
    boundary_chars = ".!?\n"

    def ends(self, text: str) -> list[int]:
        return _punctuation_ends(text, self.boundary_chars)


class SubSentence(TextSegmenter):
    """Sub-sentences end at ``,``, ``;``, ``:`` and at sentence ends."""

    name = "sub-sentence"
    boundary_chars = ",;:.!?\n"

    def ends(self, text: str) -> list[int]:
        return _punctuation_ends(text, self.boundary_chars)


class CustomSegmenter(TextSegmenter):
    """Wraps a causal callable ``text -> list[int]`` of exclusive character end offsets."""

    def __init__(self, fn: Callable[[str], Sequence[int]], name: str | None = None):
        super().__init__()
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "custom")

    def ends(self, text: str) -> list[int]:
        return [int(e) for e in self.fn(text)]


def get_segmenter(spec: str | Segmenter | Callable[[str], Sequence[int]]) -> Segmenter:
    """A segmenter from a name, an object, or a custom callable (see the module docstring)."""
    if isinstance(spec, Segmenter):
        return spec
    if isinstance(spec, str):
        if spec == "token":
            return TokenSegmenter()
        if spec == "sentence":
            return Sentence()
        if spec == "sub-sentence":
            return SubSentence()
        if spec.startswith("span:") and spec[5:].isdigit() and int(spec[5:]) > 0:
            return FixedSpan(int(spec[5:]))
        raise ValueError(f"unknown segmenter {spec!r}; valid names: {', '.join(SEGMENTER_NAMES)} (N a positive integer), a FixedSpan(n), or a callable text -> end offsets")
    if callable(spec):
        return CustomSegmenter(spec)
    raise TypeError(f"segmenter must be a name, a Segmenter or a callable, got {type(spec).__name__}")
