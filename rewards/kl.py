"""KL-shaped reward (DESIGN.md §2; seeds 000, 001, 003) and the KL estimators.

Wraps any reward and adds, on every step, ``-β · k(a_t, s_t)`` with
``log ρ = log π_θ(a_t|s_t) − log π_ref(a_t|s_t)`` and (http://joschu.net/blog/kl-approx.html):

* ``k1 = log ρ``                 unbiased, can be negative
* ``k2 = ½ (log ρ)²``            biased, low variance, never negative
* ``k3 = ρ⁻¹ − 1 + log ρ``       unbiased, never negative

:func:`kl_estimate` is the project's single implementation of these estimators (agents that need
them import it from here; rewards never import from agents).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from tokengym.envs.cached_lm import CachedLM

from .base import EpisodeStart, StepBatch, as_components

__all__ = ["ESTIMATORS", "kl_estimate", "AdaptiveKL", "KLShaped"]

ESTIMATORS = ("k1", "k2", "k3")


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-sample estimate of KL(π_θ ‖ π_ref) from log-probs of tokens sampled from π_θ."""
    log_ratio = logprobs - ref_logprobs  # log ρ
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio.pow(2)
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio  # ρ⁻¹ − 1 + log ρ
    raise ValueError(f"unknown KL estimator {kind!r}; valid: {', '.join(ESTIMATORS)}")


@dataclass
class AdaptiveKL:
    """Proportional controller for β (Ziegler et al. 2019, §2.2):
    ``e = clip(KL / target − 1, −0.2, 0.2)``, ``β ← β · (1 + e · n_steps / horizon)``."""

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
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


class _IncrementalLogprobs:
    """``log π(a_t|s_t)`` of one model, stepped one token per env step through a ``CachedLM``."""

    def __init__(self, model: torch.nn.Module, temperature: float):
        self.lm = CachedLM(model)
        self.temperature = temperature
        self.next_logprobs: torch.Tensor | None = None  # (B, V) log π(·|s_t) for the coming action

    def _logprobs(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(logits / self.temperature, dim=-1)  # (B, V)

    def start(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> None:
        self.next_logprobs = self._logprobs(self.lm.prefill(prompt_ids, prompt_mask))

    def invalidate(self) -> None:
        self.next_logprobs = None

    def _catch_up(self, step: StepBatch) -> None:
        """Prefill every row's context *before* this step's action, left-padded (after a partial
        reset, or for a policy model first needed mid-episode): one batched forward."""
        mask = step.attention_mask.clone()  # (B, P+T)
        last = (step.prompt_width + step.response_lengths - 1).clamp(min=0)[:, None]  # (B, 1) this action's column
        mask.scatter_(1, last, mask.gather(1, last) & ~step.acted[:, None])
        order = torch.argsort(mask.long(), dim=1, stable=True)  # pads first, real tokens in order
        self.next_logprobs = self._logprobs(self.lm.prefill(step.input_ids.gather(1, order), mask.gather(1, order)))

    def __call__(self, step: StepBatch) -> torch.Tensor:
        """(B,) log π(a_t|s_t) of this step's actions; then advances the cache by one token."""
        if self.next_logprobs is None:
            self._catch_up(step)
        logprobs = self.next_logprobs.gather(1, step.actions[:, None]).squeeze(1)  # (B,)
        logits = self.lm.step(step.actions)  # (B, V)
        # Rows that did not act appended a pad: hide that column and keep their position and logprobs.
        self.lm.attention_mask[:, -1] = step.acted.long()
        self.lm.next_positions = self.lm.next_positions - (~step.acted).long()[:, None]
        self.next_logprobs = torch.where(step.acted[:, None], self._logprobs(logits), self.next_logprobs)
        return logprobs


def _load(model: str | os.PathLike | torch.nn.Module | Callable[[], torch.nn.Module], device: torch.device) -> torch.nn.Module:
    if isinstance(model, torch.nn.Module):
        return model  # the caller's module: used as is, never moved or frozen (it may be the policy)
    if callable(model):  # a builder, e.g. the env's lazy frozen copy of a model instance
        return model().to(device)
    from tokengym.envs.loading import load_causal_lm

    loaded = load_causal_lm(model, device=device)
    return loaded.requires_grad_(False)


class KLShaped:
    """``inner`` plus ``-β · k(a_t, s_t)`` on every step, reported as ``"kl_penalty"``.

    ``beta``: a float ≥ 0 or an :class:`AdaptiveKL`. ``estimator``: ``"k1"``, ``"k2"`` or ``"k3"``.

    ``ref_model`` (π_ref, frozen): a module, a model name/dir, or ``None``; then the env's policy
    model name (its starting weights) is used, given through :meth:`bind`. π_ref runs through its
    own ``CachedLM``: prefilled at a full reset, one ``step`` per env step, no re-encoding. A
    partial reset (autoreset) cannot restart single rows of a shared cache, so the next step
    re-prefills every row's current context in one batched forward.

    Policy log-probs come from ``StepBatch.action_logprobs`` (the agent passes them to
    ``env.step(actions, logprobs=...)``); the policy is then never run here. Without them, the
    ``policy_model`` bound here is scored through its own ``CachedLM`` (caught up from the step's
    contexts the first time it is needed). Both use ``log_softmax(logits / temperature)``, the
    policy's sampling convention.

    The per-episode KL (sum of ``k`` over the episode's steps) of finished episodes is accumulated
    for :meth:`update_beta`. Host reads: one bool at reset (full or partial); none per step.
    """

    def __init__(
        self,
        inner: Any,
        beta: float | AdaptiveKL = 0.05,
        estimator: str = "k1",
        ref_model: str | os.PathLike | torch.nn.Module | None = None,
        policy_model: str | os.PathLike | torch.nn.Module | None = None,
        temperature: float = 1.0,
        name: str = "kl_penalty",
    ):
        if isinstance(beta, AdaptiveKL):
            self.controller: AdaptiveKL | None = beta
            self._beta = beta.value
        else:
            if not float(beta) >= 0:
                raise ValueError(f"KLShaped.beta must be >= 0 (or an AdaptiveKL), got {beta}")
            self.controller, self._beta = None, float(beta)
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown KL estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}")
        if not temperature > 0:
            raise ValueError(f"KLShaped.temperature must be > 0, got {temperature}")
        self.inner = inner
        self.estimator = estimator
        self.ref_model = ref_model
        self.policy_model = policy_model
        self.temperature = float(temperature)
        self.name = name
        self._ref: _IncrementalLogprobs | None = None
        self._policy: _IncrementalLogprobs | None = None
        self._episode_kl: torch.Tensor | None = None  # (B,) running Σ k of each row's episode
        self._finished_kl: torch.Tensor | None = None  # () Σ episode KL of finished episodes
        self._finished: torch.Tensor | None = None  # () number of finished episodes

    @property
    def beta(self) -> float:
        return self.controller.value if self.controller is not None else self._beta

    def bind(self, model_name: str | os.PathLike | None = None, device: str | torch.device | None = None) -> "KLShaped":
        """Default π_ref to ``model_name`` (the env's policy model) when none was named; with
        ``device``, load the models now so a bad name fails at construction. Returns ``self``."""
        if self.ref_model is None:
            self.ref_model = model_name
        if hasattr(self.inner, "bind"):
            self.inner.bind(model_name, device)
        if device is not None:
            self._load_models(torch.device(device))
        return self

    def _load_models(self, device: torch.device) -> None:
        if self._ref is None:
            if self.ref_model is None:
                raise ValueError(
                    "KLShaped has no reference model: pass ref_model= (a name, directory or module), "
                    "or build it through the env / make_reward, which binds the policy's model name"
                )
            self._ref = _IncrementalLogprobs(_load(self.ref_model, device), self.temperature)
        if self._policy is None and self.policy_model is not None:
            self._policy = _IncrementalLogprobs(_load(self.policy_model, device), self.temperature)

    def reset(self, episodes: EpisodeStart) -> None:
        self.inner.reset(episodes)
        device = episodes.prompt_ids.device
        self._load_models(device)
        if bool(episodes.rows.all()):  # host read, once per reset
            self._ref.start(episodes.prompt_ids, episodes.prompt_mask)
        else:
            self._ref.invalidate()
        if self._policy is not None:
            self._policy.invalidate()  # caught up lazily, only if a step arrives without logprobs
        batch = episodes.prompt_ids.shape[0]
        if self._episode_kl is None or self._episode_kl.shape[0] != batch:
            self._episode_kl = torch.zeros(batch, device=device)
            self._finished_kl = torch.zeros((), device=device)
            self._finished = torch.zeros((), device=device)
        self._episode_kl = torch.where(episodes.rows, torch.zeros_like(self._episode_kl), self._episode_kl)

    def __call__(self, step: StepBatch) -> dict[str, torch.Tensor]:
        if self._ref is None:
            raise RuntimeError("KLShaped called before reset")
        components = as_components(self.inner(step), name=getattr(self.inner, "name", "reward"))
        if self.name in components:
            raise ValueError(f"component name {self.name!r} is used by the inner reward; pass KLShaped(name=...)")
        ref_logprobs = self._ref(step)  # (B,)
        if step.action_logprobs is not None:
            logprobs = step.action_logprobs.to(ref_logprobs.dtype)  # (B,)
            if self._policy is not None:
                self._policy.invalidate()
        elif self._policy is not None:
            logprobs = self._policy(step)
        else:
            raise RuntimeError(
                "KLShaped needs the policy's log-probs: pass them to env.step(actions, logprobs=...) "
                "or give KLShaped(policy_model=...) to score actions with a bound policy model"
            )
        kl = kl_estimate(logprobs, ref_logprobs, self.estimator)  # (B,)
        kl = torch.where(step.acted, kl, torch.zeros_like(kl))
        self._episode_kl = self._episode_kl + kl
        self._finished_kl = self._finished_kl + torch.where(step.ended, self._episode_kl, 0.0).sum()
        self._finished = self._finished + step.ended.sum()
        self._episode_kl = torch.where(step.ended, torch.zeros_like(self._episode_kl), self._episode_kl)
        return {**components, self.name: -self.beta * kl}

    def mean_episode_kl(self) -> float | None:
        """Mean per-episode KL of the episodes finished since the last :meth:`update_beta` (host read)."""
        if self._finished is None or int(self._finished) == 0:
            return None
        return float(self._finished_kl / self._finished)

    def update_beta(self, n_steps: int | None = None) -> float:
        """Feed :meth:`mean_episode_kl` to the adaptive controller and start a new window.

        ``n_steps`` defaults to the number of finished episodes (samples) in the window, as in
        Ziegler et al. A fixed β is returned unchanged."""
        current = self.mean_episode_kl()
        if self.controller is not None and current is not None:
            self.controller.update(current, int(self._finished) if n_steps is None else n_steps)
        if self._finished is not None:
            self._finished_kl.zero_()
            self._finished.zero_()
        return self.beta
