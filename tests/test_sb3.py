"""Third-party agents: stable-baselines3 drives the single env through its own DummyVecEnv, and the
KL-shaped reward stays exact without log-probs, through a policy model bound explicitly."""
from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

import tokengym  # noqa: F401
from tokengym.agents import Policy
from tokengym.envs import calibration

pytest.importorskip("stable_baselines3")
from stable_baselines3.common.vec_env import DummyVecEnv  # noqa: E402


@pytest.fixture(autouse=True)
def sb3_logs_in_tmp_path(tmp_path, monkeypatch):
    """stable-baselines3's logger makes a folder even at verbose=0: in the test's, not in /tmp."""
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path))


def perturbed_policy_model(seed=1, scale=0.5):
    model = copy.deepcopy(calibration.build_reference_model())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return model


def test_kl_shaped_fallback_matches_the_logprob_channel():
    """Same actions: rewards from env.step(actions, logprobs=...) equal the fallback's through SB3."""
    beta, n = 0.3, 6
    policy_model = perturbed_policy_model()
    policy = Policy.from_pretrained(copy.deepcopy(policy_model))

    # Our path: the agent hands its log-probs to the vector env.
    envs = gym.make_vec("tokengym/Calibration-v0", num_envs=n, reward="kl-shaped", reward_kwargs={"beta": beta})
    obs, _ = envs.reset(seed=0)
    policy.begin(obs["input_ids"][:, :1], obs["attention_mask"][:, :1].bool())
    actions, channel_rewards = [], []
    generator = torch.Generator().manual_seed(0)
    for t in range(3):
        step = policy.act(generator)
        _, rewards, _, _, _ = envs.step(step.actions, logprobs=step.logprobs)
        actions.append(step.actions.numpy())
        channel_rewards.append(rewards.numpy())
        policy.advance(step.actions)

    # SB3's path: its own DummyVecEnv of single envs, no log-probs, a bound policy model instead.
    def make():
        return gym.make("tokengym/Calibration-v0", reward="kl-shaped",
                        reward_kwargs={"beta": beta, "policy_model": policy_model})

    vec = DummyVecEnv([make] * n)
    vec.reset()
    for t in range(3):
        _, rewards, dones, infos = vec.step(actions[t])
        np.testing.assert_allclose(rewards, channel_rewards[t], atol=1e-5)
    assert dones.all() and "reward_components" in infos[0]
    # the KL penalty is really there: the policy differs from π_ref
    assert np.abs(np.stack(channel_rewards)).sum() > 0.1


@pytest.mark.slow
def test_sb3_ppo_learns_on_calibration():
    """SB3 PPO over the single env raises E[R] from π_ref-level play towards the maximum 3."""
    from stable_baselines3 import PPO as SB3PPO

    vec = DummyVecEnv([lambda: gym.make("tokengym/Calibration-v0")] * 8)
    model = SB3PPO("MultiInputPolicy", vec, n_steps=48, batch_size=96, learning_rate=3e-3, seed=0, verbose=0, device="cpu")

    def mean_return(episodes=64):
        total, done_count = 0.0, 0
        obs = vec.reset()
        while done_count < episodes:
            action, _ = model.predict(obs, deterministic=False)
            obs, rewards, dones, _ = vec.step(action)
            total += rewards[dones].sum()
            done_count += int(dones.sum())
        return total / done_count

    before = mean_return()
    model.learn(total_timesteps=6_000)
    after = mean_return()
    assert after > before + 1.0, (before, after)


def test_sb3_ppo_does_not_bootstrap_past_the_horizon():
    """max_new_tokens ends the MDP: SB3's value target at each episode's final step is the true
    final reward R(y), with no γ·V(s_T) added (as it would be for a `truncated` time limit)."""
    from stable_baselines3 import PPO as SB3PPO

    vec = DummyVecEnv([lambda: gym.make("tokengym/Calibration-v0")] * 4)
    model = SB3PPO("MultiInputPolicy", vec, n_steps=48, batch_size=64, gamma=1.0, gae_lambda=1.0,
                   learning_rate=3e-3, seed=0, verbose=0, device="cpu")
    model.learn(total_timesteps=4 * 48 * 3)  # the buffer keeps the last rollout, returns computed
    buffer = model.rollout_buffer
    starts = buffer.episode_starts  # (n_steps, n_envs) 1 where an episode began
    n_steps = buffer.buffer_size
    # Training flattened these env-major (SB3's swap_and_flatten): row e * n_steps + t.
    input_ids = buffer.observations["input_ids"].reshape(vec.num_envs, n_steps, -1)  # prompt [0] + tokens so far
    actions = buffer.actions.reshape(vec.num_envs, n_steps)
    returns = buffer.returns.reshape(vec.num_envs, n_steps)
    finals = 0
    for t in range(n_steps - 1):
        for e in range(vec.num_envs):
            if not starts[t + 1, e]:
                continue  # not the last step of an episode
            tokens = torch.tensor([[*input_ids[e, t, 1:3].astype(int), int(actions[e, t])]])
            true_return = float(calibration.calibration_reward(tokens)[0])  # holistic: all of it at the end
            assert buffer.rewards[t, e] == true_return
            assert returns[e, t] == pytest.approx(true_return, abs=1e-6), (t, e)
            finals += 1
    assert finals >= 40
    assert np.abs(buffer.values).max() > 0.1  # a bootstrap would have had something to add
