"""Agents: configs, loss maths against closed forms, the exact REINFORCE gradient, save/resume."""
from __future__ import annotations

import dataclasses

import gymnasium as gym
import pytest
import torch
from conftest import build_tiny_lm

import tokengym  # noqa: F401  (registers the envs)
from tokengym.agents import (
    A2C, DPO, FDPG, GRPO, PPO, REINFORCE, A2CConfig, DPOConfig, FDPGConfig, GRPOConfig, Policy, PPOConfig, REINFORCEConfig,
)
from tokengym.agents.advantages import group_advantages
from tokengym.agents.grpo import grpo_loss
from tokengym.agents.ppo import ppo_clip_loss
from tokengym.envs import calibration


def calibration_env(num_envs=16, **kwargs):
    return gym.make_vec("tokengym/Calibration-v0", num_envs=num_envs, **kwargs)


@pytest.mark.parametrize(
    "config_class, field, value, match",
    [
        (PPOConfig, "clip_eps", 0.0, r"clip_eps must be a number > 0, got 0.0"),
        (PPOConfig, "clip_eps", -0.1, "clip_eps"),
        (PPOConfig, "gamma", 1.5, r"gamma must be a number in \[0, 1\]"),
        (PPOConfig, "gae_lambda", -0.1, r"gae_lambda must be a number in \[0, 1\]"),
        (A2CConfig, "gae_lambda", 2.0, "gae_lambda"),
        (A2CConfig, "lr", 0.0, r"lr must be a number > 0"),
        (REINFORCEConfig, "lr", -1e-3, "lr"),
        (GRPOConfig, "group_size", 1, r"group_size must be an integer ≥ 2"),
        (GRPOConfig, "beta", -0.1, "beta"),
        (GRPOConfig, "kl_estimator", "k4", "kl_estimator must be one of k1, k2, k3"),
        (REINFORCEConfig, "baseline", "median", "baseline must be one of"),
    ],
)
def test_invalid_configs_name_the_field(config_class, field, value, match):
    with pytest.raises(ValueError, match=match):
        config_class(**{field: value})


def test_reinforce_groups_prompts_only_for_the_leave_one_out_baseline():
    assert REINFORCEConfig().group_size == 16  # RLOO compares the samples of one prompt
    assert REINFORCEConfig(baseline="moving-average").group_size == 1  # no use for groups: distinct prompts
    assert REINFORCEConfig(baseline="none").group_size == 1
    assert REINFORCEConfig(baseline="none", group_size=2).group_size == 2  # an explicit size is kept
    with pytest.raises(ValueError, match="group_size must be an integer ≥ 2 with baseline 'leave-one-out', got 1"):
        REINFORCEConfig(group_size=1)


@pytest.mark.parametrize("field, value", [("temperature", 0.0), ("top_k", -1), ("top_p", 1.5)])
def test_sampling_belongs_to_the_env_and_is_validated_there(field, value):
    with pytest.raises(ValueError, match=field):
        calibration_env(**{field: value})
    assert not hasattr(PPOConfig(), field)  # one source of truth: agents read env.sampling


def test_batch_must_be_divisible_by_the_group():
    with pytest.raises(ValueError, match="group_size=4 must divide the batch"):
        GRPO(calibration_env(num_envs=6), GRPOConfig(group_size=4))


def test_policy_vocab_must_fit_the_env():
    policy = Policy.from_pretrained(build_tiny_lm(vocab_size=9, n_positions=8))
    with pytest.raises(ValueError, match=r"vocabulary \(9 logits\) does not fit .*Discrete\(8\)"):
        REINFORCE(calibration_env(), policy=policy)


def test_agents_refuse_the_single_env():
    with pytest.raises(TypeError, match="make_vec"):
        REINFORCE(gym.make("tokengym/Calibration-v0"))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_ppo_clip_has_zero_gradient_exactly_where_clipped(sign):
    eps = 0.2
    # ratios: inside, above 1+ε, below 1−ε
    ratios = torch.tensor([[1.05, 1.5, 0.5]])
    old_logprobs = torch.zeros(1, 3)
    logprobs = ratios.log().requires_grad_(True)
    advantages = torch.full((1, 3), sign)
    mask = torch.ones(1, 3, dtype=torch.bool)
    ppo_clip_loss(logprobs, old_logprobs, advantages, mask, eps).backward()
    grad = logprobs.grad[0]
    # The loss sums over the sequence's tokens: d/dlogρ of −ρA is −ρA where the unclipped term is active.
    # A > 0: clipped (zero grad) above 1+ε only; A < 0: clipped below 1−ε only.
    clipped = [False, sign > 0, sign < 0]
    for i, is_clipped in enumerate(clipped):
        expected = 0.0 if is_clipped else -ratios[0, i].item() * sign
        assert grad[i].item() == pytest.approx(expected, abs=1e-7), (i, sign)


def test_grpo_loss_matches_the_per_sequence_length_normalised_objective():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    advantages = torch.tensor([0.5, -1.0])
    # On-policy (ratio 1) and ref = policy: J = mean_i (1/|o_i|) Σ_t A_i = mean(A)
    loss, _, kl = grpo_loss(logprobs, logprobs, logprobs, advantages, mask, clip_eps=0.2, beta=0.1,
                         kl_estimator="k3", length_normalization=True)
    assert loss.item() == pytest.approx(-advantages.mean().item())
    assert torch.all(kl == 0)
    # Dr. GRPO normaliser: Σ_t A_i / T_max
    loss, _, _ = grpo_loss(logprobs, logprobs, logprobs, advantages, mask, clip_eps=0.2, beta=0.1,
                        kl_estimator="k3", length_normalization=False)
    assert loss.item() == pytest.approx(-(0.5 * 3 - 1.0 * 2) / 3 / 2)
    # With a reference differing by δ on one token, the KL term is β·k3(δ)/|o_i| averaged over rows.
    ref = logprobs.clone()
    ref[0, 0] -= 0.3  # log ρ = 0.3 there
    loss, _, _ = grpo_loss(logprobs, logprobs, ref, advantages, mask, clip_eps=0.2, beta=0.1,
                        kl_estimator="k3", length_normalization=True)
    k3 = torch.expm1(torch.tensor(-0.3)) + 0.3
    assert loss.item() == pytest.approx(-advantages.mean().item() + 0.1 * k3.item() / 3 / 2, rel=1e-6)


def test_grpo_k3_term_is_bounded_so_one_rare_token_cannot_dominate_a_step():
    """A token whose π_θ fell e^30 below π_ref: unbounded, its k3 (ρ⁻¹ ≈ 1e13) swamps the whole
    loss and its gradient; clamped as verl and OpenRLHF clamp k3 (log ρ to ±20, k3 to ≤ 10) it adds at
    most β·10/|o| and no gradient, and every other token's gradient is what it was."""
    agent = GRPO(calibration_env(num_envs=8), GRPOConfig(group_size=4, seed=1))
    assert agent.config.k3_max == 10.0
    rollout = agent.collect()
    rows = torch.arange(8)
    advantages = group_advantages(rollout.scores, 4, agent.config.adv_eps)

    def loss_and_gradient(ref_logprobs):
        rollout.ref_logprobs = ref_logprobs
        loss, stats = agent.loss(rollout, advantages, rows)
        agent.policy.zero_grad()
        loss.backward()
        return loss.item(), stats["kl"].item(), torch.cat([p.grad.flatten() for p in agent.policy.parameters()])

    calm_ref = rollout.old_logprobs.clone()  # π_ref = π_θ: k3 = 0 on every token
    rare_ref = calm_ref.clone()
    rare_ref[0, 0] += 30.0  # log ρ = −30 on one token
    calm_loss, _, calm_grad = loss_and_gradient(calm_ref)
    rare_loss, rare_kl, rare_grad = loss_and_gradient(rare_ref)
    tokens = int(rollout.mask[0].sum())
    assert rare_loss - calm_loss == pytest.approx(agent.config.beta * 10.0 / tokens / 8, rel=1e-5)
    assert rare_kl <= 10.0 / int(rollout.mask.sum()) + 1e-6
    torch.testing.assert_close(rare_grad, calm_grad, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="k3_max"):
        GRPOConfig(k3_max=0.0)


def test_minibatches_are_as_many_as_asked_and_cover_the_batch_once():
    """6 episodes in 4 minibatches: 2, 2, 1, 1 (chunk(4) gave 3 minibatches of 2)."""
    agent = PPO(calibration_env(num_envs=6), PPOConfig(n_minibatches=4))
    parts = list(agent.minibatches(4))
    assert [size for _, size in parts] == [2, 2, 1, 1]
    assert sorted(torch.cat([rows for rows, _ in parts]).tolist()) == list(range(6))
    for n in (0, 7):
        with pytest.raises(ValueError, match=rf"n_minibatches must be an integer in \[1, 6\], got {n}"):
            list(agent.minibatches(n))


def test_grpo_advantages_used_by_the_agent_match_the_formula():
    agent = GRPO(calibration_env(num_envs=8), GRPOConfig(group_size=4))
    rollout = agent.collect()
    scores = rollout.scores.view(2, 4)
    expected = (scores - scores.mean(1, keepdim=True)) / (scores.std(1, keepdim=True) + agent.config.adv_eps)
    assert torch.allclose(group_advantages(rollout.scores, 4, agent.config.adv_eps), expected.reshape(-1))
    # Each group shares its prompt: consecutive rows have identical prompts.
    P = rollout.prompt_width
    assert torch.equal(rollout.input_ids[:4, :P], rollout.input_ids[0:1, :P].expand(4, P))


def exact_reward_gradient(policy: Policy) -> list[torch.Tensor]:
    """∇_θ E_{y~π_θ}[R(y)] by enumerating all 512 sequences of Calibration-v0."""
    sequences = calibration.all_sequences()
    input_ids = torch.cat([torch.zeros(512, 1, dtype=torch.long), sequences], 1)
    logits = policy.model(input_ids=input_ids).logits[:, :-1]
    logprobs = logits.log_softmax(-1).gather(-1, sequences[..., None])[..., 0].sum(-1)  # (512,)
    objective = (logprobs.exp() * calibration.calibration_reward(sequences)).sum()
    return torch.autograd.grad(objective, list(policy.model.parameters()))


def test_reinforce_gradient_converges_to_the_exact_gradient():
    env = calibration_env(num_envs=512)
    agent = REINFORCE(env, REINFORCEConfig(baseline="none"))
    params = list(agent.policy.model.parameters())
    exact = torch.cat([g.reshape(-1) for g in exact_reward_gradient(agent.policy)])
    estimates = []
    for _ in range(32):  # 32 × 512 = 16384 episodes
        loss, _ = agent.loss(agent.collect())
        grads = torch.autograd.grad(-loss, params)  # the loss is −Ĵ
        estimates.append(torch.cat([g.reshape(-1) for g in grads]))
    estimates = torch.stack(estimates)  # (32, n_params)
    mean = estimates.mean(0)
    # Unbiased: the Monte-Carlo error of the mean shrinks like 1/√N (≈ 0.18× one batch's error
    # for N = 32); a biased estimator would plateau at its bias instead.
    error_single = ((estimates - exact).norm(dim=1) / exact.norm()).mean()
    error_mean = (mean - exact).norm() / exact.norm()
    cosine = torch.nn.functional.cosine_similarity(mean, exact, dim=0)
    assert cosine > 0.99, float(cosine)
    assert error_mean < 0.1, float(error_mean)
    assert error_mean < 0.45 * error_single, (float(error_mean), float(error_single))


def test_nonfinite_loss_or_gradient_never_reaches_the_weights():
    agent = REINFORCE(calibration_env(), REINFORCEConfig(group_size=4))
    before = [p.detach().clone() for p in agent.policy.parameters()]
    first = next(agent.policy.parameters())
    with pytest.warns(RuntimeWarning, match="non-finite loss = nan; update skipped"):
        assert not agent.optimizer_step(first.sum() * float("nan"))
    with pytest.warns(RuntimeWarning, match="non-finite loss = inf; update skipped"):
        assert not agent.optimizer_step(first.sum() * float("inf"))
    assert agent.skipped_updates == 2
    assert all(torch.equal(a, p) for a, p in zip(before, agent.policy.parameters()))
    assert agent.optimizer_step(first.sum())  # a finite loss does move them
    assert not torch.equal(before[0], first)


@pytest.mark.parametrize(
    "agent_class, config",
    [
        (REINFORCE, REINFORCEConfig(lr=1e-2, group_size=4)),
        (A2C, A2CConfig(lr=1e-2)),
        (PPO, PPOConfig(lr=1e-2, n_epochs=2, n_minibatches=2)),
        (GRPO, GRPOConfig(lr=1e-2, group_size=4)),
        (FDPG, FDPGConfig(lr=1e-2, group_size=4)),
        (DPO, DPOConfig(lr=1e-2, preferences="sampled")),  # its Bradley–Terry draws come from the checkpointed generator
    ],
)
def test_save_load_resume_reproduces_the_next_iteration(tmp_path, agent_class, config):
    agent = agent_class(calibration_env(num_envs=8), config)
    agent.learn(8)
    agent.save(tmp_path / "ckpt")
    expected = agent.train_iteration()
    expected_weights = [p.detach().clone() for p in agent.policy.parameters()]

    resumed = agent_class.load(tmp_path / "ckpt", calibration_env(num_envs=8))
    assert resumed.iteration == 1 and resumed.episodes == 8
    got = resumed.train_iteration()
    for key in ("reward", "kl_ref", "entropy"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    for a, b in zip(expected_weights, resumed.policy.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    # transformers alone loads the saved policy and reference
    from transformers import AutoModelForCausalLM

    for sub in ("policy", "reference"):
        model = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt" / sub)
        assert model.config.vocab_size == 8


def test_load_keeps_the_policys_autocast_dtype(tmp_path):
    """A bf16 run resumed by ``Agent.load`` stays bf16: the next iteration matches the uninterrupted one,
    which a float32 resume does not (bf16 log-probs differ from float32 ones in the third digit)."""
    env = calibration_env(num_envs=8)
    policy = Policy.from_pretrained(env.unwrapped.model, autocast_dtype=torch.bfloat16)
    agent = REINFORCE(env, REINFORCEConfig(lr=1e-2, seed=3, group_size=4), policy=policy)
    agent.learn(8)
    agent.save(tmp_path / "ckpt")
    expected = agent.train_iteration()

    resumed = REINFORCE.load(tmp_path / "ckpt", calibration_env(num_envs=8))
    assert resumed.policy.autocast_dtype is torch.bfloat16
    got = resumed.train_iteration()
    assert got["kl_ref"] == pytest.approx(expected["kl_ref"], abs=1e-6)
    assert got["entropy"] == pytest.approx(expected["entropy"], abs=1e-6)


def test_history_logs_the_diagnostics_each_agent_promises():
    expectations = {
        REINFORCE: {"reward", "kl_ref", "entropy", "tokens_per_s"},
        A2C: {"reward", "kl_ref", "entropy", "tokens_per_s", "explained_variance", "value_loss"},
        PPO: {"reward", "kl_ref", "entropy", "tokens_per_s", "explained_variance", "approx_kl", "clipfrac"},
        GRPO: {"reward", "kl_ref", "entropy", "tokens_per_s", "approx_kl", "clipfrac", "kl"},
        FDPG: {"reward", "kl_ref", "entropy", "tokens_per_s", "z", "ess", "target_score"},
        DPO: {"reward", "kl_ref", "entropy", "tokens_per_s", "loss", "margin"},
    }
    for agent_class, keys in expectations.items():
        groups = {"group_size": 4} if agent_class in (REINFORCE, GRPO) else {}  # the defaults' 16 exceed the batch
        history = agent_class(calibration_env(num_envs=8), agent_class.config_class(**groups)).learn(8)
        assert len(history) == 1 and keys <= set(history[0]), agent_class.__name__
        assert "reward/holistic" in history[0] or any(k.startswith("reward/") for k in history[0])


KL_BETA = 0.5
CALIBRATION_CONFIGS = [
    (REINFORCE, REINFORCEConfig(lr=1e-2, group_size=4)),
    (A2C, A2CConfig(lr=1e-2, gae_lambda=1.0)),
    # PPO's defaults (one epoch of one minibatch): 0.07-0.09× the start on seeds 0-2. The former
    # 4 epochs × 4 minibatches at ε = 0.2 over-stepped π* and levelled off at KL ≈ 0.05-0.09
    # (experiments/calibration-ablation), the cause of the one-epoch default.
    (PPO, PPOConfig(lr=1e-2)),
    # GRPO with the KL in the env's reward (β in the loss off, Dr. GRPO's unscaled advantages):
    # its fixed point is then exactly π*, like the others'.
    (GRPO, GRPOConfig(lr=1e-2, beta=0.0, scale_rewards=False, group_size=8)),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("agent_class, config", CALIBRATION_CONFIGS, ids=["reinforce", "a2c", "ppo", "grpo"])
def test_agents_approach_the_kl_regularised_optimum(agent_class, config, seed):
    """π* ∝ π_ref·exp(R/β) by enumerating all 512 sequences; KL(π_θ‖π*) must fall to ≤ 0.3× its
    start on every seed. 60 iterations of 256 episodes; the exact KL is averaged over iterations
    50, 55 and 60, because it fluctuates between iterations (experiments/calibration-ablation). Measured on seeds 0-2 (ibid.), every agent's mean over
    those iterations is 0.06-0.10× its start (PPO with ε = 0.2: up to 0.18×), so 0.3× leaves room
    without being loose."""
    ref_logprobs = calibration.sequence_logprobs(calibration.build_reference_model())
    optimum = calibration.optimal_policy(ref_logprobs, KL_BETA)
    start = calibration.kl_divergence(ref_logprobs, optimum).item()
    env = calibration_env(num_envs=256, reward="kl-shaped", reward_kwargs={"beta": KL_BETA})
    agent = agent_class(env, dataclasses.replace(config, seed=seed))
    kls = []
    for i in range(1, 61):
        agent.train_iteration()
        if i in (50, 55, 60):
            kls.append(calibration.kl_divergence(calibration.sequence_logprobs(agent.policy.model), optimum).item())
    final = sum(kls) / len(kls)
    assert start > 0.4  # π_ref is far from π*: the test has room to fail
    assert final < 0.3 * start, (seed, start, kls)


@pytest.mark.parametrize(
    "agent_class, config",
    [
        (REINFORCE, REINFORCEConfig(lr=1e-2, baseline="leave-one-out", group_size=4)),
        (A2C, A2CConfig(lr=1e-2)),
        (PPO, PPOConfig(lr=1e-2, n_epochs=2, n_minibatches=2, target_kl=None)),
        (GRPO, GRPOConfig(lr=1e-2, group_size=4)),
        (FDPG, FDPGConfig(lr=1e-2, group_size=4)),
    ],
    ids=["reinforce", "a2c", "ppo", "grpo", "fdpg"],
)
def test_micro_batched_updates_equal_the_full_batch_update(agent_class, config):
    """minibatch_size bounds an update's memory: gradients of chunks of 3 episodes accumulate into
    the very step one pass over all 8 would take (the loss is a mean over episodes)."""
    def trained(minibatch_size):
        agent = agent_class(calibration_env(num_envs=8, reward="kl-shaped", reward_kwargs={"beta": 0.5}),
                            dataclasses.replace(config, minibatch_size=minibatch_size))
        # SGD, not Adam: Adam divides by √v, which turns float-rounding noise in near-zero gradients
        # (unused tokens' embeddings) into ±lr steps; SGD keeps a gradient difference as small as it is.
        agent.optimizer = torch.optim.SGD(agent.policy.parameters(), lr=0.5)
        history = [agent.train_iteration() for _ in range(3)]
        return agent, history

    full, full_history = trained(None)
    micro, micro_history = trained(3)  # chunks of 3, 3, 2: unequal shares are weighted
    assert [h["reward"] for h in micro_history] == pytest.approx([h["reward"] for h in full_history], abs=1e-5)
    moved = False
    for a, b, start in zip(full.policy.parameters(), micro.policy.parameters(),
                           agent_class(calibration_env(num_envs=8), config).policy.parameters()):
        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-4)
        moved |= not torch.allclose(a, start)
    assert moved  # the updates changed the weights: the comparison is not of two untouched models
