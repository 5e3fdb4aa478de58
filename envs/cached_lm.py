"""Incremental decoding with a KV cache, shared by the policy and the reference model.

Layout (the env's observation layout): prompts are left-padded to width P, then one column per
generated token. Positions are explicit: a prompt token's position is its index among the row's
real tokens, and the t-th generated token of a row with prompt length ``n`` sits at ``n + t``.
Teacher forcing over the full ``(B, P+T)`` buffer with ``positions_from_mask`` reproduces exactly
the positions used here, so rollout and re-scored log-probs agree.
"""
from __future__ import annotations

import torch
from transformers import DynamicCache

__all__ = ["CachedLM", "positions_from_mask"]


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) position ids: running count of real tokens minus one (pads get 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)


class CachedLM:
    """Steps a causal LM one token per call through a ``DynamicCache``.

    ``prefill`` runs the prompts and returns the logits for the first action; every ``step(tokens)``
    appends one token per row and returns the logits for the next one. Nothing here reads a tensor
    value on the host.
    """

    def __init__(self, model: torch.nn.Module, output_hidden_states: bool = False):
        self.model = model
        self.output_hidden_states = output_hidden_states
        self.cache: DynamicCache | None = None
        self.attention_mask: torch.Tensor | None = None  # (B, P+t) long
        self.next_positions: torch.Tensor | None = None  # (B, 1) position of the next token
        self.last_hidden: torch.Tensor | None = None  # (B, H) hidden state behind the last logits

    def _forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids,
            attention_mask=self.attention_mask,
            position_ids=position_ids,
            past_key_values=self.cache,
            use_cache=True,
            output_hidden_states=self.output_hidden_states,
            logits_to_keep=1,
        )
        self.cache = out.past_key_values
        if self.output_hidden_states:
            self.last_hidden = out.hidden_states[-1][:, -1]  # (B, H)
        return out.logits[:, -1].float()  # (B, V)

    @torch.no_grad()
    def prefill(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
        """Run the (B, P) left-padded prompts; returns (B, V) logits for the first action."""
        self.cache = DynamicCache()
        self.attention_mask = prompt_mask.long()
        positions = positions_from_mask(prompt_mask)  # (B, P)
        self.next_positions = prompt_mask.long().sum(-1, keepdim=True)  # (B, 1)
        return self._forward(prompt_ids, positions)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append (B,) tokens; returns (B, V) logits for the next action."""
        if self.cache is None:
            raise RuntimeError("CachedLM.step called before prefill")
        ones = torch.ones_like(self.attention_mask[:, :1])
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)  # (B, P+t+1)
        positions = self.next_positions
        self.next_positions = positions + 1
        return self._forward(tokens[:, None], positions)
