"""An over-optimisation alarm: warn once when a run drifts far from π_ref or collapses.

Reward hacking shows up as KL to the reference climbing without bound and the per-token entropy
falling towards 0 ("import import import …"). Both are logged every iteration (``kl_ref`` and
``entropy``); this callback turns crossing a threshold into one warning per quantity that names
the iteration and the value, so a long run does not hack its reward unnoticed.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

from tokengym.lm.config import check_range

__all__ = ["OveroptimizationAlarm", "OveroptimizationWarning"]


class OveroptimizationWarning(UserWarning):
    """KL to the reference or the policy's entropy crossed the alarm's threshold."""


@dataclass
class OveroptimizationAlarm:
    """``alarm(stats)`` after each iteration warns once per quantity and returns the new messages;
    ``alarm.check(stats)`` returns them without warning (``tokengym train`` prints them as lines)."""

    max_kl: float | None = 15.0
    """Warn when ``kl_ref`` (nats per sequence, the penalty's k1 sum) exceeds this; None: off."""
    min_entropy: float | None = 0.3
    """Warn when the per-token ``entropy`` (nats) falls below this; None: off."""
    fired: set[str] = field(default_factory=set, init=False)
    """The quantities that have already warned."""

    def __post_init__(self):
        if self.max_kl is not None:
            check_range("max_kl", self.max_kl, 0, math.inf, low_open=True, high_open=True)
        if self.min_entropy is not None:
            check_range("min_entropy", self.min_entropy, 0, math.inf, low_open=True, high_open=True)

    def __call__(self, stats: dict) -> list[str]:
        """:meth:`check`, each new message also raised as an :class:`OveroptimizationWarning` (for
        ``agent.learn(callback=alarm)``)."""
        messages = self.check(stats)
        for message in messages:
            warnings.warn(message, OveroptimizationWarning, stacklevel=2)
        return messages

    def check(self, stats: dict) -> list[str]:
        """The messages of the thresholds ``stats`` crosses for the first time (no warning raised)."""
        messages = []
        kl, entropy = stats.get("kl_ref"), stats.get("entropy")
        if self.max_kl is not None and kl is not None and kl > self.max_kl and "kl" not in self.fired:
            self.fired.add("kl")
            messages.append(
                f"iteration {stats['iteration']}: KL to the reference is {kl:.2f} nats per sequence, above "
                f"{self.max_kl}; the policy may be over-optimising the reward (raise β, or use a KL target)"
            )
        if (self.min_entropy is not None and entropy is not None and entropy < self.min_entropy
                and "entropy" not in self.fired):
            self.fired.add("entropy")
            messages.append(
                f"iteration {stats['iteration']}: per-token entropy is {entropy:.3f} nats, below "
                f"{self.min_entropy}; the policy may be collapsing onto a few tokens"
            )
        return messages
