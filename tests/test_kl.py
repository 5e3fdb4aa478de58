"""KL estimators, the KL-shaped reward against teacher forcing, and the adaptive β controller."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from tokengym.envs.cached_lm import positions_from_mask
from tokengym.rewards.base import EpisodeStart, StepBatch
from tokengym.rewards.compose import WeightedSum, make_reward
from tokengym.rewards.kl import AdaptiveKL, KLShaped, kl_estimate

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# Estimators on two known categorical distributions (exact enumeration vs sampling)
# ---------------------------------------------------------------------------------------------


def sample_estimates(p: torch.Tensor, q: torch.Tensor, n: int = 200_000, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.multinomial(p, n, replacement=True, generator=gen)  # a ~ π_θ = p
    return {k: kl_estimate(p.log()[a], q.log()[a], k) for k in ("k1", "k2", "k3")}


def mean_and_se(x: torch.Tensor) -> tuple[float, float]:
    return x.mean().item(), x.std().item() / math.sqrt(x.numel())


P = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05], dtype=torch.float64)
Q = torch.tensor([0.1, 0.3, 0.3, 0.2, 0.1], dtype=torch.float64)


def test_k1_and_k3_are_unbiased():
    exact_kl = (P * (P / Q).log()).sum().item()
    est = sample_estimates(P, Q)
    for kind in ("k1", "k3"):
        mean, se = mean_and_se(est[kind])
        assert abs(mean - exact_kl) < 4 * se, (kind, mean, exact_kl, se)
    assert est["k3"].min() >= 0  # k3 is never negative
    assert est["k3"].std() < est["k1"].std()  # and has lower variance here


@pytest.mark.parametrize("q", [Q, torch.tensor([0.45, 0.22, 0.15, 0.11, 0.07], dtype=torch.float64)])
def test_k2_bias_has_the_predicted_sign_and_size(q):
    """E[k2] = E_p[½ log² ρ], not KL: the sampled bias matches the exact one. With δ = q/p − 1,
    E[k2] − KL = −E_p[δ³]/6 + O(δ⁴): second-order agreement, so close distributions have a small
    bias whose sign is that of −E_p[δ³]."""
    log_ratio = (P / q).log()
    exact_kl = (P * log_ratio).sum().item()
    exact_k2 = (P * 0.5 * log_ratio**2).sum().item()  # E_p[½ log² ρ]
    exact_bias = exact_k2 - exact_kl
    est = sample_estimates(P, q)
    mean, se = mean_and_se(est["k2"])
    assert abs(mean - exact_k2) < 4 * se
    bias, bias_se = mean_and_se(est["k2"] - est["k1"])  # paired: the sampled bias
    assert abs(bias - exact_bias) < 4 * bias_se
    if exact_kl > 0.1:  # far apart: a large bias, clearly visible in the samples
        assert abs(bias) > 4 * bias_se and bias * exact_bias > 0 and exact_bias > 0.3 * exact_kl
    else:  # close: small relative bias with the sign of the leading term
        third_order = -(P * (q / P - 1) ** 3).sum().item() / 6
        assert abs(exact_bias) < 0.1 * exact_kl and exact_bias * third_order > 0


def test_kl_estimator_pointwise_values_and_kind_validation():
    logprobs = torch.tensor([math.log(0.5), math.log(0.2)])
    ref_logprobs = torch.tensor([math.log(0.25), math.log(0.4)])
    # log ρ = ±log 2
    torch.testing.assert_close(kl_estimate(logprobs, ref_logprobs, "k1"), torch.tensor([math.log(2), -math.log(2)]))
    torch.testing.assert_close(kl_estimate(logprobs, ref_logprobs, "k2"), torch.tensor([0.5 * math.log(2) ** 2] * 2))
    torch.testing.assert_close(
        kl_estimate(logprobs, ref_logprobs, "k3"), torch.tensor([0.5 - 1 + math.log(2), 2 - 1 - math.log(2)])
    )
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_estimate(logprobs, ref_logprobs, "k4")


def test_unknown_estimator_lists_the_valid_ones():
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_estimate(torch.zeros(2), torch.zeros(2), "k4")


# ---------------------------------------------------------------------------------------------
# Adaptive β (Ziegler et al. 2019)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kl, error", [(9.0, 0.2), (6.6, 0.1), (6.0, 0.0), (5.4, -0.1), (3.0, -0.2), (0.0, -0.2), (60.0, 0.2)]
)
def test_adaptive_controller_moves_beta_by_exactly_beta_e_n_over_horizon(kl, error):
    ctl = AdaptiveKL(init_beta=0.1, target=6.0, horizon=10_000)
    new = ctl.update(kl, n_steps=256)
    assert new == pytest.approx(0.1 + 0.1 * error * 256 / 10_000, rel=1e-12)
    assert ctl.value == new


@pytest.mark.parametrize("kw", [dict(init_beta=0.0), dict(target=0.0), dict(horizon=0), dict(init_beta=-1.0)])
def test_adaptive_controller_validates_its_fields(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        AdaptiveKL(**{**dict(init_beta=0.1, target=6.0, horizon=100), **kw})


def test_kl_shaped_validates_beta_and_estimator():
    with pytest.raises(ValueError, match="beta"):
        KLShaped(Zero(), beta=-0.1)
    with pytest.raises(ValueError, match="k1, k2, k3"):
        KLShaped(Zero(), estimator="kl")


# ---------------------------------------------------------------------------------------------
# KLShaped with a tiny GPT-2 policy and reference
# ---------------------------------------------------------------------------------------------

V, PAD, P_WIDTH, T = 24, 0, 5, 6


def tiny_gpt2(seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=V, n_positions=64, n_embd=16, n_layer=2, n_head=2, pad_token_id=PAD)
    return GPT2LMHeadModel(config).eval()


class Zero:
    """Inner reward that pays nothing."""

    name = "task"

    def reset(self, episodes):
        pass

    def __call__(self, step):
        return torch.zeros(step.actions.shape[0])


class CountCalls:
    def __init__(self, model):
        self.n = 0
        model.register_forward_hook(lambda *args: setattr(self, "n", self.n + 1))


@torch.no_grad()
def teacher_forced_logprobs(model, input_ids, mask, temperature=1.0) -> torch.Tensor:
    """(B, L) log π(token_j | tokens_<j) of every column j, by one full forward."""
    logits = model(input_ids=input_ids, attention_mask=mask.long(), position_ids=positions_from_mask(mask)).logits
    logprobs = torch.log_softmax(logits.float() / temperature, -1)  # (B, L, V)
    out = torch.zeros(input_ids.shape, dtype=torch.float32)
    out[:, 1:] = logprobs[:, :-1].gather(2, input_ids[:, 1:, None]).squeeze(2)
    return out


class Env:
    """A minimal env-like driver: left-padded prompts, right-padded responses, partial resets."""

    def __init__(self, reward, batch: int):
        self.reward, self.batch = reward, batch
        self.ids = torch.full((batch, P_WIDTH + T), PAD, dtype=torch.long)
        self.mask = torch.zeros((batch, P_WIDTH + T), dtype=torch.bool)
        self.lengths = torch.zeros(batch, dtype=torch.long)

    def reset(self, prompts: dict[int, list[int]]):
        rows = torch.zeros(self.batch, dtype=torch.bool)
        for b, prompt in prompts.items():
            rows[b] = True
            self.ids[b], self.mask[b], self.lengths[b] = PAD, False, 0
            self.ids[b, P_WIDTH - len(prompt) : P_WIDTH] = torch.tensor(prompt)
            self.mask[b, P_WIDTH - len(prompt) : P_WIDTH] = True
        self.reward.reset(EpisodeStart(self.ids[:, :P_WIDTH].clone(), self.mask[:, :P_WIDTH].clone(), [""] * self.batch, rows, T, None))

    def step(self, actions: torch.Tensor, acted: torch.Tensor, ended: torch.Tensor, logprobs=None):
        cols = P_WIDTH + self.lengths
        for b in acted.nonzero().flatten().tolist():
            self.ids[b, cols[b]] = actions[b]
            self.mask[b, cols[b]] = True
        self.lengths = self.lengths + acted.long()
        step = StepBatch(self.ids.clone(), self.mask.clone(), P_WIDTH, self.lengths.clone(), torch.where(acted, actions, PAD),
                         acted, ended, logprobs, [""] * self.batch, None)
        return self.reward(step)


PROMPTS = {0: [3, 4, 5], 1: [7, 8, 9, 10, 11], 2: [12]}
RESPONSES = [[1, 2, 3, 4, 5, 6], [9, 9, 2], [5, 17, 23, 1]]  # ragged episode ends


def full_sequences(prompts, responses):
    ids = torch.full((len(prompts), P_WIDTH + T), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        ids[b, P_WIDTH - len(p) : P_WIDTH + len(r)] = torch.tensor(p + r)
        mask[b, P_WIDTH - len(p) : P_WIDTH + len(r)] = True
    return ids, mask


def run_episode(reward, policy_logprobs=None):
    """(T, B) kl_penalty per step (zero where a row did not act)."""
    env = Env(reward, 3)
    env.reset(PROMPTS)
    penalties = []
    for t in range(T):
        acted = torch.tensor([t < len(r) for r in RESPONSES])
        ended = torch.tensor([t == len(r) - 1 for r in RESPONSES])
        actions = torch.tensor([r[t] if t < len(r) else PAD for r in RESPONSES])
        lp = None if policy_logprobs is None else policy_logprobs[:, P_WIDTH + t]
        out = env.step(actions, acted, ended, lp)
        assert set(out) == {"task", "kl_penalty"}
        penalties.append(torch.where(acted, out["kl_penalty"], 0.0))
    return torch.stack(penalties)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_penalty_equals_minus_beta_k_from_teacher_forcing_without_policy_forward(estimator):
    policy, ref = tiny_gpt2(0), tiny_gpt2(1)
    ids, mask = full_sequences(list(PROMPTS.values()), RESPONSES)
    policy_lp, ref_lp = teacher_forced_logprobs(policy, ids, mask), teacher_forced_logprobs(ref, ids, mask)
    response_mask = mask[:, P_WIDTH:].T  # (T, B)
    expected = -0.1 * kl_estimate(policy_lp[:, P_WIDTH:], ref_lp[:, P_WIDTH:], estimator).T * response_mask

    calls = CountCalls(policy)
    reward = KLShaped(Zero(), beta=0.1, estimator=estimator, ref_model=ref, policy_model=policy)
    got = run_episode(reward, policy_logprobs=policy_lp)
    assert calls.n == 0  # the agent's log-probs were used: no extra policy forward pass
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

    fallback = run_episode(KLShaped(Zero(), beta=0.1, estimator=estimator, ref_model=ref, policy_model=policy))
    assert calls.n > 0
    torch.testing.assert_close(fallback, expected, atol=1e-5, rtol=1e-5)

    # the per-episode KL the controller sees: Σ_t k over each episode, averaged over episodes
    per_episode = (expected.sum(0) / -0.1).mean().item()
    assert reward.mean_episode_kl() == pytest.approx(per_episode, abs=1e-5)


def test_reference_is_stepped_incrementally_and_temperature_is_applied():
    policy, ref = tiny_gpt2(0), tiny_gpt2(1)
    ids, mask = full_sequences(list(PROMPTS.values()), RESPONSES)
    policy_lp = teacher_forced_logprobs(policy, ids, mask, temperature=0.7)
    ref_lp = teacher_forced_logprobs(ref, ids, mask, temperature=0.7)
    expected = -0.2 * (policy_lp - ref_lp)[:, P_WIDTH:].T * mask[:, P_WIDTH:].T
    widths = []
    ref.register_forward_hook(lambda module, args, kwargs, out: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    got = run_episode(KLShaped(Zero(), beta=0.2, ref_model=ref, temperature=0.7), policy_logprobs=policy_lp)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert widths == [P_WIDTH] + [1] * T  # one prefill at reset, then one token per step


def test_partial_reset_re_prefills_and_stays_exact():
    """Autoreset: row 1 ends and restarts with a new prompt while rows 0 and 2 continue."""
    policy, ref = tiny_gpt2(0), tiny_gpt2(1)
    reward = KLShaped(Zero(), beta=1.0, ref_model=ref, policy_model=policy)
    env = Env(reward, 3)
    env.reset(PROMPTS)
    got = []
    schedule = [  # (actions, acted, ended)
        ([1, 2, 3], [1, 1, 1], [0, 1, 0]),
        ([4, 0, 5], [1, 0, 1], [0, 0, 0]),  # row 1 waits
        ("reset", {1: [20, 21]}),
        ([6, 7, 8], [1, 1, 1], [0, 0, 0]),
        ([9, 10, 11], [1, 1, 1], [1, 1, 1]),
    ]
    for item in schedule:
        if item[0] == "reset":
            env.reset(item[1])
            continue
        actions, acted, ended = (torch.tensor(x) for x in item)
        out = env.step(actions, acted.bool(), ended.bool())
        got.append((env.ids.clone(), env.mask.clone(), acted.bool(), out["kl_penalty"]))
    for ids, mask, acted, penalty in got:
        last = (mask.long().cumsum(1) == mask.long().sum(1, keepdim=True)) & mask
        col = last.float().argmax(1)  # (B,) the column of each row's newest token
        pol = teacher_forced_logprobs(policy, ids, mask).gather(1, col[:, None]).squeeze(1)
        ref_lp = teacher_forced_logprobs(ref, ids, mask).gather(1, col[:, None]).squeeze(1)
        torch.testing.assert_close(penalty[acted], -(pol - ref_lp)[acted], atol=1e-5, rtol=1e-5)


def test_missing_policy_logprobs_and_missing_reference_raise():
    reward = KLShaped(Zero(), ref_model=tiny_gpt2(1))
    with pytest.raises(RuntimeError, match="logprobs"):
        run_episode(reward)
    with pytest.raises(ValueError, match="reference model"):
        Env(KLShaped(Zero()), 3).reset(PROMPTS)


def test_update_beta_feeds_the_mean_episode_kl_to_the_controller():
    policy, ref = tiny_gpt2(0), tiny_gpt2(1)
    ids, mask = full_sequences(list(PROMPTS.values()), RESPONSES)
    policy_lp = teacher_forced_logprobs(policy, ids, mask)
    reward = KLShaped(Zero(), beta=AdaptiveKL(0.1, target=1e-6, horizon=30), ref_model=ref)
    run_episode(reward, policy_logprobs=policy_lp)
    kl = reward.mean_episode_kl()
    assert kl is not None and kl > 1e-6
    assert reward.update_beta() == pytest.approx(0.1 * (1 + 0.2 * 3 / 30))  # 3 episodes finished
    assert reward.mean_episode_kl() is None  # window restarted
    fixed = KLShaped(Zero(), beta=0.3, ref_model=ref)
    assert fixed.update_beta() == 0.3


def test_make_reward_binds_the_policy_model_name_as_reference(tmp_path):
    ref = tiny_gpt2(1)
    ref.save_pretrained(tmp_path / "policy")

    def scorer(prompts, completions, **kwargs):
        return [0.0] * len(completions)

    reward = make_reward("kl-shaped", task_scorer=scorer, tokenizer=object(), model_name=str(tmp_path / "policy"),
                         device="cpu", beta=0.2, estimator="k3")
    assert isinstance(reward, KLShaped) and reward.ref_model == str(tmp_path / "policy") and reward.beta == 0.2
    named = make_reward("kl-shaped", task_scorer=scorer, tokenizer=object(), model_name="unused", ref_model=ref)
    assert named.ref_model is ref
    # composition passes bind through, and names components name/inner
    total = make_reward(WeightedSum({"kl": (1.0, KLShaped(Zero()))}), model_name=str(tmp_path / "policy"), device="cpu")
    assert total.rewards["kl"][1].ref_model == str(tmp_path / "policy")
    env = Env(total, 3)
    env.reset(PROMPTS)
    out = env.step(torch.tensor([1, 9, 5]), torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool),
                   torch.zeros(3))
    assert set(out) == {"kl/task", "kl/kl_penalty"}
