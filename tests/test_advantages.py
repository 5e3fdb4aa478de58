"""Shared advantage maths against Python reference loops and closed forms."""
from __future__ import annotations

import math
import statistics

import pytest
import torch

from tokengym.agents.advantages import (
    MovingAverageBaseline,
    approx_kl_and_clipfrac,
    discounted_returns,
    explained_variance,
    gae,
    group_advantages,
    leave_one_out_baseline,
    masked_mean,
    masked_var,
    masked_whiten,
    n_step_returns,
    sequence_sum,
)

LENGTHS = [7, 1, 4, 7, 3]  # ragged episodes; rows 0 and 3 fill the buffer
T = 7


def ragged_batch(seed: int = 0):
    """Random rewards/values with NaN garbage after each row's end, and the prefix mask."""
    gen = torch.Generator().manual_seed(seed)
    B = len(LENGTHS)
    mask = torch.arange(T)[None, :] < torch.tensor(LENGTHS)[:, None]  # (B, T)
    rewards = torch.randn(B, T, generator=gen, dtype=torch.float64)  # (B, T)
    values = torch.randn(B, T, generator=gen, dtype=torch.float64)  # (B, T)
    last_values = torch.randn(B, generator=gen, dtype=torch.float64)  # (B,)
    rewards[~mask] = math.nan
    values[~mask] = math.nan
    return rewards, values, mask, last_values


def ref_gae_row(r, v, length, gamma, lam, last_value):
    """Textbook GAE for one episode of ``length`` valid steps (plain Python floats)."""
    adv, running = [0.0] * T, 0.0
    for t in reversed(range(length)):
        if t + 1 < length:
            next_v = v[t + 1]
        else:  # after the final valid step: bootstrap only if the row runs past the buffer
            next_v = last_value if length == T else 0.0
        delta = r[t] + gamma * next_v - v[t]
        running = delta + gamma * lam * running
        adv[t] = running
    returns = [adv[t] + v[t] if t < length else 0.0 for t in range(T)]
    return adv, returns


def ref_n_step_row(r, v, length, gamma, n, last_value):
    """Σ_{k<n} γ^k r_{t+k} + γ^n V(s_{t+n}), stopping at the episode end or the buffer end."""
    ext_v = list(v[:length]) + [0.0] * (T + 1 - length)  # V(s) for s = 0..T, 0 after the end
    if length == T:
        ext_v[T] = last_value
    out = [0.0] * T
    for t in range(length):
        g, k = 0.0, 0
        while k < n and t + k < T:
            g += gamma**k * (r[t + k] if t + k < length else 0.0)
            k += 1
        out[t] = g + gamma**k * ext_v[t + k]
    return out


@pytest.mark.parametrize("use_last", [False, True])
@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
@pytest.mark.parametrize("gamma", [0.0, 0.9, 0.99, 1.0])
def test_gae_matches_reference_loop(gamma, lam, use_last):
    rewards, values, mask, last_values = ragged_batch()
    advantages, returns = gae(rewards, values, mask, gamma, lam, last_values if use_last else None)
    for b, length in enumerate(LENGTHS):
        last = last_values[b].item() if use_last else 0.0
        ref_adv, ref_ret = ref_gae_row(rewards[b].tolist(), values[b].tolist(), length, gamma, lam, last)
        torch.testing.assert_close(advantages[b], torch.tensor(ref_adv, dtype=torch.float64))
        torch.testing.assert_close(returns[b], torch.tensor(ref_ret, dtype=torch.float64))


@pytest.mark.parametrize("gamma", [0.5, 1.0])
def test_gae_lambda_zero_is_one_step_td(gamma):
    rewards, values, mask, _ = ragged_batch(1)
    advantages, _ = gae(rewards, values, mask, gamma, lam=0.0)
    v = torch.where(mask, values, 0.0)
    next_v = torch.cat([v[:, 1:], torch.zeros(len(LENGTHS), 1, dtype=v.dtype)], dim=1)
    expected = torch.where(mask, rewards + gamma * next_v - v, 0.0)
    torch.testing.assert_close(advantages, expected)


@pytest.mark.parametrize("gamma", [0.7, 1.0])
def test_gae_lambda_one_is_monte_carlo_minus_value(gamma):
    rewards, values, mask, last_values = ragged_batch(2)
    advantages, returns = gae(rewards, values, mask, gamma, lam=1.0, last_values=last_values)
    mc = discounted_returns(rewards, mask, gamma)
    # rows that fill the buffer add the discounted bootstrap γ^{T-t} V(s_T)
    full = torch.tensor(LENGTHS) == T
    boot = torch.where(full, last_values, 0.0)[:, None] * gamma ** torch.arange(T, 0, -1, dtype=torch.float64)
    expected_returns = torch.where(mask, mc + boot, 0.0)
    torch.testing.assert_close(returns, expected_returns)
    torch.testing.assert_close(advantages, torch.where(mask, expected_returns - values, 0.0))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 1.0])
def test_discounted_returns_constant_reward_is_geometric_series(gamma):
    rewards = torch.ones(len(LENGTHS), T, dtype=torch.float64)
    mask = torch.arange(T)[None, :] < torch.tensor(LENGTHS)[:, None]
    returns = discounted_returns(rewards, mask, gamma)
    for b, length in enumerate(LENGTHS):
        for t in range(T):
            remaining = length - t
            if remaining <= 0:
                expected = 0.0
            elif gamma == 1.0:
                expected = float(remaining)
            else:
                expected = (1 - gamma**remaining) / (1 - gamma)
            assert returns[b, t].item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("use_last", [False, True])
@pytest.mark.parametrize("n", [1, 2, 3, 10])
@pytest.mark.parametrize("gamma", [0.9, 1.0])
def test_n_step_returns_match_reference_loop(gamma, n, use_last):
    rewards, values, mask, last_values = ragged_batch(3)
    returns = n_step_returns(rewards, values, mask, gamma, n, last_values if use_last else None)
    for b, length in enumerate(LENGTHS):
        last = last_values[b].item() if use_last else 0.0
        ref = ref_n_step_row(rewards[b].tolist(), values[b].tolist(), length, gamma, n, last)
        torch.testing.assert_close(returns[b], torch.tensor(ref, dtype=torch.float64))


def test_n_step_extremes_are_td_target_and_lambda_one_return():
    rewards, values, mask, last_values = ragged_batch(4)
    _, td_targets = gae(rewards, values, mask, 0.9, lam=0.0, last_values=last_values)
    torch.testing.assert_close(n_step_returns(rewards, values, mask, 0.9, 1, last_values), td_targets)
    _, mc_targets = gae(rewards, values, mask, 0.9, lam=1.0, last_values=last_values)
    torch.testing.assert_close(n_step_returns(rewards, values, mask, 0.9, T, last_values), mc_targets)
    with pytest.raises(ValueError, match="n must be"):
        n_step_returns(rewards, values, mask, 0.9, 0)


def test_masked_statistics_match_selected_entries():
    x, _, mask, _ = ragged_batch(5)  # NaN on invalid entries must not leak
    valid = x[mask]
    assert masked_mean(x, mask).item() == pytest.approx(valid.mean().item())
    assert masked_var(x, mask).item() == pytest.approx(valid.var().item())
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(valid.var(unbiased=False).item())
    row_means = masked_mean(x, mask, dim=1)
    for b, length in enumerate(LENGTHS):
        assert row_means[b].item() == pytest.approx(x[b, :length].mean().item())
    row_vars = masked_var(x, mask, dim=1)
    assert row_vars[0].item() == pytest.approx(x[0].var().item())

    whitened = masked_whiten(x, mask)
    assert masked_mean(whitened, mask).item() == pytest.approx(0.0, abs=1e-12)
    assert masked_var(whitened, mask).item() == pytest.approx(1.0, rel=1e-6)
    assert (whitened[~mask] == 0).all()
    kept_mean = masked_whiten(x, mask, shift_mean=False)
    assert masked_mean(kept_mean, mask).item() == pytest.approx(valid.mean().item())
    assert masked_var(kept_mean, mask).item() == pytest.approx(1.0, rel=1e-6)


def test_explained_variance_closed_forms():
    target, _, mask, _ = ragged_batch(6)
    assert explained_variance(target, target, mask).item() == pytest.approx(1.0)
    mean_prediction = torch.full_like(target, masked_mean(target, mask).item())
    assert explained_variance(mean_prediction, target, mask).item() == pytest.approx(0.0, abs=1e-12)
    # pred = mean + ½(target − mean): residual variance is ¼ of the target's, so EV = 3/4
    half = mean_prediction + 0.5 * (target - mean_prediction)
    assert explained_variance(half, target, mask).item() == pytest.approx(0.75)
    constant = torch.where(mask, 2.0, math.nan).double()
    assert math.isnan(explained_variance(target, constant, mask).item())


@pytest.mark.parametrize("scale", [True, False])
def test_group_advantages_formula(scale):
    scores = torch.tensor([1.0, 2.0, 4.0, 0.5, 0.5, 0.5, -1.0, 3.0, 0.0])
    advantages = group_advantages(scores, group_size=3, eps=1e-4, scale=scale)
    expected = []
    for g in range(3):
        group = scores[3 * g : 3 * g + 3].tolist()
        mean, std = statistics.mean(group), statistics.stdev(group)  # stdev: unbiased (n−1)
        expected += [(r - mean) / (std + 1e-4) if scale else r - mean for r in group]
    torch.testing.assert_close(advantages, torch.tensor(expected))
    assert (advantages[3:6] == 0).all()  # equal scores carry no signal


def test_group_helpers_reject_bad_shapes():
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(torch.zeros(5), group_size=2)
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        leave_one_out_baseline(torch.zeros(4), group_size=1)


def test_leave_one_out_baseline_formula():
    scores = torch.tensor([1.0, 2.0, 6.0, 3.0, -1.0, 0.0, 0.0, 5.0])
    baseline = leave_one_out_baseline(scores, group_size=4)
    expected = []
    for g in range(2):
        group = scores[4 * g : 4 * g + 4].tolist()
        expected += [(sum(group) - r) / 3 for r in group]
    torch.testing.assert_close(baseline, torch.tensor(expected))


def test_leave_one_out_baseline_per_step():
    scores = torch.tensor([[1.0, 0.5], [2.0, -1.0], [6.0, 0.0], [3.0, 4.0]])  # (B=4, T=2), one group of 4
    baseline = leave_one_out_baseline(scores, group_size=2)
    expected = torch.tensor([[2.0, -1.0], [1.0, 0.5], [3.0, 4.0], [6.0, 0.0]])  # groups of 2: the other row
    torch.testing.assert_close(baseline, expected)
    with pytest.raises(ValueError, match=r"\(B, T\) tensor with B a multiple of group_size=3"):
        leave_one_out_baseline(scores, group_size=3)


def test_sequence_sum_adds_each_rows_valid_tokens_only():
    rewards, _, mask, _ = ragged_batch()
    expected = torch.tensor([sum(rewards[b, :n].tolist()) for b, n in enumerate(LENGTHS)], dtype=torch.float64)
    torch.testing.assert_close(sequence_sum(rewards, mask), expected)  # the NaN garbage after each end is ignored


def test_moving_average_baseline_uses_only_past_batches():
    baseline = MovingAverageBaseline(momentum=0.75)
    first = baseline.update(torch.tensor([2.0, 6.0]))  # batch mean 4
    second = baseline.update(torch.tensor([0.0, 2.0]))  # batch mean 1
    assert first.item() == 0.0
    assert second.item() == pytest.approx(0.25 * 4)
    assert baseline.value.item() == pytest.approx(0.75 * 0.25 * 4 + 0.25 * 1)
    for bad in (1.0, -0.1, math.nan):
        with pytest.raises(ValueError, match="momentum"):
            MovingAverageBaseline(momentum=bad)


def test_approx_kl_and_clipfrac():
    ratios = torch.tensor([[1.5, 0.9, 1.0, 1.1]])
    logratio = ratios.log()
    mask = torch.tensor([[True, True, True, False]])
    approx_kl, clipfrac = approx_kl_and_clipfrac(logratio, mask, clip_eps=0.2)
    expected_kl = ((0.5 - math.log(1.5)) + (-0.1 - math.log(0.9)) + 0.0) / 3
    assert approx_kl.item() == pytest.approx(expected_kl, rel=1e-5)
    assert clipfrac.item() == pytest.approx(1 / 3)
