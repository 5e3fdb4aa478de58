"""What every agent shares: the config fields, rollout collection through reset/step, the guarded
optimizer step, per-iteration logging, and save/load. Each agent overrides only ``update``.

Over ~400 lines because it is the one place the loop lives (as stable-baselines3's
``OnPolicyAlgorithm``): splitting collection, the guarded step and persistence over several files
would spread one object's state (optimizer, generators, counters) across them.
"""
from __future__ import annotations

import abc
import json
import math
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from tokengym.agents.policy import Policy
from tokengym.envs.token_env import TokenVectorEnv
from tokengym.lm import distributed
from tokengym.lm.reference import Reference

__all__ = ["AgentConfig", "Agent", "NonFiniteUpdateError", "Rollout", "check_range"]

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
    minibatch_size: int | None = None
    """Episodes per forward/backward in an update, their gradients accumulated into one step: bounds
    the update's memory whatever the rollout batch (None: all of a step's episodes at once)."""
    max_skipped_updates: int = 3
    """Stop with a diagnostic after this many consecutive iterations whose update was skipped
    for a non-finite reward, loss or gradient (≥ 1)."""

    def __post_init__(self):
        check_range("lr", self.lr, 0, math.inf, low_open=True, high_open=True)
        check_range("gamma", self.gamma, 0, 1)
        check_range("max_grad_norm", self.max_grad_norm, 0, math.inf, low_open=True, high_open=True)
        check_range("group_size", self.group_size, 1, math.inf, integer=True, high_open=True)
        check_range("check_done_every", self.check_done_every, 1, math.inf, integer=True, high_open=True)
        check_range("max_skipped_updates", self.max_skipped_updates, 1, math.inf, integer=True, high_open=True)
        if self.minibatch_size is not None:
            check_range("minibatch_size", self.minibatch_size, 1, math.inf, integer=True, high_open=True)


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


class NonFiniteUpdateError(RuntimeError):
    """Too many consecutive updates were skipped for non-finite rewards, losses or gradients."""


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
        env, self.statistics_wrappers = _driveable(env)
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
        self.reference: Reference = env.reference
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.lr)
        self.generator = torch.Generator(device=env.device).manual_seed(config.seed)
        self.iteration = 0
        self.episodes = 0
        self.skipped_updates = 0
        self.consecutive_skipped = 0  # iterations in a row whose update was skipped
        self._skipped_now: list[str] = []  # what was non-finite in this iteration's update
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ rollout
    @torch.no_grad()
    def collect(self, actor: Policy | None = None) -> Rollout:
        """Play one batch of episodes through ``env.reset`` / ``env.step``, sampled by ``actor``
        (default: the policy; an off-policy agent passes its proposal, and ``Rollout.logprobs`` are then the actor's)."""
        env, config = self.env, self.config
        policy = self.policy if actor is None else actor
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
            step = policy.act(self.generator, env.shard)
            obs, reward, _, _, info = env.step(step.actions, logprobs=step.logprobs)
            logprobs[:, t] = step.logprobs
            rewards[:, t] = reward
            if ref_logprobs is not None:
                ref_logprobs[:, t] = info["ref_logprobs"]
            if "late_rewards" in info:
                late_rewards += info["late_rewards"]
            if values is not None:
                values[:, t] = step.values
            if t + 1 == T or ((t + 1) % config.check_done_every == 0 and distributed.all_ranks(env.all_done, env.device)):
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
        if len(rows) == 0:  # this rank holds none of the minibatch: a zero-weight pass keeps it in step
            rows, global_rows = torch.zeros(1, dtype=torch.long, device=rows.device), math.inf
        totals: dict[str, torch.Tensor] = {}
        finite = True
        for chunk in rows.split(self.config.minibatch_size or len(rows)):
            share = len(chunk) / global_rows
            loss, stats = loss_of(chunk)
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + share * value.detach()
            if not self._backward(loss * share):  # one non-finite chunk skips the whole step, once
                finite = False
                break
        self._finish_step(finite, loss.device)
        if not totals:
            return {}
        summed = distributed.sum_across_ranks(torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in totals.values()]))
        return dict(zip(totals, summed.tolist()))

    def minibatches(self, n: int):
        """Split this iteration's global batch (``world_size × num_envs`` rows) into ``n`` shuffled
        minibatches, the same on every rank; yields ``(this rank's rows of each, its global size)``
        for :meth:`minibatch_step`, so N ranks take exactly the steps one process would."""
        B = self.env.num_envs
        rank = self.env.shard[0]
        order = torch.randperm(self.world_size * B, generator=self.generator, device=self.generator.device)
        for minibatch in order.chunk(n):
            mine = minibatch[(minibatch >= rank * B) & (minibatch < (rank + 1) * B)] - rank * B
            yield mine.to(self.env.device), len(minibatch)

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
        loss.backward()
        return True

    def _finish_step(self, finite: bool, device: torch.device) -> bool:
        """Sum the accumulated gradients over ranks, then clip and step; unless the loss was
        non-finite on any rank, in which case every rank skips the step."""
        if distributed.all_ranks(finite, device):
            distributed.sum_gradients(self.policy.parameters())
            return self._clip_and_step()
        self.optimizer.zero_grad(set_to_none=True)
        if finite:
            self._skip("loss on another rank")
        return False

    def _clip_and_step(self) -> bool:
        """Clip the accumulated gradient and step, unless its norm is non-finite."""
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.max_grad_norm)
        if not torch.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            self._skip(f"gradient norm = {float(grad_norm)}")
            return False
        self.optimizer.step()
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
        """Write ``policy/`` and ``reference/`` (``save_pretrained``: transformers alone loads
        them, each with the env's tokenizer and a generation config; with LoRA ``policy/`` is a
        PEFT adapter directory and ``reference/`` its full base model, once), the config, and optimizer/RNG/progress state. Atomic: everything is written to a
        temporary sibling and renamed into place; files named in ``keep`` that already exist in
        ``directory`` (a run's metrics, say) are carried over."""
        from tokengym.lm.io import atomic_write_dir

        def write(tmp: Path) -> None:
            self.policy.save_pretrained(tmp / "policy")
            self.reference.save_pretrained(tmp / "reference", tokenizer=self.env.tokenizer)
            dtype = self.policy.autocast_dtype
            (tmp / CONFIG_FILE).write_text(json.dumps({
                "agent": type(self).__name__, **asdict(self.config),
                "autocast_dtype": None if dtype is None else str(dtype).removeprefix("torch."),
            }, indent=2))
            torch.save(self._trainer_state(), tmp / TRAINER_STATE_FILE)

        return atomic_write_dir(directory, write, keep=keep)

    def _trainer_state(self) -> dict:
        """Everything but the weights that the next iteration depends on: optimizer, every RNG
        (the sampler's generator, torch's, Python's, NumPy's and the env's), the adaptive-β state
        of a KL-shaped reward, progress, metrics so far, and which parameters train."""
        state = {
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": list(random.getstate()[1]),
            "numpy_rng": _numpy_global_state(),
            "env_rng": self.env.np_random.bit_generator.state,
            "reward_state": _reward_state(self.env.reward),
            "iteration": self.iteration,
            "episodes": self.episodes,
            "skipped_updates": self.skipped_updates,
            "consecutive_skipped": self.consecutive_skipped,
            "history": self.history,
            "trainable": [name for name, p in self.policy.named_parameters() if p.requires_grad],
            "extra": self.extra_state(),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def _restore_trainer_state(self, state: dict) -> None:
        """Inverse of :meth:`_trainer_state` (the weights are restored separately)."""
        trainable = set(state["trainable"])
        names = {name for name, _ in self.policy.named_parameters()}
        if not trainable <= names:
            raise ValueError(f"the checkpoint trains parameters this policy lacks: {sorted(trainable - names)[:5]}")
        if not trainable:
            raise ValueError("the checkpoint records no trainable parameter: a resumed update would change nothing")
        for name, p in self.policy.named_parameters():
            p.requires_grad_(name in trainable)
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        random.setstate((3, tuple(state["python_rng"]), None))
        kind, keys, pos, has_gauss, cached = state["numpy_rng"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
        self.env.np_random = np.random.Generator(np.random.PCG64())
        self.env.np_random.bit_generator.state = state["env_rng"]
        _restore_reward_state(self.env.reward, state["reward_state"])
        self.iteration, self.episodes = state["iteration"], state["episodes"]
        self.skipped_updates, self.history = state["skipped_updates"], state["history"]
        self.consecutive_skipped = state.get("consecutive_skipped", 0)
        self.load_extra_state(state["extra"])

    def extra_state(self) -> dict:
        """Agent-specific state to checkpoint (for example a moving-average baseline)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`extra_state` returned."""

    @classmethod
    def load(cls, directory: str | os.PathLike, env) -> "Agent":
        """Resume an agent saved by :meth:`save` on ``env`` (same task and batch size), with the
        policy's autocast dtype as it was saved."""
        directory = Path(directory)
        saved = json.loads((directory / CONFIG_FILE).read_text())
        if saved.pop("agent") != cls.__name__:
            raise ValueError(f"{directory} holds a different agent; load it with its own class")
        names = {f.name for f in fields(cls.config_class)}
        config = cls.config_class(**{k: v for k, v in saved.items() if k in names})
        env = getattr(env, "unwrapped", env)
        lora = (directory / "policy" / "adapter_config.json").is_file()  # adapters on reference/'s base
        dtype = saved.get("autocast_dtype")  # absent in checkpoints from before it was recorded: float32
        policy = Policy.from_pretrained(
            directory / "policy", device=env.device, base_model=directory / "reference" if lora else None,
            autocast_dtype=None if dtype is None else getattr(torch, dtype),
        )
        if not lora:  # a LoRA policy's π_ref is its base, adapters off (set in __init__)
            env.set_reference(Reference.load(directory / "reference", temperature=env.sampling.temperature, device=env.device))
        agent = cls(env, config, policy=policy)
        state = torch.load(directory / TRAINER_STATE_FILE, map_location=env.device, weights_only=True)
        agent._restore_trainer_state(state)
        return agent


def _driveable(env) -> tuple[Any, list]:
    """The :class:`TokenVectorEnv` under ``env``, and the ``RecordEpisodeStatistics`` wrappers on it.

    The agent drives the env's own ``reset``/``step`` (one KV cache per batch, log-probs passed to
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


def _numpy_global_state() -> list:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _kl_controllers(reward, seen=None) -> list:
    """Every adaptive-β controller inside ``reward`` (KL-shaped rewards nest inside sums)."""
    seen = set() if seen is None else seen
    if reward is None or id(reward) in seen:
        return []
    seen.add(id(reward))
    found = []
    controller = getattr(reward, "controller", None)
    if controller is not None and hasattr(controller, "value"):
        found.append(controller)
    children = [getattr(reward, "inner", None)]
    if isinstance(getattr(reward, "rewards", None), dict):  # WeightedSum: {name: (weight, reward)}
        children += [child for _, child in reward.rewards.values()]
    for child in children:
        found += _kl_controllers(child, seen)
    return found


def _reward_state(reward) -> list[float]:
    return [float(c.value) for c in _kl_controllers(reward)]


def _restore_reward_state(reward, values: list[float]) -> None:
    controllers = _kl_controllers(reward)
    if len(controllers) != len(values):
        raise ValueError(f"the checkpoint has {len(values)} adaptive-β states, the env's reward {len(controllers)}")
    for controller, value in zip(controllers, values):
        controller.value = value

