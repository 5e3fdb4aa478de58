"""Online DPO (Rafailov et al. 2023): its population optimum is p_RLKL at the same β (exact, by
enumerating Calibration-v0's 512 × 512 pairs), Bradley–Terry preferences from the agent's own
generator, the loss on the right member of each pair, and convergence to p_RLKL."""
from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch

import tokengym  # noqa: F401  (registers the envs)
from tokengym.agents import DPO, DPOConfig
from tokengym.agents.dpo import dpo_loss
from tokengym.envs import calibration
from tokengym.rewards.targets import task_score

pytestmark = pytest.mark.usefixtures("one_thread")

BETA = 0.5


def calibration_env(num_envs=8, **kwargs):
    return gym.make_vec("tokengym/Calibration-v0", num_envs=num_envs, **kwargs)


def expected_dpo_gradient(log_target: torch.Tensor, beta: float) -> torch.Tensor:
    """(512,) gradient of the expected online-DPO loss at ``π = exp(log_target)`` with respect to
    the sequence-level logits θ (π_θ = softmax(θ): a parametrisation that can represent p_RLKL
    exactly, which the tiny GPT-2 cannot). Pairs y_1, y_2 ~ π_θ (not differentiated: online
    sampling), y_1 preferred with probability σ(R_1 − R_2)."""
    ref = calibration.sequence_logprobs(calibration.build_reference_model()).double()  # (512,)
    rewards = calibration.calibration_reward(calibration.all_sequences()).double()  # (512,)
    theta = log_target.clone().requires_grad_(True)
    log_pi = theta.log_softmax(0)
    logratios = log_pi - ref  # (512,) h(y)
    first, second = logratios[:, None].expand(512, 512), logratios[None, :].expand(512, 512)
    pair_probability = (log_pi[:, None] + log_pi[None, :]).exp().detach()  # (512, 512) π(y_1)π(y_2)
    first_wins = torch.sigmoid(rewards[:, None] - rewards[None, :])  # (512, 512) Bradley–Terry
    loss = pair_probability * (first_wins * dpo_loss(first, second, beta) + (1 - first_wins) * dpo_loss(second, first, beta))
    return torch.autograd.grad(loss.sum(), theta)[0]


def test_the_expected_online_dpo_gradient_vanishes_exactly_at_p_rlkl():
    ref = calibration.sequence_logprobs(calibration.build_reference_model()).double()
    at_optimum = expected_dpo_gradient(calibration.optimal_policy(ref, BETA).double(), BETA)
    at_reference = expected_dpo_gradient(ref, BETA)
    at_other_beta = expected_dpo_gradient(calibration.optimal_policy(ref, 0.7).double(), BETA)
    assert at_reference.norm() > 1e-2 and at_other_beta.norm() > 1e-3  # elsewhere it pulls
    assert at_optimum.norm() < 1e-6 * at_reference.norm(), float(at_optimum.norm())


def test_dpo_loss_closed_form():
    h_w = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64, requires_grad=True)
    h_l = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    loss = dpo_loss(h_w, h_l, beta=0.5)
    expected = [math.log(2), math.log1p(math.exp(-0.5)), math.log1p(math.exp(1.5))]  # −log σ(β·Δh)
    assert loss.tolist() == pytest.approx(expected, rel=1e-12)
    (grad,) = torch.autograd.grad(loss.sum(), h_w)
    assert all(g < 0 for g in grad.tolist())  # descending the loss raises the chosen one's log-ratio


def test_preferences_are_bradley_terry_draws_from_the_agents_generator():
    agent = DPO(calibration_env(num_envs=8), DPOConfig())
    gaps = torch.tensor([-2.0, -0.5, 0.0, 1.0, 3.0], dtype=torch.float64).repeat_interleave(4000)  # r_1 − r_2
    scores = torch.stack([gaps, torch.zeros_like(gaps)], dim=1).reshape(-1)  # (2N,) pairs (r_1, r_2)
    state = agent.generator.get_state()
    draws = agent.prefer_first(scores).view(5, 4000).double()
    for gap, frequency in zip([-2.0, -0.5, 0.0, 1.0, 3.0], draws.mean(1).tolist()):
        p = 1 / (1 + math.exp(-gap))
        assert abs(frequency - p) < 4 * math.sqrt(p * (1 - p) / 4000), (gap, frequency, p)  # 4 standard errors
    agent.generator.set_state(state)
    assert torch.equal(agent.prefer_first(scores).view(5, 4000).double(), draws)  # the generator decides them


def test_the_loss_puts_each_pairs_chosen_member_first():
    agent = DPO(calibration_env(num_envs=8), DPOConfig(beta=BETA, lr=1e-2, preferences="sampled"))
    agent.learn(8)  # π_θ ≠ π_ref
    rollout = agent.collect()
    first_wins = torch.tensor([True, False, False, True])
    loss, stats = agent.loss(rollout, first_wins, torch.arange(8))
    scored = agent.policy.score(rollout.input_ids, rollout.attention_mask, rollout.prompt_width).logprobs
    h = (scored - rollout.ref_logprobs).sum(-1).detach().tolist()  # (8,) sequence log-ratios
    expected = [
        math.log1p(math.exp(-BETA * ((h[2 * k] - h[2 * k + 1]) if wins else (h[2 * k + 1] - h[2 * k]))))
        for k, wins in enumerate(first_wins.tolist())
    ]
    assert loss.item() == pytest.approx(sum(expected) / 4, rel=1e-5)
    assert len({round(x, 6) for x in h}) > 1  # the pairs differ: the order matters


def test_micro_batched_dpo_update_equals_the_full_batch_update():
    """minibatch_size=2 (pairs whole) accumulates into the step of one pass over all 8 episodes."""
    def trained(minibatch_size):
        agent = DPO(calibration_env(num_envs=8), DPOConfig(beta=BETA, minibatch_size=minibatch_size))
        agent.optimizer = torch.optim.SGD(agent.policy.parameters(), lr=0.5)  # see test_agents' micro-batch test
        for _ in range(3):
            agent.train_iteration()
        return agent

    full, micro = trained(None), trained(2)
    start = DPO(calibration_env(num_envs=8), DPOConfig()).policy.parameters()
    moved = False
    for a, b, s in zip(full.policy.parameters(), micro.policy.parameters(), start):
        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-4)
        moved |= not torch.allclose(a, s)
    assert moved


def test_expected_preferences_are_the_drawn_loss_averaged_over_every_label():
    """preferences="expected": each pair's soft label is σ(r_1 − r_2) from its own two scores, and
    the loss equals the drawn loss averaged over all 2⁴ labelings of the 4 pairs, each weighted by
    its Bradley–Terry probability."""
    agent = DPO(calibration_env(num_envs=8), DPOConfig(beta=BETA, lr=1e-2, preferences="expected"))
    agent.learn(8)  # π_θ ≠ π_ref
    rollout = agent.collect()
    scores = task_score(rollout.components).double()
    labels = {}
    loss_of = agent.loss

    def spy(rollout, first_prob, rows):
        labels["q"] = first_prob
        return loss_of(rollout, first_prob, rows)

    agent.loss = spy
    state = agent.generator.get_state()
    agent.update(rollout)
    assert torch.equal(agent.generator.get_state(), state)  # nothing drawn
    q = torch.sigmoid(scores[0::2] - scores[1::2])
    assert torch.allclose(labels["q"], q, rtol=0, atol=1e-12) and ((q - 0.5).abs() > 0.1).any()

    expected_loss = loss_of(rollout, q, torch.arange(8))[0].item()
    averaged = 0.0
    for bits in range(16):
        first_wins = torch.tensor([bool(bits >> k & 1) for k in range(4)])
        weight = torch.where(first_wins, q, 1 - q).prod().item()
        averaged += weight * loss_of(rollout, first_wins, torch.arange(8))[0].item()
    assert expected_loss == pytest.approx(averaged, rel=1e-6)


@pytest.mark.parametrize("field, value, match", [
    ("preferences", "hard", r"preferences must be one of"),
    ("group_size", 4, r"group_size must be an integer in \[2, 2\]"),
    ("beta", 0.0, "beta must be a number > 0"),
    ("minibatch_size", 3, "minibatch_size must be an even integer"),
])
def test_invalid_dpo_configs_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        DPOConfig(**{field: value})


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("preferences", ["sampled", "expected"])
def test_online_dpo_converges_to_p_rlkl(preferences, seed):
    """KL(π_θ‖p_RLKL) at β = 0.5 must fall to ≤ 0.3× its start, averaged over iterations 110, 115
    and 120 of 256 episodes (128 pairs) at lr 2e-3. Measured on seeds 0-2 (3-6 s a run): drawn
    labels 0.18×, 0.12×, 0.22×, slower and noisier than f-DPG (a pair of equal reward carries a
    coin-flip label); expected labels 0.024×, 0.021×, 0.028×."""
    ref = calibration.sequence_logprobs(calibration.build_reference_model()).double()
    target = calibration.optimal_policy(ref, BETA)
    start = float(calibration.kl_divergence(ref, target))
    agent = DPO(calibration_env(num_envs=256), DPOConfig(beta=BETA, lr=2e-3, seed=seed, preferences=preferences))
    ends = []
    for i in range(1, 121):
        agent.train_iteration()
        if i in (110, 115, 120):
            ends.append(float(calibration.kl_divergence(calibration.sequence_logprobs(agent.policy.model).double(), target)))
    assert start > 0.4
    assert sum(ends) / 3 < 0.3 * start, (seed, start, ends)
