"""f-divergences ``D_f(q‖p) = E_p[f(q/p)] + f'(∞)·q(p = 0)`` (Liese & Vajda 2006), as f-DPG uses them.

Go et al. (2023, "Aligning language models with preferences through f-divergence minimization")
write every alignment objective as ``D_f(π_θ‖p)`` to a target ``p`` and minimise it with the
gradient ``E_{y~π_θ}[f'(π_θ(y)/p(y))·∇log π_θ(y)]``. Their Table 1, with ``t = π_θ/p``:

============  ==========================================  ======================  =========
divergence    f(t)                                        f'(t)                   f'(∞)
============  ==========================================  ======================  =========
forward-kl    −log t          (KL(p‖π_θ): DPG, GDC)       −1/t                    0
reverse-kl    t·log t         (KL(π_θ‖p): RL with KL)     1 + log t               ∞
js            t·log(2t/(t+1)) + log(2/(t+1))              log(2t/(t+1))           log 2
tv            ½·|1 − t|                                   ½·sign(t − 1)           ½
============  ==========================================  ======================  =========

Every function takes ``log t``, not ``t``: sequence probabilities under- and overflow in linear
space (``t = +∞`` where ``p = 0``, i.e. ``log t = +inf``, is handled exactly).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["FDivergence", "DIVERGENCES", "f_divergence"]


class FDivergence(NamedTuple):
    """One generator ``f`` of an f-divergence, as functions of ``log t``."""

    f: Callable[[torch.Tensor], torch.Tensor]
    """``f(t)`` from ``log t``."""
    f_prime: Callable[[torch.Tensor], torch.Tensor]
    """``f'(t)`` from ``log t``: f-DPG's per-sample coefficient of ``∇log π_θ``."""
    f_prime_at_infinity: float
    """``f'(∞) = lim_{t→∞} f(t)/t``: the price of each unit of mass that ``q`` puts where ``p = 0``."""


def _js(log_t: torch.Tensor) -> torch.Tensor:
    # t·log(2t/(t+1)) + log(2/(t+1)) with log(2t/(t+1)) = log 2 − softplus(−log t) and
    # log(2/(t+1)) = log 2 − softplus(log t); the first term is 0 at t = 0 (log t = −inf), not 0·(−inf).
    first = torch.where(log_t > -math.inf, log_t.exp() * (math.log(2) - F.softplus(-log_t)), 0.0)
    return first + math.log(2) - F.softplus(log_t)


DIVERGENCES: dict[str, FDivergence] = {
    "forward-kl": FDivergence(f=lambda log_t: -log_t, f_prime=lambda log_t: -(-log_t).exp(), f_prime_at_infinity=0.0),
    "reverse-kl": FDivergence(f=lambda log_t: torch.special.xlogy(log_t.exp(), log_t.exp()),
                              f_prime=lambda log_t: 1 + log_t, f_prime_at_infinity=math.inf),
    "js": FDivergence(f=_js, f_prime=lambda log_t: math.log(2) - F.softplus(-log_t), f_prime_at_infinity=math.log(2)),
    "tv": FDivergence(f=lambda log_t: 0.5 * torch.expm1(log_t).abs(), f_prime=lambda log_t: 0.5 * log_t.sign(),
                      f_prime_at_infinity=0.5),
}
"""The four divergences of f-DPG by name; ``D_f(π_θ‖p)`` is forward KL ``KL(p‖π_θ)`` for ``"forward-kl"``."""


def f_divergence(log_q: torch.Tensor, log_p: torch.Tensor, divergence: str) -> torch.Tensor:
    """Exact 0-dim ``D_f(q‖p)`` between two distributions given as log-probs over one enumerated
    support (``-inf`` where a distribution has no mass); differentiable in both."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
    generator = DIVERGENCES[divergence]
    support = log_p > -math.inf  # where p has mass
    log_t = torch.where(support, log_q - log_p, 0.0)
    inside = torch.where(support, log_p.exp() * generator.f(log_t), 0.0).sum()
    outside = torch.where(support, 0.0, log_q.exp()).sum()  # q's mass where p = 0
    if generator.f_prime_at_infinity == math.inf:  # reverse KL: infinite as soon as q leaves p's support
        return inside + torch.where(outside > 0, math.inf, 0.0)
    return inside + generator.f_prime_at_infinity * outside
