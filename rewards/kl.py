"""KL-shaped reward (seeds 000, 001, 003; Ziegler et al. 2019; docs/kl.md).

Wraps any reward and adds, on every step, ``-β · log ρ_t`` with
``log ρ_t = log π_θ(a_t|s_t) − log π_ref(a_t|s_t)`` (the k1 estimator), both at the env's sampling
temperature. Only k1 is valid in a reward: a reward is detached, and the agent's score-function
gradient ``E[∇log π · Σ_t r_t]`` equals ``−β∇KL(π_θ‖π_ref)`` only for ``k = log ρ``
(:mod:`tokengym.lm.kl` has the argument; k2 and k3 belong in a loss, e.g. GRPO's).

π_ref is not held here. The env owns one :class:`~tokengym.lm.reference.Reference` per run, steps
it one token per action because this reward declares ``needs_reference``, and passes
``StepBatch.ref_logprobs``; the agent receives the same numbers as ``info["ref_logprobs"]``.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from tokengym.lm.distributed import sum_across_ranks
from tokengym.lm.kl import check_estimator, kl_estimate
from tokengym.lm.reference import IncrementalLogprobs, Reference
from tokengym.rewards.base import EpisodeStart, StepBatch, as_components

__all__ = ["AdaptiveKL", "KLShaped", "DEFAULT_BETA"]

DEFAULT_BETA = 0.055
"""The project's default KL coefficient, tuned on Sentiment-v0 (16-token episodes, 2,048 episodes,
3 seeds): A2C's defaults gain +0.35 VADER at 5.4 nats with it; the other agents' figures are in
BENCHMARKS.md (kl-sentiment)."""


@dataclass
class AdaptiveKL:
    """Proportional controller for β (Ziegler et al. 2019, §2.2), in log space and bounded:
    ``e = clip(KL / target − 1, −0.2, 0.2)``, ``β ← β · exp(e · min(n_steps, horizon) / horizon)``.

    Ziegler et al. update ``β ← β(1 + K_β e)`` once per batch; TRL's ``AdaptiveKLController``
    (and verl's) scale the gain by the batch, ``β ← β(1 + e·n/horizon)``, which reaches 0 at
    ``n = 5·horizon`` (and stays there: the controller is multiplicative) and turns β negative beyond,
    so that the penalty pays the policy to leave π_ref. Here the same first-order step is taken in
    log β: ``exp`` keeps β > 0 for any step, and ``k`` updates of ``n/k`` episodes equal one of ``n``
    (the step does not depend on how episodes are split into batches or ranks). One KL reading
    moves log β by at most ``|e| ≤ 0.2``, one horizon's worth: a larger batch measures the KL more
    precisely but does not justify extrapolating it over several horizons, and the bound keeps β
    finite whatever ``n_steps``."""

    init_beta: float
    """Starting β (> 0; a multiplicative controller cannot leave 0)."""
    target: float
    """Target KL per episode, in nats (> 0)."""
    horizon: int
    """Steps over which the error is corrected (> 0); Ziegler et al. use 10 000."""
    value: float = field(init=False)
    """The current β."""

    def __post_init__(self):
        if not self.init_beta > 0:
            raise ValueError(f"AdaptiveKL.init_beta must be > 0, got {self.init_beta}")
        if not self.target > 0:
            raise ValueError(f"AdaptiveKL.target must be > 0, got {self.target}")
        if not self.horizon > 0:
            raise ValueError(f"AdaptiveKL.horizon must be > 0, got {self.horizon}")
        self.value = float(self.init_beta)

    def update(self, current_kl: float, n_steps: int) -> float:
        if math.isnan(current_kl):
            raise ValueError(f"AdaptiveKL.update: current_kl must be a number (KL ≥ 0, or inf), got {current_kl}")
        if not n_steps > 0:
            raise ValueError(f"AdaptiveKL.update: n_steps must be > 0, got {n_steps}")
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= math.exp(error * min(n_steps, self.horizon) / self.horizon)
        return self.value


class KLShaped:
    """``inner`` plus ``-β · log(π_θ/π_ref)`` on every step, reported as ``"kl_penalty"``.

    ``beta``: a float ≥ 0 or an :class:`AdaptiveKL`. ``estimator``: ``"k1"`` only; ``"k2"`` and
    ``"k3"`` raise a ValueError that says why (they belong in a loss).

    ``ref_model``: the π_ref this reward asks the env for (a name, directory or module); ``None``
    means the env's default, the policy's starting weights. The env honours it everywhere: the
    penalty, the agent's ``ref_logprobs`` and the logged KL all come from that one model.

    Policy log-probs come from ``StepBatch.action_logprobs`` (the agent passes them to
    ``env.step(actions, logprobs=...)``), so the policy is never run here. Third-party agents that
    cannot pass them may bind ``policy_model`` (a module or a name), which is then stepped through
    its own cache at the env's temperature.

    The per-episode KL (Σ_t log ρ_t) of finished episodes is accumulated for :meth:`update_beta`.
    No host reads per step.
    """

    needs_reference = True
    """The env steps π_ref for this reward and fills ``StepBatch.ref_logprobs``."""

    def __init__(
        self,
        inner: Any,
        beta: float | AdaptiveKL = DEFAULT_BETA,
        estimator: str = "k1",
        ref_model: str | os.PathLike | torch.nn.Module | None = None,
        policy_model: str | os.PathLike | torch.nn.Module | None = None,
        name: str = "kl_penalty",
    ):
        if isinstance(beta, AdaptiveKL):
            self.controller: AdaptiveKL | None = beta
            self._beta = beta.value
        else:
            if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not float(beta) >= 0:
                raise ValueError(f"KLShaped.beta must be a number >= 0 (or an AdaptiveKL), got {beta!r}")
            self.controller, self._beta = None, float(beta)
        self.estimator = check_estimator(estimator, in_reward=True)
        self.inner = inner
        self.ref_model = ref_model
        self.policy_model = policy_model
        self.name = name
        self._policy: IncrementalLogprobs | None = None
        self._episode_kl: torch.Tensor | None = None  # (B,) running Σ log ρ of each row's episode
        self._finished_kl: torch.Tensor | None = None  # () Σ episode KL of finished episodes
        self._finished: torch.Tensor | None = None  # () number of finished episodes

    @property
    def beta(self) -> float:
        return self.controller.value if self.controller is not None else self._beta

    def children(self) -> list[Any]:
        """The wrapped reward (see :func:`~tokengym.rewards.base.walk`)."""
        return [self.inner]

    def state_dict(self) -> dict[str, float]:
        """What a checkpoint must hold to resume: the adaptive β (nothing for a fixed β)."""
        return {"beta": float(self.controller.value)} if self.controller is not None else {}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if set(state) != ({"beta"} if self.controller is not None else set()):
            raise ValueError(f"KLShaped state {state} does not fit this reward (adaptive β: {self.controller is not None})")
        if self.controller is not None:
            self.controller.value = float(state["beta"])

    def reset(self, episodes: EpisodeStart) -> None:
        self.inner.reset(episodes)
        device = episodes.prompt_ids.device
        if self.policy_model is not None:
            if self._policy is None or self._policy.temperature != episodes.temperature:
                model = Reference.load(self.policy_model, temperature=episodes.temperature, device=device).model
                self._policy = IncrementalLogprobs(model, episodes.temperature)
            if bool(episodes.rows.all()):  # host read, once per reset
                self._policy.start(episodes.prompt_ids, episodes.prompt_mask)
            else:
                self._policy.invalidate()
        batch = episodes.prompt_ids.shape[0]
        if self._episode_kl is None or self._episode_kl.shape[0] != batch:
            self._episode_kl = torch.zeros(batch, device=device)
            self._finished_kl = torch.zeros((), device=device)
            self._finished = torch.zeros((), device=device)
        self._episode_kl = torch.where(episodes.rows, torch.zeros_like(self._episode_kl), self._episode_kl)

    def _policy_logprobs(self, step: StepBatch) -> torch.Tensor:
        if step.action_logprobs is not None:
            if self._policy is not None:
                self._policy.invalidate()  # re-synced from the buffer if a later step lacks them
            return step.action_logprobs.float()
        if self._policy is None:
            raise RuntimeError(
                "KLShaped needs the policy's log-probs: pass them to env.step(actions, logprobs=...) "
                "or give KLShaped(policy_model=...) to score actions with a bound policy model"
            )
        return self._policy(
            step.input_ids, step.attention_mask, step.prompt_width, step.response_lengths, step.actions, step.acted
        )

    def __call__(self, step: StepBatch) -> dict[str, torch.Tensor]:
        if self._episode_kl is None:
            raise RuntimeError("KLShaped called before reset")
        if step.ref_logprobs is None:
            raise RuntimeError(
                "KLShaped needs log π_ref from the env (StepBatch.ref_logprobs); use it inside a "
                "TokenVectorEnv, which steps the reference for rewards with needs_reference=True"
            )
        components = as_components(self.inner(step), name=getattr(self.inner, "name", "reward"))
        if self.name in components:
            raise ValueError(f"component name {self.name!r} is used by the inner reward; pass KLShaped(name=...)")
        kl = kl_estimate(self._policy_logprobs(step), step.ref_logprobs.float(), self.estimator)  # (B,)
        kl = torch.where(step.acted, kl, torch.zeros_like(kl))
        self._episode_kl = self._episode_kl + kl
        self._finished_kl = self._finished_kl + torch.where(step.ended, self._episode_kl, 0.0).sum()
        self._finished = self._finished + step.ended.sum()
        self._episode_kl = torch.where(step.ended, torch.zeros_like(self._episode_kl), self._episode_kl)
        return {**components, self.name: -self.beta * kl}

    def mean_episode_kl(self) -> float | None:
        """Mean per-episode KL of the episodes finished since the last :meth:`update_beta` (host
        read), over every rank of a data-parallel run (a collective there: call it on all ranks)."""
        if self._finished is None:
            return None
        finished_kl, finished = self._finished_window()
        return None if finished == 0 else finished_kl / finished

    def _finished_window(self) -> tuple[float, int]:
        """(Σ episode KL, number of episodes) finished in this window, summed over ranks."""
        totals = sum_across_ranks(torch.stack([self._finished_kl.double(), self._finished.double()]))
        return float(totals[0]), int(totals[1])

    def update_beta(self, n_steps: int | None = None) -> float:
        """Feed :meth:`mean_episode_kl` to the adaptive controller and start a new window.

        ``n_steps`` defaults to the number of finished episodes (samples) in the window, over all
        ranks, as in Ziegler et al. A fixed β is returned unchanged."""
        if self._finished is not None:
            if self.controller is not None:
                finished_kl, finished = self._finished_window()
                if finished and math.isnan(finished_kl):  # a NaN penalty: the agent skips this update too
                    warnings.warn("the episodes' mean KL is NaN; adaptive β left unchanged", RuntimeWarning, stacklevel=2)
                elif finished:
                    self.controller.update(finished_kl / finished, finished if n_steps is None else n_steps)
            self._finished_kl.zero_()
            self._finished.zero_()
        return self.beta
