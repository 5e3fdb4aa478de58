"""Synchronous advantage actor-critic (Mnih et al. 2016) on token episodes.

A learned ``V(s_t)`` gives the advantage, either GAE(γ, λ) (``δ_t = r_t + γV(s_{t+1}) − V(s_t)``,
``A_t = δ_t + γλA_{t+1}``) or the n-step target minus ``V(s_t)``; one gradient step per batch on
policy loss + value MSE − entropy bonus. Every term is summed over a sequence's tokens and
averaged over sequences (``agents/advantages.py``), so ``value_coef`` and ``entropy_coef`` mean
the same as in PPO and REINFORCE.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tokengym.agents.advantages import explained_variance, gae, masked_mean, n_step_returns, sequence_sum_mean
from tokengym.agents.base import Agent, AgentConfig
from tokengym.agents.rollout import Rollout
from tokengym.lm.config import check_range

__all__ = ["A2C", "A2CConfig"]


@dataclass
class A2CConfig(AgentConfig):
    """A2C's settings; each field is validated in ``__post_init__``."""

    lr: float = 3e-4
    """Adam learning rate, > 0 (tuned on Sentiment-v0 over 3 seeds: BENCHMARKS.md, kl-sentiment)."""
    gae_lambda: float = 0.95
    """GAE λ in [0, 1]; ignored when ``n_steps`` is set."""
    n_steps: int | None = None
    """Use n-step returns ``Σ_{k<n} γ^k r_{t+k} + γ^n V(s_{t+n})`` instead of GAE (n ≥ 1)."""
    value_coef: float = 0.5
    """Weight of the value MSE, ≥ 0."""
    entropy_coef: float = 0.0
    """Entropy bonus weight, ≥ 0."""

    def __post_init__(self):
        super().__post_init__()
        check_range("gae_lambda", self.gae_lambda, 0, 1)
        if self.n_steps is not None:
            check_range("n_steps", self.n_steps, 1, math.inf, integer=True, high_open=True)
        check_range("value_coef", self.value_coef, 0, math.inf, high_open=True)
        check_range("entropy_coef", self.entropy_coef, 0, math.inf, high_open=True)


class A2C(Agent):
    """Advantage actor-critic: one gradient step per batch on
    ``−Σ_t log π(a_t|s_t) A_t + c_V · ½ Σ_t (V(s_t) − R_t)² − c_H · Σ_t H_t`` (each sum over a
    sequence's tokens, averaged over sequences), with ``A_t`` from GAE(γ, λ) or n-step returns."""

    config_class = A2CConfig
    needs_values = True

    def update(self, rollout: Rollout) -> dict[str, float]:
        config, mask = self.config, rollout.mask
        if config.n_steps is None:
            advantages, returns = gae(rollout.rewards, rollout.values, mask, config.gamma, config.gae_lambda)
        else:
            returns = n_step_returns(rollout.rewards, rollout.values, mask, config.gamma, config.n_steps)
            advantages = returns - rollout.values  # (B, T)

        def loss_of(rows):  # the mean over `rows` of each episode's terms (chunks accumulate)
            scored = self.policy.score(rollout.input_ids[rows], rollout.attention_mask[rows], rollout.prompt_width)
            pg_loss = -sequence_sum_mean(scored.logprobs * advantages[rows], mask[rows])
            value_loss = 0.5 * sequence_sum_mean((scored.values - returns[rows]) ** 2, mask[rows])
            entropy = sequence_sum_mean(scored.entropy, mask[rows])
            loss = pg_loss + config.value_coef * value_loss - config.entropy_coef * entropy
            return loss, {"pg_loss": pg_loss, "value_loss": value_loss,
                          "entropy": masked_mean(scored.entropy.detach(), mask[rows])}  # logged per token

        stats = self.minibatch_step(torch.arange(mask.shape[0], device=mask.device), loss_of)
        return {**stats, "explained_variance": float(explained_variance(rollout.values, returns, mask))}
