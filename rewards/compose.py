"""Composition (a weighted sum of rewards) and the name registry the env uses for ``reward=``."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from tokengym.rewards.base import EpisodeStart, Reward, StepBatch, as_components
from tokengym.rewards.fine_grained import FineGrained
from tokengym.rewards.holistic import Holistic
from tokengym.rewards.kl import KLShaped
from tokengym.rewards.scorers import TRLRewardFunction
from tokengym.rewards.trl import TRLReward

__all__ = ["WeightedSum", "make_reward", "reward_options", "REWARD_NAMES"]


class WeightedSum:
    """``Σ_i w_i · reward_i``: ``WeightedSum({name: (weight, reward), ...})``.

    Every component is reported separately with its weight applied: a reward returning a tensor
    appears as ``name``, one returning a dict as ``name/<component>``.
    """

    def __init__(self, rewards: Mapping[str, tuple[float, Any]]):
        if not rewards:
            raise ValueError("WeightedSum needs at least one (weight, reward)")
        self.rewards = {name: (float(weight), reward) for name, (weight, reward) in rewards.items()}

    def children(self) -> list[Any]:
        """The wrapped rewards (for :func:`~tokengym.rewards.base.reference_request`)."""
        return [reward for _, reward in self.rewards.values()]

    def reset(self, episodes: EpisodeStart) -> None:
        for _, reward in self.rewards.values():
            reward.reset(episodes)

    def __call__(self, step: StepBatch) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, (weight, reward) in self.rewards.items():
            output = reward(step)
            if isinstance(output, torch.Tensor):
                out[name] = weight * output
            else:
                for component, value in as_components(output, name).items():
                    out[f"{name}/{component}"] = weight * value
        return out


REWARD_NAMES = ("holistic", "fine-grained", "kl-shaped", "fine-grained+kl")

_KL_OPTIONS = {"beta", "estimator", "ref_model", "policy_model"}
_FG_OPTIONS = {"segment_scorer", "segmenter"}
_TRL_OPTIONS = {"weights", "none_value"}
_OPTIONS = {
    "holistic": set(),
    "fine-grained": _FG_OPTIONS,
    "kl-shaped": _KL_OPTIONS,
    "fine-grained+kl": _FG_OPTIONS | _KL_OPTIONS,
}


def reward_options(name: str) -> frozenset[str] | None:
    """The ``reward_kwargs`` a reward name accepts; ``None`` for a name :func:`make_reward` does not know."""
    options = _OPTIONS.get(name)
    return None if options is None else frozenset(options)


def _is_reward_function(reward: Any) -> bool:
    """A TRL reward function (or a list of them) rather than a reward object or a name."""
    if isinstance(reward, (list, tuple)):
        return len(reward) > 0 and all(callable(f) and not isinstance(f, Reward) for f in reward)
    return isinstance(reward, TRLRewardFunction) or (callable(reward) and not isinstance(reward, Reward))


def make_reward(
    reward: str | Any,
    *,
    task_scorer: Any = None,
    fine_grained: Callable[[], Any] | None = None,
    tokenizer: Any = None,
    **options: Any,
) -> Any:
    """The reward object for ``reward``: a name, a reward object (returned as is), or TRL reward
    functions.

    TRL reward functions, ``f(prompts, completions, completion_ids, **columns)``: a plain callable,
    a :class:`~tokengym.rewards.scorers.TRLRewardFunction`, or a list of them (TRL's
    ``reward_funcs``) become a :class:`~tokengym.rewards.trl.TRLReward`; options ``weights`` (TRL's
    ``reward_weights``) and ``none_value``. A task scorer that is a ``TRLRewardFunction`` makes
    ``"holistic"``/``"kl-shaped"`` use the same path, so it receives the dataset's columns.

    Names:

    * ``"holistic"``: ``Holistic(task_scorer)``.
    * ``"fine-grained"``: the task's ``fine_grained()`` reward; or, when it has none or when the
      options ``segment_scorer`` / ``segmenter`` are given,
      ``FineGrained([(segment_scorer or task_scorer, segmenter or "sentence", 1.0)])``.
    * ``"kl-shaped"``: ``KLShaped(Holistic(task_scorer))``; options ``beta`` (default ``DEFAULT_BETA``, 0.055, or an
      :class:`~tokengym.rewards.kl.AdaptiveKL`), ``estimator`` (``"k1"`` only), ``ref_model``,
      ``policy_model``. The temperature is the env's.
    * ``"fine-grained+kl"``: KL shaping around the fine-grained reward; both option sets.

    The task supplies ``task_scorer`` (its holistic scorer, text or token) and optionally
    ``fine_grained`` (a builder of its fine-grained reward). ``tokenizer`` is only checked: text
    rewards need one. π_ref is not loaded here: the env owns it (see
    :func:`~tokengym.rewards.base.reference_request`).
    """
    if not isinstance(reward, str) and _is_reward_function(reward):
        unknown = set(options) - _TRL_OPTIONS
        if unknown:
            raise TypeError(f"reward functions got unknown options {sorted(unknown)}; accepted: {sorted(_TRL_OPTIONS)}")
        if tokenizer is None:
            raise ValueError("reward functions read decoded completions; this env has no tokenizer")
        return TRLReward(reward, **options)
    if not isinstance(reward, str):
        if not isinstance(reward, Reward):
            raise TypeError(
                f"reward must be one of {REWARD_NAMES}, an object with reset() and __call__(), or TRL reward "
                f"function(s) f(prompts, completions, **kwargs), got {reward!r}"
            )
        if options:
            raise TypeError(f"options {sorted(options)} apply to reward names only, not to a reward object")
        return reward
    if reward not in _OPTIONS:
        raise ValueError(f"unknown reward {reward!r}; valid names: {', '.join(REWARD_NAMES)}, or a reward object")
    unknown = set(options) - _OPTIONS[reward]
    if unknown:
        raise TypeError(f"reward {reward!r} got unknown options {sorted(unknown)}; accepted: {sorted(_OPTIONS[reward]) or 'none'}")

    if reward in ("holistic", "kl-shaped"):
        if task_scorer is None:
            raise ValueError(f"reward {reward!r} needs the task's scorer (task_scorer=); this task has none")
        if tokenizer is None and getattr(task_scorer, "kind", "text") != "token":
            raise ValueError("a text scorer needs the env's tokenizer to decode responses (tokenizer=None)")
        base: Any = TRLReward(task_scorer) if isinstance(task_scorer, TRLRewardFunction) else Holistic(task_scorer)
    else:
        if tokenizer is None:
            raise ValueError("fine-grained rewards segment decoded text; this env has no tokenizer")
        if fine_grained is not None and not _FG_OPTIONS & set(options):
            base = fine_grained()
        else:
            scorer = options.get("segment_scorer") or task_scorer
            if scorer is None:
                raise ValueError(f"reward {reward!r} needs a scorer: task_scorer= or segment_scorer=")
            base = FineGrained([(scorer, options.get("segmenter", "sentence"), 1.0)])
    if reward in ("kl-shaped", "fine-grained+kl"):
        kl = {k: options[k] for k in _KL_OPTIONS & set(options)}
        return KLShaped(base, **kl)
    return base
