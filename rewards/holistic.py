"""Holistic reward (docs/rewards.md): ``r_t = R(x, y)`` if ``t = T`` else ``0``."""
from __future__ import annotations

from typing import Any

import torch

from tokengym.rewards.base import EpisodeStart, StepBatch
from tokengym.rewards.scorers import is_token_scorer, score_texts, score_tokens, scorer_name

__all__ = ["Holistic"]


class Holistic:
    """One scalar per episode, paid on the step that ends it.

    A device token scorer runs on every step for every row with no host read:
    ``torch.where(ended, score, 0)``. A text scorer needs text, so the reward reads ``ended`` on
    the host once per step to find the rows that ended, and decodes and scores only those. A text
    scorer that declares ``batched = True`` (a reward model, which pays per call) is called once per
    batch instead, on every episode, when the batch's last one ends: rows that ended earlier are
    paid late, through ``info["late_rewards"]`` (``StepBatch.rows_to_score``).

    Returns ``{name: (B,) rewards}``; ``name`` defaults to the scorer's name.
    """

    def __init__(self, scorer: Any, name: str | None = None):
        self.scorer = scorer
        self.name = name or scorer_name(scorer)

    def reset(self, episodes: EpisodeStart) -> None:
        pass

    def __call__(self, step: StepBatch) -> dict[str, torch.Tensor]:
        if is_token_scorer(self.scorer):
            p = step.prompt_width
            scores = score_tokens(
                self.scorer, step.input_ids[:, :p], step.attention_mask[:, :p], step.response_ids, step.response_lengths
            )  # (B,)
            return {self.name: torch.where(step.ended, scores, torch.zeros_like(scores))}
        rewards = torch.zeros(step.ended.shape[0], dtype=torch.float32, device=step.ended.device)  # (B,)
        rows = step.rows_to_score(batched=getattr(self.scorer, "batched", False))  # the one host read
        if rows:
            completions = step.decode_responses(rows)
            prompts = [step.prompt_texts[r] for r in rows]
            scores = score_texts(self.scorer, prompts, completions, rows=rows)
            rewards[rows] = torch.tensor(scores, dtype=torch.float32, device=rewards.device)
        return {self.name: rewards}
