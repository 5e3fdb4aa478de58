"""Target distributions ``p(y|x) ∝ π_ref(y|x)·φ(x, y)``: what an alignment objective is optimal at.

The unified view of Go et al. (2023, f-DPG) and Khalifa et al. (2021, GDC): an aligned model is
a distribution ``p`` defined from π_ref and a reward, and an alignment method minimises a
divergence ``D_f(π_θ‖p)``. A target here is given by its **log-potential** ``log φ(x, y)``, read
from an episode's reward components (the per-episode totals of ``Rollout.components`` or
``info["reward_components"]``); with ``Z(x) = E_{y~π_ref(·|x)}[φ(x, y)]``, ``p = π_ref·φ / Z``.

* :class:`RLKL` (``log φ = r/β``): ``p_RLKL`` maximises ``E_π[r] − β·KL(π‖π_ref)``; its value is
  ``J* = β·E_x[log Z(x)]``, and for any π, ``J* − J(π) = β·KL(π‖p)``.
* :class:`GDCBinary` (``φ = 1[r ≥ threshold]``): π_ref conditioned on a 0/1 constraint;
  ``KL(p‖π_ref) = −log Z``.
* :class:`GDCDistributional` (``log φ = Σ_i λ_i φ_i``): the exponential family closest to π_ref whose
  feature moments are ``μ̄``; :meth:`GDCDistributional.fit` finds λ from π_ref samples (or from an
  exact enumeration, weighted by π_ref's probabilities).

A target never includes a KL-shaped reward's penalty: the penalty is a property of π_θ, not of
the episode, and ``p`` already holds the KL term through π_ref.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

__all__ = ["KL_COMPONENTS", "Target", "RLKL", "GDCBinary", "GDCDistributional", "TARGET_NAMES", "make_target", "task_score"]

KL_COMPONENTS = ("kl_penalty",)
"""Component names of KL penalties (``KLShaped``'s default): never part of a task score."""


def task_score(components: Mapping[str, torch.Tensor], names: Sequence[str] | None = None) -> torch.Tensor:
    """(B,) the sum of the named per-episode components; ``None``: every component but the KL
    penalties. A missing name raises a ValueError that lists the components there are."""
    if names is None:
        names = [name for name in components if name not in KL_COMPONENTS]
    missing = [name for name in names if name not in components]
    if missing or not names:
        raise ValueError(f"the target reads components {list(names) or '(none)'} but the reward reports {sorted(components)}")
    return sum(components[name].double() for name in names)


class Target:
    """``p(y|x) ∝ π_ref(y|x)·exp(log_potential)``. Subclasses define :meth:`log_potential` and
    :meth:`score` (the alignment score the frontier plots: the reward for RLKL, the constraint's
    indicator for GDC)."""

    name = "target"

    def log_potential(self, components: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B,) float64 ``log φ(x, y)`` of each episode (``-inf`` where p gives it no mass)."""
        raise NotImplementedError

    def score(self, components: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B,) float64 alignment score of each episode."""
        raise NotImplementedError


class RLKL(Target):
    """``p ∝ π_ref·exp(r/β)``, the optimum of the KL-regularised objective at coefficient β."""

    name = "rlkl"

    def __init__(self, beta: float, components: Sequence[str] | None = None):
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 < beta < math.inf:
            raise ValueError(f"RLKL.beta must be a finite number > 0, got {beta!r}")
        self.beta = float(beta)
        self.components = None if components is None else tuple(components)

    def score(self, components):
        return task_score(components, self.components)

    def log_potential(self, components):
        return self.score(components) / self.beta

    def __repr__(self):
        return f"RLKL(beta={self.beta}, components={self.components})"


class GDCBinary(Target):
    """``p ∝ π_ref·b`` with ``b = 1[score ≥ threshold]``: π_ref conditioned on a constraint
    (Keywords-v0 with threshold 1: both words used)."""

    name = "gdc-binary"

    def __init__(self, threshold: float = 1.0, components: Sequence[str] | None = None):
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise ValueError(f"GDCBinary.threshold must be a finite number, got {threshold!r}")
        self.threshold = float(threshold)
        self.components = None if components is None else tuple(components)

    def score(self, components):
        return (task_score(components, self.components) >= self.threshold).double()

    def log_potential(self, components):
        return torch.where(self.score(components) > 0, 0.0, -math.inf).double()

    def __repr__(self):
        return f"GDCBinary(threshold={self.threshold}, components={self.components})"


class GDCDistributional(Target):
    """``p ∝ π_ref·exp(Σ_i λ_i φ_i)``: the I-projection of π_ref onto ``{q : E_q[φ_i] = μ̄_i}``.

    ``features`` names one reward component per φ_i; ``moments`` the desired means μ̄_i.
    ``lambdas`` may be given, or fitted from π_ref samples with :meth:`fit`."""

    name = "gdc-distributional"

    def __init__(self, features: Sequence[str], moments: Sequence[float], lambdas: Sequence[float] | None = None):
        if not features or len(features) != len(moments):
            raise ValueError(f"GDCDistributional needs one moment per feature, got features={list(features)}, moments={list(moments)}")
        self.features = tuple(features)
        self.moments = torch.tensor([float(m) for m in moments], dtype=torch.float64)
        self.lambdas = None if lambdas is None else torch.tensor([float(v) for v in lambdas], dtype=torch.float64)
        if self.lambdas is not None and self.lambdas.shape != self.moments.shape:
            raise ValueError(f"GDCDistributional needs one λ per feature, got {list(lambdas)}")

    def feature_matrix(self, components) -> torch.Tensor:
        """(B, K) float64 features of each episode."""
        return torch.stack([task_score(components, [name]) for name in self.features], dim=-1)

    def score(self, components):
        """(B,) mean absolute distance of the features from their target moments (0 is aligned)."""
        return (self.feature_matrix(components) - self.moments.to(components[self.features[0]].device)).abs().mean(-1)

    def log_potential(self, components):
        if self.lambdas is None:
            raise ValueError("GDCDistributional has no λ yet: pass lambdas= or call fit() on π_ref samples")
        features = self.feature_matrix(components)
        return features @ self.lambdas.to(features.device)

    def fit(self, features: torch.Tensor, weights: torch.Tensor | None = None, *, iterations: int = 100,
            tolerance: float = 1e-8) -> torch.Tensor:
        """λ such that the rows' ``features`` (N, K), reweighted by ``exp(λ·φ)``, have the target
        moments: Newton's method on the convex dual ``log E_w[exp(λ·φ)] − λ·μ̄``.

        The rows are π_ref samples (``weights=None``: each counts once) or, with ``weights`` (N,)
        ≥ 0, any weighted support: the π_ref probabilities of an exact enumeration fit λ exactly.
        Stops when every moment is within ``tolerance``. Raises a ValueError if a moment lies
        outside what the rows of positive weight can reach."""
        features = features.double()
        if features.ndim != 2 or features.shape[1] != len(self.moments):
            raise ValueError(f"GDCDistributional.fit: features must be (N, {len(self.moments)}), got {tuple(features.shape)}")
        if weights is None:
            log_weights = torch.zeros(len(features), dtype=torch.float64, device=features.device)  # (N,)
        else:
            weights = weights.double().to(features.device)
            if weights.shape != features.shape[:1] or not bool(torch.isfinite(weights).all() and (weights >= 0).all()):
                raise ValueError(f"GDCDistributional.fit: weights must be ({len(features)},) finite and ≥ 0, got shape "
                                 f"{tuple(weights.shape)}, min {float(weights.min()) if weights.numel() else None}")
            log_weights = weights.log()  # (N,) -inf on rows of weight 0
        moments = self.moments.to(features.device)
        support = features[log_weights > -math.inf]  # (N', K) rows that can carry mass
        low, high = support.min(0).values, support.max(0).values
        if bool(((moments <= low) | (moments >= high)).any()):
            raise ValueError(f"target moments {moments.tolist()} must lie strictly inside the features' range "
                             f"[{low.tolist()}, {high.tolist()}]")

        def dual(lam: torch.Tensor) -> torch.Tensor:  # log E_w[exp(λ·φ)] − λ·μ̄, convex in λ
            return torch.logsumexp(features @ lam + log_weights, dim=0) - lam @ moments

        lambdas = torch.zeros_like(moments)
        for _ in range(iterations):
            tilted = torch.softmax(features @ lambdas + log_weights, dim=0)  # (N,) normalised w·exp(λ·φ)
            mean = tilted @ features  # (K,)
            gradient = mean - moments
            if float(gradient.abs().max()) < tolerance:
                break
            centred = features - mean
            hessian = centred.T @ (tilted[:, None] * centred) + 1e-10 * torch.eye(len(moments), dtype=features.dtype)
            step, size = torch.linalg.solve(hessian, gradient), 1.0
            while dual(lambdas - size * step) > dual(lambdas) - 0.25 * size * (gradient @ step) and size > 1e-8:
                size /= 2  # backtracking (Armijo): full Newton steps overshoot on skewed features
            lambdas = lambdas - size * step
        self.lambdas = lambdas.cpu()
        return self.lambdas

    def __repr__(self):
        return f"GDCDistributional(features={self.features}, moments={self.moments.tolist()}, lambdas={None if self.lambdas is None else self.lambdas.tolist()})"


TARGET_NAMES = ("rlkl", "gdc-binary", "gdc-distributional")


def make_target(name: str, **kwargs) -> Target:
    """A target by name: ``"rlkl"`` (``beta``), ``"gdc-binary"`` (``threshold``) or
    ``"gdc-distributional"`` (``features``, ``moments``, optional ``lambdas``)."""
    classes = {"rlkl": RLKL, "gdc-binary": GDCBinary, "gdc-distributional": GDCDistributional}
    if name not in classes:
        raise ValueError(f"target must be one of {', '.join(TARGET_NAMES)}, got {name!r}")
    return classes[name](**kwargs)
