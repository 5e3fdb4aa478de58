"""The token-level MDP: spaces, episodes, seeding, groups, autoreset, devices and bad input."""
from __future__ import annotations

import doctest

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import DEVICES, build_tiny_lm, build_word_tokenizer

import tokengym
from tokengym.envs import calibration, single, token_env
from tokengym.rewards.base import StepBatch


class RecordingReward:
    """Reward = the action id on every step; records every StepBatch it sees."""

    def __init__(self):
        self.steps: list[StepBatch] = []
        self.resets = []

    def reset(self, episodes):
        self.resets.append(episodes)

    def __call__(self, step):
        self.steps.append(step)
        return {"action_id": step.actions.float(), "one": torch.ones_like(step.actions, dtype=torch.float32)}


def custom_kwargs(**overrides):
    kwargs = dict(
        model=build_tiny_lm(),
        tokenizer=build_word_tokenizer(),
        prompts=["the movie was", "i love the food", "it is"],
        reward=RecordingReward(),
        max_new_tokens=5,
    )
    kwargs.update(overrides)
    return kwargs


def test_docstring_examples_run():
    for module in (token_env, single):
        failed, attempted = doctest.testmod(module, raise_on_error=False)
        assert attempted > 0 and failed == 0, module.__name__


@pytest.mark.parametrize("env_id", ["tokengym/Calibration-v0", "tokengym/Custom-v0"])
def test_checkers_pass(env_id):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    kwargs = custom_kwargs() if env_id.endswith("Custom-v0") else {}
    env = gym.make(env_id, **kwargs)
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)


def test_registered_ids_and_cli_listing(capsys):
    from tokengym.cli import main

    ids = set(tokengym.registered_envs())
    assert {"tokengym/Sentiment-v0", "tokengym/Calibration-v0", "tokengym/Custom-v0"} <= ids
    assert main(["envs"]) == 0
    listed = capsys.readouterr().out
    assert all(env_id in listed for env_id in ids)


def test_spaces_follow_the_model_width_not_the_tokenizer():
    # The logits width may exceed len(tokenizer): V comes from lm_head.
    model = build_tiny_lm(vocab_size=48)
    envs = gym.make_vec("tokengym/Custom-v0", num_envs=3, **custom_kwargs(model=model))
    P, T = envs.max_prompt_tokens, envs.max_new_tokens
    assert P == 4 and T == 5
    assert envs.single_action_space == gym.spaces.Discrete(48)
    assert envs.action_space == gym.spaces.MultiDiscrete([48] * 3)
    box = envs.single_observation_space["input_ids"]
    assert box.shape == (P + T,) and box.low.min() == 0 and box.high.max() == 47


def test_episode_layout_termination_and_zero_reward_after_the_end():
    reward = RecordingReward()
    envs = gym.make_vec("tokengym/Custom-v0", num_envs=3, **custom_kwargs(reward=reward))
    obs, info = envs.reset(options={"prompts": ["the movie was", "it is", "i love the food"]})
    P = envs.prompt_width
    assert obs["attention_mask"][:, :P].sum(-1).tolist() == [3, 2, 4]
    assert obs["input_ids"][1, :P].tolist() == [0, 0, 14, 6]  # left-padded with pad id 0
    eos = 0
    plan = [[7, eos, 7], [9, 8, 7], [9, 9, eos]]  # per step; row 1 stops at step 0, row 2 at step 2
    expected_terminated = [[False, True, False], [False, False, False], [False, False, True]]
    totals, late = torch.zeros(3), torch.zeros(3)
    for actions, expected in zip(plan, expected_terminated):
        obs, rewards, terminated, truncated, info = envs.step(torch.tensor(actions))
        totals += rewards
        late += info["late_rewards"]
        assert terminated.tolist() == expected and not truncated.any()
        assert not info["hit_max_new_tokens"].any()  # every end here is a stop token
    # Row 1 acted once (eos) and then waited: zero reward, its later columns stay padding.
    assert obs["input_ids"][1, P:].tolist() == [eos, 0, 0, 0, 0]
    assert obs["attention_mask"][1, P:].tolist() == [1, 0, 0, 0, 0]
    assert envs.response_lengths.tolist() == [3, 1, 3]
    # rewards: sum of action ids + 1 per acted step, nothing for waiting rows
    assert totals.tolist() == [7 + 9 + 9 + 3, 0 + 1, 7 + 7 + 0 + 3]
    # The reward's "one" on waiting row 1 (steps 1 and 2) is a late payment to its ended episode:
    # not a step reward, but reported in info["late_rewards"] and in the component totals.
    assert late.tolist() == [0, 2, 0]
    assert info["reward_components"]["one"].tolist() == [3, 3, 3]
    assert reward.steps[1].acted.tolist() == [True, False, True]


def test_max_new_tokens_terminates_the_mdp_and_is_flagged_and_step_after_end_raises():
    # The limit is the horizon of a finite-horizon MDP: `terminated`, never `truncated`, so no agent
    # bootstraps past it; info["hit_max_new_tokens"] tells it apart from a stop token.
    envs = gym.make_vec("tokengym/Custom-v0", num_envs=2, **custom_kwargs(max_new_tokens=3))
    envs.reset(seed=1)
    for t in range(3):
        _, _, terminated, truncated, info = envs.step(np.array([5, 6]))
        assert terminated.tolist() == [t == 2] * 2 and not truncated.any()
        assert info["hit_max_new_tokens"].tolist() == [t == 2] * 2
    with pytest.raises(RuntimeError, match="call env.reset"):
        envs.step(np.array([5, 6]))


def test_stop_token_ids_are_configurable():
    envs = gym.make_vec("tokengym/Custom-v0", num_envs=2, **custom_kwargs(stop_token_ids=[7]))
    envs.reset(seed=0)
    _, _, terminated, _, _ = envs.step(torch.tensor([0, 7]))  # eos no longer stops; 7 does
    assert terminated.tolist() == [False, True]


def test_seeding_is_deterministic_and_seeds_differ():
    kwargs = custom_kwargs(prompts=[f"the {w}" for w in ["movie", "food", "day", "place", "it", "a", "i"]])
    first = gym.make_vec("tokengym/Custom-v0", num_envs=8, **kwargs)
    second = gym.make_vec("tokengym/Custom-v0", num_envs=8, **custom_kwargs(prompts=kwargs["prompts"]))
    a, _ = first.reset(seed=123)
    b, _ = second.reset(seed=123)
    c, _ = second.reset(seed=124)
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert not torch.equal(a["input_ids"], c["input_ids"])


def test_vector_and_single_env_give_identical_episodes():
    prompts = [f"the {w} was" for w in ["movie", "food", "day", "place"]]
    vector = gym.make_vec("tokengym/Custom-v0", num_envs=1, **custom_kwargs(prompts=prompts))
    one = gym.make("tokengym/Custom-v0", **custom_kwargs(prompts=prompts))
    rng = np.random.default_rng(0)
    for seed in range(4):
        v_obs, _ = vector.reset(seed=seed)
        s_obs, _ = one.reset(seed=seed)
        assert np.array_equal(v_obs["input_ids"][0].numpy(), s_obs["input_ids"])
        for _ in range(5):
            action = int(rng.integers(1, 30))
            v_obs, v_r, v_term, v_trunc, _ = vector.step(torch.tensor([action]))
            s_obs, s_r, s_term, s_trunc, _ = one.step(action)
            assert np.array_equal(v_obs["input_ids"][0].numpy(), s_obs["input_ids"])
            assert np.array_equal(v_obs["attention_mask"][0].numpy(), s_obs["attention_mask"])
            assert (float(v_r[0]), bool(v_term[0]), bool(v_trunc[0])) == (s_r, s_term, s_trunc)


def test_groups_repeat_each_prompt_in_consecutive_rows():
    kwargs = custom_kwargs(prompts=[f"the {w}" for w in ["movie", "food", "day", "place", "it"]])
    envs = gym.make_vec("tokengym/Custom-v0", num_envs=12, **kwargs)
    obs, info = envs.reset(seed=3, options={"group_size": 4})
    ids = obs["input_ids"][:, : envs.prompt_width]
    for g in range(3):
        block = ids[4 * g : 4 * g + 4]
        assert (block == block[0]).all()
    assert info["prompt_texts"][0] == info["prompt_texts"][3]
    with pytest.raises(ValueError, match="group_size"):
        envs.reset(options={"group_size": 5})


def test_same_step_autoreset_restarts_finished_rows():
    envs = gym.make_vec(
        "tokengym/Custom-v0", num_envs=2, autoreset_mode="same-step", **custom_kwargs(max_new_tokens=2)
    )
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    envs.reset(seed=0)
    obs, rewards, terminated, truncated, info = envs.step(torch.tensor([0, 7]))  # row 0 stops
    assert terminated.tolist() == [True, False] and info["_final_obs"].tolist() == [True, False]
    P = envs.prompt_width
    assert info["final_obs"]["input_ids"][0, P].item() == 0  # the eos it ended on
    assert obs["attention_mask"][0, P:].sum() == 0  # row 0 already restarted
    assert info["final_info"]["reward_components"]["one"].tolist() == [1.0, 1.0]
    obs, rewards, terminated, truncated, info = envs.step(torch.tensor([7, 7]))
    assert terminated.tolist() == [False, True] and not truncated.any() and rewards.tolist() == [8.0, 8.0]
    assert info["final_info"]["hit_max_new_tokens"].tolist() == [False, True]


@pytest.mark.parametrize("device", DEVICES)
def test_every_returned_tensor_is_on_the_requested_device(device):
    envs = gym.make_vec("tokengym/Calibration-v0", num_envs=4, device=device)
    obs, _ = envs.reset(seed=0)
    returned = list(obs.values())
    for _ in range(3):
        obs, rewards, terminated, truncated, info = envs.step(torch.tensor([1, 2, 3, 4], device=device))
        returned += [*obs.values(), rewards, terminated, truncated, *info["reward_components"].values()]
    assert {t.device.type for t in returned} == {torch.device(device).type}


def test_calibration_reward_by_exhaustive_enumeration():
    sequences = calibration.all_sequences()  # (512, 3)
    envs = gym.make_vec("tokengym/Calibration-v0", num_envs=len(sequences))
    envs.reset(seed=0)
    totals = torch.zeros(len(sequences))
    for t in range(3):
        _, rewards, _, _, _ = envs.step(sequences[:, t])
        totals += rewards
    expected = torch.tensor([sum(int(y[t] == t + 1) for t in range(3)) for y in sequences.tolist()])
    assert torch.equal(totals, expected.float())
    assert totals.max() == 3 and (totals == 3).sum() == 1 and (totals == 0).sum() == 7**3


def test_calibration_reference_is_deterministic_and_not_uniform():
    a, b = calibration.build_reference_model(), calibration.build_reference_model()
    logp = calibration.sequence_logprobs(a)
    assert torch.equal(logp, calibration.sequence_logprobs(b))
    assert torch.allclose(logp.exp().sum(), torch.tensor(1.0), atol=1e-5)
    assert logp.max() - logp.min() > 1.0  # an informative π_ref, not a uniform one


@pytest.mark.parametrize(
    "actions, match",
    [
        (torch.tensor([1, 8]), "outside the action space"),
        (torch.tensor([1, -1]), "outside the action space"),
        (torch.tensor([1.0, 2.0]), "integer token ids"),
        (np.array([True, False]), "integer token ids"),
        (torch.tensor([[1, 2]]), "shape"),
        (torch.tensor([1, 2, 3]), "shape"),
    ],
)
def test_bad_actions_raise_and_change_nothing(actions, match):
    envs = gym.make_vec("tokengym/Calibration-v0", num_envs=2)
    obs, _ = envs.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        envs.step(actions)
    assert envs.response_lengths.tolist() == [0, 0]
    _, rewards, _, _, _ = envs.step(torch.tensor([1, 1]))  # the env is still usable
    assert envs.response_lengths.tolist() == [1, 1]


def test_single_env_bad_actions_and_order():
    env = gym.make("tokengym/Calibration-v0").unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.step(1)
    env.reset(seed=0)
    for bad, match in [(8, "outside"), (1.5, "integer"), (True, "integer")]:
        with pytest.raises(ValueError, match=match):
            env.step(bad)


def test_step_before_reset_raises():
    envs = gym.make_vec("tokengym/Calibration-v0", num_envs=2)
    with pytest.raises(RuntimeError, match="before reset"):
        envs.step(torch.tensor([1, 1]))


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(prompts=["the", ""]), "prompt 1 .* is empty"),
        (dict(prompts=[]), "non-empty"),
        (dict(prompts=["the movie was"], max_prompt_tokens=2), "more than max_prompt_tokens"),
        (dict(model=build_tiny_lm(n_positions=8)), "exceeds the model's context of 8"),
        (dict(prompts=[[1, 99]]), "outside"),
    ],
)
def test_bad_prompts_raise(overrides, match):
    with pytest.raises(ValueError, match=match):
        gym.make_vec("tokengym/Custom-v0", num_envs=1, **custom_kwargs(**overrides))


def test_unknown_names_raise_clear_errors():
    with pytest.raises(gym.error.Error):
        gym.make("tokengym/NoSuchEnv-v0")
    with pytest.raises(OSError, match="could not load model config '/no/such/model'"):
        gym.make_vec("tokengym/Custom-v0", num_envs=1, **custom_kwargs(model="/no/such/model"))
    with pytest.raises(ValueError, match="unknown reward"):
        gym.make_vec("tokengym/Calibration-v0", num_envs=1, reward="no-such-reward")


def test_logprobs_channel_reaches_the_reward_and_is_validated():
    reward = RecordingReward()
    envs = gym.make_vec("tokengym/Custom-v0", num_envs=2, **custom_kwargs(reward=reward))
    envs.reset(seed=0)
    envs.step(torch.tensor([3, 4]), logprobs=torch.tensor([-0.5, -1.5]))
    assert reward.steps[-1].action_logprobs.tolist() == [-0.5, -1.5]
    with pytest.raises(ValueError, match="logprobs"):
        envs.step(torch.tensor([3, 4]), logprobs=torch.tensor([-0.5]))


def test_min_new_tokens_makes_early_stop_tokens_ordinary():
    """The guard against early-EOS exploitation: before min_new_tokens, a stop token does not end."""
    envs = gym.make_vec("tokengym/Custom-v0", num_envs=2, min_new_tokens=2, **custom_kwargs(max_new_tokens=4))
    envs.reset(seed=0)
    eos = 0
    _, _, terminated, _, _ = envs.step(torch.tensor([eos, 7]))  # action 1: ordinary
    assert not terminated.any() and envs.response_lengths.tolist() == [1, 1]
    _, _, terminated, _, info = envs.step(torch.tensor([eos, 7]))  # action 2: may stop
    assert terminated.tolist() == [True, False] and not info["hit_max_new_tokens"].any()
    with pytest.raises(ValueError, match="min_new_tokens"):
        gym.make_vec("tokengym/Custom-v0", num_envs=2, min_new_tokens=5, **custom_kwargs(max_new_tokens=4))
