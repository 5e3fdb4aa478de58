"""The registered language tasks on the embedded model: checkers, components, baseline scores."""
from __future__ import annotations

import gymnasium as gym
import pytest
import torch

import tokengym
from tokengym.agents import Policy
from tokengym.envs.prompts import KEYWORD_PAIRS, KEYWORD_PROMPTS, keywords_of

LANGUAGE_ENVS = [
    "tokengym/Sentiment-v0", "tokengym/SentimentFineGrained-v0", "tokengym/Keywords-v0", "tokengym/Arithmetic-v0",
]


def test_every_registered_env_is_covered_here_or_in_test_env():
    assert set(tokengym.registered_envs()) == set(LANGUAGE_ENVS) | {"tokengym/Calibration-v0", "tokengym/Custom-v0"}


@pytest.mark.parametrize("env_id", LANGUAGE_ENVS)
def test_language_envs_pass_both_checkers(env_id):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)


def sample_episodes(env_id, num_envs=16, seed=0, **kwargs):
    """Roll the embedded model out once; returns per-episode totals of each reward component."""
    envs = gym.make_vec(env_id, num_envs=num_envs, **kwargs)
    policy = Policy.from_pretrained(envs.model)
    obs, _ = envs.reset(seed=seed)
    P = envs.prompt_width
    policy.begin(obs["input_ids"][:, :P], obs["attention_mask"][:, :P].bool())
    generator = torch.Generator().manual_seed(seed)
    returns = torch.zeros(num_envs)
    for _ in range(envs.max_new_tokens):
        step = policy.act(generator)
        obs, rewards, _, _, info = envs.step(step.actions, logprobs=step.logprobs)
        returns += rewards
        if envs.all_done:
            break
        policy.advance(step.actions)
    return returns, info["reward_components"], envs


def test_keyword_prompts_round_trip():
    assert [keywords_of(p) for p in KEYWORD_PROMPTS] == [list(pair) for pair in KEYWORD_PAIRS]


def test_embedded_model_scores_above_zero_on_keywords_before_training():
    returns = torch.cat([sample_episodes("tokengym/Keywords-v0", num_envs=64, seed=s)[0] for s in range(4)])
    # Only the continuation counts, so a model that never used a keyword would score exactly 0.
    # At the ~2% rate measured here, 256 episodes hold ~10 half-hits; asking for 3 keeps the test
    # independent of which tokens a particular seed happens to draw.
    assert (returns > 0).sum() >= 3, returns


def test_fine_grained_sentiment_reports_each_component_and_they_sum_to_the_reward():
    returns, components, envs = sample_episodes("tokengym/SentimentFineGrained-v0", num_envs=8)
    assert set(components) == {"sentence/sentiment", "sentence/profanity", "length/length_window"}
    assert torch.allclose(sum(components.values()), returns, atol=1e-5)
    assert components["sentence/profanity"].max() <= 0  # a penalty


def test_holistic_counterpart_of_the_fine_grained_task():
    returns, components, _ = sample_episodes("tokengym/SentimentFineGrained-v0", num_envs=8, reward="holistic")
    assert set(components) == {"sentiment_quality"}
    assert torch.allclose(components["sentiment_quality"], returns)
