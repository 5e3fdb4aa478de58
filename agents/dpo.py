"""Online DPO (Rafailov et al. 2023, "Direct preference optimization: your language model is
secretly a reward model").

Per prompt, a pair ``y_1, y_2 ~ π_θ`` (the env repeats each prompt twice in consecutive rows); with
``preferences="sampled"`` the preferred one is drawn from Bradley–Terry on the env's task reward,
``P(y_1 ≻ y_2) = σ(r_1 − r_2)``, with the agent's own generator (so a resumed run draws the same
preferences); the loss is

    ``−log σ(β·[(log π_θ − log π_ref)(y_w) − (log π_θ − log π_ref)(y_l)])``

with sequence log-probs. Why its optimum is ``p_RLKL ∝ π_ref·exp(r/β)`` at the same β: write
``h = log(π_θ/π_ref)``; a pair's expected gradient over the Bradley–Terry draw is
``−β·[σ(Δr)·σ(−βΔh) − σ(−Δr)·σ(βΔh)]·∇Δh``, which vanishes when ``βΔh = Δr`` for every pair, i.e.
at ``π_θ ∝ π_ref·exp(r/β)``, whatever distribution the pairs come from (here π_θ itself, not
differentiated through). KL penalties in the env's reward are not part of r (``task_score``).

The default, ``preferences="expected"``, takes that expectation in closed form instead of drawing:
the loss ``−[q·log σ(βΔh) + (1 − q)·log σ(−βΔh)]`` with the soft label ``q = σ(r_1 − r_2)`` (the
draw Rao–Blackwellised). Same expected gradient, hence the same optimum, without the label noise.
On Sentiment-v0 a draw prefers the higher-VADER sample of π_ref's pairs with probability 0.565 on
average, and drawn labels gained +0.04 VADER at 3.5 nats where expected ones gain about +0.5
(BENCHMARKS.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokengym.agents.advantages import masked_mean, sequence_sum
from tokengym.agents.base import Agent, AgentConfig
from tokengym.agents.rollout import Rollout
from tokengym.lm.config import ConfigError, bounded, one_of
from tokengym.rewards.kl import DEFAULT_BETA
from tokengym.rewards.targets import task_score

__all__ = ["DPO", "DPOConfig", "dpo_loss"]


@dataclass
class DPOConfig(AgentConfig):
    """Online DPO's settings; each field's range is checked on construction."""

    lr: float = bounded(1.25e-4, above=0)
    """Adam learning rate (REINFORCE's default; not tuned for DPO on language)."""
    group_size: int = bounded(2, at_least=2, at_most=2, integer=True)
    """Samples per prompt: one pair, so exactly 2."""
    beta: float = bounded(DEFAULT_BETA, above=0)
    """DPO's β: the loss's optimum is p_RLKL ∝ π_ref·exp(r/β) at this β."""
    preferences: str = one_of("expected", ("expected", "sampled"))
    """'sampled': each pair's winner drawn from Bradley–Terry, P(y_1 ≻ y_2) = σ(r_1 − r_2);
    'expected': the loss averaged over that draw in closed form (soft labels; same optimum, no label noise)."""
    minibatch_size: int | None = bounded(None, at_least=2, integer=True)
    """Episodes per forward/backward (even, so a pair is never split; default: the whole batch at once)."""

    def __post_init__(self):
        super().__post_init__()
        if self.minibatch_size is not None and self.minibatch_size % 2:
            raise ConfigError("minibatch_size", self.minibatch_size, "an even integer (a pair's two episodes share a forward)")

    @property
    def uses_groups(self) -> bool:
        return True


def dpo_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float,
             chosen_prob: torch.Tensor | float = 1.0) -> torch.Tensor:
    """(N,) ``−log σ(β·(h_w − h_l))`` per pair, from sequence log-ratios ``h = log π_θ(y) − log π_ref(y)``.
    With ``chosen_prob`` q < 1 (the probability that the first really is preferred): the loss
    averaged over the label, ``−q·log σ(β·(h_w − h_l)) − (1 − q)·log σ(β·(h_l − h_w))``."""
    margin = beta * (chosen_logratios - rejected_logratios)
    return -(chosen_prob * F.logsigmoid(margin) + (1 - chosen_prob) * F.logsigmoid(-margin))


class DPO(Agent):
    """Online DPO: pairs from π_θ, Bradley–Terry preferences from the env's reward, the DPO loss."""

    config_class = DPOConfig
    beta_is_target = True

    def prefer_first(self, scores: torch.Tensor) -> torch.Tensor:
        """(B/2,) bool: is the first of each pair preferred? A Bradley–Terry draw, ``P = σ(r_1 − r_2)``,
        from the agent's generator. Like the sampler, the generator draws the whole global batch's
        uniforms and this rank keeps its slice, so N ranks draw what one process would."""
        pairs = scores.view(-1, 2)  # (B/2, 2)
        rank, world_size = self.env.shard
        n = pairs.shape[0]
        uniform = torch.rand(world_size * n, generator=self.generator, device=pairs.device, dtype=torch.float64)
        return uniform[rank * n : (rank + 1) * n] < torch.sigmoid(pairs[:, 0] - pairs[:, 1]).double()  # (B/2,)

    def loss(self, rollout: Rollout, first_prob: torch.Tensor, rows: torch.Tensor):
        """Mean DPO loss over the pairs in ``rows`` (whole pairs, in order) and its diagnostics;
        ``first_prob`` (B/2,) is each pair's label: 1 or 0 when drawn, σ(r_1 − r_2) when expected."""
        mask = rollout.mask[rows]
        scored = self.policy.score(rollout.input_ids[rows], rollout.attention_mask[rows], rollout.prompt_width)
        logratios = sequence_sum(scored.logprobs - rollout.ref_logprobs[rows], mask).view(-1, 2)  # (b/2, 2) h(y)
        first_prob = first_prob[rows[0::2] // 2].to(logratios.dtype)  # (b/2,)
        loss = dpo_loss(logratios[:, 0], logratios[:, 1], self.config.beta, first_prob).mean()
        # the implicit reward gap between the preferred and the other member (expected over the label)
        margin = self.config.beta * ((2 * first_prob - 1) * (logratios[:, 0] - logratios[:, 1])).detach().mean()
        return loss, {"loss": loss, "margin": margin, "entropy": masked_mean(scored.entropy.detach(), mask)}

    def update(self, rollout: Rollout) -> dict[str, float]:
        scores = task_score(rollout.components)
        if self.config.preferences == "expected":
            pairs = scores.view(-1, 2).double()
            first_prob = torch.sigmoid(pairs[:, 0] - pairs[:, 1])  # (B/2,)
        else:
            first_prob = self.prefer_first(scores).double()  # (B/2,) 1 or 0
        rows = torch.arange(rollout.mask.shape[0], device=rollout.mask.device)  # pairs stay whole: chunks are even
        return self.minibatch_step(rows, lambda chunk: self.loss(rollout, first_prob, chunk))
