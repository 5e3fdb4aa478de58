"""Top-k and top-p sampling, checked by enumerating Calibration-v0's 512 sequences: the policy's log-probs
(rollout, teacher forcing, score function) are those of the filtered, renormalised distribution
the actions are drawn from, and the KL-shaped reward charges KL(π_filt‖π_ref) against the
tempered, unfiltered π_ref (docs/kl.md, "Top-k and top-p")."""
from __future__ import annotations

import copy
import math

import gymnasium as gym
import pytest
import torch
from conftest import perturbed

import tokengym  # noqa: F401  (registers the envs)
from tokengym.agents import REINFORCE, Policy, REINFORCEConfig
from tokengym.envs import calibration
from tokengym.lm.sampling import SamplingConfig

pytestmark = pytest.mark.usefixtures("one_thread")

BETA = 0.1
EPISODES = 4096


@torch.no_grad()
def exact_logprobs(model: torch.nn.Module, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """(512,) log-prob of each sequence under ``model`` with top-k, then top-p, applied at every
    step and renormalised (−inf where a step's token is cut), written out independently of
    tokengym.lm.sampling."""
    sequences = calibration.all_sequences()  # (512, 3)
    input_ids = torch.cat([torch.zeros_like(sequences[:, :1]), sequences], dim=1)  # (512, 4)
    logits = model(input_ids=input_ids).logits[:, :-1].float()  # (512, 3, V)
    if top_k:
        kth = logits.sort(dim=-1, descending=True).values[..., top_k - 1 : top_k]  # (512, 3, 1)
        logits = torch.where(logits >= kth, logits, -math.inf)
    if top_p < 1:  # keep a token while the mass of the likelier ones is below top_p
        probs = logits.softmax(-1)  # (512, 3, V)
        likelier = (probs[..., None, :] > probs[..., :, None]).float()  # (512, 3, V, V) [a, b]: b likelier than a
        mass_before = (likelier * probs[..., None, :]).sum(-1)  # (512, 3, V)
        logits = torch.where(mass_before < top_p, logits, -math.inf)
    return logits.log_softmax(-1).gather(-1, sequences[..., None])[..., 0].sum(-1)  # (512,)


def sequence_index(responses: torch.Tensor) -> torch.Tensor:
    """(N,) each (N, 3) response's row in calibration.all_sequences() (lexicographic order)."""
    return (responses * torch.tensor([64, 8, 1])).sum(-1)


@pytest.mark.parametrize("scale", [0.0, 0.1])
@pytest.mark.parametrize("top_k", [2, 4])
def test_the_kl_penalty_under_top_k_charges_the_kl_of_what_is_sampled(top_k, scale):
    """Per sampled episode, the stored log-probs sum to log π_filt(y) and the reference's to
    log π_ref(y), exactly; averaged over 4,096 episodes the charged KL is KL(π_filt‖π_ref) by
    enumeration. With the unfiltered log π_θ the penalty averaged KL(π_filt‖π_ref) + E[Σ log Z_t]:
    0 against 0.444 (top_k 2) and 0.086 (top_k 4) at initialisation, 2.12 against 2.81 and 1.90
    against 2.08 for the perturbed policy."""
    reference = calibration.build_reference_model()
    model = perturbed(reference, scale) if scale else copy.deepcopy(reference)
    filtered, ref = exact_logprobs(model, top_k), exact_logprobs(reference)  # (512,)
    sampled = filtered.exp()
    assert sampled.sum().item() == pytest.approx(1.0, abs=1e-5)
    exact_kl = (sampled * torch.where(sampled > 0, filtered - ref, 0.0)).sum().item()

    env = gym.make_vec("tokengym/Calibration-v0", num_envs=EPISODES, reward="kl-shaped",
                       reward_kwargs={"beta": BETA}, top_k=top_k)
    agent = REINFORCE(env, REINFORCEConfig(seed=0), policy=Policy.from_pretrained(model))
    rollout = agent.collect()
    rows = sequence_index(rollout.input_ids[:, 1:])  # (N,)
    assert sampled[rows].min() > 0  # every episode lies in the support of π_filt
    torch.testing.assert_close(rollout.logprobs.sum(-1), filtered[rows], atol=1e-5, rtol=0)
    torch.testing.assert_close(rollout.ref_logprobs.sum(-1), ref[rows], atol=1e-5, rtol=0)

    charged = -rollout.components["kl_penalty"] / BETA  # (N,) per-episode KL the reward charged
    stderr = charged.std().item() / math.sqrt(EPISODES)
    assert abs(charged.mean().item() - exact_kl) < 4 * stderr + 1e-6, (charged.mean().item(), exact_kl)
    if scale == 0:  # the truncation's own cost: not 0 at initialisation
        assert exact_kl > 0.08
    # sampled from π_filt: the mean log π_filt(y) of the samples is −H(π_filt)
    entropy = -(sampled * torch.where(sampled > 0, filtered, 0.0)).sum().item()
    logp = filtered[rows]
    assert abs(-logp.mean().item() - entropy) < 4 * logp.std().item() / math.sqrt(EPISODES)


@pytest.mark.parametrize("top_k, top_p", [(2, 1.0), (4, 1.0), (0, 0.8)])
def test_the_score_function_under_top_k_is_that_of_the_sampled_distribution(top_k, top_p):
    """Σ_y π_filt(y) ∇log π(y) is exactly 0 for the distribution sampled from, whatever θ: the
    score-function identity that makes REINFORCE unbiased. Teacher-forced scores of all 512
    sequences equal log π_filt(y), so the identity holds; the unfiltered log π_θ left a gradient
    of the size of one sequence's."""
    model = perturbed(calibration.build_reference_model(), 0.1)
    policy = Policy.from_pretrained(model, sampling=SamplingConfig(top_k=top_k, top_p=top_p))
    sequences = calibration.all_sequences()
    input_ids = torch.cat([torch.zeros_like(sequences[:, :1]), sequences], dim=1)  # (512, 4)
    scored = policy.score(input_ids, torch.ones_like(input_ids, dtype=torch.bool), 1)
    exact = exact_logprobs(model, top_k, top_p)  # (512,)
    weights = exact.exp()  # (512,) π_filt(y), no gradient
    support = weights > 0
    assert support.sum() < 512  # the filter really cuts sequences here
    torch.testing.assert_close(scored.logprobs.sum(-1)[support], exact[support], atol=1e-5, rtol=0)
    assert scored.entropy.isfinite().all()

    def gradient(loss: torch.Tensor) -> torch.Tensor:
        policy.zero_grad()
        loss.backward(retain_graph=True)
        return torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None])

    sequence_logprobs = scored.logprobs.sum(-1)  # (512,)
    identity = gradient((weights * torch.where(support, sequence_logprobs, 0.0)).sum())
    one_sequence = gradient(sequence_logprobs[weights.argmax()])
    assert identity.norm() < 1e-4 * one_sequence.norm()
