"""Tasks: the defaults (model, prompts, reward, horizon) behind each registered env id.

A task is data, not a subclass: the env reads these fields, and every one of them can be
overridden by a keyword to ``gymnasium.make`` / ``make_vec``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Task", "TASKS", "get_task", "register_task"]


def _no_prompts() -> list:
    raise ValueError("this env has no built-in prompts: pass prompts=[...]")


@dataclass(frozen=True)
class Task:
    """Defaults for one registered env."""

    name: str
    """Task name (the env id without namespace and version)."""
    description: str = ""
    """One line for `tokengym envs`."""
    model: Any = "embedded"
    """Default model: "embedded", a built-in name, a local dir or a hub name."""
    tokenizer: Any = None
    """Default tokenizer name; None means the model's."""
    prompts: Callable[[], list] = _no_prompts
    """Returns the prompt pool: strings, token-id lists, chat messages, or records with columns
    (see tokengym.envs.records)."""
    max_new_tokens: int = 16
    """T, the action budget per episode."""
    stop: bool = True
    """Whether EOS ends an episode (`terminated`)."""
    reward: str = "holistic"
    """Default reward name (see tokengym.rewards.make_reward)."""
    scorer: Callable[[], Any] | None = None
    """Builds the task's holistic scorer (text or token scorer)."""
    fine_grained: Callable[[], Any] | None = None
    """Builds the task's fine-grained reward object (used for reward="fine-grained")."""
    train_min_new_tokens: int = 0
    """``min_new_tokens`` for ``tokengym train`` unless ``--min-new-tokens`` is given: under a KL
    penalty every token costs KL, so a policy learns to stop early; a floor keeps the task's
    continuations long enough to judge (the env itself defaults to 0)."""


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def get_task(task: str | Task) -> Task:
    if isinstance(task, Task):
        return task
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; registered tasks: {sorted(TASKS)}")
    return TASKS[task]
