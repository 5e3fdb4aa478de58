"""A trained run's ``policy/`` and ``reference/`` are usable by transformers alone, as a user would."""
from __future__ import annotations

import gymnasium as gym
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

import tokengym  # noqa: F401  (registers the envs)
from tokengym.agents import REINFORCE, REINFORCEConfig

SENTENCE = "the movie was great and the food was good"


def test_saved_policy_and_reference_load_and_generate_with_transformers_alone(tmp_path, one_thread):
    env = gym.make_vec("tokengym/Sentiment-v0", num_envs=4, max_new_tokens=4)
    agent = REINFORCE(env, REINFORCEConfig(lr=1e-3, seed=0, group_size=4))
    agent.learn(8)
    agent.save(tmp_path / "run")
    env_tokenizer = env.unwrapped.tokenizer

    for sub in ("policy", "reference"):
        directory = tmp_path / "run" / sub
        for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json"):
            assert (directory / name).is_file(), (sub, name)
        model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        ids = tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
        assert len(ids) > 1 and ids == env_tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == env_tokenizer.decode(ids) and tokenizer.decode(ids).strip()

        generate = pipeline("text-generation", model=model, tokenizer=tokenizer, device="cpu")
        text = generate("the movie was", max_new_tokens=5, do_sample=False)[0]["generated_text"]
        assert text.startswith("the movie was") and len(text) > len("the movie was")

    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "policy", local_files_only=True)
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "reference", local_files_only=True)
    # The policy trained; the reference is the starting point.
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), reference.state_dict().values()))
