"""Shared maths for the agents: returns, advantages, baselines, masked statistics, loss aggregation.

Every per-token tensor is ``(B, T)``: row ``b`` is one episode, column ``t`` its ``t``-th action.
``mask`` is a ``(B, T)`` bool tensor, True on valid steps; a row's valid steps are a prefix and the
mask is False after the row's last step (the env's right-padded response layout). Functions here
never read tensor values on the host, so they run on any device without synchronising.

Episodes are finite. An episode ends either by a stop token or after ``max_new_tokens`` actions;
the env reports both as ``terminated``. The limit is not a time limit cutting an endless task
short: ``max_new_tokens`` is the true horizon of this finite-horizon MDP, so there is no future
after the last step and the value after it is 0 in both cases. ``last_values`` exists only for
rollouts that stop in the middle of an episode (a buffer shorter than the episode).

Loss aggregation (one convention for REINFORCE, A2C and PPO, :func:`sequence_sum_mean`): every
per-token term (policy, value, entropy) is summed over a sequence's valid tokens and averaged over
sequences. The policy term's gradient is then the textbook estimator of ``∇E[Σ_t r_t]`` (no
length-dependent reweighting), and ``value_coef`` and ``entropy_coef`` weigh their terms against
it in the same units in every agent. GRPO follows DeepSeekMath's ``J(θ)`` instead (a mean over each
sequence's tokens, then over sequences; see ``agents/grpo.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from tokengym.lm.distributed import sum_across_ranks

__all__ = [
    "discounted_returns",
    "gae",
    "n_step_returns",
    "masked_mean",
    "sequence_sum",
    "sequence_sum_mean",
    "masked_var",
    "masked_whiten",
    "explained_variance",
    "group_advantages",
    "leave_one_out_baseline",
    "MovingAverageBaseline",
    "approx_kl_and_clipfrac",
]


def _bootstrap_values(
    values: torch.Tensor, mask: torch.Tensor, last_values: torch.Tensor | None
) -> torch.Tensor:
    """(B, T+1) V(s_t) with 0 on invalid steps; column T holds ``last_values`` (0 if None)."""
    values = torch.where(mask, values, 0.0)  # (B, T)
    if last_values is None:
        last_values = torch.zeros_like(values[:, 0])  # (B,)
    # A row that ended before column T-1 has nothing after its end; only rows still valid at T-1
    # can continue past the buffer.
    last_values = torch.where(mask[:, -1], last_values, 0.0)  # (B,)
    return torch.cat([values, last_values[:, None]], dim=1)  # (B, T+1)


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """(B, T) reward-to-go ``G_t = r_t + γ G_{t+1}``, with ``G = 0`` on and after a row's end."""
    rewards = torch.where(mask, rewards, 0.0)  # (B, T)
    returns = torch.zeros_like(rewards)  # (B, T)
    running = torch.zeros_like(rewards[:, 0])  # (B,)
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running  # (B,)
        returns[:, t] = running
    return torch.where(mask, returns, 0.0)  # (B, T)


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
    last_values: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016): ``(advantages, returns)``, each (B, T).

    ``δ_t = r_t + γ V(s_{t+1}) − V(s_t)`` and ``A_t = δ_t + γλ A_{t+1}``; ``returns = A + V`` are
    the TD(λ) targets for the value loss. ``values[:, t]`` is ``V(s_t)``, the value of the state in
    which action ``t`` was taken.

    Edge cases (as in stable-baselines3's ``RolloutBuffer.compute_returns_and_advantage``):

    * after a row's last valid step (``terminated`` or ``truncated``) ``V(s_{t+1}) = 0`` and
      ``A_{t+1} = 0``: the episode is over. Truncation at ``max_new_tokens`` is the true horizon of
      this finite-horizon MDP, so bootstrapping it with 0 is correct, not an approximation;
    * ``last_values`` (B,) is ``V(s_T)`` for rows still running after column ``T-1``, i.e. a rollout
      cut in the middle of an episode; it is ignored for rows that ended earlier. ``None`` means
      every episode ended inside the buffer;
    * ``λ = 0`` gives the one-step TD error ``δ_t``; ``λ = 1`` gives the Monte-Carlo return minus
      ``V(s_t)`` (plus the discounted ``last_values`` bootstrap).

    Advantages and returns are 0 on invalid steps.
    """
    next_values = _bootstrap_values(values, mask, last_values)[:, 1:]  # (B, T) V(s_{t+1})
    values = torch.where(mask, values, 0.0)  # (B, T)
    deltas = torch.where(mask, rewards + gamma * next_values - values, 0.0)  # (B, T)
    advantages = torch.zeros_like(deltas)  # (B, T)
    running = torch.zeros_like(deltas[:, 0])  # (B,)
    # Deltas are 0 past a row's end, so the recursion restarts from 0 there without a mask.
    for t in reversed(range(deltas.shape[1])):
        running = deltas[:, t] + gamma * lam * running  # (B,)
        advantages[:, t] = running
    returns = torch.where(mask, advantages + values, 0.0)  # (B, T)
    return advantages, returns


def n_step_returns(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    n: int,
    last_values: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, T) n-step targets ``Σ_{k<n} γ^k r_{t+k} + γ^n V(s_{t+n})`` for A2C (Mnih et al. 2016).

    Values after a row's end are 0 (see :func:`gae`). Where ``t + n`` runs past the buffer the
    target stops at column ``T`` and bootstraps from ``last_values`` with ``γ^{T−t}``, as A3C does
    at the end of a rollout segment. ``n = 1`` is the one-step TD target ``r_t + γ V(s_{t+1})``.
    """
    if n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    B, T = rewards.shape
    ext_values = _bootstrap_values(values, mask, last_values)  # (B, T+1)
    rewards = torch.where(mask, rewards, 0.0)  # (B, T)
    horizon = min(n, T)
    padded = torch.nn.functional.pad(rewards, (0, horizon))  # (B, T+horizon) zeros past column T
    returns = torch.zeros_like(rewards)  # (B, T)
    for k in range(horizon):
        returns = returns + gamma**k * padded[:, k : k + T]  # (B, T)
    steps = torch.arange(T, device=rewards.device)  # (T,)
    boot_index = (steps + n).clamp(max=T)  # (T,) column of the bootstrap state
    boot_discount = gamma ** (boot_index - steps).to(rewards.dtype)  # (T,)
    returns = returns + boot_discount * ext_values[:, boot_index]  # (B, T)
    return torch.where(mask, returns, 0.0)  # (B, T)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over ``mask`` (over ``dim`` or everything). NaN where the mask is empty."""
    # torch.where, not x * mask: invalid entries may hold inf/nan (e.g. log-probs of pad tokens).
    valid = torch.where(mask, x, 0.0)
    if dim is None:
        return valid.sum() / mask.sum()
    return valid.sum(dim) / mask.sum(dim)


def sequence_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) ``Σ_t x[b, t]`` over each row's valid tokens: per-token log-probs become the sequence's ``log π(y|x)``."""
    return torch.where(mask, x, 0.0).sum(-1)


def sequence_sum_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """0-dim ``mean_b Σ_t x[b, t]`` over the valid tokens: the loss aggregation of REINFORCE, A2C and PPO."""
    return sequence_sum(x, mask).mean()


def masked_var(
    x: torch.Tensor, mask: torch.Tensor, dim: int | None = None, unbiased: bool = True
) -> torch.Tensor:
    """Variance of ``x`` over ``mask``; ``unbiased`` applies Bessel's correction n/(n−1)."""
    mean = masked_mean(x, mask, dim)
    if dim is not None:
        mean = mean.unsqueeze(dim)
    var = masked_mean((x - mean) ** 2, mask, dim)
    if unbiased:
        count = mask.sum() if dim is None else mask.sum(dim)
        var = var * count / (count - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """``(x − mean) / std`` over the valid entries (0 elsewhere); ``shift_mean=False`` keeps the mean.

    ``shift_mean=False`` only rescales (TRL whitens rewards this way, keeping their mean). In a
    data-parallel run the mean and the (unbiased) variance are those of every rank's valid
    entries, so N ranks whiten exactly as one process holding the global batch would.
    """
    mean, squares, count = _global_moments(x, mask)
    whitened = (x - mean) * torch.rsqrt(squares / (count - 1) + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, 0.0)


def _global_masked_sum(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ x over the valid entries, their number), each 0-dim in ``x``'s dtype, summed over ranks."""
    totals = sum_across_ranks(torch.stack([torch.where(mask, x, 0.0).sum(), mask.sum().to(x.dtype)]))
    return totals[0].to(x.dtype), totals[1].to(x.dtype)


def _global_moments(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, Σ (x − mean)², count) of the valid entries of every rank: the global batch's."""
    total, count = _global_masked_sum(x, mask)
    mean = total / count
    squares, _ = _global_masked_sum((x - mean) ** 2, mask)
    return mean, squares, count


def explained_variance(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """0-dim ``1 − Var[target − pred] / Var[target]`` over ``mask``; NaN when ``Var[target] = 0``.

    1 is a perfect value function, 0 no better than predicting the mean, < 0 worse (SB3's
    ``explained_variance``, which also returns NaN for a constant target). In a data-parallel run
    both variances are the global batch's, as the logged value is.
    """
    _, target_squares, _ = _global_moments(target, mask)
    _, residual_squares, _ = _global_moments(target - pred, mask)
    return torch.where(target_squares == 0, torch.nan, 1 - residual_squares / target_squares)


def _grouped(scores: torch.Tensor, group_size: int, per_step: bool = False) -> torch.Tensor:
    """(B/G, G) view of (B,) scores whose consecutive rows share a prompt; (B/G, G, T) of (B, T)
    ones with ``per_step``."""
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (a group needs another sample to compare with), got {group_size}")
    ndim = 2 if per_step else 1
    if scores.ndim != ndim or scores.shape[0] % group_size:
        raise ValueError(
            f"scores must be a {'(B, T)' if per_step else '(B,)'} tensor with B a multiple of group_size={group_size}, "
            f"got shape {tuple(scores.shape)}"
        )
    return scores.view(-1, group_size, *scores.shape[1:])


def group_advantages(
    scores: torch.Tensor, group_size: int, eps: float = 1e-4, scale: bool = True
) -> torch.Tensor:
    """(B,) GRPO advantages ``(r_i − mean_group) / (std_group + eps)`` over groups of G consecutive rows.

    ``std`` is the unbiased sample standard deviation (Bessel's correction), as in TRL's
    ``GRPOTrainer``, so results line up with that reference implementation; it differs from the
    population std only by the constant factor ``sqrt(G/(G−1))``, which the learning rate absorbs.
    ``scale=False`` gives Dr. GRPO's unscaled ``r_i − mean_group`` (Liu et al. 2025), which avoids
    up-weighting prompts whose rewards barely vary. A group of equal scores gets advantage 0.
    """
    grouped = _grouped(scores, group_size)  # (B/G, G)
    centred = grouped - grouped.mean(dim=1, keepdim=True)  # (B/G, G)
    if scale:
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)  # (B/G, G)
    return centred.reshape(-1)  # (B,)


def leave_one_out_baseline(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO baseline: the mean score of the other G−1 samples of the same prompt.

    ``b_i = (Σ_j R_j − R_i) / (G − 1)`` (Kool et al. 2019; Ahmadian et al. 2024) for (B,) episode
    returns ``R``; for (B, T) per-step scores such as rewards-to-go ``G_t`` it is taken per step,
    ``b_{i,t} = (Σ_j G_{j,t} − G_{i,t}) / (G − 1)``. Either way it does not depend on sample
    ``i``, so subtracting it keeps the policy gradient unbiased.
    """
    grouped = _grouped(scores, group_size, per_step=scores.ndim == 2)  # (B/G, G[, T])
    others = grouped.sum(dim=1, keepdim=True) - grouped  # (B/G, G[, T])
    return (others / (group_size - 1)).reshape(scores.shape)  # (B[, T])


@dataclass
class MovingAverageBaseline:
    """Exponential moving average of past returns: ``b ← m·b + (1 − m)·mean(returns)``."""

    momentum: float = 0.9
    """Weight m of the old value, in [0, 1)."""
    value: torch.Tensor | float = 0.0
    """Current baseline (a 0-dim tensor after the first update, so it stays on the device)."""

    def __post_init__(self):
        if not 0.0 <= self.momentum < 1.0:  # also rejects nan
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")

    def update(self, returns: torch.Tensor) -> torch.Tensor:
        """The baseline for this batch (from earlier batches only), then fold ``returns`` in.

        Using the value from before the update keeps the baseline independent of this batch's
        samples, so the REINFORCE gradient stays unbiased. In a data-parallel run ``returns`` are
        this rank's and the mean is over every rank's.
        """
        baseline = torch.as_tensor(self.value, dtype=returns.dtype, device=returns.device)
        total, count = sum_across_ranks(torch.stack([returns.sum(), returns.new_tensor(returns.numel())]))
        self.value = self.momentum * baseline + (1 - self.momentum) * (total / count).to(returns.dtype)
        return baseline


@torch.no_grad()
def approx_kl_and_clipfrac(
    logratio: torch.Tensor, mask: torch.Tensor, clip_eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagnostics of a PPO update: ``(approx_kl, clipfrac)``, two 0-dim tensors.

    ``logratio = logprobs − old_logprobs`` (B, T). ``approx_kl`` is the k3 estimate of
    KL(π_old‖π_θ) under the rollout samples, ``mean((ρ − 1) − log ρ)`` (cleanrl; approx_kl
    http://joschu.net/blog/kl-approx.html); ``clipfrac`` the fraction of valid tokens with
    ``|ρ − 1| > clip_eps``.
    """
    ratio = logratio.exp()  # (B, T)
    approx_kl = masked_mean((ratio - 1) - logratio, mask)
    clipfrac = masked_mean(((ratio - 1).abs() > clip_eps).to(logratio.dtype), mask)
    return approx_kl, clipfrac
