"""Arithmetic-v0, the shipped verifiable-reward env: records with an ``answer`` column scored by a TRL
function, and GRPO raising its success rate beyond what sampling noise explains, on 2 seeds."""
from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch

import tokengym  # noqa: F401
from tokengym.agents import GRPO, GRPOConfig
from tokengym.envs.builtin_tasks import answer_match
from tokengym.envs.prompts import arithmetic_records


def test_records_and_answer_match():
    records = arithmetic_records()
    assert records == arithmetic_records() and len(records) == 21
    assert {"prompt": "1 + 1 = 2. 2 + 3 = 5. 3 + 2 =", "answer": "5"} in records
    assert answer_match([" 5.", " 5 6", "5", " 55", "", " 4"], ["5"] * 6) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_env_hands_the_answer_column_to_the_scorer():
    envs = gym.make_vec("tokengym/Arithmetic-v0", num_envs=4).unwrapped
    _, info = envs.reset(seed=0)
    answers = list(info["columns"]["answer"])
    assert [str(eval(t.split(". ")[-1].removesuffix(" ="))) for t in info["prompt_texts"]] == answers
    digits = [envs.tokenizer(f" {a}", add_special_tokens=False)["input_ids"][0] for a in answers]
    wrong = [envs.tokenizer(" 9", add_special_tokens=False)["input_ids"][0]] * 4
    eos = envs.tokenizer.eos_token_id
    for actions in ([digits[0], wrong[1], digits[2], wrong[3]], [eos] * 4):
        _, rewards, _, _, info = envs.step(torch.tensor(actions))
    assert info["reward_components"]["answer_match"].tolist() == [1.0, 0.0, 1.0, 0.0]


def success_rate_gain(seed: int) -> tuple[float, float, float]:
    envs = gym.make_vec("tokengym/Arithmetic-v0", num_envs=32)
    agent = GRPO(envs, GRPOConfig(lr=1e-3, group_size=8, seed=seed))
    before = torch.cat([agent.collect().scores for _ in range(8)])  # (256,) untrained, 0/1 each
    history = agent.learn(32 * 40)
    after = [h["reward"] for h in history[-15:]]  # 480 episodes of the last 15 iterations
    p0, p1 = before.mean().item(), sum(after) / len(after)
    standard_error = math.sqrt(p0 * (1 - p0) / len(before) + p1 * (1 - p1) / (32 * len(after)))
    return p0, p1, standard_error


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_grpo_learns_arithmetic_beyond_noise(seed, one_thread):
    p0, p1, standard_error = success_rate_gain(seed)
    assert 0 < p0 < 0.1, p0  # small but non-zero before training
    assert p1 - p0 > 4 * standard_error, (p0, p1, standard_error)
