"""LoRA through PEFT: only adapters train, π_ref is the base with adapters off (one model in
memory), and the saved run loads with peft alone and exports merged weights."""
from __future__ import annotations

import gc

import gymnasium as gym
import pytest
import torch
import transformers
from peft import AutoPeftModelForCausalLM

import tokengym  # noqa: F401  (registers the envs)
from tiny_models import LengthScore, build_tiny, save_tiny
from tokengym.agents import REINFORCE, REINFORCEConfig, Policy
from tokengym.export import export_merged
from tokengym.lm.lora import LoRAConfig, default_target_modules
from tokengym.lm.reference import Reference
from tokengym.rewards import Holistic
from tokengym.rewards.kl import KLShaped

PROMPTS = ["the movie was", "i love"]


def lora_agent(model_dir, **env_kwargs):
    env = gym.make_vec(
        "tokengym/Custom-v0", num_envs=4, model=str(model_dir), prompts=PROMPTS, max_new_tokens=4,
        reward=KLShaped(Holistic(LengthScore()), beta=0.1), **env_kwargs,
    )
    policy = Policy.from_pretrained(str(model_dir), lora=LoRAConfig(rank=4, alpha=8))
    return REINFORCE(env, REINFORCEConfig(lr=3e-2, seed=0, group_size=4), policy=policy)


def causal_lms_alive() -> set[int]:
    """ids of the causal-LM modules alive (a ``GPT2Model`` trunk inside one is not counted on its own)."""
    gc.collect()
    # type(o), not isinstance(o, ...): isinstance reads o.__class__, which on torch.distributed's
    # deprecated reduce_op alias raises a FutureWarning
    return {id(o) for o in gc.get_objects()
            if issubclass(type(o), transformers.PreTrainedModel) and issubclass(type(o), transformers.GenerationMixin)}


def test_lora_trains_only_adapters_and_reference_is_the_base_adapters_off(tmp_path, one_thread):
    model_dir = save_tiny(tmp_path / "base", "gpt2")
    before = causal_lms_alive()  # other tests' models may still be alive in this process
    base = Reference.load(str(model_dir))  # an independent copy of the base, for comparison only
    agent = lora_agent(model_dir)
    assert agent.reference.model is agent.policy.model  # no second copy ...
    del base.model
    assert len(causal_lms_alive() - before) == 1  # ... the env's early frozen copy is gone too
    base = Reference.load(str(model_dir))

    trainable = [n for n, p in agent.policy.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable), trainable
    before = {n: p.detach().clone() for n, p in agent.policy.named_parameters()}

    rollout = agent.collect()
    ids, mask, P = rollout.input_ids, rollout.attention_mask, rollout.prompt_width
    # The env stepped π_ref (KL-shaped reward) with adapters off: equal to the plain base's scores.
    torch.testing.assert_close(rollout.ref_logprobs, torch.where(rollout.mask, base.score(ids, mask, P), 0.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(agent.reference.score(ids, mask, P), base.score(ids, mask, P), atol=0, rtol=0)
    agent.learn(8)
    torch.testing.assert_close(agent.reference.score(ids, mask, P), base.score(ids, mask, P), atol=0, rtol=0)
    with torch.no_grad():
        assert not torch.allclose(agent.policy.score(ids, mask, P).logprobs, base.score(ids, mask, P))
    changed = {n for n, p in agent.policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".lora_" in n for n in changed)


def test_lora_run_loads_with_peft_alone_resumes_and_exports_merged(tmp_path, one_thread):
    model_dir = save_tiny(tmp_path / "base", "gpt2")
    agent = lora_agent(model_dir)
    agent.learn(8)
    run = agent.save(tmp_path / "run")
    assert (run / "policy" / "adapter_config.json").is_file() and (run / "policy" / "tokenizer.json").is_file()
    assert not (run / "policy" / "model.safetensors").exists()
    assert (run / "reference" / "model.safetensors").is_file()  # the base, once, adapters left out

    rollout = agent.collect()
    ids, mask, P = rollout.input_ids, rollout.attention_mask, rollout.prompt_width
    with torch.no_grad():
        expected = agent.policy.model(ids, attention_mask=mask.long()).logits

    # What a user does: peft + transformers only.
    peft_model = AutoPeftModelForCausalLM.from_pretrained(run / "policy", local_files_only=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(run / "policy", local_files_only=True)
    with torch.no_grad():
        torch.testing.assert_close(peft_model(ids, attention_mask=mask.long()).logits, expected, atol=1e-5, rtol=0)
    prompt = tokenizer("the movie was", return_tensors="pt")
    out = peft_model.generate(**prompt, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 3 and tokenizer.decode(out[0]).startswith("the movie was")
    reference = transformers.AutoModelForCausalLM.from_pretrained(run / "reference", local_files_only=True)
    for name, value in reference.state_dict().items():
        assert torch.equal(value, build_tiny("gpt2").state_dict()[name]), name

    merged = export_merged(run, tmp_path / "merged")
    plain = transformers.AutoModelForCausalLM.from_pretrained(merged, local_files_only=True).eval()
    assert transformers.AutoTokenizer.from_pretrained(merged, local_files_only=True).decode(prompt["input_ids"][0]) == "the movie was"
    with torch.no_grad():
        torch.testing.assert_close(plain(ids, attention_mask=mask.long()).logits, expected, atol=1e-4, rtol=0)

    env = agent.env
    del agent, peft_model, plain, reference
    resumed = REINFORCE.load(run, env)
    assert resumed.policy.is_lora and resumed.reference.model is resumed.policy.model
    with torch.no_grad():
        torch.testing.assert_close(resumed.policy.model(ids, attention_mask=mask.long()).logits, expected, atol=0, rtol=0)
    resumed.learn(4)  # the optimizer state fits the restored adapters


def test_default_target_modules_and_a_clear_error():
    assert default_target_modules(build_tiny("gpt2")) == ("c_attn", "c_proj")
    assert default_target_modules(build_tiny("llama")) == ("q_proj", "k_proj", "v_proj", "o_proj")
    unknown = torch.nn.Linear(2, 2)
    unknown.config = transformers.PretrainedConfig()
    unknown.config.model_type = "my-own-lm"
    with pytest.raises(ValueError, match="my-own-lm"):
        default_target_modules(unknown)
    with pytest.raises(ValueError, match="rank"):
        LoRAConfig(rank=0)
