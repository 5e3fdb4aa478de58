"""Teacher-forced scoring of the env's ``(B, P+T)`` buffer, shared by the policy and the reference.

Layout: prompts left-padded into columns ``[0, P)``, responses right-padded in ``[P, P+T)``.
Positions come from the mask (:func:`~tokengym.lm.cached_lm.positions_from_mask`), exactly as the
cached one-token steps use them, so teacher-forced and rollout log-probs agree.
"""
from __future__ import annotations

import torch

from tokengym.lm.cached_lm import positions_from_mask

__all__ = ["forward_responses", "gather_logprobs"]


def forward_responses(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_width: int,
    *,
    output_hidden_states: bool = False,
    logits: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(logits, hidden)`` for the T response columns of a (B, P+T) buffer.

    ``logits[:, t]`` (B, T, V) is the distribution that chose the token in column ``P+t`` (it is
    read at column ``P+t−1``); ``hidden`` is the (B, P+T, H) last hidden state, or None.
    ``logits=False`` (a value trunk that only needs ``hidden``) skips the LM head but for one column.
    """
    T = input_ids.shape[1] - prompt_width if logits else 0
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask.long(),
        position_ids=positions_from_mask(attention_mask),  # (B, P+T)
        output_hidden_states=output_hidden_states,
        logits_to_keep=T + 1,  # columns P-1 .. P+T-1; the last one predicts past the buffer
        use_cache=False,  # one pass: a KV cache would only hold memory
    )
    hidden = out.hidden_states[-1] if output_hidden_states else None  # (B, P+T, H)
    return (out.logits[:, :-1] if logits else None), hidden  # (B, T, V)


def gather_logprobs(logprobs_all: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(...,) log-prob of each token in ``tokens`` (...) from (..., V) log-probs."""
    return logprobs_all.gather(-1, tokens[..., None]).squeeze(-1)
