"""Agents refuse what they cannot drive, and non-finite rewards, losses and gradients never reach
the weights: each is skipped with a warning, and training stops after max_skipped_updates."""
from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch
from gymnasium.wrappers.vector import RecordEpisodeStatistics, TransformReward

import tokengym  # noqa: F401
from tokengym.agents import REINFORCE, REINFORCEConfig
from tokengym.agents.base import NonFiniteUpdateError


def calibration_env(num_envs=4, **kwargs):
    return gym.make_vec("tokengym/Calibration-v0", num_envs=num_envs, **kwargs)


def test_record_episode_statistics_sees_every_episode():
    envs = RecordEpisodeStatistics(calibration_env())
    agent = REINFORCE(envs, REINFORCEConfig(group_size=4))
    history = agent.learn(8)
    assert envs.episode_count == 8 and len(envs.return_queue) == 8
    assert list(envs.length_queue) == [3] * 8
    assert sum(envs.return_queue) / 8 == pytest.approx(sum(h["reward"] for h in history) / len(history))


def test_other_wrappers_are_refused_with_the_reason():
    with pytest.raises(TypeError, match="TransformReward: .* silently bypassed"):
        REINFORCE(TransformReward(calibration_env(), lambda r: 2 * r))


def test_same_step_autoreset_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="same-step.*one KV cache"):
        REINFORCE(calibration_env(autoreset_mode="same-step"))


def weights(agent):
    return [p.detach().clone() for p in agent.policy.parameters()]


def assert_unchanged_and_finite(before, agent):
    for a, p in zip(before, agent.policy.parameters()):
        assert torch.equal(a, p) and torch.isfinite(p).all()


class NaNReward:
    """Wraps the env's reward; row 1 gets NaN on every step."""

    def __init__(self, inner):
        self.inner = inner

    def reset(self, episodes):
        self.inner.reset(episodes)

    def __call__(self, step):
        out = self.inner(step)
        return {name: torch.where(torch.arange(len(v)) == 1, math.nan, v) for name, v in out.items()}


def inject(agent, where):
    if where == "loss":
        agent.loss = lambda *args, **kwargs: (next(agent.policy.parameters()).sum() * math.nan, {})
    elif where == "gradient":
        next(agent.policy.parameters()).register_hook(lambda grad: grad * math.inf)
    else:
        agent.env.reward = NaNReward(agent.env.reward)


@pytest.mark.parametrize("where, quantity", [
    ("loss", "loss = nan"), ("gradient", "gradient norm = "), ("reward", r"reward in rows \[1\]"),
])
def test_each_fault_skips_the_update_warns_then_stops(where, quantity):
    agent = REINFORCE(calibration_env(), REINFORCEConfig(lr=1e-2, max_skipped_updates=2, group_size=4))
    inject(agent, where)
    before = weights(agent)
    with pytest.warns(RuntimeWarning, match=f"iteration 1: non-finite {quantity}"):
        agent.train_iteration()
    assert_unchanged_and_finite(before, agent)
    with pytest.raises(NonFiniteUpdateError, match=f"2 consecutive updates skipped .*iteration 2: non-finite {quantity}"):
        with pytest.warns(RuntimeWarning):
            agent.train_iteration()
    assert_unchanged_and_finite(before, agent)


def test_a_finite_update_resets_the_count():
    agent = REINFORCE(calibration_env(), REINFORCEConfig(lr=1e-2, max_skipped_updates=2, group_size=4))
    loss = agent.loss
    agent.loss = lambda *args, **kwargs: (next(agent.policy.parameters()).sum() * math.nan, {})
    with pytest.warns(RuntimeWarning):
        agent.train_iteration()
    agent.loss = loss
    agent.train_iteration()
    assert agent.consecutive_skipped == 0 and agent.skipped_updates == 1


def test_max_skipped_updates_is_validated():
    with pytest.raises(ValueError, match="max_skipped_updates"):
        REINFORCEConfig(max_skipped_updates=0)


def test_load_restores_which_parameters_train(tmp_path):
    agent = REINFORCE(calibration_env(), REINFORCEConfig(group_size=4))
    frozen = [name for name, _ in agent.policy.named_parameters()][:2]
    for name, p in agent.policy.named_parameters():
        p.requires_grad_(name not in frozen)
    agent.save(tmp_path / "ckpt")
    resumed = REINFORCE.load(tmp_path / "ckpt", calibration_env())
    assert [n for n, p in resumed.policy.named_parameters() if not p.requires_grad] == frozen
    resumed.train_iteration()


def test_an_update_that_can_change_nothing_raises():
    agent = REINFORCE(calibration_env(), REINFORCEConfig(group_size=4))
    agent.policy.requires_grad_(False)
    with pytest.raises(RuntimeError, match="no trainable parameter"):
        agent.train_iteration()
