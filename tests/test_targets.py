"""Target distributions and their figures: the importance-sampling estimates lie within their
Monte Carlo error of the exact values on Calibration-v0 (512 sequences enumerated), the exact
values satisfy the identities of f-DPG and GDC, and the samples are drawn as documented."""
from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch

import tokengym  # noqa: F401  (registers the envs)
from tokengym.benchmarks.probes import CalibrationProbe
from tokengym.benchmarks.targets import (
    DIVERGENCES, POLICY_FIGURES, TARGET_FIGURES, calibration_components, calibration_figures, estimate,
    exact_figures, mixture, sample_for_targets, target_figures,
)
from tokengym.envs import TokenVectorEnv, calibration
from tokengym.rewards.kl import KLShaped
from tokengym.rewards.targets import RLKL, GDCBinary, GDCDistributional

TARGETS = [RLKL(1.0), RLKL(0.5), GDCBinary(2.0)]
N_PROMPTS, N_PER_PROMPT = 2, 4096  # Calibration has one prompt: two rows of it, 4,096 episodes each


def perturbed_reference(scale: float, seed: int = 0) -> torch.nn.Module:
    """Calibration's π_ref with Gaussian noise on every weight: a policy that differs from it."""
    model = calibration.build_reference_model()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return model


@pytest.fixture(scope="module")
def policy():
    return perturbed_reference(0.15)


@pytest.fixture(scope="module")
def draws(policy, one_thread):
    """π_ref's and the policy's samples of Calibration-v0 (same prompts), both with both log-probs."""
    env = gym.make_vec("tokengym/Calibration-v0", num_envs=512)
    common = dict(n_prompts=N_PROMPTS, n_per_prompt=N_PER_PROMPT, seed=1, policy=policy)
    reference = sample_for_targets(env, proposal="reference", **common)
    return {"reference": reference, "policy": sample_for_targets(env, proposal="policy", **common)}


def assert_within_error(estimated: dict, exact: dict, names) -> None:
    """Each figure within 4 bootstrap standard errors of its exact value (equal where infinite)."""
    for name in names:
        value, truth, error = estimated[name], exact[name], estimated[f"{name}_se"]
        if math.isinf(truth):
            assert value == truth, (name, value, truth)
            continue
        assert math.isfinite(error), (name, error)
        # 1e-9: a figure that every sample gives exactly (E_p[b] = 1 under GDC) has no error at all
        assert abs(value - truth) <= 4 * error + 1e-9, f"{name}: estimate {value:.5f} ± {error:.5f}, exact {truth:.5f}"


def test_the_policy_differs_from_the_reference(policy):
    exact = calibration_figures(RLKL(1.0), policy)
    assert 0.3 < exact["policy_kl_ref"] < 3  # far enough to test the weights, near enough to sample p


@pytest.mark.parametrize("target", TARGETS, ids=repr)
def test_reference_samples_estimate_the_target_within_their_error(target, draws):
    estimated = estimate(draws["reference"], target)
    exact = calibration_figures(target)
    names = [name for name in TARGET_FIGURES if name in exact]
    assert estimated["ess_min"] > 15  # enough to mean something
    assert_within_error(estimated, exact, names)


@pytest.mark.parametrize("target", TARGETS, ids=repr)
def test_pooled_samples_estimate_every_figure_of_a_policy_within_their_error(target, draws, policy):
    estimated = estimate(mixture(draws["reference"], draws["policy"]), target)
    exact = calibration_figures(target, policy)
    names = [name for name in (*TARGET_FIGURES, *POLICY_FIGURES) if name in exact]
    assert {"forward_kl", "reverse_kl", "tv", "js", "policy_score", "policy_kl_ref"} <= set(names)
    assert_within_error(estimated, exact, names)


@pytest.mark.parametrize("target", TARGETS, ids=repr)
def test_policy_samples_estimate_expectations_under_the_policy_within_their_error(target, draws, policy):
    estimated = estimate(draws["policy"], target)
    exact = calibration_figures(target, policy)
    assert_within_error(estimated, exact, [name for name in ("policy_score", "policy_kl_ref", "j") if name in exact])


def test_reference_as_the_policy_has_no_kl_and_its_divergences_are_the_targets(one_thread):
    env = gym.make_vec("tokengym/Calibration-v0", num_envs=512)
    reference = calibration.build_reference_model()
    figures = target_figures(env, RLKL(0.5), n_prompts=1, n_per_prompt=4096, seed=2, policy=reference)
    exact = calibration_figures(RLKL(0.5), reference)
    assert abs(figures["policy"]["policy_kl_ref"]) < 1e-5  # sampled and teacher-forced log-probs agree
    assert exact["forward_kl"] == pytest.approx(exact["target_kl_ref"], abs=1e-12)  # KL(p‖π_ref)
    assert_within_error(figures["policy"], exact, ["forward_kl", "reverse_kl", "tv", "js", "j", "log_z"])
    assert_within_error(figures["reference"], exact, ["j_star", "target_gain"])
    # the same identity across the two sample sets: J*(π_ref's) − J(pooled) − β·KL(π‖p)(pooled)
    assert abs(figures["identity_gap"]) <= 4 * math.hypot(figures["reference"]["j_star_se"], figures["policy"]["j_star_se"])


def test_a_tempered_env_is_estimated_against_the_tempered_enumeration(one_thread):
    # the env samples softmax(logits/0.7) and scores π_ref at 0.7; so does the enumeration
    env = gym.make_vec("tokengym/Calibration-v0", num_envs=512, temperature=0.7)
    policy = perturbed_reference(0.1, seed=1)
    figures = target_figures(env, RLKL(1.0), n_prompts=1, n_per_prompt=4096, seed=3, policy=policy)
    exact = calibration_figures(RLKL(1.0), policy, temperature=0.7)
    untempered = calibration_figures(RLKL(1.0), policy)
    assert abs(exact["policy_kl_ref"] - untempered["policy_kl_ref"]) > 0.5  # the temperature matters here
    assert_within_error(figures["reference"], exact, ["log_z", "target_score", "target_kl_ref", "reference_score"])
    assert_within_error(figures["policy"], exact, ["policy_score", "policy_kl_ref", *DIVERGENCES])


# ---------------------------------------------------------------- exact identities


def enumeration(policy=None, temperature=1.0):
    """Calibration's components, log π_ref and log π_θ (float64, renormalised) over its 512 sequences."""
    ref = calibration.sequence_logprobs(calibration.build_reference_model(), temperature=temperature).double().log_softmax(0)
    pol = None if policy is None else calibration.sequence_logprobs(policy, temperature=temperature).double().log_softmax(0)
    return calibration_components(), ref, pol


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_exact_rlkl_figures_are_the_closed_forms(beta, temperature):
    components, ref, pol = enumeration(perturbed_reference(0.15), temperature)
    figures = exact_figures(RLKL(beta), components, ref, pol)
    rewards = components["calibration"]
    log_p = torch.log_softmax(ref + rewards / beta, 0)  # p ∝ π_ref·exp(r/β)
    p, pi = log_p.exp(), pol.exp()
    assert figures["log_z"] == pytest.approx(float(torch.logsumexp(ref + rewards / beta, 0)), abs=1e-12)
    assert figures["target_score"] == pytest.approx(float(p @ rewards), abs=1e-12)
    assert figures["target_kl_ref"] == pytest.approx(float(p @ (log_p - ref)), abs=1e-12)
    assert figures["forward_kl"] == pytest.approx(float(p @ (log_p - pol)), abs=1e-12)
    assert figures["reverse_kl"] == pytest.approx(float(pi @ (pol - log_p)), abs=1e-12)
    assert figures["tv"] == pytest.approx(float(0.5 * (p - pi).abs().sum()), abs=1e-12)
    m = (p + pi) / 2
    assert figures["js"] == pytest.approx(float(p @ (log_p - m.log()) + pi @ (pol - m.log())), abs=1e-12)
    # J* − J(π) = β·KL(π‖p), the optimum's value gap (Go et al. 2023)
    assert figures["j_star"] - figures["j"] == pytest.approx(beta * figures["reverse_kl"], abs=1e-10)
    assert figures["j"] == pytest.approx(figures["policy_score"] - beta * figures["policy_kl_ref"], abs=1e-12)


def test_exact_figures_agree_with_the_calibration_probe():
    policy = perturbed_reference(0.15)
    probe = CalibrationProbe(KLShaped(None, beta=0.5))(policy)
    figures = calibration_figures(RLKL(0.5), policy)
    assert figures["policy_score"] == pytest.approx(probe["exact/reward"], abs=1e-6)
    assert figures["policy_kl_ref"] == pytest.approx(probe["exact/kl_ref"], abs=1e-6)
    assert figures["reverse_kl"] == pytest.approx(probe["exact/kl_to_optimum"], abs=1e-6)
    assert figures["target_score"] == pytest.approx(probe["exact/optimal_reward"], abs=1e-6)
    assert figures["j_star"] == pytest.approx(probe["exact/optimal_objective"], abs=1e-6)


def test_gdc_binary_kl_to_the_reference_is_minus_log_z():
    components, ref, pol = enumeration(perturbed_reference(0.15))
    for threshold in (1.0, 2.0, 3.0):
        figures = exact_figures(GDCBinary(threshold), components, ref, pol)
        mass = float(ref.exp()[components["calibration"] >= threshold].sum())
        assert figures["log_z"] == pytest.approx(math.log(mass), abs=1e-12)
        assert figures["target_kl_ref"] == pytest.approx(-figures["log_z"], abs=1e-10)
        assert figures["target_score"] == pytest.approx(1.0, abs=1e-12)  # p satisfies the constraint surely
        assert figures["reverse_kl"] == math.inf  # the policy has mass where p has none


@pytest.mark.parametrize("target", [RLKL(0.5), GDCBinary(2.0)], ids=repr)
def test_divergences_are_nonnegative_and_zero_at_the_target(target):
    components, ref, _ = enumeration()
    log_p = torch.log_softmax(ref + target.log_potential(components), 0)  # p itself as the policy
    at_target = exact_figures(target, components, ref, log_p)
    for name in DIVERGENCES:
        assert abs(at_target[name]) < 1e-10, (name, at_target[name])
    for scale in (0.1, 0.5):
        _, _, pol = enumeration(perturbed_reference(scale))
        away = exact_figures(target, components, ref, pol)
        assert all(away[name] > 1e-3 for name in DIVERGENCES), away
        assert away["tv"] <= 1 and away["js"] <= 2 * math.log(2)


def test_gdc_distributional_fit_on_the_enumeration_recovers_the_moments_exactly():
    sequences = calibration.all_sequences()
    components = {"calibration": calibration.calibration_reward(sequences).double(),
                  "first": (sequences[:, 0] == 1).double()}
    _, ref, _ = enumeration()
    target = GDCDistributional(["calibration", "first"], [1.5, 0.6])
    lambdas = target.fit(target.feature_matrix(components), ref.exp(), tolerance=1e-13)
    log_p = torch.log_softmax(ref + target.log_potential(components), 0)
    moments = log_p.exp() @ target.feature_matrix(components)
    assert moments.tolist() == pytest.approx([1.5, 0.6], abs=1e-10)
    figures = exact_figures(target, components, ref)
    # KL(p‖π_ref) = λ·μ̄ − log Z for the exponential family
    assert figures["target_kl_ref"] == pytest.approx(float(lambdas @ target.moments) - figures["log_z"], abs=1e-10)


def test_gdc_distributional_fit_refuses_bad_weights_and_unreachable_moments():
    features = torch.tensor([[0.0], [1.0], [2.0]])
    with pytest.raises(ValueError, match=r"weights must be \(3,\) finite and ≥ 0"):
        GDCDistributional(["x"], [1.0]).fit(features, torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match=r"strictly inside the features' range \[\[0.0\], \[1.0\]\]"):
        GDCDistributional(["x"], [1.5]).fit(features, torch.tensor([1.0, 1.0, 0.0]))  # the row at 2 has no weight


# ---------------------------------------------------------------- how samples are drawn


def tag_reward(completions, tag, **kwargs):
    """The prompt's own column as the reward: each episode shows which prompt it continued."""
    return [float(value) for value in tag]


PROMPTS = [{"prompt": text, "tag": i} for i, text in enumerate(["the movie", "the food", "i love", "we ate", "they saw"])]


@pytest.fixture
def tagged_env(tiny_lm, word_tokenizer):
    return TokenVectorEnv(4, model=tiny_lm, tokenizer=word_tokenizer, prompts=PROMPTS, reward=tag_reward, max_new_tokens=3)


@pytest.mark.parametrize("n_per_prompt", [2, 4, 8])  # groups within a batch, one batch, a prompt replayed over batches
def test_each_prompt_fills_consecutive_rows_and_both_proposals_see_the_same_prompts(tagged_env, tiny_lm, n_per_prompt, one_thread):
    draw = dict(n_prompts=3, n_per_prompt=n_per_prompt, seed=5, policy=tiny_lm)
    reference = sample_for_targets(tagged_env, proposal="reference", **draw)
    policy = sample_for_targets(tagged_env, proposal="policy", **draw)
    for samples in (reference, policy):
        tags = samples.components["tag_reward"]  # (X, n)
        assert tags.shape == (3, n_per_prompt) and samples.prompt_index[:, 0].tolist() == [0, 1, 2]
        assert (tags == tags[:, :1]).all()  # every episode of a row continued that row's prompt
        assert [PROMPTS[int(t)]["prompt"] for t in tags[:, 0]] == list(samples.prompts)
    assert reference.prompts == policy.prompts
    # π_θ is π_ref's weights: the teacher-forced pass scores what the sampler drew, and vice versa
    assert torch.allclose(reference.policy_logprobs, reference.ref_logprobs, atol=1e-4)
    assert torch.allclose(policy.policy_logprobs, policy.ref_logprobs, atol=1e-4)


def test_explicit_prompts_are_used_in_order(tagged_env):
    samples = sample_for_targets(tagged_env, prompts=PROMPTS[:3], n_per_prompt=2, seed=0)  # 2 prompts a batch: wraps
    assert samples.components["tag_reward"].tolist() == [[0, 0], [1, 1], [2, 2]]


def test_sampling_refuses_what_the_weights_cannot_use(tiny_lm, word_tokenizer, tagged_env):
    truncated = TokenVectorEnv(4, model=tiny_lm, tokenizer=word_tokenizer, prompts=PROMPTS, reward=tag_reward,
                               max_new_tokens=3, top_k=5)
    with pytest.raises(ValueError, match=r"top_k=5, top_p=1.0.*not those of the sampled distribution"):
        sample_for_targets(truncated, n_prompts=1, n_per_prompt=4, seed=0)
    with pytest.raises(ValueError, match=r"n_per_prompt=3 must divide num_envs=4 or be a multiple of it"):
        sample_for_targets(tagged_env, n_prompts=1, n_per_prompt=3, seed=0)
    with pytest.raises(ValueError, match=r"proposal='policy' needs a policy model"):
        sample_for_targets(tagged_env, n_prompts=1, n_per_prompt=4, seed=0, proposal="policy")
