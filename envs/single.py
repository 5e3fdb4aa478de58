"""The single-env adapter: one row of the batched env, with numpy observations."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from tokengym.envs.token_env import TokenVectorEnv

__all__ = ["TokenEnv"]


class TokenEnv(gym.Env):
    """One text-generation episode at a time, as a standard ``gymnasium.Env``.

    ## Description

    The same token-level MDP as :class:`~tokengym.envs.token_env.TokenVectorEnv` (whose docstring
    describes the task, rewards and arguments), with ``num_envs=1`` on the CPU and numpy
    observations, for third-party agents and checkers (``gymnasium.utils.env_checker.check_env``,
    stable-baselines3's ``check_env``). With the same seed and actions it gives exactly the episode
    of row 0 of the batched env.

    ## Action Space

    ``Discrete(V)``: the next token id. Python ints and numpy integer scalars are accepted.

    ## Observation Space

    ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int64))``.

    ## Rewards

    A float: ``r_t`` for the action just taken. ``info["reward_components"]`` holds each
    component's per-episode total so far (floats).

    ## Starting State

    ``reset(seed=s)`` draws one prompt with ``self.np_random``; ``options={"prompts": [p]}`` sets it.

    ## Episode End

    ``terminated`` on a stop token and on the ``max_new_tokens``-th action: the limit is this
    finite-horizon MDP's horizon, so stable-baselines3 and other agents must not bootstrap past
    it. ``truncated`` is always False; ``info["hit_max_new_tokens"]`` says whether the episode was
    cut by the limit rather than stopped. Stepping after the end raises until ``reset``.

    ## Arguments

    All keywords of ``TokenVectorEnv`` except ``num_envs``, ``device`` and ``autoreset_mode``.

    ## Example

    >>> import gymnasium as gym, tokengym
    >>> env = gym.make("tokengym/Calibration-v0")
    >>> obs, info = env.reset(seed=0)
    >>> obs["input_ids"].tolist(), env.action_space
    ([0, 0, 0, 0], Discrete(8))
    >>> rewards = [env.step(a)[1] for a in (1, 2, 5)]
    >>> rewards
    [0.0, 0.0, 2.0]

    ## Version History

    * v0: initial release.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, **kwargs: Any):
        for key in ("num_envs", "device", "autoreset_mode"):
            if key in kwargs:
                raise TypeError(f"{key!r} is not an argument of the single env; use gymnasium.make_vec")
        self.vector_env = TokenVectorEnv(1, device="cpu", render_mode=render_mode, **kwargs)
        self.render_mode = render_mode
        self.observation_space = self.vector_env.single_observation_space
        self.action_space = self.vector_env.single_action_space
        self._episode_over = True

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # The vector env draws prompts from its own np_random: hand it ours so seeding is shared.
        self.vector_env._np_random = self.np_random
        observation, info = self.vector_env.reset(options=options)
        self._episode_over = False
        columns = {name: values[0] for name, values in info["columns"].items()}
        return self._numpy(observation), {"prompt_text": info["prompt_texts"][0], "columns": columns}

    def step(self, action):
        if self._episode_over:
            raise RuntimeError("the episode is over (or reset() was never called); call env.reset()")
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
            if isinstance(action, np.ndarray) and action.shape == () and np.issubdtype(action.dtype, np.integer):
                action = int(action)
            else:
                raise ValueError(f"action must be an integer token id, got {action!r}")
        action = int(action)
        if not 0 <= action < self.vector_env.vocab_size:
            raise ValueError(f"action {action} is outside the action space [0, {self.vector_env.vocab_size})")
        observation, reward, terminated, truncated, info = self.vector_env.step(torch.tensor([action]))
        terminated, truncated = bool(terminated[0]), bool(truncated[0])
        self._episode_over = terminated or truncated
        components = {k: float(v[0]) for k, v in info["reward_components"].items()}
        info = {"reward_components": components, "hit_max_new_tokens": bool(info["hit_max_new_tokens"][0])}
        return self._numpy(observation), float(reward[0]), terminated, truncated, info

    def render(self):
        texts = self.vector_env.render()
        return None if texts is None else texts[0]

    @staticmethod
    def _numpy(observation: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {k: v[0].numpy() for k, v in observation.items()}
