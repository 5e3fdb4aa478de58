"""tokengym.envs: the token-level MDP, its tasks and prompt sources, registration, model loading.

``import tokengym`` (or this package) registers every env under the ``tokengym/`` namespace.
"""
from __future__ import annotations

import gymnasium as gym

from tokengym.envs import calibration
from tokengym.lm.loading import (
    EMBEDDED_MODEL_DIR, load_causal_lm, load_tokenizer, register_builtin, vocab_width,
)
from tokengym.envs.tasks import TASKS, Task, get_task, register_task

__all__ = [
    "EMBEDDED_MODEL_DIR", "TASKS", "Task", "TokenEnv", "TokenVectorEnv", "get_task",
    "load_causal_lm", "load_tokenizer", "register_env", "register_task", "registered_envs",
]

register_builtin("calibration", calibration.build_reference_model, calibration.build_tokenizer)

from tokengym.envs import builtin_tasks  # noqa: E402,F401  (registers the tasks)


def register_env(task: str, version: int = 0) -> str:
    """Register ``tokengym/<Name>-v<version>`` for a registered task; returns the id."""
    name = "".join(part.capitalize() for part in task.split("-"))
    env_id = f"tokengym/{name}-v{version}"
    if env_id not in gym.registry:
        gym.register(
            id=env_id,
            entry_point="tokengym.envs.single:TokenEnv",
            vector_entry_point="tokengym.envs.token_env:TokenVectorEnv",
            kwargs={"task": task},
        )
    return env_id


def registered_envs() -> dict[str, Task]:
    """Every ``tokengym/`` env id with its task."""
    return {
        env_id: get_task(spec.kwargs["task"])
        for env_id, spec in gym.registry.items()
        if env_id.startswith("tokengym/")
    }


for _task in list(TASKS):
    register_env(_task)

from tokengym.envs.single import TokenEnv  # noqa: E402  (needs the tasks above)
from tokengym.envs.token_env import TokenVectorEnv  # noqa: E402
