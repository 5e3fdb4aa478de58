"""PPO-clip (Schulman et al. 2017), InstructGPT style (Ouyang et al. 2022).

KL to the reference enters through the env's KL-shaped reward (per-token ``-β·KL``), not the loss.
Per batch: GAE(γ, λ) advantages, whitened; then several epochs of minibatches on
``min(ρ_t A_t, clip(ρ_t, 1−ε, 1+ε) A_t)`` with ``ρ_t = π_θ/π_θold``, a (optionally clipped) value
loss and an entropy bonus, stopping early when the approximate KL passes ``target_kl``. Every
term is summed over a sequence's tokens and averaged over the minibatch's sequences
(``agents/advantages.py``), so ``value_coef`` and ``entropy_coef`` mean the same as in A2C and
REINFORCE.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from tokengym.agents.advantages import (
    approx_kl_and_clipfrac, explained_variance, gae, masked_mean, masked_whiten, sequence_sum_mean,
)
from tokengym.agents.base import Agent, AgentConfig
from tokengym.agents.rollout import Rollout
from tokengym.lm.config import bounded

__all__ = ["PPO", "PPOConfig", "ppo_clip_loss"]


@dataclass
class PPOConfig(AgentConfig):
    """PPO's settings; each field's range is checked on construction."""

    lr: float = bounded(1.5e-4, above=0)
    """Adam learning rate (for 8,192 episodes in batches of 64 on Sentiment-v0: BENCHMARKS.md, kl-sentiment)."""
    clip_eps: float = bounded(0.2, above=0)
    """Ratio clip ε."""
    gae_lambda: float = bounded(0.95, at_least=0, at_most=1)
    """GAE λ."""
    n_epochs: int = bounded(1, at_least=1, integer=True)
    """Passes over each batch. One by default: at the language envs' scale, 4 epochs × 4
    minibatches over-step (Sentiment-v0: KL 19 nats and no gain at lr 3e-4; Calibration-v0:
    levelling off), so the default is one on-policy step per batch (BENCHMARKS.md)."""
    n_minibatches: int = bounded(1, at_least=1, integer=True)
    """Minibatches per epoch (rows are split evenly; at most the batch size)."""
    value_coef: float = bounded(0.5, at_least=0)
    """Weight of the value loss."""
    value_clip: float | None = bounded(0.2, above=0)
    """Clip of the value change around the rollout values (none: unclipped)."""
    entropy_coef: float = bounded(0.0, at_least=0)
    """Entropy bonus weight."""
    whiten_advantages: bool = True
    """Normalise advantages to zero mean and unit variance over the batch's valid tokens."""
    target_kl: float | None = bounded(0.1, above=0)
    """Stop the epochs once approx KL(π_old‖π_θ) exceeds 1.5× this (none: never)."""


def ppo_clip_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_eps: float
) -> torch.Tensor:
    """``−min(ρA, clip(ρ, 1−ε, 1+ε)A)`` summed over each sequence, averaged over sequences; zero
    gradient wherever the clip binds."""
    ratio = (logprobs - old_logprobs).exp()  # (B, T)
    unclipped = ratio * advantages  # (B, T)
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages  # (B, T)
    return -sequence_sum_mean(torch.minimum(unclipped, clipped), mask)


class PPO(Agent):
    """PPO-clip with GAE and a value head on the policy's trunk; KL to π_ref comes from the env's
    KL-shaped reward (InstructGPT style), not from the loss."""

    config_class = PPOConfig
    needs_values = True

    def __init__(self, env, config: PPOConfig | None = None, policy=None, sharding=None):
        super().__init__(env, config, policy, sharding)
        if self.config.n_minibatches > self.env.num_envs:
            raise ValueError(
                f"n_minibatches={self.config.n_minibatches} exceeds the batch (num_envs={self.env.num_envs})"
            )

    def update(self, rollout: Rollout) -> dict[str, float]:
        c, b_mask = self.config, rollout.mask
        b_advantages, b_returns = gae(rollout.rewards, rollout.values, b_mask, c.gamma, c.gae_lambda)
        if c.whiten_advantages:
            b_advantages = masked_whiten(b_advantages, b_mask)
        # early stop once the policy moved too far (cleanrl tests per minibatch; we test per epoch)
        too_far = None if c.target_kl is None else lambda last: last["approx_kl"] > 1.5 * c.target_kl
        stats = self.epochs(c.n_epochs, c.n_minibatches, lambda rows: self.loss(rollout, b_advantages, b_returns, rows),
                            stop=too_far)
        return {**stats, "explained_variance": float(explained_variance(rollout.values, b_returns, b_mask))}

    def loss(self, rollout: Rollout, b_advantages, b_returns, rows) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The clipped objective, value loss and entropy bonus: the mean over episodes ``rows``."""
        c, mask = self.config, rollout.mask[rows]
        scored = self.policy.score(rollout.input_ids[rows], rollout.attention_mask[rows], rollout.prompt_width)
        pg_loss = ppo_clip_loss(scored.logprobs, rollout.old_logprobs[rows], b_advantages[rows], mask, c.clip_eps)
        value_error = (scored.values - b_returns[rows]) ** 2  # (b, T)
        if c.value_clip is not None:  # clip the value change, as in PPO2/cleanrl
            old_values = rollout.values[rows]
            clipped_values = old_values + (scored.values - old_values).clamp(-c.value_clip, c.value_clip)
            value_error = torch.maximum(value_error, (clipped_values - b_returns[rows]) ** 2)
        value_loss = 0.5 * sequence_sum_mean(value_error, mask)
        entropy = sequence_sum_mean(scored.entropy, mask)
        approx_kl, clipfrac = approx_kl_and_clipfrac(scored.logprobs.detach() - rollout.old_logprobs[rows], mask, c.clip_eps)
        loss = pg_loss + c.value_coef * value_loss - c.entropy_coef * entropy
        return loss, {"loss": loss, "pg_loss": pg_loss, "value_loss": value_loss, "approx_kl": approx_kl, "clipfrac": clipfrac,
                      "entropy": masked_mean(scored.entropy.detach(), mask)}  # logged per token
