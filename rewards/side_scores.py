"""A reward wrapper that also scores every episode with rewards that are only logged."""
from __future__ import annotations

from typing import Callable, Mapping

import torch

from tokengym.rewards.base import EpisodeStart, Reward, RewardOutput, StepBatch, as_components

__all__ = ["SideScores"]


class SideScores:
    """``reward`` unchanged, plus ``extra`` rewards computed on the same steps and only logged.

    Give it to the env at construction (``gym.make_vec(..., reward=SideScores(reward, extra))``):
    the env trains on ``reward``'s output alone, while :meth:`means` reports each extra reward's
    mean per-episode total since the last reset, as ``eval/<name>``. A benchmark uses it to score
    reward variants with one common metric.

    :meth:`children` lets the env see whether a wrapped reward needs ``log π_ref``
    (:func:`~tokengym.rewards.base.reference_request`). :attr:`update_beta` is ``reward``'s
    adaptive-β hook, or ``None`` when it has none, so an agent that looks for it sees the
    wrapped reward's.
    """

    def __init__(self, reward: Reward, extra: Mapping[str, Reward]):
        self.reward = reward
        self.extra = dict(extra)
        self.totals: dict[str, torch.Tensor] = {}  # name -> (B,) per-episode sums

    def children(self) -> list[Reward]:
        """The wrapped reward and the logged extras."""
        return [self.reward, *self.extra.values()]

    @property
    def update_beta(self) -> Callable[..., float] | None:
        return getattr(self.reward, "update_beta", None)

    def reset(self, episodes: EpisodeStart) -> None:
        self.reward.reset(episodes)
        for reward in self.extra.values():
            reward.reset(episodes)
        self.totals = {}

    def __call__(self, step: StepBatch) -> RewardOutput:
        for name, reward in self.extra.items():
            step_total = sum(as_components(reward(step), name).values()) * step.acted  # (B,)
            self.totals[name] = self.totals.get(name, 0) + step_total
        return self.reward(step)

    def means(self) -> dict[str, float]:
        """``{"eval/<name>": mean over rows of the episode totals}`` (a host read per extra reward)."""
        return {f"eval/{name}": float(total.float().mean()) for name, total in self.totals.items()}
