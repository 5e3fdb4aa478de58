"""Scorers: the functions a reward object calls to turn text (or tokens) into numbers.

Two protocols:

* **Text scorer** (host), the TRL reward-function convention::

      scorer(prompts=list[str], completions=list[str], **kwargs) -> list[float]

  Always called with keyword arguments ``prompts`` and ``completions`` (so a TRL function written
  as ``def f(completions, **kwargs)`` works unchanged) and nothing else.
* **Token scorer** (device)::

      scorer(prompt_ids, prompt_mask, response_ids, response_lengths) -> (B,) float tensor

  ``prompt_ids``/``prompt_mask`` are the (B, P) left-padded prompts, ``response_ids`` the (B, T)
  right-padded responses and ``response_lengths`` (B,) their lengths. A token scorer must set the
  attribute ``kind = "token"`` (wrap a plain function with :class:`TokenScorer`); anything else is
  treated as a text scorer.

Every result goes through :func:`score_texts` / :func:`score_tokens`, which validate it and name
the scorer in the error (NaN, inf, wrong count, wrong type never pass silently).
"""
from __future__ import annotations

import inspect
import re
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch

from tokengym.lm.errors import ScorerError
from tokengym.rewards.base import check_scores

__all__ = [
    "TextScorer",
    "TokenScorerProtocol",
    "TokenScorer",
    "scorer_name",
    "is_token_scorer",
    "score_texts",
    "score_tokens",
    "VaderSentiment",
    "Profanity",
    "ExactMatch",
    "RegexMatch",
    "KeywordInclusion",
    "LengthWindow",
    "RepetitionPenalty",
    "TRLRewardFunction",
]


class TextScorer(Protocol):
    def __call__(self, prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]: ...


class TokenScorerProtocol(Protocol):
    kind: str  # "token"

    def __call__(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        response_ids: torch.Tensor,
        response_lengths: torch.Tensor,
    ) -> torch.Tensor: ...


def scorer_name(scorer: Any) -> str:
    """The name used in errors and as default component name."""
    name = getattr(scorer, "name", None) or getattr(scorer, "__name__", None)
    return str(name) if name else type(scorer).__name__


def is_token_scorer(scorer: Any) -> bool:
    return getattr(scorer, "kind", "text") == "token"


def score_texts(
    scorer: Any, prompts: Sequence[str], completions: Sequence[str], rows: Sequence[int] | None = None
) -> list[float]:
    """Call a text scorer with ``prompts=``/``completions=`` and validate what it returns.

    If the scorer raises, a :class:`~tokengym.lm.errors.ScorerError` names it and the first row
    (``rows[i]``, the env's row numbers, when given) on which it raises alone."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
    try:
        scores = scorer(prompts=list(prompts), completions=list(completions))
    except Exception as exc:
        raise _scorer_error(scorer, exc, rows, len(completions), completions,
                            lambda i: scorer(prompts=[prompts[i]], completions=[completions[i]])) from exc
    return check_scores(scores, len(completions), scorer=scorer_name(scorer))


def _scorer_error(scorer, exc: Exception, rows, n: int, completions, call_one) -> ScorerError:
    """Find the first row on which ``call_one(i)`` raises too (the batch's failure may be one row's)."""
    bad = None
    for i in range(n):
        try:
            call_one(i)
        except Exception:
            bad = i
            break
    name = scorer_name(scorer)
    if bad is None:
        where = f"on a batch of {n} rows (no single row fails alone)"
    else:
        row = rows[bad] if rows is not None else bad
        shown = f" (completion {completions[bad]!r})" if completions is not None else ""
        where = f"on row {row}{shown}"
    return ScorerError(f"reward scorer {name!r} raised {type(exc).__name__} {where}: {exc}")


def score_tokens(
    scorer: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_lengths: torch.Tensor,
) -> torch.Tensor:
    """Call a token scorer and validate its (B,) float tensor without reading it on the host.

    Type, shape, dtype and device are always checked. Finiteness is checked only for CPU tensors:
    on an accelerator it would cost a device sync every step.
    """
    name = scorer_name(scorer)
    try:
        scores = scorer(prompt_ids, prompt_mask, response_ids, response_lengths)
    except Exception as exc:
        raise _scorer_error(scorer, exc, None, response_ids.shape[0], None, lambda i: scorer(
            prompt_ids[i : i + 1], prompt_mask[i : i + 1], response_ids[i : i + 1], response_lengths[i : i + 1]
        )) from exc
    batch = response_ids.shape[0]
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"token scorer {name!r} returned {type(scores).__name__}; expected a (B,) torch.Tensor")
    if scores.shape != (batch,):
        raise ValueError(f"token scorer {name!r} returned shape {tuple(scores.shape)}; expected ({batch},)")
    if not scores.is_floating_point():
        raise TypeError(f"token scorer {name!r} returned dtype {scores.dtype}; expected a float tensor")
    if scores.device != response_ids.device:
        raise ValueError(f"token scorer {name!r} returned a tensor on {scores.device}; expected {response_ids.device}")
    if scores.device.type == "cpu" and not bool(torch.isfinite(scores).all()):
        raise ValueError(f"token scorer {name!r} returned a non-finite score")
    return scores


class TokenScorer:
    """Marks a plain function ``f(prompt_ids, prompt_mask, response_ids, response_lengths)`` as a
    device token scorer."""

    kind = "token"

    def __init__(self, fn: Callable[..., torch.Tensor], name: str | None = None):
        self.fn = fn
        self.name = name or scorer_name(fn)

    def __call__(self, prompt_ids, prompt_mask, response_ids, response_lengths) -> torch.Tensor:
        return self.fn(prompt_ids, prompt_mask, response_ids, response_lengths)


# ---------------------------------------------------------------------------------------------
# Shipped text scorers
# ---------------------------------------------------------------------------------------------


class VaderSentiment:
    """VADER compound sentiment of the completion, in [-1, 1] (the prompt is ignored)."""

    name = "vader"

    def __init__(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()

    def __call__(self, prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        return [self.analyzer.polarity_scores(text)["compound"] for text in completions]


class Profanity:
    """Probability in [0, 1] that the completion is profane (alt-profanity-check's linear model).

    Higher is worse: give it a negative weight (or wrap it) to use it as a penalty."""

    name = "profanity"

    def __call__(self, prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        from profanity_check import predict_prob

        if not completions:
            return []
        return [float(p) for p in predict_prob(list(completions))]


def _per_prompt(spec: Any, prompt: str, what: str) -> Any:
    """Resolve a per-prompt argument: a mapping keyed by prompt text, a callable, or a constant."""
    if callable(spec):
        return spec(prompt)
    if isinstance(spec, Mapping):
        if prompt not in spec:
            raise KeyError(f"no {what} for prompt {prompt[:60]!r}")
        return spec[prompt]
    return spec


class ExactMatch:
    """1.0 if the stripped completion equals the (or one of the) target answer(s), else 0.0.

    ``targets``: a string or list of strings used for every prompt, a mapping prompt -> target(s),
    or a callable prompt -> target(s).
    """

    name = "exact_match"

    def __init__(self, targets: Any, ignore_case: bool = False):
        self.targets = targets
        self.ignore_case = ignore_case

    def _norm(self, text: str) -> str:
        text = text.strip()
        return text.lower() if self.ignore_case else text

    def __call__(self, prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        out = []
        for prompt, completion in zip(prompts, completions):
            targets = _per_prompt(self.targets, prompt, "target")
            targets = [targets] if isinstance(targets, str) else list(targets)
            out.append(float(self._norm(completion) in {self._norm(t) for t in targets}))
        return out


class RegexMatch:
    """1.0 if ``pattern`` is found in the completion (``re.search``; ``fullmatch=True`` for the whole
    stripped completion), else 0.0."""

    name = "regex_match"

    def __init__(self, pattern: str | re.Pattern, fullmatch: bool = False, flags: int = 0):
        self.pattern = re.compile(pattern, flags) if isinstance(pattern, str) else pattern
        self.fullmatch = fullmatch

    def __call__(self, prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        match = self.pattern.fullmatch if self.fullmatch else self.pattern.search
        return [float(match(c.strip() if self.fullmatch else c) is not None) for c in completions]


class KeywordInclusion:
    """CommonGen-style concept coverage: the fraction of required keywords present in the completion.

    A keyword counts as present when it occurs as a whole word, case-insensitively, optionally with
    one inflection suffix (s, es, d, ed, ing): "dog" matches "Dogs", not "dogma". ``keywords``: one
    list for every prompt, a mapping prompt -> list, or a callable prompt -> list. An empty keyword
    list scores 1.0.
    """

    name = "keyword_inclusion"
    _SUFFIX = r"(?:s|es|d|ed|ing)?"

    def __init__(self, keywords: Sequence[str] | Mapping[str, Sequence[str]] | Callable[[str], Sequence[str]]):
        self.keywords = keywords

    def __call__(self, prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        out = []
        for prompt, completion in zip(prompts, completions):
            words = list(_per_prompt(self.keywords, prompt, "keywords"))
            if not words:
                out.append(1.0)
                continue
            found = sum(
                re.search(rf"\b{re.escape(w)}{self._SUFFIX}\b", completion, re.IGNORECASE) is not None for w in words
            )
            out.append(found / len(words))
        return out


class LengthWindow:
    """1.0 if the completion has between ``min_words`` and ``max_words`` words (inclusive), else 0.0."""

    name = "length_window"

    def __init__(self, min_words: int, max_words: int):
        if not 0 <= min_words <= max_words:
            raise ValueError(f"LengthWindow needs 0 <= min_words <= max_words, got {min_words}, {max_words}")
        self.min_words = min_words
        self.max_words = max_words

    def __call__(self, prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        return [float(self.min_words <= len(c.split()) <= self.max_words) for c in completions]


class RepetitionPenalty:
    """Minus the fraction of repeated word n-grams: ``-(1 - distinct / total)``, in (-1, 0].

    0 for completions with fewer than ``n`` words. Words are lower-cased whitespace tokens."""

    name = "repetition"

    def __init__(self, n: int = 2):
        if n < 1:
            raise ValueError(f"RepetitionPenalty needs n >= 1, got {n}")
        self.n = n

    def __call__(self, prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        out = []
        for completion in completions:
            words = completion.lower().split()
            grams = [tuple(words[i : i + self.n]) for i in range(len(words) - self.n + 1)]
            out.append(-(1.0 - len(set(grams)) / len(grams)) if grams else 0.0)
        return out


class TRLRewardFunction:
    """Adapter for a TRL reward function ``fn(prompts, completions, completion_ids, **columns)``.

    :meth:`score` passes ``fn`` only what its signature accepts (everything if it takes
    ``**kwargs``), so ``def f(completions, answer)`` and ``def f(prompts, completions, **kw)`` both
    work. Through :class:`~tokengym.rewards.trl.TRLReward` (what ``reward=fn`` builds) it receives
    the dataset's columns row by row. ``kwargs`` given here are constants passed on every call; a
    list or tuple among them must have one value per scored row (per-row values belong in the
    prompt dataset's columns, which stay aligned on partial batches; a bound list cannot).

    TRL lets a function return ``None`` for samples it does not apply to; set ``none_value`` to map
    those to a number, otherwise a ``None`` raises, naming the function and the row.
    """

    def __init__(self, fn: Callable[..., Any], name: str | None = None, none_value: float | None = None, **kwargs: Any):
        if not callable(fn):
            raise TypeError(f"TRLRewardFunction needs a callable, got {fn!r}")
        self.fn = fn
        self.name = name or scorer_name(fn)
        self.none_value = none_value
        self.kwargs = kwargs
        self._accepts = _accepted_keywords(fn)

    def score(
        self,
        prompts: list,
        completions: list,
        completion_ids: list[list[int]] | None = None,
        columns: Mapping[str, Sequence] | None = None,
        rows: Sequence[int] | None = None,
    ) -> list[float]:
        """Call ``fn`` on ``len(completions)`` samples; ``columns`` hold one value per sample.

        ``rows`` (the env rows of the samples) only name the row in errors."""
        n = len(completions)
        arguments: dict[str, Any] = {"prompts": list(prompts), "completions": list(completions)}
        if completion_ids is not None:
            arguments["completion_ids"] = [list(ids) for ids in completion_ids]
        for key, values in (columns or {}).items():
            if key in arguments:
                raise ValueError(f"column {key!r} clashes with the argument {key!r} that every reward function receives")
            arguments[key] = list(values)
        for key, value in self.kwargs.items():
            if key in arguments:
                raise ValueError(f"reward function {self.name!r}: bound keyword {key!r} clashes with a column or argument")
            if isinstance(value, (list, tuple)) and len(value) != n:
                raise ValueError(
                    f"reward function {self.name!r}: bound keyword {key!r} has {len(value)} values for {n} "
                    "samples; per-row values belong in the prompt dataset's columns "
                    "(prompts=[{'prompt': ..., " + repr(key) + ": ...}, ...]), which stay aligned"
                )
            arguments[key] = value
        if self._accepts is not None:
            arguments = {k: v for k, v in arguments.items() if k in self._accepts}
        scores = self.fn(**arguments)
        if scores is not None and not isinstance(scores, torch.Tensor):
            scores = list(scores)
            for i, s in enumerate(scores):
                if s is None:
                    if self.none_value is None:
                        row = rows[i] if rows is not None and i < len(rows) else i
                        raise TypeError(
                            f"reward function {self.name!r} returned None for row {row}; TRL allows None for "
                            "samples a function does not apply to: set none_value= to score them"
                        )
                    scores[i] = self.none_value
        return check_scores(scores, n, scorer=self.name)

    def __call__(self, prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        """The text-scorer protocol (used by ``Holistic``/``FineGrained``): no ids, no columns."""
        return self.score(prompts, completions, columns=kwargs)


def _accepted_keywords(fn: Callable[..., Any]) -> frozenset[str] | None:
    """The keyword names ``fn`` accepts, or ``None`` when it takes ``**kwargs`` (or has no signature)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(
        p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    )
