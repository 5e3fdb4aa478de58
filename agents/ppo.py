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

import math
from dataclasses import dataclass

import torch

from tokengym.agents.advantages import (
    approx_kl_and_clipfrac, explained_variance, gae, masked_mean, masked_whiten, sequence_sum_mean,
)
from tokengym.agents.base import Agent, AgentConfig, Rollout, check_range

__all__ = ["PPO", "PPOConfig", "ppo_clip_loss"]


@dataclass
class PPOConfig(AgentConfig):
    """PPO's settings; each field is validated in ``__post_init__``."""

    lr: float = 3e-4
    """Adam learning rate, > 0 (tuned on Sentiment-v0 over 3 seeds: BENCHMARKS.md, kl-sentiment)."""
    clip_eps: float = 0.2
    """Ratio clip ε, > 0."""
    gae_lambda: float = 0.95
    """GAE λ in [0, 1]."""
    n_epochs: int = 1
    """Passes over each batch, ≥ 1. One by default: at the language envs' scale, 4 epochs × 4
    minibatches over-step (Sentiment-v0: KL 19 nats and no gain at lr 3e-4; Calibration-v0:
    levelling off), so the default is one on-policy step per batch (BENCHMARKS.md)."""
    n_minibatches: int = 1
    """Minibatches per epoch (rows are split evenly), ≥ 1 and ≤ the batch size."""
    value_coef: float = 0.5
    """Weight of the value loss, ≥ 0."""
    value_clip: float | None = 0.2
    """Clip of the value change around the rollout values (None: unclipped), > 0."""
    entropy_coef: float = 0.0
    """Entropy bonus weight, ≥ 0."""
    whiten_advantages: bool = True
    """Normalise advantages to zero mean and unit variance over the batch's valid tokens."""
    target_kl: float | None = 0.1
    """Stop the epochs once approx KL(π_old‖π_θ) exceeds 1.5× this (None: never), > 0."""

    def __post_init__(self):
        super().__post_init__()
        check_range("clip_eps", self.clip_eps, 0, math.inf, low_open=True, high_open=True)
        check_range("gae_lambda", self.gae_lambda, 0, 1)
        check_range("n_epochs", self.n_epochs, 1, math.inf, integer=True, high_open=True)
        check_range("n_minibatches", self.n_minibatches, 1, math.inf, integer=True, high_open=True)
        check_range("value_coef", self.value_coef, 0, math.inf, high_open=True)
        check_range("entropy_coef", self.entropy_coef, 0, math.inf, high_open=True)
        if self.value_clip is not None:
            check_range("value_clip", self.value_clip, 0, math.inf, low_open=True, high_open=True)
        if self.target_kl is not None:
            check_range("target_kl", self.target_kl, 0, math.inf, low_open=True, high_open=True)


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

    def __init__(self, env, config: PPOConfig | None = None, policy=None):
        super().__init__(env, config, policy)
        if self.config.n_minibatches > self.env.num_envs:
            raise ValueError(
                f"n_minibatches={self.config.n_minibatches} exceeds the batch (num_envs={self.env.num_envs})"
            )

    def update(self, rollout: Rollout) -> dict[str, float]:
        c, b_mask = self.config, rollout.mask
        b_advantages, b_returns = gae(rollout.rewards, rollout.values, b_mask, c.gamma, c.gae_lambda)
        if c.whiten_advantages:
            b_advantages = masked_whiten(b_advantages, b_mask)
        stats: dict[str, list[float]] = {k: [] for k in ("pg_loss", "value_loss", "entropy", "approx_kl", "clipfrac")}
        for epoch in range(c.n_epochs):
            for mb, size in self.minibatches(c.n_minibatches):  # one optimizer step each (micro-batched by minibatch_size)
                mb_stats = self.minibatch_step(mb, lambda rows: self.loss(rollout, b_advantages, b_returns, rows), size)
                for key in stats:
                    stats[key].append(mb_stats[key])
            if c.target_kl is not None and stats["approx_kl"][-1] > 1.5 * c.target_kl:
                break  # early stop (cleanrl uses the same test per minibatch; we check per epoch)
        summary = {key: sum(v) / len(v) for key, v in stats.items()}
        summary["epochs"] = epoch + 1
        summary["explained_variance"] = float(explained_variance(rollout.values, b_returns, b_mask))
        return summary

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
        return loss, {"pg_loss": pg_loss, "value_loss": value_loss, "approx_kl": approx_kl, "clipfrac": clipfrac,
                      "entropy": masked_mean(scored.entropy.detach(), mask)}  # logged per token
