"""Property-based tests (hypothesis): env invariants under random prompts, stop tokens and action
sequences, and the advantage functions against straightforward Python loops on random shapes."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import build_tiny_lm
from hypothesis import given, settings
from hypothesis import strategies as st

import tokengym  # noqa: F401
from tokengym.agents.advantages import (
    discounted_returns, gae, group_advantages, leave_one_out_baseline, n_step_returns,
)

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
V = 32
MODEL = build_tiny_lm(vocab_size=V)


class Ones:
    """Reward 1 on every row at every step, acted or not. On a row that ended, the env keeps the
    step reward at exactly 0 and reports the value as a late payment (``info["late_rewards"]``)."""

    def reset(self, episodes):
        pass

    def __call__(self, step):
        return {"one": torch.ones(step.actions.shape[0])}


@st.composite
def episodes(draw):
    prompts = draw(st.lists(st.lists(st.integers(0, V - 1), min_size=1, max_size=4), min_size=1, max_size=4))
    stop = draw(st.lists(st.integers(0, V - 1), max_size=2, unique=True))
    T = draw(st.integers(1, 5))
    B = draw(st.integers(1, 4))
    # actions biased towards the stop tokens, so that episodes end at different steps
    token = st.one_of(st.sampled_from(stop), st.integers(0, V - 1)) if stop else st.integers(0, V - 1)
    actions = draw(st.lists(st.lists(token, min_size=B, max_size=B), min_size=T, max_size=T))
    return prompts, stop, T, B, actions, draw(st.integers(0, 2**16))


def make(num_envs, prompts, stop, T):
    return gym.make_vec("tokengym/Custom-v0", num_envs=num_envs, model=MODEL, prompts=prompts,
                        reward=Ones(), max_new_tokens=T, stop_token_ids=stop)


@SETTINGS
@given(episodes())
def test_env_invariants(case):
    prompts, stop, T, B, actions, seed = case
    envs = make(B, prompts, stop, T)
    obs, _ = envs.reset(seed=seed)
    P = envs.prompt_width
    lengths = obs["attention_mask"][:, :P].sum(-1)
    assert set(lengths.tolist()) <= {len(p) for p in prompts}
    assert (obs["attention_mask"][:, P:] == 0).all()
    alive = [True] * B
    length = [0] * B
    late = [0] * B
    for t, row_actions in enumerate(actions):
        obs, reward, terminated, truncated, info = envs.step(torch.tensor(row_actions))
        for b, a in enumerate(row_actions):
            acted = alive[b]
            length[b] += acted
            stopped = acted and a in stop
            hit_limit = acted and not stopped and length[b] == T
            # T is the MDP's horizon: reaching it terminates (docs of TokenVectorEnv, Episode End)
            assert bool(terminated[b]) == (stopped or hit_limit) and not bool(truncated[b])
            assert bool(info["hit_max_new_tokens"][b]) == hit_limit
            term, trunc = stopped, hit_limit
            assert float(reward[b]) == (1.0 if acted else 0.0)  # zero step reward after the end
            assert float(info["late_rewards"][b]) == (0.0 if acted else 1.0)  # what it paid there is late
            late[b] += not acted
            assert int(obs["attention_mask"][b, P + t]) == acted
            if acted:
                assert int(obs["input_ids"][b, P + t]) == a
            alive[b] = acted and not (term or trunc)
        assert envs.response_lengths.tolist() == length
        assert info["reward_components"]["one"].tolist() == [float(n + m) for n, m in zip(length, late)]
        # the mask of the response is a prefix: no valid token after an invalid one
        response_mask = obs["attention_mask"][:, P:]
        assert (response_mask[:, 1:] <= response_mask[:, :-1]).all()
        if not any(alive):
            assert bool(envs.all_done)
            break
    assert not any(alive)  # T steps always end every episode


@SETTINGS
@given(episodes())
def test_vector_env_equals_the_single_env(case):
    prompts, stop, T, _, actions, seed = case
    vector = make(1, prompts, stop, T)
    single = gym.make("tokengym/Custom-v0", model=MODEL, prompts=prompts, reward=Ones(), max_new_tokens=T,
                      stop_token_ids=stop)
    v_obs, _ = vector.reset(seed=seed)
    s_obs, _ = single.reset(seed=seed)
    assert np.array_equal(v_obs["input_ids"][0].numpy(), s_obs["input_ids"])
    for row_actions in actions:
        v_obs, v_r, v_term, v_trunc, _ = vector.step(torch.tensor(row_actions[:1]))
        s_obs, s_r, s_term, s_trunc, _ = single.step(row_actions[0])
        assert np.array_equal(v_obs["input_ids"][0].numpy(), s_obs["input_ids"])
        assert np.array_equal(v_obs["attention_mask"][0].numpy(), s_obs["attention_mask"])
        assert (float(v_r[0]), bool(v_term[0]), bool(v_trunc[0])) == (s_r, s_term, s_trunc)
        if s_term or s_trunc:
            break


# ------------------------------------------------------------------------------- advantages
@st.composite
def batches(draw):
    B, T = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    lengths = draw(st.lists(st.integers(0, T), min_size=B, max_size=B))
    floats = st.floats(-3, 3, allow_nan=False, width=32)
    rewards = draw(st.lists(st.lists(floats, min_size=T, max_size=T), min_size=B, max_size=B))
    values = draw(st.lists(st.lists(floats, min_size=T, max_size=T), min_size=B, max_size=B))
    last = draw(st.lists(floats, min_size=B, max_size=B))
    gamma, lam = draw(st.sampled_from([0.0, 0.5, 0.9, 1.0])), draw(st.sampled_from([0.0, 0.5, 0.95, 1.0]))
    return lengths, rewards, values, last, gamma, lam, draw(st.integers(1, T + 1))


def as_tensors(lengths, rewards, values, last):
    T = len(rewards[0])
    mask = torch.tensor([[t < n for t in range(T)] for n in lengths])
    return (torch.tensor(rewards, dtype=torch.float64), torch.tensor(values, dtype=torch.float64), mask,
            torch.tensor(last, dtype=torch.float64))


def value_after(values, last, n, T, t):
    """V(s_t) as the env defines it: 0 after the end, ``last`` after the buffer if still running."""
    if t < n:
        return values[t]
    return last if (t == T and n == T) else 0.0


@SETTINGS
@given(batches())
def test_discounted_returns_and_gae_match_python_loops(case):
    lengths, rewards, values, last, gamma, lam, _ = case
    r, v, mask, last_v = as_tensors(lengths, rewards, values, last)
    got_returns = discounted_returns(r, mask, gamma)
    got_adv, got_targets = gae(r, v, mask, gamma, lam, last_values=last_v)
    T = len(rewards[0])
    for b, n in enumerate(lengths):
        for t in range(T):
            if t >= n:
                assert got_returns[b, t] == 0 and got_adv[b, t] == 0 and got_targets[b, t] == 0
                continue
            expected = sum(gamma ** (k - t) * rewards[b][k] for k in range(t, n))
            assert float(got_returns[b, t]) == pytest.approx(expected, abs=1e-9)
            delta = lambda k: rewards[b][k] + gamma * value_after(values[b], last[b], n, T, k + 1) - values[b][k]  # noqa: E731
            advantage = sum((gamma * lam) ** (k - t) * delta(k) for k in range(t, n))
            assert float(got_adv[b, t]) == pytest.approx(advantage, abs=1e-9)
            assert float(got_targets[b, t]) == pytest.approx(advantage + values[b][t], abs=1e-9)


@SETTINGS
@given(batches())
def test_n_step_returns_match_a_python_loop(case):
    lengths, rewards, values, last, gamma, _, steps = case
    r, v, mask, last_v = as_tensors(lengths, rewards, values, last)
    got = n_step_returns(r, v, mask, gamma, steps, last_values=last_v)
    T = len(rewards[0])
    for b, n in enumerate(lengths):
        for t in range(T):
            if t >= n:
                assert got[b, t] == 0
                continue
            end = min(t + steps, T)
            expected = sum(gamma ** (k - t) * (rewards[b][k] if k < n else 0.0) for k in range(t, end))
            expected += gamma ** (end - t) * value_after(values[b], last[b], n, T, end)
            assert float(got[b, t]) == pytest.approx(expected, abs=1e-9)


@SETTINGS
@given(st.integers(2, 5), st.integers(1, 4), st.data())
def test_group_advantages_and_leave_one_out_match_python_loops(G, groups, data):
    scores = data.draw(st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=G * groups, max_size=G * groups))
    eps, scale = data.draw(st.sampled_from([1e-4, 0.1])), data.draw(st.booleans())
    s = torch.tensor(scores, dtype=torch.float64)
    got_adv, got_loo = group_advantages(s, G, eps, scale), leave_one_out_baseline(s, G)
    for g in range(groups):
        block = scores[g * G : (g + 1) * G]
        mean = sum(block) / G
        std = (sum((x - mean) ** 2 for x in block) / (G - 1)) ** 0.5
        for i, x in enumerate(block):
            expected = (x - mean) / (std + eps) if scale else x - mean
            assert float(got_adv[g * G + i]) == pytest.approx(expected, abs=1e-7)
            others = [y for j, y in enumerate(block) if j != i]
            assert float(got_loo[g * G + i]) == pytest.approx(sum(others) / (G - 1), abs=1e-9)
