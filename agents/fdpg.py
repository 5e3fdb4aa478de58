"""f-DPG (Go et al. 2023, "Aligning language models with preferences through f-divergence
minimization": their unified preference optimization framework).

Alignment as distribution matching: minimise ``D_f(π_θ‖p)`` to a target ``p = π_ref·φ/Z(x)``
(``rewards/targets.py``) with

    ``∇_θ D_f(π_θ‖p) = E_{y~π_θ}[f'(π_θ(y)/p(y))·∇log π_θ(y)]``,

whole sequences at a time (``log π(y|x)`` is the sum of the response's token log-probs). The four
divergences and their ``f'`` are ``tokengym.lm.divergences.DIVERGENCES``:

* ``"forward-kl"``: ``KL(p‖π_θ)``, ``f'(t) = −p/π_θ``: DPG (Parshakova et al. 2019), the algorithm
  of GDC (Khalifa et al. 2021). With ``proposal="reference"`` the samples come from π_ref and the
  coefficient is DPG's importance weight ``−p/π_ref = −φ/Z``, which needs no π_θ at all: for a
  GDC binary target it is maximum likelihood on the π_ref samples that satisfy the constraint.
* ``"reverse-kl"``: ``KL(π_θ‖p)``, ``f'(t) = 1 + log(π_θ/π_ref) − r/β + log Z``. The constant
  ``1 + log Z`` has zero expected gradient (and the baseline removes it exactly), so this is
  REINFORCE on the KL-shaped reward ``r − β·log(π_θ/π_ref)`` divided by β (Go et al. §3).
* ``"js"`` and ``"tv"``: Jensen–Shannon and total variation, both bounded pseudo-rewards.

``Z`` is estimated online as DPG does: a moving average of the importance weights
``π_ref(y)·φ(y)/q(y)`` (``q`` the sampler) over earlier batches, so that a batch's ``Ẑ`` does not
depend on its own samples. Not per prompt from the prompt's group (self-normalised importance
sampling), although ``Z(x)`` differs between prompts: when few of a group's samples lie in p's
support, as with a rare constraint, the group's own ``Ẑ`` cancels the lone sample's ``π_ref/π_θ``,
DPG's whole correction, and the update becomes REINFORCE on φ (measured on Keywords-v0, GDC binary,
seed 0: KL(p‖π_θ) rose from 3.0 to 9.6 nats; the moving average is no better there, see
``experiments/keywords-gdc``). What one ``Z`` for all prompts costs: for forward KL, ``Z(x)``
only scales a prompt's gradient (its direction is exact); reverse KL does not depend on it; for
JS and TV, ``Z(x)`` moves the point where ``f'`` changes sign, so with prompts whose ``Z(x)``
differ they follow a biased target (exact with one prompt, as on Calibration-v0).

Baseline (on-policy only): the leave-one-out mean of the other G−1 coefficients of the same prompt
(Kool et al. 2019), which does not depend on the row's own sample. Under another proposal a
baseline would need the weight π_θ/q to stay unbiased (Korbak et al. 2022), so there is none.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tokengym.agents.advantages import leave_one_out_baseline, masked_mean, sequence_sum
from tokengym.agents.base import Agent, AgentConfig
from tokengym.agents.rollout import Rollout
from tokengym.lm.config import ConfigError, bounded, one_of
from tokengym.agents.policy import Policy
from tokengym.lm.distributed import sum_across_ranks
from tokengym.lm.divergences import DIVERGENCES
from tokengym.rewards.kl import DEFAULT_BETA
from tokengym.rewards.targets import GDCBinary, RLKL, Target

__all__ = ["FDPG", "FDPGConfig", "fdpg_coefficients"]

TARGETS = ("rlkl", "gdc-binary")
PROPOSALS = ("policy", "reference")


@dataclass
class FDPGConfig(AgentConfig):
    """f-DPG's settings; each field is validated in ``__post_init__``."""

    lr: float = bounded(1.25e-4, above=0)
    """Adam learning rate (REINFORCE's default, not tuned for f-DPG; on Keywords-v0 GDC 5e-5 drifts less:
    experiments/keywords-gdc)."""
    group_size: int = bounded(8, at_least=2, integer=True)
    """G, samples per prompt (must divide the batch): the leave-one-out baseline compares them."""
    divergence: str = one_of("forward-kl", tuple(DIVERGENCES))
    """D_f(π_θ‖p) minimised: 'forward-kl' (KL(p‖π_θ), DPG), 'reverse-kl' (KL(π_θ‖p), RL with a KL penalty), 'js' or 'tv'."""
    target: str = one_of("rlkl", TARGETS)
    """p: 'rlkl' (∝ π_ref·exp(r/β)) or 'gdc-binary' (∝ π_ref·1[r ≥ threshold]); r is the env's task reward, KL penalties excluded."""
    beta: float = bounded(DEFAULT_BETA, above=0)
    """β of the 'rlkl' target (unused by 'gdc-binary')."""
    threshold: float = bounded(1.0)
    """Threshold of the 'gdc-binary' target (Keywords-v0: 1.0, both words used; unused by 'rlkl')."""
    proposal: str = one_of("policy", PROPOSALS)
    """Who samples: 'policy' (π_θ) or 'reference' (π_ref, with DPG's importance weight p/π_ref; 'forward-kl' only)."""
    z_momentum: float = bounded(0.9, at_least=0, below=1)
    """Weight of the old value in the moving average Ẑ of the importance weights π_ref·φ/q."""

    def __post_init__(self):
        super().__post_init__()
        if self.divergence == "reverse-kl" and self.target == "gdc-binary":
            raise ConfigError("divergence", self.divergence, "'forward-kl', 'js' or 'tv' with target 'gdc-binary' "
                              "(reverse KL is infinite as soon as π_θ puts mass where the constraint fails: f'(∞) = ∞)")
        if self.proposal == "reference" and self.divergence != "forward-kl":
            raise ConfigError("proposal", self.proposal, "'policy' unless divergence is 'forward-kl' (only forward "
                              "KL's coefficient −p/π_θ becomes an importance weight −p/π_ref under another sampler: DPG)")

    @property
    def uses_groups(self) -> bool:
        return True

    def make_target(self) -> Target:
        """The target distribution p these settings name."""
        return RLKL(self.beta) if self.target == "rlkl" else GDCBinary(self.threshold)


def fdpg_coefficients(divergence: str, log_q, log_ref, log_potential, log_z) -> torch.Tensor:
    """(B,) ``f'(q(y)/p(y))`` with ``log p = log π_ref + log φ − log Z``: f-DPG's coefficient of
    ``∇log π_θ(y)`` for ``y ~ q``. With ``q = π_θ`` it is the f-DPG gradient's; with another ``q``
    and forward KL it is ``−p/q``, DPG's importance-weighted one. All arguments are (B,) sequence
    log-values (``log_potential = -inf`` where p has no mass: there ``t = ∞``)."""
    log_p = torch.where(log_potential > -math.inf, log_ref + log_potential - log_z, -math.inf)  # (B,)
    return DIVERGENCES[divergence].f_prime(log_q - log_p)  # (B,)


class FDPG(Agent):
    """f-DPG: a sequence-level policy gradient towards a target distribution (module docstring).

    The env's reward is read only through the target (its per-episode components); a KL-shaped
    env reward's penalty is ignored, since p already holds π_ref. With ``proposal="reference"``
    the rollout's ``logprobs`` (and the history's ``kl_ref``) are the proposal's.
    """

    config_class = FDPGConfig
    beta_is_target = True

    def __init__(self, env, config: FDPGConfig | None = None, policy: Policy | None = None, sharding=None):
        super().__init__(env, config, policy, sharding)
        sampling = self.env.sampling
        if sampling.top_k or sampling.top_p < 1:
            raise ValueError(
                f"f-DPG needs samples from π_θ itself, but the env samples with top_k={sampling.top_k}, "
                f"top_p={sampling.top_p}; use top_k=0 and top_p=1"
            )
        self.target = self.config.make_target()
        self.z_average = 0.0  # moving average of the importance weights: Ẑ (0 until p's support is seen)
        self.proposal: Policy | None = None  # None: the policy samples
        if self.config.proposal == "reference":
            if self.policy.is_lora:
                raise ValueError("proposal='reference' is not supported with a LoRA policy (π_ref is its base with "
                                 "the adapters off, which the sampler does not switch); use proposal='policy'")
            self.proposal = Policy(self.reference.model, sampling=sampling)  # shares π_ref's weights, no copy

    def collect(self) -> Rollout:
        return super().collect(actor=self.proposal)

    def coefficients(self, rollout: Rollout) -> tuple[torch.Tensor, dict[str, float]]:
        """(B,) float64 coefficient of each episode's ``∇log π_θ(y)`` (``f'`` minus the baseline), and diagnostics."""
        c, mask = self.config, rollout.mask
        log_q = sequence_sum(rollout.logprobs, mask).double()  # (B,) the sampler's log q(y)
        log_ref = sequence_sum(rollout.ref_logprobs, mask).double()  # (B,)
        log_potential = self.target.log_potential(rollout.components)  # (B,) log φ, -inf outside p's support
        weights = (log_ref + log_potential - log_q).exp()  # (B,) π_ref·φ/q, importance weights for Z
        log_z = self.log_partition(weights)  # 0-dim
        coefficients = fdpg_coefficients(c.divergence, log_q, log_ref, log_potential, log_z)  # (B,)
        if self.proposal is None:
            coefficients = coefficients - leave_one_out_baseline(coefficients, c.group_size)
        ess = weights.sum() ** 2 / weights.pow(2).sum() / len(weights)  # (Σw)²/Σw² per sample; nan without mass
        return coefficients, {
            "z": float(log_z.exp()), "ess": float(torch.nan_to_num(ess)),  # Ẑ, not log Ẑ: 0 before p's support is seen
            "target_score": float(self.target.score(rollout.components).mean()),
        }

    def log_partition(self, weights: torch.Tensor) -> torch.Tensor:
        """0-dim log Ẑ for this batch from its (B,) importance weights ``π_ref·φ/q``: the moving
        average of earlier batches' means (independent of this batch's samples, like DPG's online Z),
        or this batch's own mean while no earlier batch has reached p's support. Folds this batch in."""
        total, count = sum_across_ranks(torch.stack([weights.sum(), weights.new_tensor(len(weights))]))
        batch_z = float(total / count)  # over the global batch
        z = self.z_average if self.z_average > 0 else batch_z
        self.z_average = self.config.z_momentum * z + (1 - self.config.z_momentum) * batch_z
        return torch.tensor(z, dtype=torch.float64, device=weights.device).log()

    def loss(self, rollout: Rollout, coefficients: torch.Tensor, rows: torch.Tensor):
        """``mean_b c_b·log π_θ(y_b)`` over episodes ``rows``: its gradient is the f-DPG estimate of
        ``∇D_f(π_θ‖p)`` (the loss descends the divergence)."""
        mask = rollout.mask[rows]
        scored = self.policy.score(rollout.input_ids[rows], rollout.attention_mask[rows], rollout.prompt_width)
        logprobs = sequence_sum(scored.logprobs, mask)  # (b,) log π_θ(y), with gradients
        loss = (coefficients[rows].to(logprobs.dtype) * logprobs).mean()
        return loss, {"pg_loss": loss, "entropy": masked_mean(scored.entropy.detach(), mask)}

    def update(self, rollout: Rollout) -> dict[str, float]:
        coefficients, diagnostics = self.coefficients(rollout)
        rows = torch.arange(rollout.mask.shape[0], device=rollout.mask.device)
        return {**self.minibatch_step(rows, lambda chunk: self.loss(rollout, coefficients, chunk)), **diagnostics}

    def extra_state(self) -> dict:
        return {"z_average": torch.tensor(self.z_average, dtype=torch.float64)}

    def load_extra_state(self, state: dict) -> None:
        self.z_average = float(state["z_average"])
