"""Weight merging of policies fine-tuned from one base (WARP, Ramé et al. 2024; model soups,
Wortsman et al. 2022).

Each fine-tuned model ``θ_i`` is the base plus a task vector ``τ_i = θ_i − θ_base``. Runs from
the same base with different seeds share the reward's direction and differ in their
gradient-noise drift, so the mean task vector keeps the first and averages the second away
(experiments/close-the-gap: two Sentiment-v0 runs whose task vectors have cosine 0.05–0.10 merge
to a policy with the same VADER gain and half the KL on tokens outside the sentiment lexicon).
``norm_preserving`` rescales each tensor's mean task vector to the runs' mean norm: for two task
vectors of equal norm this is WARP's spherical interpolation (SLERP) at its midpoint, which undoes
the shrinkage that averaging nearly orthogonal vectors causes.
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import torch

__all__ = ["merge_task_vectors"]


@torch.no_grad()
def merge_task_vectors(
    base: torch.nn.Module, models: Sequence[torch.nn.Module], *, scale: float = 1.0, norm_preserving: bool = False,
) -> torch.nn.Module:
    """A copy of ``base`` whose every parameter is ``θ_base + scale · τ̄`` with ``τ̄`` the mean of the
    models' task vectors (rescaled per tensor to their mean norm when ``norm_preserving``).

    ``models`` must have ``base``'s parameter names and shapes (a ValueError names the first that
    differs). Tied parameters (GPT-2's embedding and LM head) are merged once and stay tied."""
    if not models:
        raise ValueError("merge_task_vectors needs at least one fine-tuned model, got none")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    base_parameters = dict(base.named_parameters())
    tuned = []
    for i, model in enumerate(models):
        parameters = dict(model.named_parameters())
        if parameters.keys() != base_parameters.keys():
            differ = sorted(parameters.keys() ^ base_parameters.keys())
            raise ValueError(f"models[{i}] does not have the base's parameters: {differ[0]!r} is in only one of them")
        for name, p in parameters.items():
            if p.shape != base_parameters[name].shape:
                raise ValueError(f"models[{i}].{name} has shape {tuple(p.shape)}, the base's {tuple(base_parameters[name].shape)}")
        tuned.append(parameters)
    merged = copy.deepcopy(base)
    for name, p in merged.named_parameters():
        tasks = [t[name].detach().to(p.device, p.dtype) - p for t in tuned]
        mean = torch.stack(tasks).mean(0)
        if norm_preserving:
            norm = mean.norm()
            if norm > 0:
                mean = mean * (torch.stack([t.norm() for t in tasks]).mean() / norm)
        p.add_(scale * mean)
    return merged
