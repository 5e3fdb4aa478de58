"""Exact probes of a training run: :class:`CalibrationProbe` enumerates Calibration-v0's 512
sequences to measure the policy against the KL-regularised optimum ``π* ∝ π_ref·exp(R/β)``."""
from __future__ import annotations

from typing import Any

from tokengym.envs import calibration

__all__ = ["CalibrationProbe", "check_fixed_point"]


def check_fixed_point(
    *, estimator: str = "k1", gamma: float = 1.0, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
) -> None:
    """Raise ``ValueError`` (naming the setting, its value and why) unless ``π* ∝ π_ref·exp(R/β)``
    is the fixed point of training under these settings, so the exact quantities compare the
    policy with the right target.

    That optimum maximises ``E_π[R] − β·KL(π‖π_ref)`` over whole sequences of the model's own,
    untempered distribution. It needs: the per-token KL penalty ``k1 = log π_θ − log π_ref``
    (its sum over an episode is the sequence log-ratio; ``k2``/``k3`` penalties have other
    optima); undiscounted returns (with γ < 1 the agent maximises another objective); and
    sampling from π_θ itself (temperature 1, no top-k / top-p truncation; otherwise the sampler,
    not the model the probe enumerates, is what approaches π*).
    """
    why = "so π* ∝ π_ref·exp(R/β) is not the fixed point of training"
    if estimator != "k1":
        raise ValueError(f"CalibrationProbe: reward estimator={estimator!r}: only the k1 penalty "
                         f"(log π_θ − log π_ref per token) sums to the sequence KL the optimum is defined by, {why}; "
                         "use estimator 'k1' or exact_every = 0")
    if gamma != 1:
        raise ValueError(f"CalibrationProbe: gamma={gamma!r}: discounted returns optimise another objective than "
                         f"E[R] − β·KL, {why}; use gamma 1 or exact_every = 0")
    if temperature != 1:
        raise ValueError(f"CalibrationProbe: sampling temperature={temperature!r}: the sampler is then not the model "
                         f"the probe enumerates, {why}; use temperature 1 or exact_every = 0")
    if top_k != 0 or top_p != 1:
        raise ValueError(f"CalibrationProbe: top_k={top_k!r}, top_p={top_p!r}: truncated sampling is not the model "
                         f"the probe enumerates, {why}; use top_k 0 and top_p 1 or exact_every = 0")


class CalibrationProbe:
    """Exact quantities on Calibration-v0 by enumerating its 512 sequences: ``E_πθ[R]``,
    ``KL(π_θ‖π_ref)``, and with a fixed-β KL-shaped reward ``KL(π_θ‖π*)`` and ``E_π*[R]`` for the
    optimum ``π* ∝ π_ref·exp(R/β)``.

    ``reward``: the env's reward (its ``beta``, ``controller`` and ``estimator`` are read when it
    has them). ``gamma``: the agent's; ``temperature``, ``top_k``, ``top_p``: the env's sampling.
    Settings under which π* is not the fixed point raise ``ValueError`` (:func:`check_fixed_point`).
    """

    def __init__(self, reward: Any, *, gamma: float = 1.0, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
        check_fixed_point(
            estimator=getattr(reward, "estimator", "k1"), gamma=gamma, temperature=temperature, top_k=top_k, top_p=top_p,
        )
        self.ref_logprobs = calibration.sequence_logprobs(calibration.build_reference_model())  # (512,)
        self.rewards = calibration.calibration_reward(calibration.all_sequences())  # (512,)
        beta = getattr(reward, "beta", None)  # a KL-shaped reward's; None for other rewards
        fixed = getattr(reward, "controller", None) is None  # an adaptive β has no single π*
        self.beta = float(beta) if beta and fixed else None
        self.optimum = calibration.optimal_policy(self.ref_logprobs, self.beta) if self.beta else None

    def __call__(self, model) -> dict[str, float]:
        kl = calibration.kl_divergence
        logprobs = calibration.sequence_logprobs(model).cpu()  # (512,)
        out = {
            "exact/reward": float((logprobs.exp() * self.rewards).sum()),
            "exact/kl_ref": float(kl(logprobs, self.ref_logprobs)),
        }
        if self.optimum is not None:
            out["exact/kl_to_optimum"] = float(kl(logprobs, self.optimum))
            out["exact/optimal_reward"] = float((self.optimum.exp() * self.rewards).sum())
            out["exact/objective"] = out["exact/reward"] - self.beta * out["exact/kl_ref"]
            out["exact/optimal_objective"] = self.beta * float(
                (self.ref_logprobs + self.rewards / self.beta).logsumexp(0))  # β log Z = max of the objective
        return out
