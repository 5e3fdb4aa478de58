"""One batch of episodes of a model through a vector env: the sampling loop that judging a policy
(:func:`~tokengym.benchmarks.evaluate.sample_stats`) and estimating a target's figures
(:mod:`tokengym.benchmarks.targets`) share.

The env does what it does in training: it draws the prompts (or takes them from ``options``),
scores the episodes with its reward and, for a KL-shaped reward, steps π_ref one token per action.
The model samples at the env's temperature through :class:`~tokengym.agents.policy.Policy`.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from tokengym.agents.policy import Policy
from tokengym.agents.rollout import play_episodes
from tokengym.rewards import KLShaped

__all__ = ["Episodes", "run_episodes", "CHECK_DONE_EVERY"]

CHECK_DONE_EVERY = 8
"""Tokens between the checks whether every episode has ended (each is a host read)."""


class Episodes(NamedTuple):
    """What :func:`run_episodes` returns for one batch of B rows."""

    input_ids: torch.Tensor
    """(B, P+T) the env's buffer: left-padded prompts, then the responses."""
    attention_mask: torch.Tensor
    """(B, P+T) bool, True on real tokens."""
    prompt_width: int
    """P: the column where responses start."""
    logprobs: torch.Tensor
    """(B, T) log π(a_t|s_t) of the sampling model (meaningless where ``mask`` is False)."""
    ref_logprobs: torch.Tensor | None
    """(B, T) log π_ref(a_t|s_t), or None when the env did not step π_ref and it was not asked for."""
    components: dict[str, torch.Tensor]
    """Component name -> (B,) per-episode total of the env's reward, a KL-shaped reward's penalty left out."""
    prompts: tuple
    """Each row's prompt as given (text, token ids or chat messages)."""
    columns: dict[str, tuple]
    """Each prompt column -> its B per-row values (empty for plain prompts)."""

    @property
    def mask(self) -> torch.Tensor:
        """(B, T) bool, True on response tokens."""
        return self.attention_mask[:, self.prompt_width:]

    def texts(self, tokenizer) -> list[str]:
        """The decoded responses (special tokens skipped)."""
        response_ids = self.input_ids[:, self.prompt_width:]
        return [tokenizer.decode(row[m], skip_special_tokens=True) for row, m in zip(response_ids, self.mask)]


def run_episodes(env, policy: Policy, generator: torch.Generator, *, seed: int | None = None,
                 options: dict | None = None, score_reference: bool = True) -> Episodes:
    """Reset the vector ``env`` (``seed``, ``options`` as for ``env.reset``) and play one batch of
    episodes with ``policy`` sampling (from ``generator``, on the env's device) until every row has
    ended (:func:`~tokengym.agents.rollout.play_episodes`, the agents' own loop). ``score_reference``:
    when the env does not step π_ref itself, score the episodes with ``env.reference`` once
    afterwards (False leaves ``ref_logprobs`` None, for a caller that samples from π_ref and has
    them already). Run it inside the model's forward context (autocast, or a PEFT model's adapters
    disabled)."""
    env = env.unwrapped
    penalty = env.reward.name if isinstance(env.reward, KLShaped) else None
    rollout = play_episodes(env, policy, generator, seed=seed, options=options, check_done_every=CHECK_DONE_EVERY,
                            score_reference=score_reference)
    scored_reference = score_reference or env.steps_reference
    components = {name: total for name, total in rollout.components.items() if name != penalty}
    return Episodes(rollout.input_ids, rollout.attention_mask, rollout.prompt_width, rollout.logprobs,
                    rollout.ref_logprobs if scored_reference else None, components, env.row_prompts, env.row_columns)
