"""The agent every algorithm subclasses: its config fields, the training loop, and the guarded
optimizer step. Each agent overrides only ``update`` (and ``config_class``).

* :class:`AgentConfig`: the fields every agent has.
* :class:`Agent`: ``collect`` (one batch through ``reset``/``step``, :mod:`tokengym.agents.rollout`),
  ``update`` (the algorithm), ``minibatch_step`` / ``minibatches`` / ``epochs`` (one guarded optimizer
  step on a minibatch, micro-batched and summed over ranks), ``learn`` / ``train_iteration`` (the
  loop and its logged statistics), ``save`` / ``load`` (:mod:`tokengym.agents.checkpoint`).
"""
from __future__ import annotations

import abc
import contextlib
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch

from tokengym.agents.policy import Policy
from tokengym.agents.rollout import Rollout, driveable_env, play_episodes
from tokengym.agents.sharding import Sharding, parameter_groups, shard_models
from tokengym.envs.token_env import TokenVectorEnv
from tokengym.lm import distributed
from tokengym.lm.config import bounded, check_fields, check_range
from tokengym.lm.fsdp import clip_grad_norm, gathered, is_sharded, replicated
from tokengym.lm.reference import Reference

__all__ = ["AgentConfig", "Agent", "NonFiniteUpdateError"]

@dataclass
class AgentConfig:
    """Fields every agent has. An agent's config subclasses this; each field declares its range
    (:func:`~tokengym.lm.config.bounded`), checked on construction, and its docstring is the
    command line's help."""

    lr: float = bounded(1e-4, above=0)
    """Adam learning rate."""
    gamma: float = bounded(1.0, at_least=0, at_most=1)
    """Discount γ; RLHF usually uses 1."""
    max_grad_norm: float = bounded(1.0, above=0)
    """Gradient-norm clip."""
    group_size: int = bounded(1, at_least=1, integer=True)
    """Samples per prompt: the env repeats each prompt this many times in consecutive rows."""
    seed: int = bounded(0, at_least=0, integer=True)
    """Seeds the env's prompt draws, the sampler and torch."""
    check_done_every: int = bounded(1, at_least=1, integer=True)
    """Read 'all rows done' on the host every this many steps to stop a rollout early (1 on CPU
    costs nothing; raise it on CUDA to avoid per-token synchronisation)."""
    minibatch_size: int | None = bounded(None, at_least=1, integer=True)
    """Episodes per forward/backward in an update, their gradients accumulated into one step: bounds
    the update's memory whatever the rollout batch (default: all of a step's episodes at once)."""
    max_skipped_updates: int = bounded(3, at_least=1, integer=True)
    """Stop with a diagnostic after this many consecutive iterations whose update was skipped
    for a non-finite reward, loss or gradient."""

    def __post_init__(self):
        check_fields(self)

    @property
    def uses_groups(self) -> bool:
        """Does the agent compare the samples of a prompt (so ``group_size`` matters)?"""
        return False


class NonFiniteUpdateError(RuntimeError):
    """Too many consecutive updates were skipped for non-finite rewards, losses or gradients."""


class Agent(abc.ABC):
    """A policy-gradient agent that drives a :class:`TokenVectorEnv` through ``reset``/``step``.

    The env is the one source of truth for what the agent compares: the policy samples with the
    env's :attr:`~TokenVectorEnv.sampling` (temperature, top-k, top-p), and π_ref is the env's
    :attr:`~TokenVectorEnv.reference`, so the reward's KL penalty, the agent's ``ref_logprobs``
    and the logged ``kl_ref`` are the same numbers from one model held once in memory.

    ``sharding`` (a :class:`~tokengym.agents.sharding.Sharding`, under ``torchrun``) shards the
    policy and π_ref with FSDP2; the steps taken are the unsharded run's.
    """

    config_class: ClassVar[type[AgentConfig]] = AgentConfig
    needs_values: ClassVar[bool] = False
    beta_is_target: ClassVar[bool] = False
    """True when the config's ``beta`` defines the agent's own target ``p ∝ π_ref·exp(r/β)`` (f-DPG,
    DPO): the agent then learns from the task reward, with no KL penalty in it."""

    def __init__(self, env, config: AgentConfig | None = None, policy: Policy | None = None,
                 sharding: Sharding | None = None):
        config = config if config is not None else self.config_class()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        env, self.statistics_wrappers = driveable_env(env)
        if not isinstance(env, TokenVectorEnv):
            raise TypeError(
                f"agents drive the batched env from gymnasium.make_vec('tokengym/...'), got {type(env).__name__}"
            )
        if env.num_envs % config.group_size:
            raise ValueError(
                f"group_size={config.group_size} must divide the batch (num_envs={env.num_envs})"
            )
        if env.shard != distributed.world():
            raise ValueError(
                f"the env is shard {env.shard} (rank, world_size) but this process is rank "
                f"{distributed.world()} of torch.distributed; build the env after init_process_group"
            )
        self.env, self.config = env, config
        self.world_size = env.shard[1]
        torch.manual_seed(config.seed)
        if policy is None:
            policy = Policy.from_pretrained(env.model, device=env.device, value_head=self.needs_values)
        policy.sampling = env.sampling
        if policy.tokenizer is None:
            policy.tokenizer = env.tokenizer  # saved beside the policy; None for token-id-only envs
        if policy.vocab_size != env.single_action_space.n:
            raise ValueError(
                f"the policy's vocabulary ({policy.vocab_size} logits) does not fit the env's action "
                f"space Discrete({env.single_action_space.n})"
            )
        if self.needs_values and policy.value_head is None:
            raise ValueError(f"{type(self).__name__} needs a policy with a value function (value_head=True)")
        self.policy = policy
        distributed.broadcast_parameters(policy)  # every rank starts from rank 0's weights, as in DDP
        if policy.is_lora:  # π_ref is the policy's own base with adapters off: no second copy
            env.set_reference(Reference.adapters_off(policy.model, env.sampling.temperature))
        # π_ref runs under the policy's autocast (the policy owns the numerics, the env π_ref), so
        # the two differ by their weights alone, not by rounding
        if env.reference.autocast_dtype != policy.autocast_dtype:
            env.set_reference(env.reference.under_autocast(policy.autocast_dtype))
        self.reference: Reference = env.reference
        self.gather_rollout = sharding is not None and shard_models(policy, self.reference, sharding)
        self.optimizer = torch.optim.Adam(
            parameter_groups(policy) if self.sharded else self.policy.parameters(), lr=config.lr
        )
        # float16 gradients below 6e-8 flush to zero: scale the loss up before backward and the
        # gradients back down before clipping (Micikevicius et al. 2018). bfloat16 has float32's range.
        self.scaler = torch.amp.GradScaler(env.device.type, enabled=policy.autocast_dtype == torch.float16)
        self.generator = torch.Generator(device=env.device).manual_seed(config.seed)
        self.iteration = 0
        self.episodes = 0
        self.skipped_updates = 0
        self.consecutive_skipped = 0  # iterations in a row whose update was skipped
        self._skipped_now: list[str] = []  # what was non-finite in this iteration's update
        self.history: list[dict[str, float]] = []

    @property
    def sharded(self) -> bool:
        """Are the policy and π_ref sharded with FSDP2 (``sharding=``)?"""
        return is_sharded(self.policy.model)

    # ------------------------------------------------------------------ rollout
    def collect(self, actor: Policy | None = None) -> Rollout:
        """Play one batch of episodes through ``env.reset`` / ``env.step`` (the first with the
        config's seed), sampled by ``actor`` (default: the policy; an off-policy agent passes its
        proposal, and ``Rollout.logprobs`` are then the actor's)."""
        with self.rollout_weights():
            return play_episodes(
                self.env, self.policy if actor is None else actor, self.generator,
                seed=self.config.seed if self.iteration == 0 else None,
                group_size=self.config.group_size, check_done_every=self.config.check_done_every,
            )

    def rollout_weights(self):
        """The context of one-token forwards (a rollout, sampled continuations): under FSDP with
        a gathered rollout, the policy's and π_ref's full weights, gathered once on entry."""
        if not self.gather_rollout:
            return contextlib.nullcontext()
        return gathered(self.policy.model, self.policy.value_model, self.reference.model)

    # ------------------------------------------------------------------ update
    @abc.abstractmethod
    def update(self, rollout: Rollout) -> dict[str, float]:
        """One policy update from ``rollout``; returns diagnostics. Each agent implements it."""

    def optimizer_step(self, loss: torch.Tensor) -> bool:
        """Backward, clip, step; a non-finite loss or gradient never reaches the weights: the step
        is skipped with a warning naming the iteration and the quantity."""
        self.optimizer.zero_grad(set_to_none=True)
        return self._finish_step(self._backward(loss), loss.device)

    def minibatch_step(
        self,
        rows: torch.Tensor,
        loss_of: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]],
        global_rows: int | None = None,
    ) -> dict[str, float]:
        """One guarded optimizer step on the mean loss over a minibatch, of which ``rows`` (episode
        indices) are this rank's part; ``global_rows`` is the minibatch's size over all ranks
        (default: ``len(rows) × world_size``). The loss is computed in chunks of at most
        ``config.minibatch_size`` episodes whose gradients accumulate.

        ``loss_of(chunk)`` returns ``(loss, stats)``: the mean over ``chunk`` of per-episode terms
        (every agent's loss is such a mean). Each chunk is weighted by its share of the global
        minibatch, and the gradients are summed over ranks, so the step is the one a single process
        holding the whole minibatch would take. The stats (0-dim tensors) are averaged with the same
        weights over all ranks. A non-finite loss or gradient on any rank skips the step on all."""
        global_rows = global_rows if global_rows is not None else len(rows) * self.world_size
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, torch.Tensor] = {}
        finite = True
        for chunk, share in self._chunks(rows, global_rows):
            loss, stats = loss_of(chunk)
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + share * value.detach()
            if finite:
                finite = self._backward(loss * share)
            if not finite:  # one non-finite chunk skips the whole step, once
                if not self.sharded:
                    break
                (loss * 0).backward()  # FSDP's backward is a collective: every rank runs each one
        self._finish_step(finite, loss.device)
        if not totals:
            return {}
        summed = distributed.sum_across_ranks(torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in totals.values()]))
        return dict(zip(totals, summed.tolist()))

    def _chunks(self, rows: torch.Tensor, global_rows: float):
        """``(chunk, share)`` for :meth:`minibatch_step`: ``rows`` in chunks of at most
        ``config.minibatch_size``, each with its share of the global minibatch. A rank that holds
        none of the minibatch makes a zero-weight pass on row 0, which keeps it in step; under
        FSDP (whose forward and backward are collectives) every rank makes as many passes as the
        rank with the most chunks."""
        chunks = list(rows.split(self.config.minibatch_size or max(len(rows), 1))) or [rows]
        if self.sharded:
            chunks += [rows[:0]] * (distributed.max_across_ranks(len(chunks), rows.device) - len(chunks))
        for chunk in chunks:
            if len(chunk) == 0:
                yield torch.zeros(1, dtype=torch.long, device=rows.device), 0.0
            else:
                yield chunk, len(chunk) / global_rows

    def minibatches(self, n: int):
        """Split this iteration's global batch (``world_size × num_envs`` rows) into ``n`` shuffled
        minibatches whose sizes differ by at most one, the same on every rank; yields ``(this rank's
        rows of each, its global size)`` for :meth:`minibatch_step`, so N ranks take exactly the
        steps one process would. (``chunk`` makes fewer than ``n`` pieces when ``n`` does not divide
        the batch: 6 rows in 4 gave 3.)"""
        B = self.env.num_envs
        rank = self.env.shard[0]
        check_range("n_minibatches", n, 1, self.world_size * B, integer=True)
        order = torch.randperm(self.world_size * B, generator=self.generator, device=self.generator.device)
        for minibatch in order.tensor_split(n):
            mine = minibatch[(minibatch >= rank * B) & (minibatch < (rank + 1) * B)] - rank * B
            yield mine.to(self.env.device), len(minibatch)

    def epochs(
        self,
        n_epochs: int,
        n_minibatches: int,
        loss_of: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]],
        stop: Callable[[dict[str, float]], bool] | None = None,
    ) -> dict[str, float]:
        """``n_epochs`` passes over the batch, each in ``n_minibatches`` shuffled minibatches with
        one :meth:`minibatch_step` each (PPO's and GRPO's update); returns each logged quantity's
        mean over the steps, and ``epochs``, the passes made. ``stop(stats)``, given the last step's
        stats after each pass, ends the passes early (PPO's target KL)."""
        steps: list[dict[str, float]] = []
        for epoch in range(1, n_epochs + 1):
            for rows, size in self.minibatches(n_minibatches):
                steps.append(self.minibatch_step(rows, loss_of, size))
            if stop is not None and stop(steps[-1]):
                break
        return {**{key: sum(step[key] for step in steps) / len(steps) for key in steps[0]}, "epochs": epoch}

    def batch_step(self, loss_of: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> dict[str, float]:
        """One :meth:`minibatch_step` on the whole batch (REINFORCE's and A2C's update)."""
        return self.minibatch_step(torch.arange(self.env.num_envs, device=self.env.device), loss_of)

    def _backward(self, loss: torch.Tensor) -> bool:
        """``loss.backward()`` unless it is non-finite (then skipped, with a warning)."""
        if not loss.requires_grad:
            raise RuntimeError(
                "the loss depends on no trainable parameter (requires_grad is False on every policy "
                "parameter?): this update would change nothing"
            )
        if not torch.isfinite(loss):
            self._skip(f"loss = {float(loss.detach())}")
            return False
        self.scaler.scale(loss).backward()
        return True

    def _finish_step(self, finite: bool, device: torch.device) -> bool:
        """Sum the accumulated gradients over ranks (FSDP has reduce-scattered the sharded ones in
        the backward), then clip and step; unless the loss was non-finite on any rank, in which
        case every rank skips the step."""
        if distributed.all_ranks(finite, device):
            distributed.sum_gradients(replicated(self.policy.parameters()))
            return self._clip_and_step()
        self.optimizer.zero_grad(set_to_none=True)
        if finite:
            self._skip("loss on another rank")
        return False

    def _clip_and_step(self) -> bool:
        """Unscale (float16) and clip the accumulated gradient and step, unless its norm is
        non-finite. Under float16 an overflow at a loss scale above 1 is the scaler's signal to
        halve the scale, not a non-finite update; at a scale of 1 or less it is one."""
        self.scaler.unscale_(self.optimizer)  # clip the true gradient, not the scaled one
        grad_norm = clip_grad_norm(self.policy.parameters(), self.config.max_grad_norm)
        if not torch.isfinite(grad_norm):
            overflow = self.scaler.is_enabled() and self.scaler.get_scale() > 1
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.update()  # halves the scale after an overflow
            if not overflow:
                self._skip(f"gradient norm = {float(grad_norm)}")
            return False
        self.scaler.step(self.optimizer)  # the optimizer's step (the scaler's inf check passed above)
        self.scaler.update()
        return True

    def _skip(self, quantity: str) -> None:
        self.skipped_updates += 1
        self._skipped_now.append(quantity)
        warnings.warn(
            f"iteration {self.iteration + 1}: non-finite {quantity}; update skipped", RuntimeWarning, stacklevel=3
        )

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
        bar = tqdm(total=total_episodes, disable=not progress or self.env.shard[0] != 0, unit="ep", dynamic_ncols=True)
        while self.episodes < target:
            stats = self.train_iteration()
            bar.update(self.world_size * self.env.num_envs)
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
        self._record_statistics(rollout, rollout_seconds)
        update_beta = getattr(self.env.reward, "update_beta", None)  # an adaptive KL-shaped reward
        beta = {"beta": update_beta()} if callable(update_beta) else {}
        self._skipped_now = []
        bad_rewards = ~torch.isfinite(rollout.rewards).all(-1)  # (B,) one host read per iteration
        if not distributed.all_ranks(~bad_rewards.any(), bad_rewards.device):
            rows = bad_rewards.nonzero().flatten().tolist()
            where = f"rows {rows[:8]}{' …' if len(rows) > 8 else ''}" if rows else "another rank's rows"
            self._skip(f"reward in {where}")
            diagnostics = {}
        else:
            self.policy.train()
            diagnostics = self.update(rollout)
            self.policy.eval()
        self.consecutive_skipped = self.consecutive_skipped + 1 if self._skipped_now else 0
        if self.consecutive_skipped >= self.config.max_skipped_updates:
            raise NonFiniteUpdateError(
                f"{self.consecutive_skipped} consecutive updates skipped (max_skipped_updates="
                f"{self.config.max_skipped_updates}); at iteration {self.iteration + 1}: non-finite "
                f"{'; '.join(self._skipped_now)}. The weights are unchanged since the last finite update; "
                "check the reward, lower lr or max_grad_norm"
            )
        seconds = time.perf_counter() - start
        tokens = int(rollout.mask.sum())
        sequence_kl = ((rollout.logprobs - rollout.ref_logprobs) * rollout.mask).sum(-1)  # (B,) k1 per sequence
        self.iteration += 1
        self.episodes += self.world_size * self.env.num_envs
        per_rank = {  # means over this rank's episodes; ranks hold equally many, so their mean is the global one
            "reward": rollout.scores.mean(),
            **{f"reward/{k}": v.mean() for k, v in rollout.components.items()},
            "kl_ref": sequence_kl.mean(),
            "response_tokens": torch.as_tensor(tokens / self.env.num_envs),
            "tokens_per_s": torch.as_tensor(self.world_size * tokens / seconds),  # the whole run's throughput
            "rollout_tokens_per_s": torch.as_tensor(self.world_size * tokens / rollout_seconds),
        }
        means = distributed.mean_across_ranks(torch.stack([v.to(self.env.device, torch.float64) for v in per_rank.values()]))
        stats = {
            "iteration": self.iteration,
            "episodes": self.episodes,
            **dict(zip(per_rank, means.tolist())),
            "skipped_updates": self.skipped_updates,
            **beta,
            **diagnostics,
        }
        self.history.append(stats)
        return stats

    def _record_statistics(self, rollout: Rollout, seconds: float) -> None:
        """Feed the episodes to the env's ``RecordEpisodeStatistics`` wrappers, as their ``step`` would."""
        if not self.statistics_wrappers:
            return
        returns = rollout.scores.double().cpu().numpy()  # (B,)
        lengths = rollout.mask.sum(-1).cpu().numpy()  # (B,)
        for wrapper in self.statistics_wrappers:
            wrapper.episode_count += len(returns)
            wrapper.return_queue.extend(returns.tolist())
            wrapper.length_queue.extend(lengths.tolist())
            wrapper.time_queue.extend([round(seconds, 6)] * len(returns))

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike, keep: tuple[str, ...] = ()) -> Path:
        """Write ``policy/``, ``reference/``, the config and the trainer state, atomically
        (:func:`tokengym.agents.checkpoint.save_agent`; a sharded agent's every rank calls it)."""
        from tokengym.agents.checkpoint import save_agent

        return save_agent(self, directory, keep)

    def extra_state(self) -> dict:
        """Agent-specific state to checkpoint (for example a moving-average baseline)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`extra_state` returned."""

    @classmethod
    def load(cls, directory: str | os.PathLike, env, sharding: Sharding | None = None) -> "Agent":
        """Resume an agent saved by :meth:`save` on ``env`` (same task and batch size; a sharded
        agent with ``sharding``) (:func:`tokengym.agents.checkpoint.load_agent`)."""
        from tokengym.agents.checkpoint import load_agent

        return load_agent(cls, directory, env, sharding)
