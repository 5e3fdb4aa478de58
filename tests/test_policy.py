"""Policy: rollout vs teacher-forced agreement, sampling filters, saving, the frozen reference."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from tokengym.agents.policy import Policy
from tokengym.lm.reference import Reference, frozen_copy
from tokengym.lm.sampling import SamplingConfig, filter_logits

V, P, T, PAD = 13, 5, 6, 0
PROMPT_LENGTHS = [5, 2, 4]


def tiny_lm(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=V, n_layer=2, n_embd=16, n_head=2, n_positions=32, bos_token_id=1, eos_token_id=2, pad_token_id=PAD
    )
    return GPT2LMHeadModel(config)


def tiny_policy(value: str | None = None, sampling: SamplingConfig | None = None, seed: int = 0) -> Policy:
    policy = Policy.from_pretrained(
        tiny_lm(seed),
        value_head=value == "shared",
        separate_value_model=value == "separate",
        sampling=sampling,
    )
    if policy.value_head is not None:  # the default init is tiny; make values clearly non-zero
        torch.nn.init.normal_(policy.value_head.weight, std=1.0)
        torch.nn.init.normal_(policy.value_head.bias, std=1.0)
    if policy.value_model is not None:  # let the value trunk differ from the policy's
        with torch.no_grad():
            for param in policy.value_model.parameters():
                param.add_(0.1 * torch.randn_like(param))
    return policy


def left_padded_prompts(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    prompt_mask = torch.arange(P)[None, :] >= P - torch.tensor(PROMPT_LENGTHS)[:, None]  # (B, P)
    prompt_ids = torch.randint(1, V, (len(PROMPT_LENGTHS), P), generator=gen)  # (B, P)
    return prompt_ids.masked_fill(~prompt_mask, PAD), prompt_mask


def rollout(policy: Policy, prompt_ids, prompt_mask, generator=None):
    """T steps of begin/act/advance; returns (B, T) actions, logprobs and values (or None)."""
    policy.begin(prompt_ids, prompt_mask)
    steps = []
    for _ in range(T):
        step = policy.act(generator)
        policy.advance(step.actions)
        steps.append(step)
    actions = torch.stack([s.actions for s in steps], dim=1)  # (B, T)
    logprobs = torch.stack([s.logprobs for s in steps], dim=1)  # (B, T)
    values = None if steps[0].values is None else torch.stack([s.values for s in steps], dim=1)
    return actions, logprobs, values


@pytest.mark.parametrize("value", [None, "shared", "separate"])
def test_rollout_and_teacher_forced_logprobs_agree(value):
    policy = tiny_policy(value, SamplingConfig(temperature=0.7))
    prompt_ids, prompt_mask = left_padded_prompts()
    actions, logprobs, values = rollout(policy, prompt_ids, prompt_mask, torch.Generator().manual_seed(1))
    assert actions.dtype == torch.int64 and actions.shape == (3, T)

    # The env's buffer: row 1 "terminated" after 3 actions, so its response is right-padded.
    response_mask = torch.ones(3, T, dtype=torch.bool)
    response_mask[1, 3:] = False
    response = actions.masked_fill(~response_mask, PAD)
    input_ids = torch.cat([prompt_ids, response], dim=1)  # (B, P+T)
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)  # (B, P+T)
    scored = policy.score(input_ids, attention_mask, prompt_width=P)

    assert scored.logprobs.shape == (3, T) and scored.logprobs.requires_grad
    torch.testing.assert_close(scored.logprobs[response_mask], logprobs[response_mask], atol=1e-5, rtol=0)
    if value is None:
        assert values is None and scored.values is None
    else:
        assert values.abs().min() > 1e-3  # a meaningful comparison, not 0 == 0
        torch.testing.assert_close(scored.values[response_mask], values[response_mask], atol=1e-5, rtol=0)


def test_score_entropy_of_first_step_matches_direct_forward():
    policy = tiny_policy(sampling=SamplingConfig(temperature=2.0))
    prompt_ids, prompt_mask = left_padded_prompts()
    actions, _, _ = rollout(policy, prompt_ids, prompt_mask, torch.Generator().manual_seed(0))
    input_ids = torch.cat([prompt_ids, actions], dim=1)
    attention_mask = torch.cat([prompt_mask, torch.ones_like(actions, dtype=torch.bool)], dim=1)
    scored = policy.score(input_ids, attention_mask, prompt_width=P)
    for b, n in enumerate(PROMPT_LENGTHS):  # the unpadded prompt alone, no cache, no positions trick
        logits = policy.model(prompt_ids[b : b + 1, P - n :]).logits[0, -1] / 2.0
        probs = logits.softmax(-1)
        entropy = -(probs * probs.log()).sum()
        assert scored.entropy[b, 0].item() == pytest.approx(entropy.item(), abs=1e-5)
        assert scored.logprobs[b, 0].item() == pytest.approx(probs[actions[b, 0]].log().item(), abs=1e-5)


def test_entropy_and_its_gradient_are_finite_where_a_logit_is_minus_inf():
    """A model that rules a token out (logit −inf, as vocabulary masks do): its entropy is that of
    the other tokens, not NaN (0·log 0), and so is the entropy bonus's gradient."""
    policy = tiny_policy()
    policy.model.lm_head.register_forward_hook(lambda module, args, out: out.index_fill(-1, torch.tensor([V - 1]), -math.inf))
    prompt_ids, prompt_mask = left_padded_prompts()
    input_ids = torch.cat([prompt_ids, torch.full((len(PROMPT_LENGTHS), 2), 3)], dim=1)
    attention_mask = torch.cat([prompt_mask, torch.ones(len(PROMPT_LENGTHS), 2, dtype=torch.bool)], dim=1)
    scored = policy.score(input_ids, attention_mask, prompt_width=P)
    with torch.no_grad():
        logits = policy.model(input_ids[:1, P - PROMPT_LENGTHS[0]:]).logits[0, P - 1 : P + 1, : V - 1]  # (2, V−1)
    probs = logits.softmax(-1)
    torch.testing.assert_close(scored.entropy[0], -(probs * probs.log()).sum(-1), atol=1e-5, rtol=0)
    scored.entropy.sum().backward()
    grads = [p.grad for p in policy.parameters() if p.grad is not None]
    assert grads and all(g.isfinite().all() for g in grads)


def test_seeded_sampling_is_reproducible():
    policy = tiny_policy(sampling=SamplingConfig(temperature=1.5))
    prompt_ids, prompt_mask = left_padded_prompts()
    first, _, _ = rollout(policy, prompt_ids, prompt_mask, torch.Generator().manual_seed(7))
    again, _, _ = rollout(policy, prompt_ids, prompt_mask, torch.Generator().manual_seed(7))
    other, _, _ = rollout(policy, prompt_ids, prompt_mask, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_top_k_one_is_greedy():
    policy = tiny_policy(sampling=SamplingConfig(temperature=3.0, top_k=1))
    prompt_ids, prompt_mask = left_padded_prompts()
    policy.begin(prompt_ids, prompt_mask)
    for _ in range(T):
        greedy = policy._logits.argmax(-1)
        step = policy.act(torch.Generator().manual_seed(0))
        assert torch.equal(step.actions, greedy)
        # the reported log-prob is that of the distribution sampled from: greedy is certain
        assert torch.equal(step.logprobs, torch.zeros_like(step.logprobs))
        policy.advance(step.actions)


def logits_of(probs):
    return torch.tensor(probs).log()


def kept(logits):
    return (logits > -math.inf).tolist()


def test_filter_logits_top_k_and_minimal_nucleus():
    # probabilities in shuffled order: 0.15, 0.5, 0.1, 0.25
    logits = logits_of([[0.15, 0.5, 0.1, 0.25], [0.25, 0.25, 0.25, 0.25]])
    assert kept(filter_logits(logits, top_k=2)) == [[False, True, False, True], [True] * 4]  # ties kept
    assert kept(filter_logits(logits, top_k=4)) == [[True] * 4] * 2
    # smallest set with mass >= top_p
    assert kept(filter_logits(logits[:1], top_p=0.4)) == [[False, True, False, False]]
    assert kept(filter_logits(logits[:1], top_p=0.7)) == [[False, True, False, True]]
    assert kept(filter_logits(logits[:1], top_p=0.8)) == [[True, True, False, True]]
    assert kept(filter_logits(logits[:1], top_p=1.0)) == [[True] * 4]
    # exact boundary: two of four equal tokens already reach 0.5, so the nucleus has two
    assert filter_logits(torch.zeros(4), top_p=0.5).isfinite().sum().item() == 2
    # top-k first, then top-p on the renormalised {0.5, 0.25, 0.15}: 0.5/0.9 + 0.25/0.9 = 0.83 >= 0.8
    assert kept(filter_logits(logits[:1], top_k=3, top_p=0.8)) == [[False, True, False, True]]
    # kept logits are unchanged
    filtered = filter_logits(logits, top_k=3, top_p=0.8)
    assert torch.equal(filtered[filtered > -math.inf], logits[filtered > -math.inf])


def test_top_p_sampling_stays_in_nucleus():
    policy = tiny_policy(sampling=SamplingConfig(top_p=0.5))
    prompt_ids, prompt_mask = left_padded_prompts()
    policy.begin(prompt_ids, prompt_mask)
    nucleus = filter_logits(policy._logits, top_p=0.5) > -math.inf  # (B, V)
    gen = torch.Generator().manual_seed(0)
    actions = torch.stack([policy.act(gen).actions for _ in range(200)], dim=1)  # (B, 200)
    assert nucleus.gather(1, actions).all()
    assert (nucleus.sum(-1) < V).all()  # the nucleus really excludes tokens here


@pytest.mark.parametrize(
    "field, value",
    [("temperature", 0.0), ("temperature", -1.0), ("temperature", math.inf), ("temperature", math.nan),
     ("top_k", -1), ("top_k", 1.5), ("top_p", 0.0), ("top_p", 1.5), ("top_p", math.nan)],
)
def test_invalid_sampling_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingConfig(**{field: value})


@pytest.mark.parametrize("value", ["shared", "separate"])
def test_save_pretrained_round_trip(tmp_path, value):
    policy = tiny_policy(value)
    target = tmp_path / "policy"
    target.mkdir()
    (target / "stale.txt").write_text("replaced atomically")
    policy.save_pretrained(target)
    assert not (target / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]  # no temp dirs left behind

    prompt_ids, prompt_mask = left_padded_prompts()
    input_ids = torch.cat([prompt_ids, torch.randint(1, V, (3, T))], dim=1)
    attention_mask = torch.cat([prompt_mask, torch.ones(3, T, dtype=torch.bool)], dim=1)

    plain = AutoModelForCausalLM.from_pretrained(target, local_files_only=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            plain(input_ids, attention_mask=attention_mask.long()).logits,
            policy.model(input_ids, attention_mask=attention_mask.long()).logits,
            rtol=0,
            atol=0,
        )
    restored = Policy.from_pretrained(target)
    assert (restored.value_model is not None) == (value == "separate")
    with torch.no_grad():
        original = policy.score(input_ids, attention_mask, P)
        loaded = restored.score(input_ids, attention_mask, P)
    torch.testing.assert_close(loaded.values, original.values, rtol=0, atol=0)
    torch.testing.assert_close(loaded.logprobs, original.logprobs, rtol=0, atol=0)


def test_reference_is_frozen_and_unchanged_by_policy_update():
    policy = tiny_policy("shared", SamplingConfig(temperature=0.7))
    ref = Reference(frozen_copy(policy.model), temperature=0.7)
    reference = ref.model
    assert not any(p.requires_grad for p in reference.parameters())
    assert not reference.training
    before = {k: v.clone() for k, v in reference.state_dict().items()}

    prompt_ids, prompt_mask = left_padded_prompts()
    actions, _, _ = rollout(policy, prompt_ids, prompt_mask, torch.Generator().manual_seed(0))
    input_ids = torch.cat([prompt_ids, actions], dim=1)
    attention_mask = torch.cat([prompt_mask, torch.ones_like(actions, dtype=torch.bool)], dim=1)
    optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)
    scored = policy.score(input_ids, attention_mask, P)
    # Before any update, π_ref at the same temperature scores the episode exactly as the policy does.
    torch.testing.assert_close(ref.score(input_ids, attention_mask, P), scored.logprobs.detach(), rtol=0, atol=1e-6)
    (-scored.logprobs.mean() + scored.values.pow(2).mean()).backward()
    optimizer.step()

    assert any(not torch.equal(p, before[k]) for k, p in policy.model.state_dict().items())
    for k, v in reference.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_vocab_size_and_parameter_groups():
    policy = tiny_policy("separate")
    assert policy.vocab_size == V
    value_ids = {id(p) for p in policy.value_parameters()}
    policy_ids = {id(p) for p in policy.policy_parameters()}
    assert not value_ids & policy_ids
    assert value_ids | policy_ids == {id(p) for p in policy.parameters()}
    assert not policy.train().model.training  # dropout stays off in the update phase
