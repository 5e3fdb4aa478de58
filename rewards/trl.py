"""TRL reward functions as a tokengym reward: TRL's ``reward_funcs`` + ``reward_weights``.

A TRL reward function is ``f(prompts, completions, completion_ids, **columns) -> list[float | None]``
(see :class:`~tokengym.rewards.scorers.TRLRewardFunction`). :class:`TRLReward` calls each function
on finished episodes and pays ``w_k · f_k(x, y)`` holistically (docs/rewards.md:
``r_t = R(x, y)`` on the episode's last step), each function as its own component.

When it calls them:

* ``step.synchronous`` (the batched env's default ``autoreset_mode="disabled"``): **once per
  batch**, on all B episodes, on the step the last row ends. Rows that ended earlier are paid on
  that step although they did not act; the env turns such values into late payments
  (``info["late_rewards"]``), see ``tokengym.rewards.base``.
* otherwise (``"same-step"`` autoreset, where rows restart as they end): every step, on the rows
  whose episode this step ended.

What each function receives, one entry per scored episode, in the same order:

* ``prompts``: the prompt as the dataset gave it (a string, or chat messages), or the decoded text
  of a token-id prompt;
* ``completions``: the decoded response (special tokens skipped); with chat-message prompts, TRL's
  conversational format ``[{"role": "assistant", "content": text}]``;
* ``completion_ids``: the response token ids (a final stop token included);
* every column of the prompt dataset, by name (``step.columns``), aligned with the rows.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from tokengym.rewards.base import EpisodeStart, StepBatch
from tokengym.rewards.scorers import TRLRewardFunction

__all__ = ["TRLReward", "is_conversation"]


def is_conversation(prompt: Any) -> bool:
    """True for chat messages: a non-empty list of ``{"role", "content"}`` dicts."""
    return (
        isinstance(prompt, (list, tuple))
        and len(prompt) > 0
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt)
    )


class TRLReward:
    """``Σ_k w_k · f_k`` over TRL reward functions, each reported as a component.

    ``TRLReward(f)``, ``TRLReward([f, g], weights=[1.0, 0.5])``. Functions may be plain callables or
    :class:`~tokengym.rewards.scorers.TRLRewardFunction` (which sets a name, ``none_value`` or bound
    constants per function); ``none_value`` here applies to the plain callables. Component names are
    the functions' names (``__name__``), made unique with ``_2``, ``_3``, ….
    """

    def __init__(
        self,
        functions: Callable[..., Any] | Sequence[Callable[..., Any]],
        weights: Sequence[float] | None = None,
        none_value: float | None = None,
    ):
        functions = list(functions) if isinstance(functions, (list, tuple)) else [functions]
        if not functions:
            raise ValueError("TRLReward needs at least one reward function")
        self.functions = [
            f if isinstance(f, TRLRewardFunction) else TRLRewardFunction(f, none_value=none_value) for f in functions
        ]
        weights = [1.0] * len(functions) if weights is None else [float(w) for w in weights]
        if len(weights) != len(functions):
            raise ValueError(f"TRLReward got {len(weights)} weights for {len(functions)} reward functions")
        self.weights = weights
        self.names: list[str] = []
        for f in self.functions:
            name, k = f.name, 1
            while name in self.names:
                k += 1
                name = f"{f.name}_{k}"
            self.names.append(name)

    def reset(self, episodes: EpisodeStart) -> None:
        pass

    def __call__(self, step: StepBatch) -> dict[str, torch.Tensor]:
        B, device = step.ended.shape[0], step.ended.device
        out = {name: torch.zeros(B, dtype=torch.float32, device=device) for name in self.names}
        rows = step.rows_to_score(batched=True)  # once per batch when episodes are synchronous
        if not rows:
            return out
        texts = step.decode_responses(rows)
        ids = step.response_ids[rows].tolist()
        lengths = step.response_lengths[rows].tolist()
        completion_ids = [seq[:n] for seq, n in zip(ids, lengths)]
        prompts = [step.prompts[r] if isinstance(step.prompts[r], str) or is_conversation(step.prompts[r])
                   else step.prompt_texts[r] for r in rows]
        completions = [
            [{"role": "assistant", "content": text}] if is_conversation(prompt) else text
            for prompt, text in zip(prompts, texts)
        ]
        columns = {key: [values[r] for r in rows] for key, values in step.columns.items()}
        for name, weight, function in zip(self.names, self.weights, self.functions):
            scores = function.score(prompts, completions, completion_ids, columns, rows=rows)
            out[name][rows] = weight * torch.tensor(scores, dtype=torch.float32, device=device)
        return out
