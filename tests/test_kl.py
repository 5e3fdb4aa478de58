"""KL estimators, the KL-shaped reward against teacher forcing, the env-owned reference, and the adaptive β."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import gymnasium as gym

import tokengym  # noqa: F401  (registers the envs)
from tokengym.lm.cached_lm import positions_from_mask
from tokengym.lm.kl import kl_estimate
from tokengym.lm.reference import Reference
from tokengym.rewards.base import EpisodeStart, StepBatch
from tokengym.rewards.compose import WeightedSum, make_reward
from tokengym.rewards.kl import AdaptiveKL, KLShaped

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
def test_adaptive_controller_moves_log_beta_by_exactly_e_n_over_horizon(kl, error):
    ctl = AdaptiveKL(init_beta=0.1, target=6.0, horizon=10_000)
    new = ctl.update(kl, n_steps=256)
    assert new == pytest.approx(0.1 * math.exp(error * 256 / 10_000), rel=1e-12)
    assert ctl.value == new


@pytest.mark.parametrize("n", [1, 127, 128, 129, 640, 1024, 10**6, 10**15])
@pytest.mark.parametrize("kl", [0.0, 1e-300, 1.0, 6.0, 7.5, 1e6, 1e300, math.inf])
def test_adaptive_beta_stays_positive_and_finite_for_any_batch_and_any_kl(n, kl):
    """β ← β·exp(e·min(n, horizon)/horizon): never 0, negative or infinite. The linear update
    β·(1 + e·n/horizon) reached 0 at n = 640 and −0.033 at n = 1,024 (β₀ = 0.055, KL 1, target 6,
    horizon 128), after which the KL penalty paid the policy to leave π_ref."""
    ctl = AdaptiveKL(init_beta=0.055, target=6.0, horizon=128)
    error = min(max(kl / 6.0 - 1, -0.2), 0.2)
    assert ctl.update(kl, n) == pytest.approx(0.055 * math.exp(error * min(n, 128) / 128), rel=1e-12)
    for _ in range(1000):  # a long run of extreme batches stays inside (0, inf) as well
        value = ctl.update(kl, n)
        assert 0 < value < math.inf


def test_adaptive_beta_update_is_the_same_in_one_batch_or_several_within_a_horizon():
    """The exponential update composes: n episodes in one update or in k updates of n/k (same
    error) give the same β, so β does not depend on how a run splits its episodes into batches
    or over ranks (up to one horizon per update)."""
    one, split = AdaptiveKL(0.055, 6.0, 128), AdaptiveKL(0.055, 6.0, 128)
    one.update(1.0, 128)
    for _ in range(4):
        split.update(1.0, 32)
    assert split.value == pytest.approx(one.value, rel=1e-12)


def test_adaptive_controller_refuses_a_nan_kl():
    with pytest.raises(ValueError, match="current_kl.*nan"):
        AdaptiveKL(0.055, 6.0, 128).update(math.nan, 64)


@pytest.mark.parametrize("kw", [dict(init_beta=0.0), dict(target=0.0), dict(horizon=0), dict(init_beta=-1.0)])
def test_adaptive_controller_validates_its_fields(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        AdaptiveKL(**{**dict(init_beta=0.1, target=6.0, horizon=100), **kw})


def test_kl_shaped_validates_beta_and_estimator():
    with pytest.raises(ValueError, match="beta"):
        KLShaped(Zero(), beta=-0.1)
    with pytest.raises(ValueError, match="k1, k2, k3"):
        KLShaped(Zero(), estimator="kl")


@pytest.mark.parametrize("estimator", ["k2", "k3"])
def test_k2_and_k3_are_refused_in_a_reward_with_the_reason(estimator):
    for build in (
        lambda: KLShaped(Zero(), estimator=estimator),
        lambda: make_reward("kl-shaped", task_scorer=lambda prompts, completions, **kw: [0.0] * len(completions),
                            tokenizer=object(), estimator=estimator),
        lambda: gym.make_vec("tokengym/Calibration-v0", num_envs=2, reward="kl-shaped",
                             reward_kwargs={"estimator": estimator}),
    ):
        with pytest.raises(ValueError) as error:
            build()
        message = str(error.value)
        assert f"estimator={estimator!r}" in message and "only for k1" in message and "kl_estimator" in message


# ---------------------------------------------------------------------------------------------
# KLShaped with a tiny GPT-2 policy and reference
# ---------------------------------------------------------------------------------------------

V, PAD, STOP, P_WIDTH, T = 24, 0, 2, 5, 6


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


class Driver:
    """A minimal env-like driver with partial resets that steps π_ref exactly as the env does
    (through ``Reference.stepper()``) and hands the reward ``ref_logprobs``."""

    def __init__(self, reward, batch: int, ref=None, temperature: float = 1.0):
        self.reward, self.batch = reward, batch
        self.stepper = Reference(ref, temperature).stepper() if ref is not None else None
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
        if self.stepper is not None:
            if rows.all():
                self.stepper.start(self.ids[:, :P_WIDTH], self.mask[:, :P_WIDTH])
            else:
                self.stepper.invalidate()
        self.reward.reset(EpisodeStart(self.ids[:, :P_WIDTH].clone(), self.mask[:, :P_WIDTH].clone(), [""] * self.batch, rows, T, None))

    def step(self, actions: torch.Tensor, acted: torch.Tensor, ended: torch.Tensor, logprobs=None):
        cols = P_WIDTH + self.lengths
        for b in acted.nonzero().flatten().tolist():
            self.ids[b, cols[b]] = actions[b]
            self.mask[b, cols[b]] = True
        self.lengths = self.lengths + acted.long()
        actions = torch.where(acted, actions, PAD)
        ref_logprobs = None
        if self.stepper is not None:
            ref_logprobs = self.stepper(self.ids, self.mask, P_WIDTH, self.lengths, actions, acted)
        step = StepBatch(self.ids.clone(), self.mask.clone(), P_WIDTH, self.lengths.clone(), actions,
                         acted, ended, logprobs, [""] * self.batch, None, ref_logprobs=ref_logprobs)
        return self.reward(step)


PROMPTS = {0: [3, 4, 5], 1: [7, 8, 9, 10, 11], 2: [12]}
RESPONSES = [[3, 4, 5, 6, 7, 8], [9, 9, STOP], [5, 17, 23, STOP]]  # ragged: the limit, two stop tokens


def full_sequences(prompts, responses):
    ids = torch.full((len(prompts), P_WIDTH + T), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        ids[b, P_WIDTH - len(p) : P_WIDTH + len(r)] = torch.tensor(p + r)
        mask[b, P_WIDTH - len(p) : P_WIDTH + len(r)] = True
    return ids, mask


def make_env(policy, reward, **kwargs):
    """The real env on token-id prompts, with the tiny ``policy`` as its model."""
    return gym.make_vec("tokengym/Custom-v0", num_envs=3, model=policy, prompts=list(PROMPTS.values()),
                        reward=reward, max_new_tokens=T, stop_token_ids=[STOP], **kwargs).unwrapped


def run_env_episode(env, policy_logprobs=None):
    """(T, B) kl_penalty and (T, B) info["ref_logprobs"] per step of the real env, on RESPONSES."""
    env.reset(options={"prompts": list(PROMPTS.values())})
    penalties, refs = [], []
    for t in range(T):
        actions = torch.tensor([r[t] if t < len(r) else PAD for r in RESPONSES])
        lp = None if policy_logprobs is None else policy_logprobs[:, P_WIDTH + t]
        _, _, _, _, info = env.step(actions, logprobs=lp)
        acted = torch.tensor([t < len(r) for r in RESPONSES])
        penalties.append(torch.where(acted, info["reward_components"]["kl_penalty"] - sum(penalties, torch.zeros(3)), 0.0))
        refs.append(info["ref_logprobs"])
    return torch.stack(penalties), torch.stack(refs)


def test_env_steps_the_reference_once_per_token_and_the_penalty_is_minus_beta_k1():
    policy, ref = tiny_gpt2(0), tiny_gpt2(1)
    ids, mask = full_sequences(list(PROMPTS.values()), RESPONSES)
    policy_lp, ref_lp = teacher_forced_logprobs(policy, ids, mask), teacher_forced_logprobs(ref, ids, mask)
    response_mask = mask[:, P_WIDTH:].T  # (T, B)
    expected = -0.1 * (policy_lp - ref_lp)[:, P_WIDTH:].T * response_mask

    calls = CountCalls(policy)
    widths = []
    ref.register_forward_hook(lambda module, args, kwargs, out: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    reward = KLShaped(Zero(), beta=0.1, ref_model=ref)
    env = make_env(policy, reward)
    assert env.reference.model is ref  # the reward's ref_model is the env's one π_ref
    got, ref_steps = run_env_episode(env, policy_logprobs=policy_lp)
    assert calls.n == 0  # the agent's log-probs were used: the policy never runs in the env
    assert widths == [P_WIDTH] + [1] * (T - 1)  # one prefill at reset, then one token per step but the last
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ref_steps, ref_lp[:, P_WIDTH:].T * response_mask, atol=1e-5, rtol=1e-5)
    # the per-episode KL the controller sees: Σ_t k1 over each episode, averaged over episodes
    assert reward.mean_episode_kl() == pytest.approx((expected.sum(0) / -0.1).mean().item(), abs=1e-5)

    fallback = KLShaped(Zero(), beta=0.1, ref_model=ref, policy_model=policy)  # for agents without log-probs
    got_fallback, _ = run_env_episode(make_env(policy, fallback))
    assert calls.n > 0
    torch.testing.assert_close(got_fallback, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("temperature", [0.7, 1.5])
def test_reference_is_scored_at_the_env_temperature(temperature):
    policy, ref = tiny_gpt2(0), tiny_gpt2(1)
    ids, mask = full_sequences(list(PROMPTS.values()), RESPONSES)
    policy_lp = teacher_forced_logprobs(policy, ids, mask, temperature=temperature)
    ref_lp = teacher_forced_logprobs(ref, ids, mask, temperature=temperature)
    expected = -0.2 * (policy_lp - ref_lp)[:, P_WIDTH:].T * mask[:, P_WIDTH:].T
    env = make_env(policy, KLShaped(Zero(), beta=0.2), ref_model=ref, temperature=temperature)
    assert env.reference.temperature == temperature and env.sampling.temperature == temperature
    got, _ = run_env_episode(env, policy_logprobs=policy_lp)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_one_reference_per_run_conflicts_and_temperature_mismatch_raise():
    policy, ref = tiny_gpt2(0), tiny_gpt2(1)
    with pytest.raises(ValueError, match="one π_ref"):
        make_env(policy, KLShaped(Zero(), ref_model=ref), ref_model=tiny_gpt2(2))
    with pytest.raises(ValueError, match="one π_ref"):
        make_env(policy, WeightedSum({"a": (1.0, KLShaped(Zero(), ref_model=ref)),
                                      "b": (1.0, KLShaped(Zero(), ref_model=tiny_gpt2(2), name="kl2"))}))
    env = make_env(policy, KLShaped(Zero()), temperature=0.7)
    with pytest.raises(ValueError, match="temperature"):
        env.set_reference(Reference(ref, temperature=1.0))
    # default π_ref: a frozen copy of the policy's starting weights, not the (trainable) instance itself
    assert env.reference.model is not policy
    assert all(torch.equal(a, b) for a, b in zip(env.reference.model.parameters(), policy.parameters()))
    assert not any(p.requires_grad for p in env.reference.model.parameters())


def test_partial_reset_re_prefills_and_stays_exact():
    """Autoreset: row 1 ends and restarts with a new prompt while rows 0 and 2 continue."""
    policy, ref = tiny_gpt2(0), tiny_gpt2(1)
    reward = KLShaped(Zero(), beta=1.0, policy_model=policy)
    env = Driver(reward, 3, ref=ref)
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


def test_missing_policy_logprobs_and_missing_reference_logprobs_raise():
    driver = Driver(KLShaped(Zero()), 3, ref=tiny_gpt2(1))
    driver.reset(PROMPTS)
    with pytest.raises(RuntimeError, match="logprobs"):
        driver.step(torch.tensor([1, 2, 3]), torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool))
    no_ref = Driver(KLShaped(Zero()), 3)
    no_ref.reset(PROMPTS)
    with pytest.raises(RuntimeError, match="ref_logprobs"):
        no_ref.step(torch.tensor([1, 2, 3]), torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool), torch.zeros(3))


def test_update_beta_feeds_the_mean_episode_kl_to_the_controller():
    policy, ref = tiny_gpt2(0), tiny_gpt2(1)
    ids, mask = full_sequences(list(PROMPTS.values()), RESPONSES)
    policy_lp = teacher_forced_logprobs(policy, ids, mask)
    reward = KLShaped(Zero(), beta=AdaptiveKL(0.1, target=1e-6, horizon=30))
    run_env_episode(make_env(policy, reward, ref_model=ref), policy_logprobs=policy_lp)
    kl = reward.mean_episode_kl()
    assert kl is not None and kl > 1e-6
    assert reward.update_beta() == pytest.approx(0.1 * math.exp(0.2 * 3 / 30))  # 3 episodes finished
    assert reward.mean_episode_kl() is None  # window restarted
    fixed = KLShaped(Zero(), beta=0.3)
    assert fixed.update_beta() == 0.3


def test_named_reference_is_loaded_once_and_composition_reports_the_need(tmp_path):
    ref = tiny_gpt2(1)
    ref.save_pretrained(tmp_path / "ref")
    reward = make_reward("kl-shaped", task_scorer=lambda prompts, completions, **kw: [0.0] * len(completions),
                         tokenizer=object(), beta=0.2, ref_model=str(tmp_path / "ref"))
    assert isinstance(reward, KLShaped) and reward.ref_model == str(tmp_path / "ref") and reward.beta == 0.2
    total = WeightedSum({"kl": (1.0, KLShaped(Zero(), ref_model=str(tmp_path / "ref")))})
    env = make_env(tiny_gpt2(0), total)
    assert env.steps_reference
    assert all(torch.equal(a, b) for a, b in zip(env.reference.model.parameters(), ref.parameters()))
    env.reset(options={"prompts": list(PROMPTS.values())})
    _, _, _, _, info = env.step(torch.tensor([1, 9, 5]), logprobs=torch.zeros(3))
    assert set(info["reward_components"]) == {"kl/task", "kl/kl_penalty"}
