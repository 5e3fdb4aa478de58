"""Synchronous advantage actor-critic (Mnih et al. 2016) on token episodes.

A learned ``V(s_t)`` gives the advantage, either GAE(γ, λ) (``δ_t = r_t + γV(s_{t+1}) − V(s_t)``,
``A_t = δ_t + γλA_{t+1}``) or the n-step target minus ``V(s_t)``; one gradient step per batch on
policy loss + value MSE − entropy bonus. Every term is summed over a sequence's tokens and
averaged over sequences (``agents/advantages.py``), so ``value_coef`` and ``entropy_coef`` mean
the same as in PPO and REINFORCE.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from tokengym.agents.advantages import explained_variance, gae, masked_mean, n_step_returns, sequence_sum_mean
from tokengym.agents.base import Agent, AgentConfig
from tokengym.agents.rollout import Rollout
from tokengym.lm.config import bounded

__all__ = ["A2C", "A2CConfig"]


@dataclass
class A2CConfig(AgentConfig):
    """A2C's settings; each field's range is checked on construction."""

    lr: float = bounded(1.5e-4, above=0)
    """Adam learning rate (for 8,192 episodes in batches of 64 on Sentiment-v0: BENCHMARKS.md, kl-sentiment)."""
    gae_lambda: float = bounded(0.95, at_least=0, at_most=1)
    """GAE λ; ignored when n_steps is set."""
    n_steps: int | None = bounded(None, at_least=1, integer=True)
    """Use n-step returns Σ_{k<n} γ^k r_{t+k} + γ^n V(s_{t+n}) instead of GAE (default: GAE)."""
    value_coef: float = bounded(0.5, at_least=0)
    """Weight of the value MSE."""
    entropy_coef: float = bounded(0.0, at_least=0)
    """Entropy bonus weight."""


class A2C(Agent):
    """Advantage actor-critic: one gradient step per batch on
    ``−Σ_t log π(a_t|s_t) A_t + c_V · ½ Σ_t (V(s_t) − R_t)² − c_H · Σ_t H_t`` (each sum over a
    sequence's tokens, averaged over sequences), with ``A_t`` from GAE(γ, λ) or n-step returns."""

    config_class = A2CConfig
    needs_values = True

    def update(self, rollout: Rollout) -> dict[str, float]:
        c, b_mask = self.config, rollout.mask
        if c.n_steps is None:
            b_advantages, b_returns = gae(rollout.rewards, rollout.values, b_mask, c.gamma, c.gae_lambda)
        else:
            b_returns = n_step_returns(rollout.rewards, rollout.values, b_mask, c.gamma, c.n_steps)
            b_advantages = b_returns - rollout.values  # (B, T)
        stats = self.batch_step(lambda rows: self.loss(rollout, b_advantages, b_returns, rows))
        return {**stats, "explained_variance": float(explained_variance(rollout.values, b_returns, b_mask))}

    def loss(self, rollout: Rollout, b_advantages, b_returns, rows) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Policy loss, value MSE and entropy bonus: the mean over episodes ``rows`` of each one's terms."""
        c, mask = self.config, rollout.mask[rows]
        scored = self.policy.score(rollout.input_ids[rows], rollout.attention_mask[rows], rollout.prompt_width)
        pg_loss = -sequence_sum_mean(scored.logprobs * b_advantages[rows], mask)
        value_loss = 0.5 * sequence_sum_mean((scored.values - b_returns[rows]) ** 2, mask)
        entropy = sequence_sum_mean(scored.entropy, mask)
        loss = pg_loss + c.value_coef * value_loss - c.entropy_coef * entropy
        return loss, {"loss": loss, "pg_loss": pg_loss, "value_loss": value_loss,
                      "entropy": masked_mean(scored.entropy.detach(), mask)}  # logged per token
