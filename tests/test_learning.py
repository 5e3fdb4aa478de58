"""Learning on language: an agent raises the Sentiment-v0 reward of the embedded model by a margin
that sampling noise cannot explain (the four-agent comparison lives in the quick benchmark suite)."""
from __future__ import annotations

import math

import gymnasium as gym
import torch

import tokengym  # noqa: F401
from tokengym.agents import REINFORCE, REINFORCEConfig


def evaluate(agent, batches=2) -> torch.Tensor:
    """Episode returns of fresh rollouts (no update)."""
    return torch.cat([agent.collect().scores for _ in range(batches)])


def test_reinforce_raises_the_sentiment_reward_beyond_noise():
    envs = gym.make_vec("tokengym/Sentiment-v0", num_envs=32)
    agent = REINFORCE(envs, REINFORCEConfig(lr=1e-3, seed=0))
    before = evaluate(agent)  # (64,)
    agent.learn(32 * 16)
    after = evaluate(agent)  # (64,)
    standard_error = math.sqrt(before.var() / len(before) + after.var() / len(after))
    gain = (after.mean() - before.mean()).item()
    assert gain > max(0.3, 5 * standard_error), (before.mean().item(), after.mean().item(), standard_error)
