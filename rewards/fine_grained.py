"""Fine-grained reward (Wu et al. 2023; docs/rewards.md).

``K`` scorers, each with a segmenter and a weight; segment ``j`` of model ``k`` ends at step
``T_j^k``::

    r_t = Σ_k Σ_j 1(t = T_j^k) · w_k · R_k(x, y, j)

Scorer convention for a segment: a text scorer is called with

    prompts     = [prompt + response text before the segment]   (the context x ⊕ y_<j)
    completions = [the segment's text y_j]

so ``prompt + completion`` is exactly the text generated up to the segment's end. A reward model
(:class:`~tokengym.rewards.classifier.SequenceClassifierScorer`) therefore scores the whole prefix,
as in Wu et al., while a text classifier such as VADER reads the segment alone. Nothing else is
passed. Segment texts are not stripped (they keep their leading space).

Per step the reward works out, on the device, which rows' tokens *could* close a segment (a token
containing a boundary character, a span count reached, or the episode ended; see
``Segmenter.might_close``), reads that (K, B) mask on the host once, and decodes and re-segments
only those rows. Segments found on a step close on that step.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from tokengym.rewards.base import EpisodeStart, StepBatch
from tokengym.rewards.scorers import is_token_scorer, score_texts, scorer_name
from tokengym.rewards.segmenters import Segmenter, decode_response, get_segmenter

__all__ = ["FineGrained"]


class FineGrained:
    """``FineGrained([(scorer, segmenter, weight), ...])`` or ``FineGrained({name: (scorer, segmenter, weight)})``.

    ``segmenter``: a name (``"token"``, ``"sub-sentence"``, ``"sentence"``, ``"span:N"``), a
    segmenter object, or a custom callable (see :mod:`tokengym.rewards.segmenters`). Returns one
    component per model, ``{name: (B,) rewards}`` with the weight applied; names default to
    ``"<scorer>@<segmenter>"``.
    """

    def __init__(self, models: Sequence[tuple[Any, Any, float]] | Mapping[str, tuple[Any, Any, float]]):
        items = list(models.items()) if isinstance(models, Mapping) else [(None, m) for m in models]
        if not items:
            raise ValueError("FineGrained needs at least one (scorer, segmenter, weight)")
        self.names: list[str] = []
        self.scorers: list[Any] = []
        self.segmenters: list[Segmenter] = []
        self.weights: list[float] = []
        for name, model in items:
            if len(model) != 3:
                raise ValueError(f"FineGrained expects (scorer, segmenter, weight) triples, got {model!r}")
            scorer, segmenter, weight = model
            if is_token_scorer(scorer):
                raise TypeError(f"FineGrained scores segment text; {scorer_name(scorer)!r} is a token scorer")
            segmenter = get_segmenter(segmenter)
            name = name or f"{scorer_name(scorer)}@{segmenter.name}"
            if name in self.names:
                raise ValueError(f"duplicate fine-grained component name {name!r}; pass a dict to name them")
            self.names.append(name)
            self.scorers.append(scorer)
            self.segmenters.append(segmenter)
            self.weights.append(float(weight))
        self._starts: list[list[int]] = []  # (K, B) end char of each row's last closed segment

    def reset(self, episodes: EpisodeStart) -> None:
        if episodes.tokenizer is None:
            raise ValueError("FineGrained segments decoded text, but this env has no tokenizer")
        for segmenter in self.segmenters:
            segmenter.prepare(episodes.tokenizer, episodes.prompt_ids.device)
        batch = episodes.prompt_ids.shape[0]
        rows = episodes.rows.tolist()  # host read, once per reset
        if len(self._starts) != len(self.segmenters) or len(self._starts[0]) != batch:
            self._starts = [[0] * batch for _ in self.segmenters]
        for starts in self._starts:
            for b, is_new in enumerate(rows):
                if is_new:
                    starts[b] = 0

    def __call__(self, step: StepBatch) -> dict[str, torch.Tensor]:
        device = step.actions.device
        batch = step.actions.shape[0]
        need = torch.stack(
            [step.acted & (step.ended | seg.might_close(step.actions, step.response_lengths)) for seg in self.segmenters]
        )  # (K, B)
        need_rows = need.tolist()  # the one host read of this step
        rewards = [[0.0] * batch for _ in self.segmenters]  # (K, B) host
        rows = sorted({b for row in need_rows for b, flag in enumerate(row) if flag})
        if rows:
            lengths = step.response_lengths[rows].tolist()
            ended = step.ended[rows].tolist()
            ids = step.response_ids[rows].tolist()
            texts = {
                b: decode_response(step.tokenizer, seq[:n]) for b, seq, n in zip(rows, ids, lengths)
            }
            info = {b: (n, e) for b, n, e in zip(rows, lengths, ended)}
            for k, segmenter in enumerate(self.segmenters):
                owners, contexts, segments = [], [], []
                for b in rows:
                    if not need_rows[k][b]:
                        continue
                    text, (n_tokens, final) = texts[b], info[b]
                    for start, end in segmenter.new_segments(text, self._starts[k][b], n_tokens, final):
                        owners.append(b)
                        contexts.append(step.prompt_texts[b] + text[:start])
                        segments.append(text[start:end])
                        self._starts[k][b] = end
                if segments:
                    scores = score_texts(self.scorers[k], contexts, segments, rows=owners)
                    for b, score in zip(owners, scores):
                        rewards[k][b] += self.weights[k] * score
        if rows:
            values = torch.tensor(rewards, dtype=torch.float32, device=device)  # (K, B)
        else:
            values = torch.zeros(len(self.segmenters), batch, dtype=torch.float32, device=device)
        return {name: values[k] for k, name in enumerate(self.names)}
