"""Utilities ``U`` of the preference loss, and the loss (Song et al. 2023, "Reward collapse in
aligning large language models"). Reward-model training
(:mod:`tokengym.rewards.reward_model`) maximises ``Σ U(r(x, y_w) − r(x, y_l))``.

* ``LogSigmoid(σ)``: ``U(x) = log σ(x/σ)``. With σ = 1 on the raw scores this is the Bradley–Terry
  loss ``−log σ(r_w − r_l)`` of InstructGPT, the default.
* ``Power(γ)``: ``U(x) = x^γ``, 0 < γ ≤ 1 (γ = 1 is ``U(x) = x``): polarised rewards.
* ``NegPower(γ)``: ``U(x) = −x^(−γ)``, 0 < γ ≤ 1 (γ = 1 is ``−1/x``): evenly spread rewards.
* ``Log()``: ``U(x) = log x`` (the γ = 0 member of the ``−x^(−γ)`` family).
* ``PromptAware(choose)``: ``U_prom`` chosen per prompt, e.g. ``x`` for closed-ended prompts
  and ``−1/x`` for open-ended ones, the paper's prompt-aware choice.

How a utility is applied, following the paper: its analysis assumes bounded rewards,
``0 ≤ R(prom, compl) ≤ 1``, and applies ``U`` to the difference of rewards. ``x^γ``, ``−x^(−γ)``
and ``log x`` only make sense there (on unbounded scores ``x^γ`` has no maximum), so these
*bounded* utilities read the reward as ``sigmoid(score)`` and take ``U(sigmoid(s_w) −
sigmoid(s_l))``. The difference lies in (−1, 1), but these ``U`` are defined only for x > 0; the
paper extends them continuously, and here below ``eps`` each is continued by its tangent at
``eps``, which keeps it increasing and concave (so the problem stays convex in the rewards) and
gives a misordered pair a finite, useful gradient. ``LogSigmoid`` is defined everywhere: it
applies to the raw scores (plain Bradley–Terry) unless ``bounded=True``, the paper's set-up used in
:func:`tokengym.benchmarks.reproduce.reward_collapse_experiment`. A bounded reward model still
returns the raw score from ``SequenceClassifierScorer``; ``sigmoid`` of it is a monotone map.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["LogSigmoid", "Power", "NegPower", "Log", "PromptAware", "UTILITY_NAMES", "make_utility", "preference_loss"]


@dataclass(frozen=True)
class LogSigmoid:
    """``U(x) = log σ(x / sigma)``."""

    sigma: float = 1.0
    bounded: bool = False
    """False: applied to raw scores (Bradley–Terry). True: to sigmoid rewards in [0, 1]."""

    def __post_init__(self):
        if not self.sigma > 0:
            raise ValueError(f"LogSigmoid.sigma must be > 0, got {self.sigma}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.logsigmoid(x / self.sigma)


class _Bounded:
    """A utility defined for x > 0, continued below ``eps`` by its tangent there."""

    bounded = True
    eps: float

    def _f(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _df(self, x: float) -> float:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        eps = torch.tensor(self.eps, dtype=x.dtype, device=x.device)
        tangent = self._f(eps) + self._df(self.eps) * (x - eps)
        return torch.where(x >= eps, self._f(x.clamp(min=self.eps)), tangent)


def _check_gamma(name: str, gamma: float, eps: float) -> None:
    if not 0 < gamma <= 1:
        raise ValueError(f"{name}.gamma must be in (0, 1], got {gamma}")
    if not 0 < eps < 1:
        raise ValueError(f"{name}.eps must be in (0, 1), got {eps}")


@dataclass(frozen=True)
class Power(_Bounded):
    """``U(x) = x^γ`` on sigmoid rewards (Song et al., class 1)."""

    gamma: float = 1.0
    eps: float = 0.02

    def __post_init__(self):
        _check_gamma("Power", self.gamma, self.eps)

    def _f(self, x):
        return x.pow(self.gamma)

    def _df(self, x):
        return self.gamma * x ** (self.gamma - 1)


@dataclass(frozen=True)
class NegPower(_Bounded):
    """``U(x) = −x^(−γ)`` on sigmoid rewards (Song et al., class 2)."""

    gamma: float = 1.0
    eps: float = 0.02

    def __post_init__(self):
        _check_gamma("NegPower", self.gamma, self.eps)

    def _f(self, x):
        return -x.pow(-self.gamma)

    def _df(self, x):
        return self.gamma * x ** (-self.gamma - 1)


@dataclass(frozen=True)
class Log(_Bounded):
    """``U(x) = log x`` on sigmoid rewards (Song et al., class 2 with γ = 0)."""

    eps: float = 0.02

    def __post_init__(self):
        if not 0 < self.eps < 1:
            raise ValueError(f"Log.eps must be in (0, 1), got {self.eps}")

    def _f(self, x):
        return x.log()

    def _df(self, x):
        return 1.0 / x


class PromptAware:
    """``U_prom``: a utility chosen per prompt by ``choose(prompt) -> utility``."""

    def __init__(self, choose: Callable[[str], Any]):
        self.choose = choose

    def __repr__(self) -> str:
        return f"PromptAware({getattr(self.choose, '__name__', self.choose)!r})"


UTILITY_NAMES = ("log-sigmoid[:σ]", "power[:γ]", "neg-power[:γ]", "log")


def make_utility(spec: str | Any) -> Any:
    """A utility from a name (``"log-sigmoid"``, ``"log-sigmoid:2"``, ``"power:0.5"``,
    ``"neg-power:1"``, ``"log"``) or an object (returned as is)."""
    if not isinstance(spec, str):
        return spec
    name, _, arg = spec.partition(":")
    try:
        value = float(arg) if arg else None
    except ValueError:
        raise ValueError(f"utility {spec!r}: {arg!r} is not a number") from None
    if name == "log-sigmoid":
        return LogSigmoid(value or 1.0)
    if name == "power":
        return Power(value or 1.0)
    if name == "neg-power":
        return NegPower(value or 1.0)
    if name == "log" and value is None:
        return Log()
    raise ValueError(f"unknown utility {spec!r}; valid: {', '.join(UTILITY_NAMES)}")


def preference_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    utility: Any = LogSigmoid(),
    prompts: Sequence[str] | None = None,
    margin: float = 0.0,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """``−mean U(r_w − r_l − margin) + center_coef · mean((s_w + s_l)²)`` for (N,) raw scores.

    ``prompts`` is needed for a :class:`PromptAware` utility. The centering penalty acts on the raw
    scores and pulls each pair's mean score towards 0 (Eisenstein et al. 2023)."""
    if isinstance(utility, PromptAware):
        if prompts is None or len(prompts) != chosen.shape[0]:
            raise ValueError("a PromptAware utility needs one prompt per pair")
        per_pair = [utility.choose(p) for p in prompts]
    else:
        per_pair = [utility] * chosen.shape[0]
    groups: dict[Any, list[int]] = {}
    for i, u in enumerate(per_pair):
        groups.setdefault(u, []).append(i)
    values = torch.empty_like(chosen)  # (N,) U per pair
    for u, rows in groups.items():
        idx = torch.tensor(rows, device=chosen.device)
        s_w, s_l = chosen[idx], rejected[idx]
        if getattr(u, "bounded", False):
            s_w, s_l = torch.sigmoid(s_w), torch.sigmoid(s_l)
        values[idx] = u(s_w - s_l - margin)
    loss = -values.mean()
    if center_coef:
        loss = loss + center_coef * (chosen + rejected).pow(2).mean()
    return loss
