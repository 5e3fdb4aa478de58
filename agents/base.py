"""What every agent shares: the config fields, rollout collection through reset/step, the guarded
optimizer step, per-iteration logging, and save/load. Each agent overrides only ``update``.
"""
from __future__ import annotations

import abc
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from tokengym.agents.policy import Policy
from tokengym.envs.token_env import TokenVectorEnv
from tokengym.lm.reference import Reference

__all__ = ["AgentConfig", "Agent", "Rollout", "check_range"]

TRAINER_STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "agent_config.json"


def check_range(name: str, value: Any, low: float, high: float, *, low_open=False, high_open=False, integer=False):
    """Raise a ValueError naming ``name`` unless ``low (<|<=) value (<|<=) high``."""
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and not (isinstance(value, float) and math.isnan(value))
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        what = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {what} in {interval}, got {value!r}")


@dataclass
class AgentConfig:
    """Fields every agent has. Agent configs subclass this and validate in ``__post_init__``."""

    lr: float = 1e-4
    """Adam learning rate, > 0."""
    gamma: float = 1.0
    """Discount γ in [0, 1]; RLHF usually uses 1."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip, > 0."""
    group_size: int = 1
    """Samples per prompt: the env repeats each prompt this many times in consecutive rows."""
    seed: int = 0
    """Seeds the env's prompt draws, the sampler and torch."""
    check_done_every: int = 1
    """Read 'all rows done' on the host every this many steps to stop a rollout early (1 on CPU
    costs nothing; raise it on CUDA to avoid per-token synchronisation)."""

    def __post_init__(self):
        check_range("lr", self.lr, 0, math.inf, low_open=True, high_open=True)
        check_range("gamma", self.gamma, 0, 1)
        check_range("max_grad_norm", self.max_grad_norm, 0, math.inf, low_open=True, high_open=True)
        check_range("group_size", self.group_size, 1, math.inf, integer=True, high_open=True)
        check_range("check_done_every", self.check_done_every, 1, math.inf, integer=True, high_open=True)


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
    """(B, T) log π_θold(a_t|s_t) from the rollout."""
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


class Agent(abc.ABC):
    """A policy-gradient agent that drives a :class:`TokenVectorEnv` through ``reset``/``step``.

    The env is the one source of truth for what the agent compares: the policy samples with the
    env's :attr:`~TokenVectorEnv.sampling` (temperature, top-k, top-p), and π_ref is the env's
    :attr:`~TokenVectorEnv.reference`, so the reward's KL penalty, the agent's ``ref_logprobs``
    and the logged ``kl_ref`` are the same numbers from one model held once in memory.
    """

    config_class: ClassVar[type[AgentConfig]] = AgentConfig
    needs_values: ClassVar[bool] = False

    def __init__(self, env, config: AgentConfig | None = None, policy: Policy | None = None):
        config = config if config is not None else self.config_class()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        env = getattr(env, "unwrapped", env)
        if not isinstance(env, TokenVectorEnv):
            raise TypeError(
                f"agents drive the batched env from gymnasium.make_vec('tokengym/...'), got {type(env).__name__}"
            )
        if env.num_envs % config.group_size:
            raise ValueError(
                f"group_size={config.group_size} must divide the batch (num_envs={env.num_envs})"
            )
        self.env, self.config = env, config
        torch.manual_seed(config.seed)
        if policy is None:
            policy = Policy.from_pretrained(env.model, device=env.device, value_head=self.needs_values)
        policy.sampling = env.sampling
        if policy.vocab_size != env.single_action_space.n:
            raise ValueError(
                f"the policy's vocabulary ({policy.vocab_size} logits) does not fit the env's action "
                f"space Discrete({env.single_action_space.n})"
            )
        if self.needs_values and policy.value_head is None:
            raise ValueError(f"{type(self).__name__} needs a policy with a value function (value_head=True)")
        self.policy = policy
        self.reference: Reference = env.reference
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.lr)
        self.generator = torch.Generator(device=env.device).manual_seed(config.seed)
        self.iteration = 0
        self.episodes = 0
        self.skipped_updates = 0
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ rollout
    @torch.no_grad()
    def collect(self) -> Rollout:
        """Play one batch of episodes through ``env.reset`` / ``env.step``."""
        env, policy, config = self.env, self.policy, self.config
        options = {"group_size": config.group_size} if config.group_size > 1 else None
        seed = config.seed if self.iteration == 0 else None
        obs, _ = env.reset(seed=seed, options=options)
        P, T, B = env.prompt_width, env.max_new_tokens, env.num_envs
        policy.begin(obs["input_ids"][:, :P], obs["attention_mask"][:, :P].bool())
        logprobs = torch.zeros(B, T, device=env.device)  # (B, T)
        rewards = torch.zeros(B, T, device=env.device)  # (B, T)
        late_rewards = torch.zeros(B, device=env.device)  # (B,) paid after a row ended (batch-level rewards)
        values = torch.zeros(B, T, device=env.device) if policy.value_head is not None else None
        ref_logprobs = torch.zeros(B, T, device=env.device) if env.steps_reference else None
        for t in range(T):
            step = policy.act(self.generator)
            obs, reward, _, _, info = env.step(step.actions, logprobs=step.logprobs)
            logprobs[:, t] = step.logprobs
            rewards[:, t] = reward
            if ref_logprobs is not None:
                ref_logprobs[:, t] = info["ref_logprobs"]
            if "late_rewards" in info:
                late_rewards += info["late_rewards"]
            if values is not None:
                values[:, t] = step.values
            if t + 1 == T or ((t + 1) % config.check_done_every == 0 and bool(env.all_done)):
                break
            policy.advance(step.actions)
        input_ids, attention_mask = obs["input_ids"], obs["attention_mask"].bool()
        mask = attention_mask[:, P:]  # (B, T)
        if ref_logprobs is None:  # the env did not step π_ref: score the episodes once
            ref_logprobs = self.reference.score(input_ids, attention_mask, P)  # (B, T)
        last_step = (mask.sum(-1, keepdim=True) - 1).clamp(min=0)  # (B, 1)
        rewards.scatter_add_(1, last_step, late_rewards[:, None])  # a late payment belongs to the row's last step
        return Rollout(
            input_ids=input_ids, attention_mask=attention_mask, prompt_width=P, mask=mask,
            logprobs=torch.where(mask, logprobs, 0.0), ref_logprobs=torch.where(mask, ref_logprobs, 0.0),
            values=values, rewards=rewards, components=info["reward_components"],
        )

    # ------------------------------------------------------------------ update
    @abc.abstractmethod
    def update(self, rollout: Rollout) -> dict[str, float]:
        """One policy update from ``rollout``; returns diagnostics. Each agent implements it."""

    def optimizer_step(self, loss: torch.Tensor) -> bool:
        """Backward, clip, step; a non-finite loss or gradient never reaches the weights."""
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            self.skipped_updates += 1
            return False
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.max_grad_norm)
        if not torch.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_updates += 1
            return False
        self.optimizer.step()
        return True

    # ------------------------------------------------------------------ loop
    def learn(
        self,
        total_episodes: int,
        callback: Callable[[dict[str, float]], bool | None] | None = None,
        progress: bool = False,
    ) -> list[dict[str, float]]:
        """Train for at least ``total_episodes`` episodes; returns the per-iteration history.

        ``callback(stats)`` runs after every iteration; returning ``False`` stops training.
        """
        check_range("total_episodes", total_episodes, 1, math.inf, integer=True, high_open=True)
        from tqdm.auto import tqdm

        target = self.episodes + total_episodes
        bar = tqdm(total=total_episodes, disable=not progress, unit="ep", dynamic_ncols=True)
        while self.episodes < target:
            stats = self.train_iteration()
            bar.update(self.env.num_envs)
            bar.set_postfix(reward=f"{stats['reward']:.3f}", kl=f"{stats['kl_ref']:.3f}")
            if callback is not None and callback(stats) is False:
                break
        bar.close()
        return self.history

    def train_iteration(self) -> dict[str, float]:
        """Collect one batch and update on it; returns and records the iteration's stats."""
        start = time.perf_counter()
        rollout = self.collect()
        rollout_seconds = time.perf_counter() - start
        update_beta = getattr(self.env.reward, "update_beta", None)  # an adaptive KL-shaped reward
        beta = {"beta": update_beta()} if callable(update_beta) else {}
        self.policy.train()
        diagnostics = self.update(rollout)
        self.policy.eval()
        seconds = time.perf_counter() - start
        tokens = int(rollout.mask.sum())
        sequence_kl = ((rollout.logprobs - rollout.ref_logprobs) * rollout.mask).sum(-1)  # (B,) k1 per sequence
        self.iteration += 1
        self.episodes += self.env.num_envs
        stats = {
            "iteration": self.iteration,
            "episodes": self.episodes,
            "reward": float(rollout.scores.mean()),
            **{f"reward/{k}": float(v.mean()) for k, v in rollout.components.items()},
            "kl_ref": float(sequence_kl.mean()),
            "response_tokens": tokens / self.env.num_envs,
            "tokens_per_s": tokens / seconds,
            "rollout_tokens_per_s": tokens / rollout_seconds,
            "skipped_updates": self.skipped_updates,
            **beta,
            **diagnostics,
        }
        self.history.append(stats)
        return stats

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike, keep: tuple[str, ...] = ()) -> Path:
        """Write ``policy/`` and ``reference/`` (``save_pretrained``: transformers alone loads
        them), the config, and optimizer/RNG/progress state. Atomic: everything is written to a
        temporary sibling and renamed into place; files named in ``keep`` that already exist in
        ``directory`` (a run's metrics, say) are carried over."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
        try:
            for name in keep:
                if (directory / name).is_file():
                    shutil.copy2(directory / name, tmp / name)
            self.policy.save_pretrained(tmp / "policy")
            self.reference.model.save_pretrained(tmp / "reference")
            (tmp / CONFIG_FILE).write_text(json.dumps({"agent": type(self).__name__, **asdict(self.config)}, indent=2))
            torch.save(self._trainer_state(), tmp / TRAINER_STATE_FILE)
            if directory.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
                os.replace(directory, old / directory.name)
                os.replace(tmp, directory)
                shutil.rmtree(old)
            else:
                os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    def _trainer_state(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "env_rng": self.env.np_random.bit_generator.state,
            "iteration": self.iteration,
            "episodes": self.episodes,
            "skipped_updates": self.skipped_updates,
            "history": self.history,
            "extra": self.extra_state(),
        }

    def extra_state(self) -> dict:
        """Agent-specific state to checkpoint (for example a moving-average baseline)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`extra_state` returned."""

    @classmethod
    def load(cls, directory: str | os.PathLike, env) -> "Agent":
        """Resume an agent saved by :meth:`save` on ``env`` (same task and batch size)."""
        directory = Path(directory)
        saved = json.loads((directory / CONFIG_FILE).read_text())
        if saved.pop("agent") != cls.__name__:
            raise ValueError(f"{directory} holds a different agent; load it with its own class")
        names = {f.name for f in fields(cls.config_class)}
        config = cls.config_class(**{k: v for k, v in saved.items() if k in names})
        env = getattr(env, "unwrapped", env)
        policy = Policy.from_pretrained(directory / "policy", device=env.device)
        env.set_reference(Reference.load(directory / "reference", temperature=env.sampling.temperature, device=env.device))
        agent = cls(env, config, policy=policy)
        state = torch.load(directory / TRAINER_STATE_FILE, map_location=env.device, weights_only=True)
        agent.optimizer.load_state_dict(state["optimizer"])
        agent.generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        env.np_random = np.random.Generator(np.random.PCG64())
        env.np_random.bit_generator.state = state["env_rng"]
        agent.iteration, agent.episodes = state["iteration"], state["episodes"]
        agent.skipped_updates, agent.history = state["skipped_updates"], state["history"]
        agent.load_extra_state(state["extra"])
        return agent

