"""GRPO (Shao et al. 2024, DeepSeekMath; its objective J(θ)).

G samples per prompt; each sample's advantage ``A_i = (r_i − mean(r_1..G)) / (std(r_1..G) + eps)``
is used for every one of its tokens; PPO's clipped ratio; and ``β·D_KL(π_θ‖π_ref)`` (k3 by default)
in the loss rather than in the reward. The per-token objective is averaged over each sequence's
tokens (``1/|o_i|``) and then over sequences. ``length_normalization=False`` with
``scale_rewards=False`` is Dr. GRPO (Liu et al. 2025): a constant normaliser (``max_new_tokens``)
and unscaled group-centred rewards, which remove GRPO's length and difficulty biases.

The KL term's gradient flows through the estimator (it is a loss, not a reward). On-policy, for
each visited state ``s_t`` (the sampled states held fixed, as in any per-token loss), the expected
gradient of ``k(a_t, s_t)`` with ``a_t ~ π_θ(·|s_t)`` is:

* ``"k1"`` (``log ρ``): 0, since ``E[∇log π_θ] = 0``. It regularises nothing; use it to log only.
* ``"k2"`` (``½ log² ρ``): ``∇KL(π_θ(·|s_t) ‖ π_ref(·|s_t))``, the reverse KL that a KL-shaped
  reward also penalises.
* ``"k3"`` (``ρ⁻¹ − 1 + log ρ``, the default, DeepSeekMath's): ``∇KL(π_ref(·|s_t) ‖ π_θ(·|s_t))``,
  the forward KL (mass-covering), even though its *value* estimates KL(π_θ‖π_ref).

These are per-state divergences: the term does not differentiate through how θ changes which
states are visited, so it is not the gradient of the whole-sequence KL (``tests/test_kl_loss.py``
checks each identity exactly by enumeration on Calibration-v0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from tokengym.agents.advantages import approx_kl_and_clipfrac, group_advantages, masked_mean
from tokengym.agents.base import Agent, AgentConfig
from tokengym.agents.rollout import Rollout
from tokengym.lm.config import bounded, one_of
from tokengym.lm.kl import ESTIMATORS, kl_estimate

__all__ = ["GRPO", "GRPOConfig", "grpo_loss"]


@dataclass
class GRPOConfig(AgentConfig):
    """GRPO's settings; each field's range is checked on construction."""

    lr: float = bounded(1.25e-4, above=0)
    """Adam learning rate (for 8,192 episodes in batches of 64 on Sentiment-v0: BENCHMARKS.md, kl-sentiment)."""
    group_size: int = bounded(16, at_least=2, integer=True)
    """G, samples per prompt (must divide the batch)."""
    beta: float = bounded(0.04, at_least=0)
    """KL coefficient β of D_KL(π_θ‖π_ref) in the loss."""
    kl_estimator: str = one_of("k3", ESTIMATORS)
    """Per-token KL estimator in the loss: 'k3' (gradient of KL(π_ref‖π_θ) per state), 'k2'
    (gradient of KL(π_θ‖π_ref) per state) or 'k1' (zero expected gradient)."""
    clip_eps: float = bounded(0.2, above=0)
    """Ratio clip ε."""
    n_epochs: int = bounded(1, at_least=1, integer=True)
    """Passes over each batch (1 = on-policy, ratio ≡ 1 at the first step)."""
    n_minibatches: int = bounded(1, at_least=1, integer=True)
    """Minibatches per epoch (at most the batch size)."""
    k3_max: float | None = bounded(10.0, above=0)
    """Largest per-token k3 in the loss (verl's and OpenRLHF's 10; none: unbounded): a token π_θ
    made far rarer than π_ref weighs ρ⁻¹ and would dominate the step (lm/kl.py)."""
    adv_eps: float = bounded(1e-4, above=0)
    """ε in (r − mean)/(std + ε): keeps groups of equal rewards at advantage 0."""
    scale_rewards: bool = True
    """Divide by the group std (GRPO); off keeps r − mean (Dr. GRPO)."""
    length_normalization: bool = True
    """Average each sequence over its own length |o_i| (GRPO); off divides by max_new_tokens (Dr. GRPO)."""

    @property
    def uses_groups(self) -> bool:
        return True


def grpo_loss(
    logprobs, old_logprobs, ref_logprobs, advantages, mask, *, clip_eps, beta, kl_estimator, length_normalization,
    k3_max=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(−J(θ), its clipped-surrogate part (detached, for the log), the (B, T) per-token KL)`` from
    (B, T) token terms and (B,) advantages broadcast over tokens."""
    ratio = (logprobs - old_logprobs).exp()  # (B, T)
    surrogate = torch.minimum(ratio * advantages[:, None], ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages[:, None])
    kl = kl_estimate(logprobs, ref_logprobs, kl_estimator, k3_max=k3_max)  # (B, T)
    per_token = torch.where(mask, surrogate - beta * kl, 0.0)  # (B, T)
    lengths = mask.sum(-1).clamp(min=1) if length_normalization else mask.shape[1]
    pg_loss = -(torch.where(mask, surrogate.detach(), 0.0).sum(-1) / lengths).mean()
    return -(per_token.sum(-1) / lengths).mean(), pg_loss, kl


class GRPO(Agent):
    """Group-relative policy optimisation: no value function; G samples per prompt; the clipped
    ratio with group-normalised sequence advantages and a per-token KL term in the loss."""

    config_class = GRPOConfig

    def __init__(self, env, config: GRPOConfig | None = None, policy=None, sharding=None):
        super().__init__(env, config if config is not None else GRPOConfig(), policy, sharding)
        if self.config.n_minibatches > self.env.num_envs:
            raise ValueError(f"n_minibatches={self.config.n_minibatches} exceeds the batch (num_envs={self.env.num_envs})")

    def update(self, rollout: Rollout) -> dict[str, float]:
        c = self.config
        b_advantages = group_advantages(rollout.scores, c.group_size, c.adv_eps, c.scale_rewards)  # (B,)
        return self.epochs(c.n_epochs, c.n_minibatches, lambda rows: self.loss(rollout, b_advantages, rows))

    def loss(self, rollout: Rollout, b_advantages, rows) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``−J(θ)`` over episodes ``rows`` (a mean over them) and its diagnostics."""
        c, mask = self.config, rollout.mask[rows]
        scored = self.policy.score(rollout.input_ids[rows], rollout.attention_mask[rows], rollout.prompt_width)
        loss, pg_loss, kl = grpo_loss(
            scored.logprobs, rollout.old_logprobs[rows], rollout.ref_logprobs[rows], b_advantages[rows], mask,
            clip_eps=c.clip_eps, beta=c.beta, kl_estimator=c.kl_estimator, length_normalization=c.length_normalization,
            k3_max=c.k3_max,
        )
        approx_kl, clipfrac = approx_kl_and_clipfrac(scored.logprobs.detach() - rollout.old_logprobs[rows], mask, c.clip_eps)
        return loss, {"loss": loss, "pg_loss": pg_loss, "kl": masked_mean(kl, mask), "entropy": masked_mean(scored.entropy, mask),
                      "approx_kl": approx_kl, "clipfrac": clipfrac}
