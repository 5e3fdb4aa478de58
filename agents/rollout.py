"""Rollout collection: a batch of complete episodes played through the env's ``reset``/``step``.

:func:`play_episodes` is the one loop that drives a :class:`~tokengym.envs.TokenVectorEnv` with a
:class:`~tokengym.agents.policy.Policy`: the agents' training rollouts and the fresh-sample
evaluation (``tokengym.benchmarks.evaluate``) both use it. The policy samples with the env's
sampling config and hands each action's log-prob to ``env.step``, so a KL-shaped reward never
runs the policy again; the env steps π_ref when its reward needs it, and otherwise the episodes
are scored by π_ref once, teacher-forced.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tokengym.agents.policy import Policy
from tokengym.lm import distributed

__all__ = ["Rollout", "play_episodes", "driveable_env"]


@dataclass
class Rollout:
    """One batch of complete episodes, in the env's layout (all tensors on the env's device)."""

    input_ids: torch.Tensor
    """(B, P+T) prompts (left-padded) ⊕ responses (right-padded)."""
    attention_mask: torch.Tensor
    """(B, P+T) bool, True on real tokens."""
    prompt_width: int
    """P."""
    mask: torch.Tensor
    """(B, T) bool, True on valid response steps."""
    logprobs: torch.Tensor
    """(B, T) log π_θold(a_t|s_t) from the rollout: what the env's KL penalty and the logged KL used."""
    old_logprobs: torch.Tensor
    """(B, T) log π_θold(a_t|s_t) as :meth:`Policy.score` computes it, the ratios' denominator:
    ``logprobs`` itself in float32 (the cached steps reproduce teacher forcing to ~1e-6); under
    autocast one teacher-forced pass, because half precision rounds the one-token cached steps and
    the full forward differently (by up to 0.05 nats per token on the embedded model in bfloat16),
    and PPO's first ratio must be 1."""
    ref_logprobs: torch.Tensor
    """(B, T) log π_ref(a_t|s_t) at the env's temperature: the env's per-step numbers when it
    stepped π_ref for a KL-shaped reward, else one teacher-forced pass of the same reference."""
    values: torch.Tensor | None
    """(B, T) V(s_t) from the rollout, or None."""
    rewards: torch.Tensor
    """(B, T) r_t from the env."""
    components: dict[str, torch.Tensor]
    """Per-episode total of each reward component, (B,) each."""

    @property
    def scores(self) -> torch.Tensor:
        """(B,) undiscounted episode returns."""
        return self.rewards.sum(-1)


@torch.no_grad()
def play_episodes(
    env, policy: Policy, generator: torch.Generator, *, seed: int | None = None, group_size: int = 1,
    check_done_every: int = 1, options: dict | None = None, score_reference: bool = True,
) -> Rollout:
    """Reset ``env`` (with ``seed``; each prompt repeated ``group_size`` times in consecutive rows;
    any other reset ``options``, such as explicit prompts) and play one batch of episodes to their
    end with ``policy``, sampling with ``generator``. Whether every row has ended is read on the
    host every ``check_done_every`` tokens (stepping an env whose rows all ended is a no-op, so a
    larger value only costs forwards). π_ref's log-probs are the env's when it stepped π_ref, else
    one teacher-forced pass afterwards, unless ``score_reference`` is False (then they are 0: for a
    caller that sampled from π_ref itself)."""
    options = {**(options or {}), **({"group_size": group_size} if group_size > 1 else {})} or None
    obs, _ = env.reset(seed=seed, options=options)
    P, T, B = env.prompt_width, env.max_new_tokens, env.num_envs
    policy.begin(obs["input_ids"][:, :P], obs["attention_mask"][:, :P].bool())
    logprobs = torch.zeros(B, T, device=env.device)  # (B, T)
    rewards = torch.zeros(B, T, device=env.device)  # (B, T)
    late_rewards = torch.zeros(B, device=env.device)  # (B,) paid after a row ended (batch-level rewards)
    values = torch.zeros(B, T, device=env.device) if policy.value_head is not None else None
    ref_logprobs = torch.zeros(B, T, device=env.device) if env.steps_reference else None
    for t in range(T):
        step = policy.act(generator, env.shard)
        obs, reward, _, _, info = env.step(step.actions, logprobs=step.logprobs)
        logprobs[:, t] = step.logprobs
        rewards[:, t] = reward
        if ref_logprobs is not None:
            ref_logprobs[:, t] = info["ref_logprobs"]
        if "late_rewards" in info:
            late_rewards += info["late_rewards"]
        if values is not None:
            values[:, t] = step.values
        if t + 1 == T or ((t + 1) % check_done_every == 0 and distributed.all_ranks(env.all_done, env.device)):
            break
        policy.advance(step.actions)
    input_ids, attention_mask = obs["input_ids"], obs["attention_mask"].bool()
    mask = attention_mask[:, P:]  # (B, T)
    if ref_logprobs is None:  # the env did not step π_ref: score the episodes once
        ref_logprobs = env.reference.score(input_ids, attention_mask, P) if score_reference else torch.zeros_like(logprobs)
    old_logprobs = logprobs
    if policy.autocast_dtype is not None:  # see Rollout.old_logprobs
        old_logprobs = policy.score(input_ids, attention_mask, P).logprobs  # (B, T)
    last_step = (mask.sum(-1, keepdim=True) - 1).clamp(min=0)  # (B, 1)
    rewards.scatter_add_(1, last_step, late_rewards[:, None])  # a late payment belongs to the row's last step
    return Rollout(
        input_ids=input_ids, attention_mask=attention_mask, prompt_width=P, mask=mask,
        logprobs=torch.where(mask, logprobs, 0.0), old_logprobs=torch.where(mask, old_logprobs, 0.0),
        ref_logprobs=torch.where(mask, ref_logprobs, 0.0),
        values=values, rewards=rewards, components=info["reward_components"],
    )


def driveable_env(env) -> tuple[Any, list]:
    """The :class:`TokenVectorEnv` under ``env``, and the ``RecordEpisodeStatistics`` wrappers on it.

    An agent drives the env's own ``reset``/``step`` (one KV cache per batch, log-probs passed to
    ``step``), so a wrapper's ``step`` would be bypassed: only statistics wrappers, which the agent
    feeds itself, are accepted; any other wrapper, and SAME_STEP autoreset, raise with the reason."""
    from gymnasium.vector import AutoresetMode, VectorWrapper
    from gymnasium.wrappers.vector import RecordEpisodeStatistics

    statistics, layer = [], env
    while isinstance(layer, VectorWrapper):
        if not isinstance(layer, RecordEpisodeStatistics):
            raise TypeError(
                f"agents cannot drive an env wrapped in {type(layer).__name__}: they call the TokenVectorEnv's "
                "reset/step themselves (one KV cache per batch, log-probs passed to step), so the wrapper would "
                "be silently bypassed. Only RecordEpisodeStatistics is supported; pass env.unwrapped, or put the "
                "transformation in the env's reward"
            )
        statistics.append(layer)
        layer = layer.env
    if getattr(layer, "metadata", {}).get("autoreset_mode") == AutoresetMode.SAME_STEP:
        raise ValueError(
            "agents need autoreset_mode='disabled': with 'same-step' a finished row restarts inside step() "
            "while the agent keeps one KV cache for the batch, so two episodes would be mixed in one row"
        )
    return layer, statistics
