"""The per-token KL estimators (http://joschu.net/blog/kl-approx.html) and which one goes where.

With ``log ρ = log π_θ(a|s) − log π_ref(a|s)`` for ``a ~ π_θ(·|s)``:

* ``k1 = log ρ``                 unbiased for KL(π_θ‖π_ref), can be negative;
* ``k2 = ½ (log ρ)²``            biased, low variance, never negative;
* ``k3 = ρ⁻¹ − 1 + log ρ``       unbiased for KL(π_θ‖π_ref), never negative.

As **logged values** all three are fine. As **training signals** they are not interchangeable
(docs/kl.md has the derivations):

* **In a reward** (detached; the agent's score-function gradient ``E[∇log π · Σ r]``) only k1 gives
  ``−β ∇KL(π_θ‖π_ref)``, so only k1 keeps ``π* ∝ π_ref·exp(R/β)`` as the fixed point. k2 and k3
  used as rewards move the optimum (on Calibration-v0 they end at KL(π‖π*) ≈ 1.5).
* **In a loss** (GRPO; the gradient flows through the estimator, the sampled states held fixed),
  on-policy and per visited state ``s``: k1's expected gradient is 0; k2's is
  ``∇KL(π_θ(·|s)‖π_ref(·|s))``; k3's is ``∇KL(π_ref(·|s)‖π_θ(·|s))`` (DeepSeekMath's choice).
"""
from __future__ import annotations

import torch

__all__ = ["ESTIMATORS", "REWARD_ESTIMATORS", "LOG_RATIO_BOUND", "kl_estimate", "check_estimator"]

ESTIMATORS = ("k1", "k2", "k3")
"""Valid in a loss (see the module docstring for the divergence each one's gradient follows)."""
REWARD_ESTIMATORS = ("k1",)
"""Valid in a reward."""
LOG_RATIO_BOUND = 20.0
"""|log ρ| inside a bounded k3 (verl's and OpenRLHF's value): ρ⁻¹ ≤ e²⁰ stays finite in float32, so
a clamped token's gradient is 0, not inf·0."""


def check_estimator(kind: str, *, in_reward: bool, field: str = "estimator") -> str:
    """``kind`` if it is valid where it is used; otherwise a ValueError that says why."""
    if kind not in ESTIMATORS:
        raise ValueError(f"{field} must be one of {', '.join(ESTIMATORS)}, got {kind!r}")
    if in_reward and kind not in REWARD_ESTIMATORS:
        raise ValueError(
            f"{field}={kind!r} cannot be used in a reward: a reward is detached, so the agent's "
            "score-function gradient equals −β∇KL(π_θ‖π_ref) only for k1 = log(π_θ/π_ref); with "
            f"{kind} the optimum is no longer π* ∝ π_ref·exp(R/β). Use estimator='k1' here; k2 and "
            "k3 belong in a loss (e.g. GRPOConfig(kl_estimator='k3'))"
        )
    return kind


def kl_estimate(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1", k3_max: float | None = None
) -> torch.Tensor:
    """Per-sample estimate of KL(π_θ ‖ π_ref) from log-probs of tokens sampled from π_θ.

    ``k3_max`` bounds k3 in a loss: log ρ is clamped to ±:data:`LOG_RATIO_BOUND`, then k3 to at
    most ``k3_max`` (verl's ``kl_penalty`` "low_var_kl" and OpenRLHF's ``compute_approx_kl`` "k3"
    use 20 and 10). k3's gradient in log π_θ is ``1 − ρ⁻¹``, so one token that π_θ made e^30 rarer
    than π_ref would otherwise outweigh a whole batch; a clamped token adds at most ``k3_max`` and
    no gradient. The expected gradient is then ∇KL(π_ref‖π_θ) only over tokens below the bound."""
    log_ratio = logprobs - ref_logprobs  # log ρ
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio.pow(2)
    if kind == "k3":
        if k3_max is None:
            return torch.expm1(-log_ratio) + log_ratio  # ρ⁻¹ − 1 + log ρ
        log_ratio = log_ratio.clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)
        return (torch.expm1(-log_ratio) + log_ratio).clamp(max=k3_max)
    raise ValueError(f"unknown KL estimator {kind!r}; valid: {', '.join(ESTIMATORS)}")
