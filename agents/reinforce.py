"""REINFORCE (Williams 1992) with reward-to-go and an optional baseline.

``∇J = E[Σ_t ∇log π_θ(a_t|s_t) (G_t − b)]`` with ``G_t = Σ_{k≥t} γ^{k−t} r_k``: the log-derivative
trick, where only the rewards after ``t`` multiply the score of action ``t``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from tokengym.agents.advantages import (
    MovingAverageBaseline, discounted_returns, leave_one_out_baseline, masked_mean, sequence_sum_mean,
)
from tokengym.agents.base import Agent, AgentConfig
from tokengym.agents.rollout import Rollout
from tokengym.lm.config import ConfigError, bounded, one_of

__all__ = ["REINFORCE", "REINFORCEConfig"]

BASELINES = ("none", "moving-average", "leave-one-out")


@dataclass
class REINFORCEConfig(AgentConfig):
    """REINFORCE's settings; each field's range is checked on construction."""

    lr: float = bounded(1.25e-4, above=0)
    """Adam learning rate (for 8,192 episodes in batches of 64 on Sentiment-v0: BENCHMARKS.md, kl-sentiment)."""
    group_size: int | None = bounded(None, at_least=1, integer=True)
    """Samples per prompt, compared by the leave-one-out baseline (≥ 2 for it; must divide the batch)
    (default: 16 with the leave-one-out baseline, 1 (distinct prompts) with another)."""
    baseline: str = one_of("leave-one-out", BASELINES)
    """'leave-one-out' (RLOO per step; needs group_size ≥ 2), 'moving-average' (EMA of past returns) or 'none'."""
    baseline_momentum: float = bounded(0.9, at_least=0, below=1)
    """EMA weight of the old value for the moving-average baseline."""
    entropy_coef: float = bounded(0.0, at_least=0)
    """Entropy bonus weight."""

    def __post_init__(self):
        if self.group_size is None and self.baseline in BASELINES:
            self.group_size = 16 if self.baseline == "leave-one-out" else 1
        super().__post_init__()
        if self.baseline == "leave-one-out" and self.group_size < 2:
            raise ConfigError("group_size", self.group_size, "an integer ≥ 2 with baseline 'leave-one-out'")

    @property
    def uses_groups(self) -> bool:
        return self.baseline == "leave-one-out"


class REINFORCE(Agent):
    """Monte-Carlo policy gradient with reward-to-go and an optional baseline.

    Loss: ``−mean_b Σ_t log π_θ(a_t|s_t) (G_t − b) − c_H · mean_b Σ_t H_t``, summed over each
    sequence's tokens and averaged over sequences (the convention of ``agents/advantages.py``), so
    the gradient is the textbook estimator of ``∇E[Σ_t γ^t r_t]`` (for γ = 1).

    Baselines (never a function of the row's own sample, so the estimate stays unbiased):
    ``"moving-average"`` (an EMA of earlier batches' returns), ``"leave-one-out"`` (RLOO, per step:
    the mean reward-to-go of the other G−1 samples of the same prompt at the same step, an ended
    sample counting with its last step's), or ``"none"``. Per step matters under a KL-shaped reward:
    an episode-return baseline at every step leaves the KL already paid before step ``t`` in
    ``G_t − b``, a constant push towards whatever was sampled late in the episode.
    """

    config_class = REINFORCEConfig

    def __init__(self, env, config: REINFORCEConfig | None = None, policy=None, sharding=None):
        super().__init__(env, config, policy, sharding)
        self.moving_average = MovingAverageBaseline(self.config.baseline_momentum)

    def baseline(self, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) baseline for the reward-to-go ``returns`` (B, T); never depends on the row's own sample."""
        if self.config.baseline == "moving-average":
            return self.moving_average.update(returns[mask]).expand_as(returns)
        if self.config.baseline == "leave-one-out":
            last_step = (mask.sum(-1, keepdim=True) - 1).clamp(min=0)  # (B, 1)
            steps = torch.arange(returns.shape[1], device=returns.device).expand_as(returns)  # (B, T)
            held = returns.gather(1, torch.minimum(steps, last_step))  # (B, T) G_t, held at its last value once ended
            return leave_one_out_baseline(held, self.config.group_size)
        return torch.zeros_like(returns)

    def advantages(self, rollout: Rollout) -> torch.Tensor:
        """(B, T) reward-to-go minus the baseline (a moving average takes this batch in once)."""
        returns = discounted_returns(rollout.rewards, rollout.mask, self.config.gamma)  # (B, T)
        return torch.where(rollout.mask, returns - self.baseline(returns, rollout.mask), 0.0)  # (B, T)

    def loss(self, rollout: Rollout, advantages: torch.Tensor | None = None, rows: torch.Tensor | None = None):
        """The surrogate whose gradient is the REINFORCE estimate, as a mean over episodes ``rows``
        (default: all; also used by the gradient test), and its diagnostics."""
        advantages = self.advantages(rollout) if advantages is None else advantages
        rows = torch.arange(rollout.mask.shape[0], device=rollout.mask.device) if rows is None else rows
        mask = rollout.mask[rows]
        scored = self.policy.score(rollout.input_ids[rows], rollout.attention_mask[rows], rollout.prompt_width)
        pg_loss = -sequence_sum_mean(scored.logprobs * advantages[rows], mask)
        entropy = sequence_sum_mean(scored.entropy, mask)
        loss = pg_loss - self.config.entropy_coef * entropy
        return loss, {"loss": loss, "pg_loss": pg_loss, "entropy": masked_mean(scored.entropy.detach(), mask)}

    def update(self, rollout: Rollout) -> dict[str, float]:
        b_advantages = self.advantages(rollout)  # (B, T)
        return self.batch_step(lambda rows: self.loss(rollout, b_advantages, rows))

    def extra_state(self) -> dict:
        return {"moving_average": torch.as_tensor(self.moving_average.value)}

    def load_extra_state(self, state: dict) -> None:
        self.moving_average.value = state["moving_average"]
