"""How the sampler draws the next token: temperature, top-k, top-p, and the exact sampler.

One :class:`SamplingConfig` per env is the single source of truth for τ, top-k and top-p: the
policy samples from ``softmax(filter(logits / τ))``, its log-probs (the rollout's, the PPO ratio's,
the score function's) are those of that distribution, and π_ref is scored at the same τ,
unfiltered (docs/kl.md, "Top-k and top-p").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["SamplingConfig", "filter_logits", "sample"]


@dataclass(frozen=True)
class SamplingConfig:
    """The sampled distribution ``softmax(filter(logits / temperature))``.

    The policy's log-probs are those of this distribution (:meth:`logprobs`): with top-k or top-p
    on, the filtered and renormalised one the actions are drawn from, so ratios, the score
    function and the KL penalty all describe what is sampled. π_ref is scored at the same
    temperature, unfiltered: the KL then includes the truncation's own cost and stays finite.
    """

    temperature: float = 1.0
    """Logits are divided by this before softmax; a finite number > 0."""
    top_k: int = 0
    """Sample only among the k most likely tokens; 0 disables. Integer >= 0."""
    top_p: float = 1.0
    """Sample only from the smallest set of tokens whose probability reaches top_p; in (0, 1], 1 disables."""

    def __post_init__(self):
        if isinstance(self.temperature, bool) or not (
            isinstance(self.temperature, (int, float)) and 0 < self.temperature < math.inf
        ):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        if isinstance(self.top_p, bool) or not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1] (1 disables it), got {self.top_p!r}")

    def logprobs(self, logits: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """(..., V) log-probs of the sampled distribution ``log_softmax(filter(logits / τ))`` in
        float32 (``-inf`` on the tokens top-k and top-p exclude).

        ``keep`` (...,): token ids that stay in the support whatever the filter says, for scoring
        actions that were sampled: a token drawn from the rollout's filtered distribution was in
        its support, but teacher forcing may round a logit at the filter's boundary to the other
        side (or later epochs move the policy), and it must not then score ``log 0``."""
        logits = logits.float()
        if self.temperature != 1:
            logits = logits / self.temperature
        if self.top_k or self.top_p < 1:
            logits = filter_logits(logits, self.top_k, self.top_p, keep=keep)
        return logits.log_softmax(dim=-1)


def filter_logits(
    logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """(..., V) logits with ``-inf`` on the tokens that top-k, then top-p, exclude.

    Top-k keeps the ``k`` largest logits (ties with the k-th are kept too). Top-p then keeps the
    minimal nucleus of the top-k-renormalised distribution: tokens in decreasing probability up to
    and including the first one at which the cumulative probability reaches ``top_p``. The most
    likely token is always kept. ``top_k=0`` and ``top_p=1`` disable each filter (the order
    temperature → top-k → top-p is Hugging Face ``generate``'s). ``keep`` (...,): token ids never
    excluded. Which tokens are excluded carries no gradient; the kept logits keep theirs.
    """
    with torch.no_grad():
        remove = torch.zeros_like(logits, dtype=torch.bool)  # (..., V)
        if 0 < top_k < logits.shape[-1]:
            kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (..., 1)
            remove = logits < kth  # (..., V)
        if top_p < 1.0:
            sorted_logits, order = logits.masked_fill(remove, -math.inf).sort(dim=-1, descending=True)  # (..., V)
            sorted_probs = sorted_logits.softmax(dim=-1)  # (..., V)
            mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (..., V) mass of the more likely tokens
            sorted_remove = mass_before >= top_p  # (..., V)
            remove = remove | sorted_remove.scatter(-1, order, sorted_remove)  # (..., V) back in vocabulary order
        if keep is not None:
            remove = remove.scatter(-1, keep[..., None], False)  # (..., V)
    return logits.masked_fill(remove, -math.inf)  # (..., V)


def sample(probs: torch.Tensor, generator: torch.Generator | None = None, shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """(B,) one draw per row from (B, V) probabilities (rows need not be normalised).

    The exponential race ``argmax_a p_a / E_a`` with ``E_a ~ Exp(1)`` samples ``a ∝ p_a``; it is
    what ``torch.multinomial(probs, 1)`` does internally. Drawing ``E = -log U`` from uniforms
    rather than with ``Tensor.exponential_`` is ~4× faster on CPU (vectorised log) and costs the
    same on CUDA. ``U`` is kept ≥ the smallest normal float so every ``E`` is finite and a token
    with ``p > 0`` always beats one with ``p = 0``.

    ``shard=(rank, world_size)``: the rows are one rank's slice of a global batch of
    ``world_size × B`` rows. The generator draws the whole global batch's noise and this rank uses
    rows ``rank·B … (rank+1)·B − 1``, so N ranks with the same generator state sample exactly what
    one process would for the global batch (at N× the noise-drawing cost, small next to a forward).
    """
    rank, world_size = shard
    rows, vocab = probs.shape
    uniform = torch.rand((world_size * rows, vocab), generator=generator, device=probs.device, dtype=probs.dtype)
    uniform = uniform[rank * rows : (rank + 1) * rows]  # (B, V)
    race = uniform.clamp_(min=torch.finfo(probs.dtype).tiny).log_().neg_()  # (B, V) E ~ Exp(1)
    return race.reciprocal_().mul_(probs).argmax(dim=-1)  # (B,)
