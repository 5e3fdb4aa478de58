"""The target's own figures, for any env, reward and policy: importance-sampling estimates with
their effective sample sizes and bootstrap errors, and the same figures exact on Calibration-v0.

A target ``p(y|x) = π_ref(y|x)·φ(x, y) / Z(x)`` (:mod:`tokengym.rewards.targets`) is known up to
``Z``; so is every figure that compares a policy with it (Go et al. 2023, f-DPG; Khalifa et al.
2021, GDC). From episodes ``y_i ~ q(·|x)``, n per prompt, with the unnormalised weights
``w_i = π_ref(y_i)·φ(y_i) / q(y_i)``, per prompt x (then averaged over prompts):

* ``log_z``: ``log Ẑ(x) = log mean_i w_i``. ``Ẑ`` is unbiased, ``log Ẑ`` is biased low by
  Jensen's inequality, by about ``(1/ESS − 1/n)/2``. ``j_star``: ``β·E_x[log Ẑ(x)]`` (RLKL).
* ``ess``: ``(Σw)²/Σw²`` per prompt, reported as its min and mean over prompts.
* ``target_score`` ``E_p[score]`` and ``target_kl_ref`` ``KL(p‖π_ref) = E_p[log φ] − log Z``:
  self-normalised, ``E_p[h] ≈ Σ_i w_i h_i / Σ_i w_i``, biased by O(1/n) (the ratio of two unbiased
  means; Owen 2013, §9.2). ``reference_score``: ``E_{π_ref}[score]``; ``target_gain``: the
  difference ``E_p[score] − E_{π_ref}[score]``, the frontier's vertical axis.
* For a policy π_θ, with ``a_i = w_i/Ẑ`` (≈ p/q) and the exact ratio ``b_i = π_θ(y_i)/q(y_i)``:
  ``policy_score`` ``E_π[score] = mean b·score``, ``policy_kl_ref`` ``KL(π_θ‖π_ref)`` and, for
  RLKL, ``j`` ``J(π_θ) = E_π[r] − β·KL(π_θ‖π_ref)``: ordinary importance sampling, unbiased (b
  is known exactly); the four divergences ``D_f(π_θ‖p) = E_p[f(π_θ/p)] = E_q[a·f(b/a)]``:
  ``forward_kl`` (f = −log t: KL(p‖π_θ), DPG), ``reverse_kl`` (t·log t: KL(π_θ‖p), RLHF),
  ``tv`` (½|1−t|) and ``js`` (t·log(2t/(t+1)) + log(2/(t+1)): twice the Jensen–Shannon
  divergence, at most 2·log 2), self-normalised through ``a``. Where p has no mass and π_θ has
  some, ``a·f(b/a)`` is its limit ``b·lim f(t)/t``: 0, +∞, b/2 and b·log 2. For RLKL,
  ``J* − J(π_θ) = β·KL(π_θ‖p)`` holds by construction when both come from the same samples.

**Which proposal for which figure** (:func:`target_figures`). The target's figures (``log_z``,
``j_star``, ``target_score``, ``target_kl_ref``) come from π_ref's samples: p is π_ref reweighted
by φ alone, so the weights do not depend on any policy and every run is measured against the same
yardstick. The policy's figures come from the pooled π_ref and π_θ samples with the mixture
``(n_ref·π_ref + n_θ·π_θ)/(n_ref + n_θ)`` as the proposal (the balance heuristic, Veach & Guibas
1995; both log-probs are recorded for every episode): expectations under π_θ then have bounded
ratios ``b ≤ (n_ref + n_θ)/n_θ``, which π_ref alone does not give (a trained π_θ sits where π_ref
rarely samples); and ``Z`` gets π_θ's samples where π_θ is near p, with π_ref's as the defensive
half where it is not. ``identity_gap`` is ``(J* − J(π_θ)) − β·KL(π_θ‖p)`` across the two: the
difference of the two ``log Z`` estimates, a check on both.

**Errors** (``*_se``): a bootstrap within each prompt (each proposal's samples resampled
separately), so they are the Monte Carlo error given the prompts drawn, not the spread over
prompts. With a small ESS they understate the error: trust a figure only where ``ess_min`` is
tens or more.

**Exact**: :func:`exact_figures` applies the same estimator to a whole enumerated support once,
with the uniform proposal; every weight is then exact (``Ẑ = Σ_y π_ref·φ = Z``, ``a = p/q``), so
the exact and the estimated figures are the same function. :func:`calibration_figures` does it on
Calibration-v0's 512 sequences, at any temperature.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Callable, ContextManager, Mapping, Sequence

import torch

from tokengym.agents.policy import Policy
from tokengym.benchmarks.episodes import run_episodes
from tokengym.envs import calibration
from tokengym.envs.records import PromptRecords, load_prompt_records
from tokengym.lm.divergences import DIVERGENCES as F_DIVERGENCES
from tokengym.rewards.targets import Target

__all__ = [
    "TargetSamples", "sample_for_targets", "mixture", "estimate", "target_figures", "exact_figures",
    "calibration_components", "calibration_figures", "f_divergence_terms", "bootstrap_errors", "normalise_logprobs",
    "DIVERGENCES", "TARGET_FIGURES", "POLICY_FIGURES",
]

DIVERGENCES = ("forward_kl", "reverse_kl", "tv", "js")
"""The four ``D_f(π_θ‖p)`` of f-DPG: KL(p‖π_θ), KL(π_θ‖p), total variation, Jensen–Shannon (×2)."""
TARGET_FIGURES = ("log_z", "j_star", "target_score", "target_kl_ref", "reference_score", "target_gain")
"""Figures of the target alone (``j_star`` for RLKL only)."""
POLICY_FIGURES = ("policy_score", "policy_kl_ref", "j", *DIVERGENCES)
"""Figures of a policy against the target (``j`` for RLKL only)."""
BOOTSTRAP_REPLICATES = 200
"""Resamples behind each ``*_se``."""


def f_divergence_terms(log_a: torch.Tensor, log_b: torch.Tensor) -> dict[str, torch.Tensor]:
    """Elementwise ``a·f(b/a)`` for the four f of :data:`DIVERGENCES` (their generators are
    :data:`tokengym.lm.divergences.DIVERGENCES`), from ``log a`` (a = p/q, ``-inf`` where p has no
    mass) and ``log b`` (b = π_θ/q) of the same shape; their mean under q is ``D_f(π_θ‖p)``. At
    a = 0 each term is its limit ``b·f'(∞)``."""
    has_a, has_b = log_a > -math.inf, log_b > -math.inf
    log_t = torch.where(has_a, log_b - log_a, 0.0)  # log(b/a) where a > 0
    terms = {}
    for name, generator in F_DIVERGENCES.items():
        inside = torch.where(has_a, log_a.exp() * generator.f(log_t), 0.0)
        outside = torch.where(has_a | ~has_b, 0.0, log_b.exp() * generator.f_prime_at_infinity)  # mass where p = 0
        terms[name.replace("-", "_")] = inside + outside
    return terms


def _weighted_sum(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(...,) ``Σ_i weights_i·values_i`` over the last dim, a zero weight contributing 0 even
    against an infinite value (``log φ = -inf`` where p has no mass)."""
    return torch.where(weights > 0, weights * values, 0.0).sum(-1)


def _figures(columns: Mapping[str, torch.Tensor], beta: float | None) -> dict[str, torch.Tensor]:
    """The figures from (..., X, n) per-episode ``columns`` (``log_phi``, ``score``, ``ref``,
    ``proposal`` and optionally ``policy`` log-probs): scalars (...,) averaged over the X prompts,
    plus ``log_z_per_prompt`` and ``ess`` (..., X). See the module docstring for the estimators."""
    log_phi, score, ref, log_q = columns["log_phi"], columns["score"], columns["ref"], columns["proposal"]
    n = log_phi.shape[-1]
    log_w = ref + log_phi - log_q  # (..., X, n) log of π_ref·φ/q
    log_z = torch.logsumexp(log_w, -1) - math.log(n)  # (..., X)
    has_mass = log_z > -math.inf  # (..., X) a prompt none of whose samples p reaches has no estimate
    normalised = torch.softmax(log_w, -1)  # (..., X, n) self-normalised weights, ≈ p/q / n
    ess = torch.where(has_mass, torch.exp(2 * torch.logsumexp(log_w, -1) - torch.logsumexp(2 * log_w, -1)), 0.0)
    per_prompt = {
        "log_z": log_z,
        "target_score": _weighted_sum(normalised, score),
        "target_kl_ref": _weighted_sum(normalised, log_phi) - log_z,
        "reference_score": (torch.exp(ref - log_q) * score).mean(-1),
    }
    per_prompt["target_gain"] = per_prompt["target_score"] - per_prompt["reference_score"]
    if "policy" in columns:
        log_a = log_w - log_z[..., None]  # (..., X, n) log(w/Ẑ) ≈ log(p/q)
        log_b = columns["policy"] - log_q  # (..., X, n) log(π_θ/q), exact
        b = log_b.exp()
        per_prompt["policy_score"] = (b * score).mean(-1)
        per_prompt["policy_kl_ref"] = _weighted_sum(b, columns["policy"] - ref) / n
        per_prompt.update({name: term.mean(-1) for name, term in f_divergence_terms(log_a, log_b).items()})
    out = {name: value.mean(-1) for name, value in per_prompt.items()}  # (...,) mean over prompts
    if beta is not None:
        out["j_star"] = beta * out["log_z"]
        if "policy" in columns:
            out["j"] = out["policy_score"] - beta * out["policy_kl_ref"]
    out["log_z_per_prompt"], out["ess"] = log_z, ess
    return out


def bootstrap_errors(statistic: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
                     columns: Mapping[str, torch.Tensor], segments: Sequence[int], *,
                     replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0) -> dict[str, float]:
    """The bootstrap standard error of every scalar that ``statistic`` computes from (X, n)
    ``columns``: each prompt's n episodes are resampled with replacement, separately within each
    of the ``segments`` (per-prompt column counts of each proposal, summing to n), ``replicates``
    times. ``statistic`` takes (R, X, n) columns and returns (R,) scalars (others are ignored)."""
    X, n = next(iter(columns.values())).shape
    if sum(segments) != n:
        raise ValueError(f"segments {list(segments)} must sum to the {n} episodes per prompt")
    device = next(iter(columns.values())).device
    generator = torch.Generator(device=device).manual_seed(seed)
    chunk = max(1, (1 << 21) // (X * n))  # replicates at once: about 2M values per column
    firsts = [sum(segments[:i]) for i in range(len(segments))]  # each segment's first column
    draws: dict[str, list[torch.Tensor]] = {}
    for start in range(0, replicates, chunk):
        R = min(chunk, replicates - start)
        index = torch.cat([torch.randint(first, first + size, (R, X, size), generator=generator, device=device)
                           for first, size in zip(firsts, segments)], dim=-1)  # (R, X, n)
        resampled = {name: value.expand(R, X, n).gather(-1, index) for name, value in columns.items()}
        for name, value in statistic(resampled).items():
            if value.shape == (R,):
                draws.setdefault(name, []).append(value)
    return {name: float(torch.cat(values).std()) for name, values in draws.items()}


@dataclasses.dataclass(frozen=True)
class TargetSamples:
    """Episodes for importance sampling: n per prompt for X prompts, each tensor (X, n) with row x
    holding prompt x's episodes (the per-episode prompt index is the row, :attr:`prompt_index`)."""

    prompts: tuple
    """The X prompts as given to the env (text, token ids or chat messages)."""
    components: dict[str, torch.Tensor]
    """Reward component -> (X, n) float64 per-episode totals, a KL-shaped reward's penalty left out."""
    ref_logprobs: torch.Tensor
    """(X, n) float64 log π_ref(y|x) of each whole response, at the env's temperature."""
    policy_logprobs: torch.Tensor | None
    """(X, n) float64 log π_θ(y|x), or None without a policy."""
    proposal: str
    """What drew them: ``"reference"``, ``"policy"`` or ``"mixture"`` (:func:`mixture`)."""
    segments: tuple[int, ...]
    """Per-prompt columns drawn from each proposal: ``(n,)``, or ``(n_ref, n_policy)`` for a mixture."""

    @property
    def n_prompts(self) -> int:
        return self.ref_logprobs.shape[0]

    @property
    def n_per_prompt(self) -> int:
        return self.ref_logprobs.shape[1]

    @property
    def prompt_index(self) -> torch.Tensor:
        """(X, n) the prompt of each episode."""
        return torch.arange(self.n_prompts, device=self.ref_logprobs.device)[:, None].expand(-1, self.n_per_prompt)

    @property
    def proposal_logprobs(self) -> torch.Tensor:
        """(X, n) float64 log q(y|x) of the distribution the episodes were drawn from."""
        if self.proposal == "reference":
            return self.ref_logprobs
        if self.proposal == "policy":
            return self.policy_logprobs
        n_ref, n_policy = self.segments
        n = n_ref + n_policy
        return torch.logaddexp(math.log(n_ref / n) + self.ref_logprobs, math.log(n_policy / n) + self.policy_logprobs)


def _check_sampling(env) -> None:
    """Importance weights need the log-probs of the distribution the env samples from."""
    sampling = env.sampling
    if sampling.top_k != 0 or sampling.top_p != 1:
        raise ValueError(f"target estimates: the env samples with top_k={sampling.top_k}, top_p={sampling.top_p}, "
                         "so its log-probs are not those of the sampled distribution; use top_k 0 and top_p 1")
    if env.shard[1] != 1:
        raise ValueError(f"target estimates run in one process; the env is rank {env.shard[0]} of {env.shard[1]}")


def _repeat(records: PromptRecords, rows: range, times: int) -> PromptRecords:
    """Records ``rows`` of ``records``, each repeated ``times`` times in consecutive rows."""
    return PromptRecords([records.prompts[i] for i in rows for _ in range(times)],
                         {name: [values[i] for i in rows for _ in range(times)] for name, values in records.columns.items()})


@torch.no_grad()
def sample_for_targets(env, *, n_per_prompt: int, seed: int, n_prompts: int | None = None, prompts=None,
                       policy: torch.nn.Module | None = None, proposal: str = "reference",
                       policy_context: Callable[[], ContextManager] | None = None) -> TargetSamples:
    """``n_per_prompt`` episodes for each of ``n_prompts`` prompts through the vector ``env``
    (its reward, temperature and π_ref), sampled from ``proposal``: ``"reference"`` (π_ref) or
    ``"policy"`` (``policy``, a causal LM). With a ``policy``, both log-probs of every episode are
    recorded; the model that did not sample scores the responses by one teacher-forced pass.

    The prompts are drawn by the env with its ``np_random`` seeded by ``seed``, each repeated in
    consecutive rows as the ``group_size`` reset option does; so two calls with the same ``seed``
    and sizes see the same prompts whatever the proposal. ``prompts`` (anything ``reset`` takes as
    ``options["prompts"]``) gives them explicitly instead. ``n_per_prompt`` must divide
    ``env.num_envs`` or be a multiple of it. ``policy_context``: makes the policy's forward context
    (autocast, say), entered around each of its batches."""
    env = env.unwrapped
    _check_sampling(env)
    B = env.num_envs
    records = None if prompts is None else load_prompt_records(prompts)
    if records is not None and n_prompts not in (None, len(records)):
        raise ValueError(f"n_prompts={n_prompts} but {len(records)} prompts were given")
    n_prompts = len(records) if records is not None else n_prompts
    for name, value in (("n_prompts", n_prompts), ("n_per_prompt", n_per_prompt)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"sample_for_targets: {name} must be an integer ≥ 1, got {value!r}")
    if B % n_per_prompt and n_per_prompt % B:
        raise ValueError(f"sample_for_targets: n_per_prompt={n_per_prompt} must divide num_envs={B} or be a multiple of it")
    if proposal not in ("reference", "policy"):
        raise ValueError(f"sample_for_targets: proposal must be 'reference' or 'policy', got {proposal!r}")
    if proposal == "policy" and policy is None:
        raise ValueError("sample_for_targets: proposal='policy' needs a policy model")

    policy_context = policy_context if policy_context is not None else contextlib.nullcontext
    reference = env.reference
    scorer = Policy(policy, sampling=env.sampling) if policy is not None else None
    sampler = scorer if proposal == "policy" else Policy(reference.model, sampling=env.sampling)
    generator = torch.Generator(device=env.device).manual_seed(seed)

    def resets():  # the reset options of each batch, in order
        if n_per_prompt <= B:
            per_batch = B // n_per_prompt
            for first in range(0, n_prompts, per_batch):
                if records is None:
                    yield {"group_size": n_per_prompt}
                else:  # the last batch wraps around to fill its rows; the extra prompts are dropped
                    yield {"prompts": _repeat(records, [(first + i) % n_prompts for i in range(per_batch)], n_per_prompt)}
        else:
            for x in range(n_prompts):
                yield {"group_size": B} if records is None else {"prompts": _repeat(records, [x], B)}
                for _ in range(n_per_prompt // B - 1):
                    yield "replay"  # the same prompt again, as given, with its columns

    ref_rows, policy_rows, component_rows, prompt_rows = [], [], {}, []
    last = None
    for batch, options in enumerate(resets()):
        if options == "replay":
            options = {"prompts": PromptRecords([last.prompts[0]] * B, {c: [v[0]] * B for c, v in last.columns.items()})}
        with policy_context() if proposal == "policy" else reference.context():
            last = run_episodes(env, sampler, generator, seed=seed if batch == 0 else None, options=options,
                                score_reference=proposal == "policy")
        mask = last.mask  # (B, T)
        sampled = torch.where(mask, last.logprobs, 0.0).double().sum(-1)  # (B,) log q(y|x) of the whole response
        if proposal == "reference":
            ref = sampled if last.ref_logprobs is None else torch.where(mask, last.ref_logprobs, 0.0).double().sum(-1)
            if scorer is not None:
                with policy_context():
                    scored = scorer.score(last.input_ids, last.attention_mask, last.prompt_width).logprobs  # (B, T)
                policy_rows.append(torch.where(mask, scored, 0.0).double().sum(-1))
        else:
            ref = torch.where(mask, last.ref_logprobs, 0.0).double().sum(-1)  # (B,)
            policy_rows.append(sampled)
        ref_rows.append(ref)
        for name, total in last.components.items():
            component_rows.setdefault(name, []).append(total.double())
        prompt_rows += list(last.prompts)

    def matrix(rows: list[torch.Tensor]) -> torch.Tensor:  # (X, n): rows come prompt after prompt
        return torch.cat(rows).view(-1, n_per_prompt)[:n_prompts]

    return TargetSamples(
        prompts=tuple(prompt_rows[::n_per_prompt][:n_prompts]),
        components={name: matrix(rows) for name, rows in component_rows.items()},
        ref_logprobs=matrix(ref_rows),
        policy_logprobs=matrix(policy_rows) if policy_rows else None,
        proposal=proposal,
        segments=(n_per_prompt,),
    )


def mixture(reference: TargetSamples, policy: TargetSamples) -> TargetSamples:
    """π_ref's and π_θ's samples of the same prompts pooled, with the mixture of the two as their
    proposal (the balance heuristic): each prompt's row holds π_ref's episodes, then π_θ's."""
    if (reference.proposal, policy.proposal) != ("reference", "policy"):
        raise ValueError(f"mixture: expected samples from π_ref then from π_θ, got {reference.proposal!r} and {policy.proposal!r}")
    if reference.policy_logprobs is None:
        raise ValueError("mixture: π_ref's samples carry no log π_θ; draw them with policy= given")
    if reference.prompts != policy.prompts or set(reference.components) != set(policy.components):
        raise ValueError("mixture: the two sample sets must share their prompts (same seed and sizes) and components")
    return TargetSamples(
        prompts=reference.prompts,
        components={name: torch.cat([reference.components[name], policy.components[name]], 1) for name in reference.components},
        ref_logprobs=torch.cat([reference.ref_logprobs, policy.ref_logprobs], 1),
        policy_logprobs=torch.cat([reference.policy_logprobs, policy.policy_logprobs], 1),
        proposal="mixture",
        segments=(reference.n_per_prompt, policy.n_per_prompt),
    )


def _columns(target: Target, components: Mapping[str, torch.Tensor], ref: torch.Tensor, proposal: torch.Tensor,
             policy: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The per-episode columns :func:`_figures` reads, as float64 tensors of one shape."""
    columns = {"log_phi": target.log_potential(components).double(), "score": target.score(components).double(),
               "ref": ref.double(), "proposal": proposal.double()}
    if policy is not None:
        columns["policy"] = policy.double()
    return columns


def _report(figures: Mapping[str, torch.Tensor], errors: Mapping[str, float] | None) -> dict:
    """Floats for JSON: each scalar figure (with its ``_se`` when ``errors`` are given); ESS min
    and mean over prompts; log Z per prompt."""
    out = {}
    for name in (*TARGET_FIGURES, *POLICY_FIGURES):
        if name in figures:
            out[name] = float(figures[name])
            if errors is not None:
                out[f"{name}_se"] = errors[name]
    out["ess_min"], out["ess_mean"] = float(figures["ess"].min()), float(figures["ess"].mean())
    out["log_z_per_prompt"] = figures["log_z_per_prompt"].tolist()
    return out


def estimate(samples: TargetSamples, target: Target, *, replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0) -> dict:
    """Every figure of the module docstring that ``samples`` allow (the policy's when they carry
    log π_θ), by self-normalised importance sampling per prompt, with bootstrap errors
    (``replicates`` resamples; 0 skips them) and the ESS."""
    beta = getattr(target, "beta", None)
    columns = _columns(target, samples.components, samples.ref_logprobs, samples.proposal_logprobs, samples.policy_logprobs)
    errors = None
    if replicates:
        errors = bootstrap_errors(lambda c: _figures(c, beta), columns, samples.segments, replicates=replicates, seed=seed)
    report = _report(_figures(columns, beta), errors)
    return {"proposal": samples.proposal, "n_prompts": samples.n_prompts, "n_per_prompt": samples.n_per_prompt, **report}


def target_figures(env, target: Target, *, n_prompts: int | None = None, n_per_prompt: int, seed: int, prompts=None,
                   policy: torch.nn.Module | None = None, policy_context: Callable[[], ContextManager] | None = None,
                   replicates: int = BOOTSTRAP_REPLICATES) -> dict:
    """The target's figures on the vector ``env`` and, with ``policy`` (a causal LM), the policy's
    against it: ``{"target": ..., "reference": estimate from π_ref's samples, "policy": estimate
    from π_ref's and π_θ's pooled, "identity_gap": (J* − J) − β·KL(π_θ‖p)}`` (see the module
    docstring for why each proposal). Both draw ``n_per_prompt`` episodes for the same prompts."""
    draw = dict(n_prompts=n_prompts, n_per_prompt=n_per_prompt, seed=seed, prompts=prompts, policy=policy,
                policy_context=policy_context)
    reference = sample_for_targets(env, proposal="reference", **draw)
    target_only = dataclasses.replace(reference, policy_logprobs=None)  # π_ref's samples estimate the target alone
    out = {"target": repr(target), "seed": seed, "reference": estimate(target_only, target, replicates=replicates)}
    if policy is not None:
        pooled = mixture(reference, sample_for_targets(env, proposal="policy", **draw))
        out["policy"] = estimate(pooled, target, replicates=replicates)
        if "j" in out["policy"]:
            out["identity_gap"] = out["reference"]["j_star"] - out["policy"]["j"] - target.beta * out["policy"]["reverse_kl"]
    return out


def normalise_logprobs(logprobs: torch.Tensor, name: str = "logprobs") -> torch.Tensor:
    """``logprobs`` in float64, renormalised; a ValueError if they were not a distribution to ~1e-4."""
    logprobs = logprobs.double()
    total = float(torch.logsumexp(logprobs, -1))
    if not abs(total) < 1e-4:
        raise ValueError(f"{name} must be log-probabilities over the whole support, but they sum to {math.exp(total):.6g}")
    return logprobs - total


def exact_figures(target: Target, components: Mapping[str, torch.Tensor], ref_logprobs: torch.Tensor,
                  policy_logprobs: torch.Tensor | None = None) -> dict:
    """Every figure, exact, over an enumerated support of one prompt: ``components`` (S,) per
    sequence, ``ref_logprobs`` (S,) log π_ref and optionally ``policy_logprobs`` (S,) log π_θ, each
    normalised over the S sequences (renormalised in float64 here: a float32 forward leaves an
    error of ~1e-7 that the identities would show). The estimator of :func:`estimate` on the whole
    support once, with the uniform proposal: every weight is then exact. No ESS or error (``None``)."""
    S = ref_logprobs.shape[-1]
    ref_logprobs = normalise_logprobs(ref_logprobs, "ref_logprobs")
    policy_logprobs = None if policy_logprobs is None else normalise_logprobs(policy_logprobs, "policy_logprobs")
    uniform = torch.full((1, S), -math.log(S), dtype=torch.float64, device=ref_logprobs.device)  # (1, S) log q
    columns = _columns(target, {name: value.reshape(1, S) for name, value in components.items()}, ref_logprobs.reshape(1, S),
                       uniform, None if policy_logprobs is None else policy_logprobs.reshape(1, S))
    report = _report(_figures(columns, getattr(target, "beta", None)), None)
    return {"proposal": "exact", "n_prompts": 1, "n_per_prompt": S, **report, "ess_min": None, "ess_mean": None}


def calibration_components() -> dict[str, torch.Tensor]:
    """Calibration-v0's reward components over its 512 sequences, as the env names them."""
    return {calibration.CalibrationScorer.name: calibration.calibration_reward(calibration.all_sequences()).double()}


def calibration_figures(target: Target, policy: torch.nn.Module | None = None, *, temperature: float = 1.0) -> dict:
    """:func:`exact_figures` on Calibration-v0 by enumerating its 512 sequences, π_ref and the
    ``policy`` (a causal LM over its 8 ids) both sampled at ``temperature``: softmax(logits/τ)."""
    ref_logprobs = calibration.sequence_logprobs(calibration.build_reference_model(), temperature=temperature).double().cpu()
    policy_logprobs = None if policy is None else calibration.sequence_logprobs(policy, temperature=temperature).double().cpu()
    return exact_figures(target, calibration_components(), ref_logprobs, policy_logprobs)
