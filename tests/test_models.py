"""Five tiny random architectures through the whole policy: cache correctness with left-padded
prompts, the value head, LoRA, save/load, one agent iteration; plus mixed precision (autocast)."""
from __future__ import annotations

import gymnasium as gym
import pytest
import torch

import tokengym  # noqa: F401  (registers the envs)
from tiny_models import ARCHITECTURES, LengthScore, save_tiny
from tokengym.agents import REINFORCE, Policy, REINFORCEConfig
from tokengym.lm.cached_lm import CachedLM
from tokengym.lm.lora import LoRAConfig
from tokengym.lm.reference import Reference
from tokengym.lm.sampling import SamplingConfig
from tokengym.rewards import Holistic

V, P, T = 32, 5, 6
PROMPT_LENGTHS = [5, 2, 4]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {arch: save_tiny(root / arch, arch) for arch in ARCHITECTURES}


def left_padded_prompts():
    gen = torch.Generator().manual_seed(0)
    prompt_mask = torch.arange(P)[None, :] >= P - torch.tensor(PROMPT_LENGTHS)[:, None]  # (B, P)
    prompt_ids = torch.randint(1, V, (len(PROMPT_LENGTHS), P), generator=gen)  # (B, P)
    return prompt_ids.masked_fill(~prompt_mask, 0), prompt_mask


def rollout_and_score(policy: Policy):
    """Roll out T steps with the KV cache, then re-score the buffer by teacher forcing."""
    prompt_ids, prompt_mask = left_padded_prompts()
    gen = torch.Generator().manual_seed(1)
    policy.begin(prompt_ids, prompt_mask)
    steps = []
    for _ in range(T):
        steps.append(policy.act(gen))
        policy.advance(steps[-1].actions)
    actions = torch.stack([s.actions for s in steps], dim=1)  # (B, T)
    response_mask = torch.ones(len(PROMPT_LENGTHS), T, dtype=torch.bool)
    response_mask[1, 3:] = False  # row 1 stopped after 3 tokens: right-padded response
    input_ids = torch.cat([prompt_ids, actions.masked_fill(~response_mask, 0)], dim=1)  # (B, P+T)
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)  # (B, P+T)
    rolled = {
        "logprobs": torch.stack([s.logprobs for s in steps], dim=1)[response_mask],
        "values": None if steps[0].values is None else torch.stack([s.values for s in steps], dim=1)[response_mask],
    }
    scored = policy.score(input_ids, attention_mask, P)
    return rolled, scored, (input_ids, attention_mask, response_mask)


def with_visible_value_head(policy: Policy) -> Policy:
    torch.nn.init.normal_(policy.value_head.weight, std=1.0)  # values clearly non-zero
    return policy


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_cache_matches_teacher_forcing_with_value_head(model_dirs, arch, one_thread):
    policy = with_visible_value_head(
        Policy.from_pretrained(str(model_dirs[arch]), value_head=True, sampling=SamplingConfig(temperature=0.7))
    )
    rolled, scored, (_, _, response_mask) = rollout_and_score(policy)
    torch.testing.assert_close(scored.logprobs[response_mask], rolled["logprobs"], atol=1e-5, rtol=0)
    assert rolled["values"].abs().min() > 1e-3
    torch.testing.assert_close(scored.values[response_mask], rolled["values"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_lora_save_load_and_one_agent_iteration(model_dirs, arch, tmp_path, one_thread):
    lora = Policy.from_pretrained(str(model_dirs[arch]), value_head=True, lora=LoRAConfig(rank=4))
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert all(".lora_" in n or n.startswith("value_head.") for n in trainable) and len(trainable) > 2
    rolled, scored, (ids, mask, response_mask) = rollout_and_score(with_visible_value_head(lora))
    torch.testing.assert_close(scored.logprobs[response_mask], rolled["logprobs"], atol=1e-5, rtol=0)
    (-scored.logprobs[response_mask].mean()).backward()
    torch.optim.SGD([p for p in lora.parameters() if p.requires_grad], lr=1.0).step()
    reference = Reference.adapters_off(lora.model)
    plain = Reference.load(str(model_dirs[arch]))
    torch.testing.assert_close(reference.score(ids, mask, P), plain.score(ids, mask, P), atol=0, rtol=0)
    with torch.no_grad():
        trained = lora.score(ids, mask, P)
    assert not torch.allclose(trained.logprobs, plain.score(ids, mask, P))

    for policy in (lora, Policy.from_pretrained(str(model_dirs[arch]), value_head=True)):  # LoRA and full
        policy.save_pretrained(tmp_path / "saved")
        restored = Policy.from_pretrained(tmp_path / "saved")
        with torch.no_grad():
            expected, got = policy.score(ids, mask, P), restored.score(ids, mask, P)
        torch.testing.assert_close(got.logprobs, expected.logprobs, atol=0, rtol=0)
        torch.testing.assert_close(got.values, expected.values, atol=0, rtol=0)

    env = gym.make_vec(
        "tokengym/Custom-v0", num_envs=4, model=str(model_dirs[arch]), prompts=["the movie was", "i love"],
        reward=Holistic(LengthScore()), max_new_tokens=4,
    )
    stats = REINFORCE(env, REINFORCEConfig(group_size=4)).train_iteration()
    assert stats["episodes"] == 4 and abs(stats["kl_ref"]) < 1e-4  # first batch: π_θold == π_ref


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2", "gpt_neox", "phi"])
def test_full_attention_models_step_with_a_prepared_mask(model_dirs, arch):
    import transformers

    policy = Policy.from_pretrained(str(model_dirs[arch]))
    # no host read per step (see takes_prepared_mask); transformers 4.x re-checks a 4D mask, so there
    # the 2D mask is kept
    expected = int(transformers.__version__.split(".")[0]) >= 5
    assert CachedLM(policy.model).prepared_mask == expected


def test_sliding_window_models_keep_the_2d_mask(model_dirs):
    assert not CachedLM(Policy.from_pretrained(str(model_dirs["mistral"])).model).prepared_mask


def test_bf16_autocast_keeps_fp32_master_weights(model_dirs, one_thread):
    full = Policy.from_pretrained(str(model_dirs["llama"]), value_head=True)
    mixed = Policy.from_pretrained(str(model_dirs["llama"]), value_head=True, autocast_dtype=torch.bfloat16)
    mixed.load_state_dict(full.state_dict())
    rolled, scored, (ids, mask, response_mask) = rollout_and_score(mixed)
    assert all(p.dtype == torch.float32 for p in mixed.parameters())
    with torch.no_grad():
        reference = full.score(ids, mask, P)
    torch.testing.assert_close(scored.logprobs, reference.logprobs, atol=2e-2, rtol=0)
    torch.testing.assert_close(scored.logprobs[response_mask], rolled["logprobs"], atol=2e-2, rtol=0)
    assert not torch.equal(scored.logprobs, reference.logprobs)  # bf16 really ran

    before = {n: p.detach().clone() for n, p in mixed.named_parameters()}
    optimizer = torch.optim.Adam(mixed.parameters(), lr=1e-2)
    (-scored.logprobs[response_mask].mean() + scored.values.pow(2).mean()).backward()
    optimizer.step()
    assert all(p.grad.dtype == torch.float32 for p in mixed.parameters() if p.grad is not None)
    assert sum(not torch.equal(p, before[n]) for n, p in mixed.named_parameters()) > 10
    assert all(p.dtype == torch.float32 for p in mixed.parameters())


def test_unsupported_autocast_dtype_is_a_clear_error(model_dirs):
    with pytest.raises(ValueError, match="autocast_dtype"):
        Policy.from_pretrained(str(model_dirs["gpt2"]), autocast_dtype=torch.float64)
