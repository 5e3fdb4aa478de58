"""The reward protocol: what the env hands a reward, and what a reward hands back.

A reward is any object with two methods (see :class:`Reward`):

* ``reset(episodes: EpisodeStart)`` once per reset, for the rows that start a new episode;
* ``__call__(step: StepBatch)`` once per ``env.step``, returning this step's rewards for every row
  as a ``(B,)`` float tensor on the env's device, or a ``dict`` of such tensors (one per named
  component; the env sums them and reports each component's per-episode total in
  ``info["reward_components"]``).

Rows that did not act on a step (their episode already ended while the batch waits for a
synchronous reset) get a step reward of exactly 0. A non-zero value a reward returns for such a row
is a **late payment** to that row's just-ended episode: the env reports it in
``info["late_rewards"]`` and adds it to the episode's ``info["reward_components"]`` totals, and an
agent credits it to the episode's last step. This is how a reward scored once per batch
(``StepBatch.synchronous``, e.g. :class:`~tokengym.rewards.trl.TRLReward`) pays rows that ended
early. A reward that pays only on acting rows never has to think about it.

Everything a reward sees is passed explicitly in these two dataclasses; a reward never reaches into
the env. The token layout is the env's observation layout:

    column:  0 ........ P-1 | P ........... P+T-1
             prompt (left-padded) | response (right-padded)

``P = prompt_width`` (the env's ``max_prompt_tokens``) and ``T = max_new_tokens``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import torch

__all__ = [
    "EpisodeStart", "StepBatch", "Reward", "RewardOutput", "as_components", "check_scores", "reference_request", "walk",
]


@dataclass(frozen=True)
class EpisodeStart:
    """The prompts of a (partial) reset."""

    prompt_ids: torch.Tensor
    """(B, P) int64 prompt tokens, left-padded with ``pad_token_id``."""
    prompt_mask: torch.Tensor
    """(B, P) bool, True on real prompt tokens."""
    prompt_texts: Sequence[str]
    """B decoded prompts (host strings, computed once at reset)."""
    rows: torch.Tensor
    """(B,) bool, True for rows that start a new episode now (all True on a full reset)."""
    max_new_tokens: int
    """T, the episode's action budget."""
    tokenizer: Any
    """The env's tokenizer (``decode``/``batch_decode``); ``None`` for token-only tasks."""
    prompts: Sequence[Any] = ()
    """B prompts as the dataset gave them: strings, token-id lists or chat messages."""
    columns: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    """The prompt dataset's extra columns, each a B-long sequence aligned with the rows."""
    temperature: float = 1.0
    """The env's sampling temperature τ: every log-prob compared with the policy's is taken at τ."""


@dataclass(frozen=True)
class StepBatch:
    """The batch right after the env appended one action to every active row."""

    input_ids: torch.Tensor
    """(B, P+T) int64 prompt ⊕ response so far, including this step's action."""
    attention_mask: torch.Tensor
    """(B, P+T) bool, True on real tokens (prompt and response so far)."""
    prompt_width: int
    """P: the response of every row starts at column P."""
    response_lengths: torch.Tensor
    """(B,) int64 tokens generated so far per row, this step's action included."""
    actions: torch.Tensor
    """(B,) int64 a_t, the token appended this step (pad on rows that did not act)."""
    acted: torch.Tensor
    """(B,) bool, True for rows that took an action this step."""
    ended: torch.Tensor
    """(B,) bool, True for rows whose episode this action ended (terminated or truncated)."""
    action_logprobs: torch.Tensor | None
    """(B,) float log π_θ(a_t|s_t) of the acting policy, if the agent passed it to ``env.step``.

    This is the explicit channel through which an agent that already computed its log-probs spares
    a KL-shaped reward a second policy forward pass. ``None`` for agents that cannot provide it."""
    prompt_texts: Sequence[str]
    """B decoded prompts of the current episodes."""
    tokenizer: Any
    """The env's tokenizer; ``None`` for token-only tasks."""
    prompts: Sequence[Any] = ()
    """B prompts of the current episodes as the dataset gave them (strings, token ids, chat messages)."""
    columns: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    """The prompt dataset's extra columns of the current episodes, each B long, aligned with the rows."""
    synchronous: bool = False
    """True when episodes are batch-synchronous (``autoreset_mode="disabled"``): rows that end wait
    until the whole batch resets, so a reward may score all B episodes once, on the step the last
    one ends, and pay the rows that ended earlier late. False when rows restart as they end."""
    ref_logprobs: torch.Tensor | None = None
    """(B,) float log π_ref(a_t|s_t) at the env's temperature, from the env's one reference model.

    Filled when the reward declares ``needs_reference`` (see :func:`reference_request`); ``None``
    otherwise."""

    def rows_to_score(self, batched: bool) -> list[int]:
        """The rows an episode-level scorer scores on this step (one host read).

        ``batched`` and :attr:`synchronous`: every row, once, on the step the batch's last episode
        ends (rows that ended earlier are paid late; see the module docstring), so a batch-level
        scorer such as a reward model runs once per batch. Otherwise: the rows whose episode this
        step ended."""
        if batched and self.synchronous:
            last = self.ended.any() & ~(self.acted & ~self.ended).any()
            return list(range(self.ended.shape[0])) if bool(last) else []
        return self.ended.nonzero().flatten().tolist()

    @property
    def response_ids(self) -> torch.Tensor:
        """(B, T) the response region (right-padded)."""
        return self.input_ids[:, self.prompt_width :]

    def decode_responses(self, rows: Sequence[int]) -> list[str]:
        """Decoded responses of ``rows`` (a host read of those rows only)."""
        if self.tokenizer is None:
            raise ValueError("this env has no tokenizer, so text rewards cannot decode its responses")
        ids = self.response_ids[list(rows)].tolist()
        lengths = self.response_lengths[list(rows)].tolist()
        return self.tokenizer.batch_decode(
            [seq[:n] for seq, n in zip(ids, lengths)], skip_special_tokens=True
        )


RewardOutput = torch.Tensor | Mapping[str, torch.Tensor]


@runtime_checkable
class Reward(Protocol):
    """Anything the env can call for per-token rewards."""

    def reset(self, episodes: EpisodeStart) -> None:
        """Called on every reset, with the rows that start a new episode."""

    def __call__(self, step: StepBatch) -> RewardOutput:
        """This step's rewards, (B,) float on the env's device, or a dict of named components."""


def walk(reward: Any) -> list[Any]:
    """Every reward object in ``reward``'s tree: itself, then, depth first, what its
    ``children()`` returns (composites such as ``WeightedSum``, ``KLShaped`` and ``SideScores``
    have them), each object once. Code that needs something from every reward (its reference
    model, its state to checkpoint) walks the tree this way rather than reading wrappers' fields."""
    found, seen, stack = [], set(), [reward]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        found.append(node)
        children = node.children() if callable(getattr(node, "children", None)) else ()
        stack.extend(reversed(list(children)))
    return found


def reference_request(reward: Any) -> tuple[bool, Any]:
    """``(needed, ref_model)``: whether ``reward`` needs per-token ``log π_ref`` from the env, and
    the π_ref it names (``None``: the env's default, the policy's starting weights).

    A reward declares the need with ``needs_reference = True`` and may name a model in
    ``ref_model``; a composite reward (one with ``children()``) needs it if any reward in its
    tree (:func:`walk`) does, and they must not name different models.
    """
    needing = [r for r in walk(reward) if getattr(r, "needs_reference", False)]
    named = [r.ref_model for r in needing if getattr(r, "ref_model", None) is not None]
    if any(m is not named[0] and m != named[0] for m in named[1:]):
        raise ValueError(f"the reward's components name different reference models {named}; a run has one π_ref")
    return bool(needing), (named[0] if named else None)


def as_components(output: RewardOutput, name: str = "reward") -> dict[str, torch.Tensor]:
    """Normalise a reward's output to ``{component: (B,) tensor}``."""
    if isinstance(output, torch.Tensor):
        return {name: output}
    if isinstance(output, Mapping):
        return dict(output)
    raise TypeError(
        f"reward {name!r} returned {type(output).__name__}; expected a (B,) torch.Tensor "
        "or a dict of them"
    )


def check_scores(scores: Any, expected: int, scorer: str) -> list[float]:
    """Validate what a host-side scorer returned: ``expected`` finite real numbers.

    Raises a ``ValueError``/``TypeError`` naming the scorer, never clips or casts silently.
    """
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().reshape(-1).tolist()
    try:
        values = list(scores)
    except TypeError:
        raise TypeError(
            f"scorer {scorer!r} returned {type(scores).__name__}; expected a sequence of "
            f"{expected} floats"
        ) from None
    if len(values) != expected:
        raise ValueError(f"scorer {scorer!r} returned {len(values)} scores for {expected} texts")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) and not hasattr(v, "__float__"):
            raise TypeError(f"scorer {scorer!r} returned {v!r} (type {type(v).__name__}) at index {i}; expected a float")
        f = float(v)
        if not math.isfinite(f):
            raise ValueError(f"scorer {scorer!r} returned a non-finite score {f} at index {i}")
        out.append(f)
    return out
