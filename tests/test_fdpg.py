"""f-DPG (Go et al. 2023): the f table, the gradient against the exact ∇D_f(π_θ‖p) by enumerating
Calibration-v0's 512 sequences, reverse KL = REINFORCE on the KL-shaped reward ÷ β, the online
estimates of Z(x) and the baseline, and convergence to p."""
from __future__ import annotations

import copy
import math
import statistics

import gymnasium as gym
import pytest
import torch

import tokengym  # noqa: F401  (registers the envs)
from tokengym.agents import FDPG, REINFORCE, FDPGConfig, REINFORCEConfig
from tokengym.agents.base import Rollout
from tokengym.agents.fdpg import fdpg_coefficients
from tokengym.envs import calibration
from tokengym.lm.divergences import DIVERGENCES, f_divergence

pytestmark = pytest.mark.usefixtures("one_thread")

BETA = 0.5


def calibration_env(num_envs=8, **kwargs):
    return gym.make_vec("tokengym/Calibration-v0", num_envs=num_envs, **kwargs)


# ---------------------------------------------------------------------------------------------
# The f table and exact divergences
# ---------------------------------------------------------------------------------------------

T = torch.tensor([1e-3, 0.3, 1.0, 2.5, 40.0], dtype=torch.float64)
CLOSED_FORMS = {  # Go et al. (2023), Table 1: f(t) and f'(t)
    "forward-kl": (-T.log(), -1 / T),
    "reverse-kl": (T * T.log(), 1 + T.log()),
    "js": (T * (2 * T / (T + 1)).log() + (2 / (T + 1)).log(), (2 * T / (T + 1)).log()),
    "tv": (0.5 * (1 - T).abs(), 0.5 * (T - 1).sign()),
}


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_f_and_its_derivative_are_the_papers(name):
    generator, (f, f_prime) = DIVERGENCES[name], CLOSED_FORMS[name]
    torch.testing.assert_close(generator.f(T.log()), f, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(generator.f_prime(T.log()), f_prime, rtol=1e-12, atol=1e-12)
    assert float(generator.f(torch.zeros(1, dtype=torch.float64))) == 0  # f(1) = 0: D_f(p‖p) = 0
    large = torch.tensor([1e9], dtype=torch.float64)
    slope = float(generator.f(large.log()) / large)  # f'(∞) = lim f(t)/t
    assert slope == pytest.approx(generator.f_prime_at_infinity, abs=1e-6) or (math.isinf(generator.f_prime_at_infinity) and slope > 20)


def test_exact_divergences_match_their_textbook_forms():
    generator = torch.Generator().manual_seed(0)
    log_q = torch.randn(512, generator=generator, dtype=torch.float64).log_softmax(0)
    log_p = torch.randn(512, generator=generator, dtype=torch.float64).log_softmax(0)
    q, p = log_q.exp(), log_p.exp()
    log_m = ((q + p) / 2).log()
    expected = {
        "forward-kl": calibration.kl_divergence(log_p, log_q),
        "reverse-kl": calibration.kl_divergence(log_q, log_p),
        "js": calibration.kl_divergence(log_q, log_m) + calibration.kl_divergence(log_p, log_m),  # 2·JSD
        "tv": 0.5 * (q - p).abs().sum(),
    }
    for name, value in expected.items():
        assert float(f_divergence(log_q, log_p, name)) == pytest.approx(float(value), rel=1e-10), name
    # Where p has no mass, q's mass there costs f'(∞) each: TV's ½, JS's log 2, reverse KL's ∞.
    log_p_cut = torch.where(torch.arange(512) < 256, log_p, -math.inf).log_softmax(0)
    outside = float(q[256:].sum())
    inside = float(f_divergence(log_q, log_p_cut, "tv")) - 0.5 * outside
    assert inside == pytest.approx(0.5 * float((q[:256] - log_p_cut[:256].exp()).abs().sum()), rel=1e-10)
    assert math.isinf(float(f_divergence(log_q, log_p_cut, "reverse-kl")))


# ---------------------------------------------------------------------------------------------
# The f-DPG gradient is ∇D_f(π_θ‖p): exact, by enumerating all 512 sequences
# ---------------------------------------------------------------------------------------------


def perturb_(model: torch.nn.Module, scale: float = 0.3, seed: int = 1) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return model


def token_logprobs(model: torch.nn.Module) -> torch.Tensor:
    """(512, 3) log π(y_t|y_<t) of every sequence, with gradients."""
    sequences = calibration.all_sequences()
    input_ids = torch.cat([torch.zeros(512, 1, dtype=torch.long), sequences], dim=1)  # (512, 4)
    return model(input_ids=input_ids).logits[:, :-1].log_softmax(-1).gather(-1, sequences[..., None])[..., 0]


def enumerated_rollout(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, rewards: torch.Tensor | None = None,
                       components: dict | None = None) -> Rollout:
    """All 512 sequences as one rollout; ``logprobs`` are the sampler's (512, 3)."""
    sequences = calibration.all_sequences()
    returns = calibration.calibration_reward(sequences).double()  # (512,)
    if rewards is None:
        rewards = torch.zeros(512, 3, dtype=torch.float64)
        rewards[:, -1] = returns
    return Rollout(
        input_ids=torch.cat([torch.zeros(512, 1, dtype=torch.long), sequences], dim=1),
        attention_mask=torch.ones(512, 4, dtype=torch.bool), prompt_width=1, mask=torch.ones(512, 3, dtype=torch.bool),
        logprobs=logprobs.detach(), old_logprobs=logprobs.detach(), ref_logprobs=ref_logprobs.detach(), values=None,
        rewards=rewards,
        components=components if components is not None else {"calibration": returns},
    )


def flat_grad(loss: torch.Tensor, params) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


def scored_logprobs(agent, rollout: Rollout) -> torch.Tensor:
    """(512,) log π_θ(y), with gradients, as the agent's loss computes it (``Policy.score`` returns
    float32, as the sampler's log-probs are). The coefficients, the weights π_θ(y) and the exact
    divergence all use these numbers, so the comparison is of the algebra (f' against autograd of
    f) and not of float32 rounding, which cancellations amplify up to 1e-4 relative."""
    return agent.policy.score(rollout.input_ids, rollout.attention_mask, rollout.prompt_width).logprobs.sum(-1).double()


def fdpg_in_double(config: FDPGConfig) -> FDPG:
    """An f-DPG agent on Calibration-v0 whose policy is π_ref perturbed (π_θ ≠ π_ref), in float64."""
    agent = FDPG(calibration_env(num_envs=8), config)
    perturb_(agent.policy.model.double())
    return agent


@pytest.mark.parametrize("target", ["rlkl", "gdc-binary"])
@pytest.mark.parametrize("divergence", list(DIVERGENCES))
def test_fdpg_loss_gradient_is_the_exact_divergence_gradient(divergence, target):
    """Σ_y π_θ(y)·f'(π_θ(y)/p(y))·∇log π_θ(y), through the agent's own coefficients and loss, equals
    autograd of the exact D_f(π_θ‖p). The GDC target (R ≥ 2: p = 0 on most sequences) adds the
    f'(∞)·π_θ(p = 0) term; reverse KL is infinite there and refused."""
    if divergence == "reverse-kl" and target == "gdc-binary":
        with pytest.raises(ValueError, match="infinite as soon as"):
            FDPGConfig(divergence=divergence, target=target)
        return
    agent = fdpg_in_double(FDPGConfig(divergence=divergence, target=target, beta=BETA, threshold=2.0, group_size=4))
    params = list(agent.policy.model.parameters())
    ref_logprobs = token_logprobs(calibration.build_reference_model().double()).detach()  # (512, 3)
    rollout = enumerated_rollout(token_logprobs(agent.policy.model), ref_logprobs)
    log_pi, log_ref = scored_logprobs(agent, rollout), ref_logprobs.sum(-1)  # (512,), log π_θ with gradients
    log_potential = agent.target.log_potential(rollout.components)  # (512,)
    log_z = (log_ref + log_potential).logsumexp(0)  # exact
    coefficients = fdpg_coefficients(divergence, log_pi.detach(), log_ref, log_potential, log_z)  # (512,)
    loss, _ = agent.loss(rollout, coefficients * 512 * log_pi.detach().exp(), torch.arange(512))  # exact E_{π_θ}
    got = flat_grad(loss, params)
    expected = flat_grad(f_divergence(log_pi, (log_ref + log_potential).log_softmax(0), divergence), params)
    assert expected.norm() > 1e-3  # a real gradient, not 0 = 0
    assert (got - expected).norm() / expected.norm() < 1e-6, float((got - expected).norm() / expected.norm())


def test_dpg_with_the_reference_proposal_is_the_exact_forward_kl_gradient():
    """Sampling from π_ref with DPG's weight p/π_ref: Σ_y π_ref(y)·(−p/π_ref)·∇log π_θ(y) = ∇KL(p‖π_θ)."""
    agent = fdpg_in_double(FDPGConfig(divergence="forward-kl", proposal="reference", beta=BETA, group_size=4))
    params = list(agent.policy.model.parameters())
    ref_logprobs = token_logprobs(calibration.build_reference_model().double()).detach()
    rollout = enumerated_rollout(ref_logprobs, ref_logprobs)  # the sampler is π_ref
    log_ref = ref_logprobs.sum(-1)
    log_potential = agent.target.log_potential(rollout.components)
    coefficients = fdpg_coefficients("forward-kl", log_ref, log_ref, log_potential, (log_ref + log_potential).logsumexp(0))
    loss, _ = agent.loss(rollout, coefficients * 512 * log_ref.exp(), torch.arange(512))
    expected = flat_grad(f_divergence(scored_logprobs(agent, rollout), (log_ref + log_potential).log_softmax(0), "forward-kl"), params)
    got = flat_grad(loss, params)
    assert (got - expected).norm() / expected.norm() < 1e-6


def test_reverse_kl_fdpg_is_reinforce_on_the_kl_shaped_reward_divided_by_beta():
    """The env's KL-shaped reward (k1 per token) on all 512 sequences, with π_θ ≠ π_ref; each
    per-sample loss weighted by π_θ(y) so both expectations are exact: REINFORCE's gradient
    (reward-to-go, no baseline) is β times f-DPG's reverse-KL gradient."""
    reinforce = REINFORCE(calibration_env(num_envs=8), REINFORCEConfig(baseline="none"))
    perturb_(reinforce.policy.model.double())
    fdpg = fdpg_in_double(FDPGConfig(divergence="reverse-kl", beta=BETA, group_size=4))
    fdpg.policy.model.load_state_dict(reinforce.policy.model.state_dict())
    policy_logprobs = token_logprobs(reinforce.policy.model).detach()  # (512, 3)

    env = calibration_env(num_envs=512, reward="kl-shaped", reward_kwargs={"beta": BETA})
    env.reset(seed=0)
    sequences = calibration.all_sequences()
    rewards, ref_logprobs = torch.zeros(512, 3, dtype=torch.float64), torch.zeros(512, 3, dtype=torch.float64)
    for t in range(3):  # the env's own reward: −β·log(π_θ/π_ref) on every step, R on the last
        _, reward, _, _, info = env.step(sequences[:, t], logprobs=policy_logprobs[:, t].float())
        rewards[:, t], ref_logprobs[:, t] = reward, info["ref_logprobs"]
    rollout = enumerated_rollout(policy_logprobs, ref_logprobs, rewards, info["reward_components"])
    weights = policy_logprobs.sum(-1).exp()  # (512,) π_θ(y)
    assert (policy_logprobs - ref_logprobs).abs().max() > 0.1  # π_θ ≠ π_ref

    advantages = reinforce.advantages(rollout) * 512 * weights[:, None]  # (512, 3) reward-to-go, exact expectation
    reinforce_loss, _ = reinforce.loss(rollout, advantages)
    log_ref = ref_logprobs.sum(-1)
    log_potential = fdpg.target.log_potential(rollout.components)  # R/β (the penalty is not part of p)
    coefficients = fdpg_coefficients("reverse-kl", policy_logprobs.sum(-1), log_ref, log_potential,
                                     (log_ref + log_potential).logsumexp(0))
    fdpg_loss, _ = fdpg.loss(rollout, coefficients * 512 * weights, torch.arange(512))
    reinforce_grad = flat_grad(reinforce_loss, list(reinforce.policy.model.parameters()))  # −∇J = β∇KL(π_θ‖p)
    fdpg_grad = flat_grad(fdpg_loss, list(fdpg.policy.model.parameters()))  # ∇KL(π_θ‖p)
    assert reinforce_grad.norm() > 1e-2
    assert (reinforce_grad - BETA * fdpg_grad).norm() / reinforce_grad.norm() < 1e-6


# ---------------------------------------------------------------------------------------------
# The online estimates: Ẑ as a moving average of importance weights, the leave-one-out baseline
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("divergence", list(DIVERGENCES))
def test_coefficients_use_earlier_batches_z_and_the_groups_baseline(divergence):
    """Batch 1 uses its own mean weight π_ref·φ/π_θ as Ẑ; batch 2 the average so far (independent of
    its own samples); then Ẑ ← m·Ẑ + (1 − m)·mean(w). Each coefficient is f'(π_θ/p̂) minus the mean
    of the other three of its prompt's group."""
    agent = FDPG(calibration_env(num_envs=8), FDPGConfig(divergence=divergence, beta=BETA, group_size=4, lr=1e-2))
    agent.learn(8)  # π_θ ≠ π_ref
    agent.z_average = 0.0  # as if no batch had been seen
    f_prime, expected_z = DIVERGENCES[divergence].f_prime, None
    for batch in range(2):
        rollout = agent.collect()
        log_q = rollout.logprobs.sum(-1).double()
        log_ref = rollout.ref_logprobs.sum(-1).double()
        log_potential = rollout.components["calibration"].double() / BETA
        batch_z = (log_ref + log_potential - log_q).exp().mean().item()
        coefficients, diagnostics = agent.coefficients(rollout)
        z = batch_z if expected_z is None else expected_z
        assert diagnostics["z"] == pytest.approx(z, rel=1e-9)
        expected_z = 0.9 * z + 0.1 * batch_z
        assert agent.z_average == pytest.approx(expected_z, rel=1e-9)
        raw = [float(f_prime(torch.tensor(float(log_q[i] - (log_ref[i] + log_potential[i] - math.log(z))),
                                          dtype=torch.float64))) for i in range(8)]
        for i in range(8):
            group = raw[4 * (i // 4): 4 * (i // 4) + 4]
            baseline = (sum(group) - raw[i]) / 3  # the other three samples of the same prompt
            assert float(coefficients[i]) == pytest.approx(raw[i] - baseline, rel=1e-9, abs=1e-9), (batch, i)


def test_the_moving_average_z_is_unbiased():
    """With π_θ fixed (no update), the moving average of E_{π_θ}[π_ref·e^{R/β}/π_θ] settles at the
    exact Z = Σ_y π_ref(y)·e^{R(y)/β} (π_θ ≠ π_ref, so the weights are not trivially e^{R/β})."""
    agent = FDPG(calibration_env(num_envs=256), FDPGConfig(beta=BETA, lr=1e-2, z_momentum=0.98))
    agent.learn(512)
    ref_logprobs = calibration.sequence_logprobs(agent.reference.model).double()
    rewards = calibration.calibration_reward(calibration.all_sequences()).double()
    exact = float((ref_logprobs + rewards / BETA).logsumexp(0).exp())
    batch_means = []
    for _ in range(40):  # 10,240 episodes
        rollout = agent.collect()
        agent.coefficients(rollout)
        w = (rollout.ref_logprobs.sum(-1).double() + rollout.components["calibration"].double() / BETA
             - rollout.logprobs.sum(-1).double()).exp()
        batch_means.append(float(w.mean()))
    standard_error = statistics.stdev(batch_means) / math.sqrt(len(batch_means))
    assert statistics.mean(batch_means) == pytest.approx(exact, abs=4 * standard_error)
    assert agent.z_average == pytest.approx(exact, rel=0.15)  # the average the agent keeps (m = 0.98: ~50 batches)


def test_reverse_kl_coefficients_do_not_depend_on_z():
    """1 + log Z is the same for every sample of a prompt: the baseline removes it exactly, so
    reverse KL's coefficients are the leave-one-out-centred log(π_θ/π_ref) − r/β."""
    agent = FDPG(calibration_env(num_envs=8), FDPGConfig(divergence="reverse-kl", beta=BETA, group_size=4))
    rollout = agent.collect()
    coefficients, _ = agent.coefficients(rollout)
    log_q, log_ref = rollout.logprobs.sum(-1).double(), rollout.ref_logprobs.sum(-1).double()  # (8,)
    pseudo = log_q - log_ref - rollout.components["calibration"].double() / BETA  # (8,)
    grouped = pseudo.view(2, 4)
    expected = (grouped - (grouped.sum(1, keepdim=True) - grouped) / 3).reshape(-1)
    torch.testing.assert_close(coefficients, expected, rtol=1e-9, atol=1e-9)


def test_a_prompt_with_no_sample_in_ps_support_gets_no_push():
    """GDC binary: a group none of whose samples satisfies the constraint says nothing about p
    (Ẑ = 0): every divergence gives its samples equal coefficients, so after the baseline, 0."""
    for divergence in ("forward-kl", "js", "tv"):
        agent = FDPG(calibration_env(num_envs=8), FDPGConfig(divergence=divergence, target="gdc-binary", threshold=3.0,
                                                             group_size=4))
        rollout = agent.collect()
        rollout.components["calibration"] = torch.where(torch.arange(8) < 4, 0.0, rollout.components["calibration"])
        coefficients, _ = agent.coefficients(rollout)
        assert torch.equal(coefficients[:4], torch.zeros(4, dtype=torch.float64)), divergence
        assert torch.isfinite(coefficients).all(), divergence


def test_the_reference_proposal_samples_from_pi_ref_and_trains_pi_theta():
    env = calibration_env(num_envs=64)
    agent = FDPG(env, FDPGConfig(divergence="forward-kl", proposal="reference", beta=BETA, lr=1e-2))
    reference_before = copy.deepcopy(agent.reference.model.state_dict())
    for _ in range(3):
        agent.train_iteration()
    rollout = agent.collect()
    # The sampler's log-probs are π_ref's (stepped with a cache; the env scores π_ref by teacher forcing).
    torch.testing.assert_close(rollout.logprobs, rollout.ref_logprobs, atol=1e-5, rtol=0)
    policy = token_logprobs(agent.policy.model).sum(-1)
    reference = calibration.sequence_logprobs(agent.reference.model)
    assert calibration.kl_divergence(policy.detach(), reference) > 1e-3  # π_θ moved, the sampler did not
    assert all(torch.equal(v, agent.reference.model.state_dict()[k]) for k, v in reference_before.items())


@pytest.mark.parametrize("field, value, match", [
    ("divergence", "hellinger", "divergence must be one of forward-kl, reverse-kl, js, tv"),
    ("target", "gdc-distributional", "target must be one of rlkl, gdc-binary"),
    ("proposal", "uniform", "proposal must be one of policy, reference"),
    ("group_size", 1, "group_size must be an integer ≥ 2"),
    ("beta", 0.0, "beta must be a number > 0"),
    ("threshold", math.nan, "threshold must be a number"),
    ("z_momentum", 1.0, r"z_momentum must be a number in \[0, 1\)"),
])
def test_invalid_fdpg_configs_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        FDPGConfig(**{field: value})


def test_the_reference_proposal_is_for_forward_kl_only():
    with pytest.raises(ValueError, match="proposal must be 'policy' unless divergence is 'forward-kl'"):
        FDPGConfig(divergence="js", proposal="reference")


def test_fdpg_refuses_truncated_sampling():
    with pytest.raises(ValueError, match="top_k=3"):
        FDPG(calibration_env(top_k=3))


# ---------------------------------------------------------------------------------------------
# Convergence to p on Calibration-v0
# ---------------------------------------------------------------------------------------------

VARIANTS = [("forward-kl", "policy"), ("reverse-kl", "policy"), ("js", "policy"), ("tv", "policy"),
            ("forward-kl", "reference")]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("divergence, proposal", VARIANTS, ids=[f"{d}-{p}" for d, p in VARIANTS])
def test_fdpg_converges_to_the_target(divergence, proposal, seed):
    """p = p_RLKL ∝ π_ref·exp(R/β) at β = 0.5; the exact D_f(π_θ‖p) each variant minimises, and
    KL(π_θ‖p), must fall to ≤ 0.3× their start (π_θ = π_ref), averaged over iterations 52, 56 and 60
    of 256 episodes at lr 1e-2. Measured on seeds 0-2 (1-5 s a run), D_f end ÷ start: forward KL
    0.06-0.09, reverse KL 0.04-0.06, JS 0.06-0.07, TV 0.15-0.16, DPG from π_ref 0.12-0.19; KL(π_θ‖p)
    end ÷ start 0.04-0.10, and 0.12-0.22 for DPG from π_ref."""
    ref_logprobs = calibration.sequence_logprobs(calibration.build_reference_model()).double()
    target = calibration.optimal_policy(ref_logprobs, BETA)
    agent = FDPG(calibration_env(num_envs=256), FDPGConfig(divergence=divergence, proposal=proposal, beta=BETA,
                                                            lr=1e-2, seed=seed))
    start = (float(f_divergence(ref_logprobs, target, divergence)), float(calibration.kl_divergence(ref_logprobs, target)))
    ends = []
    for i in range(1, 61):
        agent.train_iteration()
        if i in (52, 56, 60):
            log_pi = calibration.sequence_logprobs(agent.policy.model).double()
            ends.append((float(f_divergence(log_pi, target, divergence)), float(calibration.kl_divergence(log_pi, target))))
    end = [sum(e[k] for e in ends) / 3 for k in range(2)]
    assert start[0] > 0.2 and start[1] > 0.4  # π_ref is far from p: room to fail
    assert end[0] < 0.3 * start[0] and end[1] < 0.3 * start[1], (seed, start, ends)


# ---------------------------------------------------------------------------------------------
# Learning on language: Keywords-v0 with the GDC binary target (experiments/keywords-gdc)
# ---------------------------------------------------------------------------------------------

KEYWORD_PAIRS = [("it", "is"), ("you", "that"), ("you", "the"), ("to", "of")]  # π_ref uses both in 3-7 %


@torch.no_grad()
def both_words_fraction(policy, env, seed: int) -> float:
    """The fraction of ``env.num_envs`` fresh samples of ``policy`` that use both words."""
    obs, _ = env.reset(seed=seed)
    P = env.prompt_width
    policy.begin(obs["input_ids"][:, :P], obs["attention_mask"][:, :P].bool())
    generator = torch.Generator().manual_seed(seed)
    for _ in range(env.max_new_tokens):
        step = policy.act(generator)
        _, _, _, _, info = env.step(step.actions)
        if bool(env.all_done):
            break
        policy.advance(step.actions)
    return float((info["reward_components"]["keyword_inclusion"] >= 1).double().mean())


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_dpg_raises_the_both_words_fraction_on_keywords(seed):
    """p ∝ π_ref·1[both words] (GDCBinary(threshold=1)); f-DPG with forward KL at its defaults, 768
    episodes in batches of 32. The fraction of 256 fresh samples using both words must rise over
    π_ref's (same prompts and random numbers) by more than 4 standard errors of the difference.
    Measured: 0.062 → 0.211 (z = 5.0) and 0.062 → 0.230 (z = 5.5), about 55 s a seed on one
    thread; at 512 episodes seed 0 reached only z = 3.9. The 3-seed runs with the KL(p‖π_θ)
    comparison against REINFORCE are in experiments/keywords-gdc."""
    from tokengym.agents import Policy
    from tokengym.envs.prompts import keyword_prompt

    prompts = [keyword_prompt(a, b) for a, b in KEYWORD_PAIRS]
    agent = FDPG(gym.make_vec("tokengym/Keywords-v0", num_envs=32, prompts=prompts),
                 FDPGConfig(target="gdc-binary", threshold=1.0, seed=seed))
    judge = gym.make_vec("tokengym/Keywords-v0", num_envs=256, prompts=prompts).unwrapped
    before = both_words_fraction(Policy(agent.reference.model, sampling=judge.sampling), judge, seed=100 + seed)
    agent.learn(768)
    after = both_words_fraction(agent.policy, judge, seed=100 + seed)
    standard_error = math.sqrt((before * (1 - before) + after * (1 - after)) / 256)
    assert after - before > 4 * standard_error, (before, after, standard_error)
