"""The reward–KL frontier of an env and reward, and where a trained run sits against it.

Two curves of ``(KL(·‖π_ref), E[r] − E_{π_ref}[r])``, both from π_ref's samples alone:

* ``p_β ∝ π_ref·exp(r/β)`` over a grid of β: the best any policy can do at its KL (it maximises
  ``E[r] − β·KL``), by self-normalised importance sampling per prompt
  (:func:`~tokengym.benchmarks.targets.estimate`); a point whose smallest per-prompt ESS is
  below ``min_ess`` is marked ``low_ess`` (its figures lean on a handful of samples and tend to
  understate the gain and the KL: the samples that would carry most of p's mass are missing).
* best-of-N sampling (no training): its gain ``E[max of N] − E[r]``, estimated without bias from
  a pool of M ≥ N samples per prompt by the order-statistic U-statistic (the mean of the maximum
  over every N-subset of the pool: the k-th smallest of M is that maximum with probability
  ``C(k−1, N−1)/C(M, N)``); its KL, bounded by ``log N − (N−1)/N`` (exact for a continuous
  reward without ties; Beirami et al. 2024) and estimated by plugging the pool's empirical reward
  distribution into the exact formula: given x, ``π_BoN(y) = π_ref(y)·(F(r)^N − F(r⁻)^N)/P(R = r)``
  depends on y only through its reward, so ``KL(BoN‖π_ref)`` is the KL between the two reward
  distributions, and ties (a reward of 0 for every neutral text) make it smaller than the bound.

A run (its gain and KL at its β) is placed by :func:`place_run`: ``J = J_ref + gain − β·KL``,
the fraction of ``J* − J_ref`` it captures, and its KL overspend, the run's KL ÷ the KL best-of-N
needs for the same gain. :func:`plot_frontier` draws it all. On Calibration-v0 every point is
exact (:func:`calibration_frontier`).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Mapping, Sequence

import torch

from tokengym.benchmarks.targets import (
    TargetSamples, bootstrap_errors, calibration_components, estimate, exact_figures, normalise_logprobs,
    sample_for_targets,
)
from tokengym.envs import calibration
from tokengym.lm.plotting import pyplot, save_figure
from tokengym.rewards.kl import DEFAULT_BETA
from tokengym.rewards.targets import RLKL, task_score

__all__ = [
    "DEFAULT_BETAS", "DEFAULT_NS", "MIN_ESS", "best_of_n_kl_bound", "best_of_n_weights", "best_of_n_from_pool",
    "exact_best_of_n", "frontier_from_samples", "measure_frontier", "env_frontier", "exact_frontier",
    "calibration_frontier", "place_run", "plot_frontier", "FRONTIER_SEED", "MAX_PROMPTS",
]

DEFAULT_BETAS = (0.03, DEFAULT_BETA, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
"""The β grid of the p_β curve: small β is high reward at high KL."""
DEFAULT_NS = (2, 4, 8, 16, 32, 64)
"""The N of the best-of-N points."""
MIN_ESS = 30.0
"""A p_β point whose smallest per-prompt ESS is below this is marked ``low_ess``."""
FRONTIER_SEED = 20_261_207
"""Seed of the π_ref samples behind a run's frontier (``tokengym eval``, suites): not a training seed."""
MAX_PROMPTS = 64
""":func:`env_frontier` uses every prompt of an env with at most this many, else this many drawn."""


def best_of_n_kl_bound(n: float) -> float:
    """``log N − (N−1)/N``: KL(BoN_N‖π_ref) for a continuous reward without ties, an upper bound
    otherwise (Beirami et al. 2024). Defined for real N ≥ 1 (used to interpolate in N)."""
    if not n >= 1:
        raise ValueError(f"best-of-N needs N ≥ 1, got {n!r}")
    return math.log(n) - (n - 1) / n


def best_of_n_weights(pool: int, n: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """(pool,) the probability that the k-th smallest of ``pool`` values (k = 1..pool, ties broken
    by position) is the maximum of a uniformly random ``n``-subset: ``C(k−1, n−1)/C(pool, n)``."""
    if not 1 <= n <= pool:
        raise ValueError(f"best-of-N from a pool needs 1 ≤ N ≤ pool size, got N={n}, pool={pool}")
    k = torch.arange(1, pool + 1, dtype=dtype, device=device)  # (M,)
    log_choose = lambda a, b: torch.lgamma(a + 1) - torch.lgamma(b + 1) - torch.lgamma(a - b + 1)  # noqa: E731
    log_weights = log_choose(k - 1, torch.tensor(n - 1.0, dtype=dtype)) - log_choose(torch.tensor(float(pool), dtype=dtype),
                                                                                    torch.tensor(float(n), dtype=dtype))
    return torch.where(k >= n, log_weights.exp(), 0.0)  # (M,)


def best_of_n_from_pool(rewards: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    """``gain`` (E[max of N] − E[r]) and ``kl`` (KL(BoN_N‖π_ref)) from (..., X, M) pools of π_ref's
    rewards, M per prompt, each averaged over the X prompts: (...,).

    The gain is the U-statistic: the mean over every N-subset of the pool of its maximum, less
    the pool's mean, unbiased. The KL is the exact formula on the pool's empirical reward
    distribution F̂ (best-of-N drawn with replacement from the pool): ``Σ_v P_N(v)·log(P_N(v)/P̂(v))``
    with ``P_N(v) = F̂(v)^N − F̂(v⁻)^N``, consistent and below the bound for untied rewards (the
    subsets' own maxima would not do: for N = M they always pick the pool's top, at KL log M)."""
    M = rewards.shape[-1]
    ordered = rewards.double().sort(-1).values  # (..., X, M)
    weights = best_of_n_weights(M, n, device=rewards.device).expand_as(ordered)  # (..., X, M)
    gain = (weights * ordered).sum(-1) - ordered.mean(-1)  # (..., X) U-statistic of E[max], unbiased
    starts = torch.ones_like(ordered, dtype=torch.bool)  # (..., X, M) the first of each run of tied values
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    group = starts.long().cumsum(-1) - 1  # (..., X, M) index of each value's tie group
    ref_mass = torch.zeros_like(ordered).scatter_add_(-1, group, torch.full_like(ordered, 1.0 / M))  # (..., X, M) P̂(R = v_g)
    at_most = ref_mass.cumsum(-1)  # (..., X, M) F̂(v_g), groups in increasing order
    bon_mass = at_most ** n - (at_most - ref_mass) ** n  # (..., X, M) P_N(R = v_g); 0 on unused groups
    kl = torch.where(ref_mass > 0, bon_mass * (bon_mass.log() - ref_mass.log()), 0.0).sum(-1)  # (..., X)
    return {"gain": gain.mean(-1), "kl": kl.mean(-1)}


def _best_of_n_probs(rewards: torch.Tensor, ref_logprobs: torch.Tensor, ns: torch.Tensor) -> torch.Tensor:
    """(len(ns), S) π_BoN(y) for each N of ``ns`` over an enumerated support ((S,) rewards, log π_ref)."""
    rewards, probs = rewards.double(), ref_logprobs.double().exp()  # (S,)
    at_most = (rewards[None, :] <= rewards[:, None]).double() @ probs  # (S,) F(r(y))
    below = (rewards[None, :] < rewards[:, None]).double() @ probs  # (S,) F(r(y)⁻)
    ns = ns.double()[:, None]  # (K, 1)
    return probs * (at_most ** ns - below ** ns) / (at_most - below)  # (K, S)


def exact_best_of_n(rewards: torch.Tensor, ref_logprobs: torch.Tensor, n: int) -> dict:
    """Best-of-N over an enumerated support of one prompt ((S,) rewards and log π_ref), exact,
    ties included: ``π_BoN(y) = π_ref(y)·(F(r)^N − F(r⁻)^N)/P(R = r)``. Returns ``gain``, ``kl``,
    ``kl_bound`` and ``logprobs`` (S,) log π_BoN."""
    ref_logprobs, rewards = normalise_logprobs(ref_logprobs, "ref_logprobs"), rewards.double()
    bon = _best_of_n_probs(rewards, ref_logprobs, torch.tensor([n]))[0]  # (S,)
    log_bon = bon.log()
    kl = torch.where(bon > 0, bon * (log_bon - ref_logprobs), 0.0).sum()
    return {"n": n, "gain": float(bon @ rewards - ref_logprobs.exp() @ rewards), "kl": float(kl),
            "kl_bound": best_of_n_kl_bound(n), "logprobs": log_bon}


def _p_beta_point(figures: dict, beta: float, min_ess: float) -> dict:
    """One point of the p_β curve from :func:`estimate` (or :func:`exact_figures`) of RLKL(β)."""
    point = {"beta": beta, "gain": figures["target_gain"], "kl": figures["target_kl_ref"], "log_z": figures["log_z"],
             "j_star": figures["j_star"], "ess_min": figures["ess_min"], "ess_mean": figures["ess_mean"]}
    for name, key in (("gain", "target_gain"), ("kl", "target_kl_ref"), ("j_star", "j_star")):
        if f"{key}_se" in figures:
            point[f"{name}_se"] = figures[f"{key}_se"]
    point["low_ess"] = figures["ess_min"] is not None and figures["ess_min"] < min_ess
    return point


def _grid(betas: Sequence[float], beta: float, ns: Sequence[int]) -> tuple[list[float], list[int]]:
    """The sorted β grid with ``beta`` in it, and the sorted N; a ValueError naming a bad value."""
    for b in (*betas, beta):
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 < b < math.inf:
            raise ValueError(f"frontier: every β must be a finite number > 0, got {b!r}")
    for n in ns:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"frontier: every N must be an integer ≥ 1, got {n!r}")
    return sorted({float(b) for b in (*betas, beta)}), sorted(set(ns))


def _frontier_report(points: list[dict], beta: float, reference_score: float, reference_score_se: float | None,
                     curve_gains: torch.Tensor, best_of_n: list[dict], extra: dict) -> dict:
    at_beta = next(p for p in points if p["beta"] == beta)
    return {
        **extra, "beta": beta, "reference_score": reference_score, "reference_score_se": reference_score_se,
        "j_star": at_beta["j_star"], "j_star_se": at_beta.get("j_star_se"),
        "j_star_ess_min": at_beta["ess_min"], "j_star_ess_mean": at_beta["ess_mean"],
        "p_beta": points, "best_of_n": best_of_n,
        "best_of_n_curve": {"n": list(range(1, len(curve_gains) + 1)), "gain": curve_gains.tolist()},
    }


def frontier_from_samples(samples: TargetSamples, *, betas: Sequence[float] = DEFAULT_BETAS,
                          ns: Sequence[int] = DEFAULT_NS, beta: float = DEFAULT_BETA, min_ess: float = MIN_ESS,
                          components: Sequence[str] | None = None, replicates: int = 200) -> dict:
    """The frontier from π_ref's ``samples`` (:func:`~tokengym.benchmarks.targets.sample_for_targets`):
    ``p_beta`` (one point per β of ``betas`` and ``beta``), ``best_of_n`` (each N of ``ns``, at
    most the pool size), the gain of every N up to the pool size (``best_of_n_curve``, for
    :func:`place_run`), ``reference_score`` (J_ref = E_ref[r]) and ``j_star`` at ``beta`` with its
    ESS. ``components``: the reward components that make r (default: all but a KL penalty)."""
    if samples.proposal != "reference":
        raise ValueError(f"the frontier is estimated from π_ref's samples, got samples from {samples.proposal!r}")
    betas, ns = _grid(betas, beta, ns)
    samples = dataclasses.replace(samples, policy_logprobs=None)  # only π_ref enters the frontier
    M = samples.n_per_prompt
    if ns[-1] > M:
        raise ValueError(f"best-of-{ns[-1]} needs a pool of at least {ns[-1]} samples per prompt, got n_per_prompt={M}")
    rewards = task_score(samples.components, components)  # (X, M)
    points = [_p_beta_point(estimate(samples, RLKL(b, components), replicates=replicates), b, min_ess) for b in betas]
    best_of_n = []
    for n in ns:
        pool = best_of_n_from_pool(rewards, n)
        errors = bootstrap_errors(lambda c: best_of_n_from_pool(c["r"], n), {"r": rewards}, samples.segments,
                                  replicates=replicates) if replicates else {}
        best_of_n.append({"n": n, "gain": float(pool["gain"]), "gain_se": errors.get("gain"),
                          "kl_sampled": float(pool["kl"]), "kl_sampled_se": errors.get("kl"), "kl_bound": best_of_n_kl_bound(n)})
    ordered = rewards.sort(-1).values  # (X, M)
    weights = torch.stack([best_of_n_weights(M, n, device=rewards.device) for n in range(1, M + 1)])  # (M, M)
    curve = (ordered @ weights.T - ordered.mean(-1, keepdim=True)).mean(0)  # (M,) gain of N = 1..M
    reference_score_se = float(rewards.std(-1).pow(2).mean().div(rewards.numel()).sqrt())  # within prompts
    extra = {"n_prompts": samples.n_prompts, "n_per_prompt": M, "min_ess": min_ess}
    return _frontier_report(points, float(beta), float(rewards.mean()), reference_score_se, curve, best_of_n, extra)


def measure_frontier(env, *, n_per_prompt: int, seed: int, n_prompts: int | None = None, prompts=None,
                     betas: Sequence[float] = DEFAULT_BETAS, ns: Sequence[int] = DEFAULT_NS, beta: float = DEFAULT_BETA,
                     min_ess: float = MIN_ESS, components: Sequence[str] | None = None) -> dict:
    """The frontier of the vector ``env`` (its reward, less a KL penalty, is r): ``n_per_prompt``
    π_ref samples for each of ``n_prompts`` drawn prompts (or the given ``prompts``), then
    :func:`frontier_from_samples`."""
    samples = sample_for_targets(env, n_prompts=n_prompts, n_per_prompt=n_per_prompt, seed=seed, prompts=prompts)
    return {"seed": seed, **frontier_from_samples(samples, betas=betas, ns=ns, beta=beta, min_ess=min_ess,
                                                  components=components)}


def env_frontier(env, *, n_per_prompt: int, beta: float = DEFAULT_BETA, seed: int = FRONTIER_SEED,
                 max_prompts: int = MAX_PROMPTS) -> dict:
    """The frontier of the vector ``env``'s own prompts and reward (less a KL penalty), at ``beta``:
    every prompt of its pool when it has at most ``max_prompts``, else ``max_prompts`` drawn."""
    pool = env.unwrapped.prompt_pool
    if len(pool) <= max_prompts:
        return measure_frontier(env, n_per_prompt=n_per_prompt, seed=seed, prompts=pool, beta=beta)
    return measure_frontier(env, n_per_prompt=n_per_prompt, seed=seed, n_prompts=max_prompts, beta=beta)


def exact_frontier(components: Mapping[str, torch.Tensor], ref_logprobs: torch.Tensor, *,
                   betas: Sequence[float] = DEFAULT_BETAS, ns: Sequence[int] = DEFAULT_NS, beta: float = DEFAULT_BETA,
                   reward_components: Sequence[str] | None = None) -> dict:
    """The frontier of one prompt's enumerated support ((S,) ``components`` and log π_ref), exact,
    in :func:`frontier_from_samples`' format (the curve up to N = S)."""
    betas, ns = _grid(betas, beta, ns)
    rewards = task_score(components, reward_components)  # (S,)
    ref_logprobs = normalise_logprobs(ref_logprobs, "ref_logprobs")
    points = [_p_beta_point(exact_figures(RLKL(b, reward_components), components, ref_logprobs), b, 0.0) for b in betas]
    best_of_n = []
    for n in ns:
        exact = exact_best_of_n(rewards, ref_logprobs, n)
        best_of_n.append({"n": n, "gain": exact["gain"], "kl_sampled": exact["kl"], "kl_bound": exact["kl_bound"]})
    reference_score = float(ref_logprobs.double().exp() @ rewards.double())
    curve = _best_of_n_probs(rewards, ref_logprobs, torch.arange(1, len(rewards) + 1)) @ rewards.double() - reference_score
    return _frontier_report(points, float(beta), reference_score, None, curve, best_of_n, {"exact": True})


def calibration_frontier(*, betas: Sequence[float] = DEFAULT_BETAS, ns: Sequence[int] = DEFAULT_NS,
                         beta: float = DEFAULT_BETA, temperature: float = 1.0) -> dict:
    """:func:`exact_frontier` of Calibration-v0 (its 512 sequences, π_ref at ``temperature``)."""
    ref_logprobs = calibration.sequence_logprobs(calibration.build_reference_model(), temperature=temperature).double().cpu()
    return exact_frontier(calibration_components(), ref_logprobs, betas=betas, ns=ns, beta=beta)


def place_run(frontier: Mapping, *, gain: float, kl: float, beta: float | None = None) -> dict:
    """Where a run that gains ``gain`` over π_ref at ``kl`` nats sits on ``frontier``, for the
    objective at ``beta`` (default: the frontier's, which must be one of its p_β points):

    * ``j`` = ``J_ref + gain − β·kl`` and ``j_star`` (``J_ref`` = E_ref[r]);
    * ``fraction_captured`` = ``(J − J_ref)/(J* − J_ref)``;
    * ``bon_n``: the (real) N at which best-of-N's sampled gain, interpolated linearly between
      integers N, equals the run's; ``bon_kl``: the KL best-of-N needs for it, by the analytic
      bound ``log N − (N−1)/N`` at that N (an upper bound, so the overspend is a lower bound on
      the sampled one); ``kl_overspend`` = ``kl / bon_kl``. None (with ``bon_note``) when the gain
      is ≤ 0 or above best-of-M's for the pool size M."""
    beta = frontier["beta"] if beta is None else float(beta)
    point = next((p for p in frontier["p_beta"] if math.isclose(p["beta"], beta)), None)
    if point is None:
        raise ValueError(f"place_run: beta={beta} is not on the frontier's p_β grid {[p['beta'] for p in frontier['p_beta']]}")
    j_ref = frontier["reference_score"]
    j = j_ref + gain - beta * kl
    out = {"gain": gain, "kl": kl, "beta": beta, "j": j, "j_star": point["j_star"], "j_ref": j_ref,
           "fraction_captured": (j - j_ref) / (point["j_star"] - j_ref), "j_star_ess_min": point["ess_min"],
           "bon_n": None, "bon_kl": None, "kl_overspend": None, "bon_note": None}
    ns, gains = frontier["best_of_n_curve"]["n"], frontier["best_of_n_curve"]["gain"]
    if gain <= 0:
        out["bon_note"] = "no gain: best-of-1 (π_ref) already matches it at 0 nats"
    elif gain > max(gains):
        out["bon_note"] = f"the gain is above best-of-{ns[-1]}'s {max(gains):+.3f}, the largest the pool measures"
    else:
        i = next(i for i, g in enumerate(gains) if g >= gain)  # i ≥ 1: best-of-1 gains 0
        n = ns[i - 1] + (gain - gains[i - 1]) / (gains[i] - gains[i - 1]) * (ns[i] - ns[i - 1])
        out["bon_n"], out["bon_kl"] = n, best_of_n_kl_bound(n)
        out["kl_overspend"] = kl / out["bon_kl"]
    return out


def plot_frontier(frontier: Mapping, path: str | Path, *, runs: Mapping[str, Sequence[tuple[float, float]]] | None = None,
                  title: str | None = None) -> Path:
    """Write the frontier plot to ``path``: gain over π_ref against KL(·‖π_ref). The p_β curve
    (hollow markers where the ESS is low), best-of-N by its KL bound and by its sampled KL, and
    each of ``runs`` (label -> per-seed ``(gain, kl)``) as mean ± std over its seeds."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9.5, 5))
    ax.plot(0, 0, "k*", ms=9, label="π_ref (β = ∞, N = 1)")
    points = frontier["p_beta"]
    ax.plot([p["kl"] for p in points], [p["gain"] for p in points], "-", color="C0", lw=1.2)
    for p in points:
        ax.plot(p["kl"], p["gain"], "o", color="C0", mfc="none" if p["low_ess"] else "C0", ms=6)
        ax.annotate(f"β={p['beta']:g}", (p["kl"], p["gain"]), textcoords="offset points", xytext=(5, -10), fontsize=7, color="C0")
    ax.plot([], [], "o-", color="C0", label="p_β ∝ π_ref·exp(r/β) (hollow: ESS below "
            f"{frontier.get('min_ess', MIN_ESS):g})")
    bon = frontier["best_of_n"]
    ax.plot([b["kl_bound"] for b in bon], [b["gain"] for b in bon], "s-", color="C1", ms=4, label="best-of-N, KL bound log N − (N−1)/N")
    ax.plot([b["kl_sampled"] for b in bon], [b["gain"] for b in bon], "s--", color="C1", mfc="none", ms=4,
            label="best-of-N, sampled KL")
    for b in bon:
        ax.annotate(f"N={b['n']}", (b["kl_bound"], b["gain"]), textcoords="offset points", xytext=(4, 4), fontsize=7, color="C1")
    for i, (label, seeds) in enumerate((runs or {}).items()):
        gains = torch.tensor([g for g, _ in seeds], dtype=torch.float64)
        kls = torch.tensor([k for _, k in seeds], dtype=torch.float64)
        std = (lambda x: float(x.std()) if len(x) > 1 else 0.0)  # noqa: E731
        ax.errorbar(float(kls.mean()), float(gains.mean()), xerr=std(kls), yerr=std(gains), fmt="D", color=f"C{i + 2}",
                    capsize=3, label=f"{label} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})")
    ax.set_xlabel("KL(·‖π_ref), nats")
    ax.set_ylabel("gain over π_ref: E[r] − E_ref[r]")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: no run hides behind it
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
