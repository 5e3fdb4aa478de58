"""TRL reward functions as rewards: row alignment of dataset columns, once-per-batch calls with late
payments, completion_ids, weighted lists, and the conversational format."""
from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from conftest import build_tiny_lm, build_word_tokenizer

import tokengym  # noqa: F401
from tokengym.rewards import TRLReward, TRLRewardFunction

EOS, PAD = 0, 0
PROMPTS = ["the movie", "a food", "i love", "we ate", "they saw", "this place"]
ROW_ID = {p: i for i, p in enumerate(PROMPTS)}  # each record's id, recoverable from its text
RECORDS = [{"prompt": p, "row_id": i} for i, p in enumerate(PROMPTS)]


def aligned(prompts, completions, row_id, **kwargs):
    """1.0 where the row_id column received matches the id recovered from the prompt text."""
    return [float(r == ROW_ID[p]) for p, r in zip(prompts, row_id)]


def make_envs(num_envs=4, reward=aligned, **kwargs):
    kwargs = {"model": build_tiny_lm(), "tokenizer": build_word_tokenizer(), "prompts": RECORDS,
              "reward": reward, "max_new_tokens": 4, **kwargs}
    return gym.make_vec("tokengym/Custom-v0", num_envs=num_envs, **kwargs).unwrapped


def play(envs, plan, **reset_kwargs):
    """Reset, then step ``plan`` (one action list per step) until every row ended (disabled mode).

    Returns each episode's reward: step rewards plus late payments."""
    _, info = envs.reset(**reset_kwargs)
    returns = torch.zeros(envs.num_envs)
    for actions in plan:
        _, rewards, terminated, truncated, info = envs.step(torch.tensor(actions))
        returns += rewards + info["late_rewards"]
        if bool(envs.all_done):
            break
    return returns, info


# Rows end at different steps: row 0 stops at step 0, row 2 at step 2, rows 1 and 3 are cut at T=4.
PLAN = [[EOS, 7, 7, 7], [7, 7, 7, 7], [7, 7, EOS, 7], [7, 7, 7, 7]]


@pytest.mark.parametrize("options", [None, {"group_size": 2}, {"group_size": 4}])
def test_columns_stay_aligned_when_rows_end_at_different_steps(options):
    envs = make_envs()
    for seed in range(4):  # several resets, prompts drawn in a different order each time
        returns, info = play(envs, PLAN, seed=seed, options=options)
        assert returns.tolist() == [1.0] * 4, (seed, info["columns"])
        assert info["reward_components"]["aligned"].tolist() == [1.0] * 4


def test_groups_repeat_columns_and_info_exposes_them():
    envs = make_envs()
    _, info = envs.reset(seed=3, options={"group_size": 2})
    ids = list(info["columns"]["row_id"])
    assert ids[0] == ids[1] and ids[2] == ids[3]
    assert ids == [ROW_ID[t] for t in info["prompt_texts"]]
    _, _, _, _, step_info = envs.step(torch.tensor([7] * 4))
    assert list(step_info["columns"]["row_id"]) == ids
    explicit = [RECORDS[5], RECORDS[1]]
    _, info = envs.reset(options={"prompts": explicit, "group_size": 2})
    assert list(info["columns"]["row_id"]) == [5, 5, 1, 1]
    returns, _ = play(envs, PLAN, options={"prompts": explicit, "group_size": 2})
    assert returns.tolist() == [1.0] * 4


def test_columns_stay_aligned_in_same_step_mode():
    envs = make_envs(autoreset_mode="same-step")
    _, info = envs.reset(seed=0)
    generator = torch.Generator().manual_seed(0)
    paid, episodes = [], 0
    for _ in range(40):  # random early stops: rows end and restart at different steps
        actions = torch.where(torch.rand(4, generator=generator) < 0.3, EOS, 7)
        _, rewards, terminated, truncated, info = envs.step(actions)
        ended = terminated | truncated
        assert not info["late_rewards"].any()
        paid += rewards[ended].tolist()
        episodes += int(ended.sum())
    assert episodes > 20 and paid == [1.0] * episodes


def test_single_env_scores_each_episode():
    env = gym.make("tokengym/Custom-v0", model=build_tiny_lm(), tokenizer=build_word_tokenizer(),
                   prompts=RECORDS, reward=aligned, max_new_tokens=3)
    for seed in range(3):
        _, info = env.reset(seed=seed)
        assert info["columns"]["row_id"] == ROW_ID[info["prompt_text"]]
        rewards = [env.step(a)[1] for a in (7, 7, 7)]
        assert rewards == [0.0, 0.0, 1.0]


class CountingFunction:
    """Counts calls and the rows of each; scores row_id + 1."""

    __name__ = "counting"

    def __init__(self):
        self.calls = []

    def __call__(self, prompts, completions, row_id, **kwargs):
        self.calls.append(list(row_id))
        return [float(r + 1) for r in row_id]


def test_called_once_per_batch_with_late_payments():
    fn = CountingFunction()
    envs = make_envs(reward=fn)
    _, info = envs.reset(options={"prompts": RECORDS[:4]})  # rows have row_id 0, 1, 2, 3
    late_seen, step_rewards = [], []
    for actions in PLAN:
        _, rewards, _, _, info = envs.step(torch.tensor(actions))
        late_seen.append(info["late_rewards"].tolist())
        step_rewards.append(rewards.tolist())
    assert fn.calls == [[0, 1, 2, 3]]  # one call, all B rows, although rows 0 and 2 ended earlier
    # Paid on the last step: rows 1 and 3 acted there (step reward), rows 0 and 2 had ended (late).
    assert step_rewards[:3] == [[0.0] * 4] * 3 and step_rewards[3] == [0.0, 2.0, 0.0, 4.0]
    assert late_seen[:3] == [[0.0] * 4] * 3 and late_seen[3] == [1.0, 0.0, 3.0, 0.0]
    assert info["reward_components"]["counting"].tolist() == [1.0, 2.0, 3.0, 4.0]
    play(envs, [[EOS] * 4], options={"prompts": RECORDS[2:6]})  # every row ends on step 0
    assert fn.calls == [[0, 1, 2, 3], [2, 3, 4, 5]]


def test_late_rewards_reach_the_agents_rollout():
    from tokengym.agents import REINFORCE, REINFORCEConfig

    envs = make_envs(reward=CountingFunction(), max_new_tokens=6)
    rollout = REINFORCE(envs, REINFORCEConfig(seed=0, group_size=4)).collect()
    # Each episode's return is its row_id + 1, paid on its own last valid step.
    assert rollout.scores.tolist() == (rollout.components["counting"]).tolist()
    last = rollout.mask.sum(-1) - 1
    assert torch.equal(rollout.rewards.gather(1, last[:, None])[:, 0], rollout.scores)


def with_ids_and_column(prompts, completions, completion_ids, row_id, **kwargs):
    """A TRL-signature function: reads completion_ids and a column."""
    return [len(ids) + 10.0 * r for ids, r in zip(completion_ids, row_id)]


def completions_only(completions, row_id):
    """No completion_ids, no **kwargs: gets only what it asks for."""
    return [float(len(c.split())) for c in completions]


def test_completion_ids_and_columns_through_reward_fn():
    envs = make_envs(reward=with_ids_and_column)
    returns, info = play(envs, PLAN, options={"prompts": RECORDS[:4]})
    # lengths 1, 4, 3, 4 (EOS included in completion_ids) + 10·row_id
    assert returns.tolist() == [1.0, 14.0, 23.0, 34.0]


def test_weighted_list_reports_each_function():
    for reward, kwargs in [
        ([with_ids_and_column, completions_only], {"reward_kwargs": {"weights": [1.0, 0.5]}}),
        (TRLReward([with_ids_and_column, completions_only], weights=[1.0, 0.5]), {}),
    ]:
        envs = make_envs(reward=reward, **kwargs)
        returns, info = play(envs, PLAN, options={"prompts": RECORDS[:4]})
        components = info["reward_components"]
        assert set(components) == {"with_ids_and_column", "completions_only"}
        # completions skip the EOS: 0, 4, 2, 4 words ("good" is id 7)
        assert components["completions_only"].tolist() == [0.0, 2.0, 1.0, 2.0]
        assert components["with_ids_and_column"].tolist() == [1.0, 14.0, 23.0, 34.0]
        assert torch.equal(returns, components["with_ids_and_column"] + components["completions_only"])


def test_none_needs_none_value_and_names_function_and_row():
    def sometimes(completions, row_id, **kwargs):
        return [None if r == 2 else 1.0 for r in row_id]

    envs = make_envs(reward=sometimes)
    with pytest.raises(TypeError, match=r"'sometimes' returned None for row 2"):
        play(envs, PLAN, options={"prompts": RECORDS[:4]})
    envs = make_envs(reward=TRLRewardFunction(sometimes, none_value=-1.0))
    returns, _ = play(envs, PLAN, options={"prompts": RECORDS[:4]})
    assert returns.tolist() == [1.0, 1.0, -1.0, 1.0]


def test_conversational_prompts_use_the_chat_template():
    tokenizer = build_word_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}we{% endif %}"
    )
    seen = {}

    def chat_reward(prompts, completions, completion_ids, row_id, **kwargs):
        seen.update(prompts=prompts, completions=completions)
        return [float(ROW_ID[p[-1]["content"]] == r) for p, r in zip(prompts, row_id)]

    records = [{"prompt": [{"role": "user", "content": p}], "row_id": i} for i, p in enumerate(PROMPTS)]
    envs = make_envs(reward=chat_reward, tokenizer=tokenizer, prompts=records)
    returns, _ = play(envs, PLAN, seed=1)
    assert returns.tolist() == [1.0] * 4
    text = envs.reset(seed=1)[1]["prompt_texts"][0]  # the same draw
    assert text.endswith(" we") and text.removesuffix(" we") in PROMPTS  # the template's generation prompt
    assert seen["prompts"][0] == [{"role": "user", "content": text.removesuffix(" we")}]
    assert seen["completions"][1] == [{"role": "assistant", "content": "good good good good"}]
    with pytest.raises(ValueError, match="no chat_template"):
        make_envs(reward=chat_reward, prompts=records)


class LengthScorer:
    """A holistic text scorer (prompt-blind): words in the completion + 1; counts its calls."""

    name = "length"

    def __init__(self, batched: bool):
        self.batched, self.calls = batched, []

    def __call__(self, prompts, completions, **kwargs):
        self.calls.append(len(completions))
        return [len(c.split()) + 1.0 for c in completions]


@pytest.mark.parametrize("batched", [True, False])
def test_holistic_batch_level_scorers_run_once_per_batch_others_on_time(batched):
    from tokengym.rewards import Holistic

    scorer = LengthScorer(batched)
    envs = make_envs(reward=Holistic(scorer))
    envs.reset(options={"prompts": RECORDS[:4]})
    step_rewards, late = torch.zeros(4, 4), torch.zeros(4, 4)
    for t, actions in enumerate(PLAN):
        _, rewards, _, _, info = envs.step(torch.tensor(actions))
        step_rewards[t], late[t] = rewards, info["late_rewards"]
    totals = info["reward_components"]["length"]
    expected = torch.tensor([1.0, 5.0, 3.0, 5.0])  # words + 1: rows end after 1, 4, 3 and 4 tokens
    assert torch.equal(totals, expected) and torch.equal((step_rewards + late).sum(0), expected)
    if batched:  # one call with all four; rows 0 and 2 (ended at steps 0 and 2) are paid late
        assert scorer.calls == [4]
        assert torch.equal(late[3], torch.tensor([1.0, 0.0, 3.0, 0.0])) and not late[:3].any()
    else:  # each row paid on the step that ends it, nothing late
        assert scorer.calls == [1, 1, 2] and not late.any()
        assert step_rewards[0, 0] == 1.0 and step_rewards[2, 2] == 3.0
