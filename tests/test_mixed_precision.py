"""Half precision: float16 autocast trains through a gradient scaler (small gradients do not
underflow to zero, overflows back the scale off, its state resumes bit-identically), and under
bfloat16 autocast π_ref and the policy are compared like for like (the KL at initialisation is 0,
the first PPO ratio is 1)."""
from __future__ import annotations

import gymnasium as gym
import pytest
import torch

import tokengym  # noqa: F401  (registers the envs)
from tokengym.agents import PPO, REINFORCE, Policy, PPOConfig, REINFORCEConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def calibration_env(num_envs=8, **kwargs):
    return gym.make_vec("tokengym/Calibration-v0", num_envs=num_envs, **kwargs)


def fp16_agent(lr=1e-3, seed=0, num_envs=8) -> REINFORCE:
    env = calibration_env(num_envs)
    policy = Policy.from_pretrained(env.unwrapped.model, autocast_dtype=torch.float16)
    return REINFORCE(env, REINFORCEConfig(lr=lr, seed=seed, group_size=4), policy=policy)


def tiny_loss(policy: Policy, rollout, scale: float) -> torch.Tensor:
    """``scale`` × the summed log-probs of the rollout's tokens, through the autocast forward."""
    scored = policy.score(rollout.input_ids, rollout.attention_mask, rollout.prompt_width)
    return scale * torch.where(rollout.mask, scored.logprobs, 0.0).sum()


# ---------------------------------------------------------------------------------------------
# float16: a gradient scaler
# ---------------------------------------------------------------------------------------------


def test_a_loss_that_underflows_in_float16_still_moves_the_weights_with_the_exact_gradient():
    """A loss of 1e-9 × Σ log π: its gradients (~1e-9) lie below float16's smallest subnormal
    (6e-8), so without loss scaling every LM gradient is 0 and Adam does not move. Scaled by 2¹⁶ and
    unscaled in float32 before clipping, the gradient is the float32 one to float16 precision."""
    agent = fp16_agent()
    rollout = agent.collect()
    reference = Policy.from_pretrained(agent.policy.model.__class__(agent.policy.model.config))
    reference.model.load_state_dict(agent.policy.model.state_dict())
    tiny_loss(reference, rollout, 1e-9).backward()  # the float32 gradient of the same loss
    expected = torch.cat([p.grad.flatten() for p in reference.parameters()])
    assert expected.abs().max() < 6e-8 and expected.norm() > 0  # below float16's subnormals

    before = [p.detach().clone() for p in agent.policy.parameters()]
    assert agent.optimizer_step(tiny_loss(agent.policy, rollout, 1e-9))
    got = torch.cat([p.grad.flatten() for p in agent.policy.parameters()])  # unscaled, as clipped
    assert torch.nn.functional.cosine_similarity(got, expected, dim=0) > 0.999
    assert got.norm() == pytest.approx(expected.norm().item(), rel=1e-2)
    moved = [not torch.equal(a, p) for a, p in zip(before, agent.policy.parameters())]
    assert all(moved)
    assert agent.skipped_updates == 0


def test_a_float16_overflow_backs_the_scale_off_without_counting_as_a_skipped_update():
    """An inf gradient at a loss scale above 1 is the scaler's overflow: the step is not taken, the
    scale halves, and it is not a non-finite update (those count towards max_skipped_updates)."""
    agent = fp16_agent()
    rollout = agent.collect()
    before = [p.detach().clone() for p in agent.policy.parameters()]
    scale = agent.scaler.get_scale()
    assert not agent.optimizer_step(tiny_loss(agent.policy, rollout, 1e30))  # 1e30 × 2¹⁶ overflows
    assert agent.scaler.get_scale() == scale / 2
    assert agent.skipped_updates == 0
    assert all(torch.equal(a, p) for a, p in zip(before, agent.policy.parameters()))
    assert agent.optimizer_step(tiny_loss(agent.policy, rollout, 1e-4))  # a loss that fits is stepped on
    assert not all(torch.equal(a, p) for a, p in zip(before, agent.policy.parameters()))


def test_float16_resume_restores_the_scaler_and_is_bit_identical(tmp_path):
    agent = fp16_agent(lr=1e-2, seed=3)
    agent.learn(8)
    agent.scaler.update(1024.0)  # a scale that only the checkpoint can restore
    agent.save(tmp_path / "ckpt")
    agent.train_iteration()
    expected = [p.detach().clone() for p in agent.policy.parameters()]

    resumed = REINFORCE.load(tmp_path / "ckpt", calibration_env())
    assert resumed.policy.autocast_dtype is torch.float16 and resumed.scaler.get_scale() == 1024.0
    resumed.train_iteration()
    assert resumed.scaler.state_dict() == agent.scaler.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(expected, resumed.policy.parameters()))


# ---------------------------------------------------------------------------------------------
# bfloat16: π_ref and the policy under the same numerics
# ---------------------------------------------------------------------------------------------


def sentiment_agent(agent_class, config, **env_kwargs):
    env = gym.make_vec("tokengym/Sentiment-v0", num_envs=16, **env_kwargs)
    policy = Policy.from_pretrained(env.unwrapped.model, value_head=agent_class.needs_values,
                                    autocast_dtype=torch.bfloat16)
    return agent_class(env, config, policy=policy)


def test_under_bf16_the_kl_penalty_is_zero_at_init_and_the_first_ppo_ratio_is_one():
    """π_θ = π_ref at initialisation, so every KL is 0 and PPO's first ratio is 1, in bfloat16 as in
    float32. With π_ref in float32 against a bf16 policy the penalty was off by up to 0.004 nats per
    sequence; with the rollout's cached one-token log-probs as π_old, the first ratios were off by
    up to 5% (bf16 rounds the cached steps and the teacher-forced forward differently)."""
    agent = sentiment_agent(PPO, PPOConfig(seed=0), reward="kl-shaped")
    assert agent.reference.autocast_dtype is torch.bfloat16
    rollout = agent.collect()
    mask = rollout.mask
    assert rollout.components["kl_penalty"].abs().max() < 1e-6
    assert torch.where(mask, rollout.logprobs - rollout.ref_logprobs, 0.0).abs().max() < 1e-6
    with torch.no_grad():
        rescored = agent.policy.score(rollout.input_ids, rollout.attention_mask, rollout.prompt_width).logprobs
    assert torch.where(mask, rescored - rollout.old_logprobs, 0.0).abs().max() < 1e-6  # ratio 1
    assert torch.where(mask, rollout.old_logprobs - rollout.logprobs, 0.0).abs().max() > 1e-3  # bf16 really rounds
    stats = agent.update(rollout)  # one epoch, one minibatch: the loss is taken before the step
    assert stats["approx_kl"] < 1e-9 and stats["clipfrac"] == 0


def test_under_bf16_the_teacher_forced_reference_matches_the_policy_at_init():
    """Without a KL reward the agent scores π_ref by teacher forcing, under the policy's autocast:
    GRPO's KL term and the logged KL are exactly 0 before the first update."""
    from tokengym.agents import GRPO, GRPOConfig

    agent = sentiment_agent(GRPO, GRPOConfig(seed=0, group_size=4))
    assert not agent.env.steps_reference
    rollout = agent.collect()
    assert torch.where(rollout.mask, rollout.old_logprobs - rollout.ref_logprobs, 0.0).abs().max() < 1e-6
    stats = agent.update(rollout)
    assert abs(stats["kl"]) < 1e-9 and stats["approx_kl"] < 1e-9
