"""Incremental decoding with a KV cache, shared by the policy and the reference model.

Layout (the env's observation layout): prompts are left-padded to width P, then one column per
generated token. Positions are explicit: a prompt token's position is its index among the row's
real tokens, and the t-th generated token of a row with prompt length ``n`` sits at ``n + t``.
Teacher forcing over the full ``(B, P+T)`` buffer with ``positions_from_mask`` reproduces exactly
the positions used here, so rollout and re-scored log-probs agree.
"""
from __future__ import annotations

import inspect

import torch
import transformers
from transformers import DynamicCache

from tokengym.lm.lora import is_peft_model

__all__ = ["CachedLM", "cache_keyword", "positions_from_mask", "takes_prepared_mask"]

_PREPARED_MASK_MODELS = ("gpt2", "llama", "qwen2", "gpt_neox", "phi", "mistral")
"""Model types checked (tests/test_models.py) to use a ready 4D mask as is: full causal attention,
positions from ``position_ids``. Others get the 2D mask. Qwen2 and Mistral qualify only with
their sliding window off (see :func:`takes_prepared_mask`)."""


def takes_prepared_mask(model: torch.nn.Module) -> bool:
    """Can a one-token step hand ``model`` a ready (B, 1, 1, K) additive mask?

    transformers ≥ 5 passes a 4D mask through untouched, and eager and SDPA attention both add a
    float mask to the scores. Sliding-window or chunked attention would need their pattern built
    into it, so only the model types in ``_PREPARED_MASK_MODELS`` qualify.
    """
    config = getattr(model, "config", None)
    layer_types = getattr(config, "layer_types", None) or ()
    return (
        int(transformers.__version__.split(".")[0]) >= 5
        and getattr(config, "model_type", None) in _PREPARED_MASK_MODELS
        and getattr(config, "_attn_implementation", None) in ("eager", "sdpa")
        and getattr(config, "sliding_window", None) is None
        and all(kind == "full_attention" for kind in layer_types)
    )


def cache_keyword(model: torch.nn.Module) -> str:
    """The name ``model``'s forward takes its KV cache by, which is also the name of the output's
    field: ``cache`` from transformers 5.24, which deprecates ``past_key_values`` (to be removed in
    5.40); ``past_key_values`` before 5.24, and in remote code that still declares it. Read from the
    signature (of a PEFT model's base, whose forward it passes keywords to), not the version,
    because models move to the new name one by one."""
    forward = (model.get_base_model() if is_peft_model(model) else model).forward
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) position ids: running count of real tokens minus one (pads get 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)


class CachedLM:
    """Steps a causal LM one token per call through a ``DynamicCache``.

    ``prefill`` runs the prompts and returns the logits for the first action; every ``step(tokens)``
    appends one token per row and returns the logits for the next one.

    Host reads: given a 2D mask, transformers checks on the host whether it holds any padding
    before building the attention mask (a device→host sync on CUDA). ``prefill`` pays that once;
    ``step`` hands models that :func:`takes_prepared_mask` a ready 4D mask built from
    ``attention_mask`` instead, so a step reads nothing on the host. Writing 0 into
    ``attention_mask`` hides that column from later steps either way.
    """

    def __init__(self, model: torch.nn.Module, output_hidden_states: bool = False):
        self.model = model
        self.output_hidden_states = output_hidden_states
        self.cache: DynamicCache | None = None
        self.cache_keyword = cache_keyword(model)
        self.attention_mask: torch.Tensor | None = None  # (B, P+t) long
        self.prepared_mask = takes_prepared_mask(model)
        self.next_positions: torch.Tensor | None = None  # (B, 1) position of the next token
        self.last_hidden: torch.Tensor | None = None  # (B, H) hidden state behind the last logits

    def _forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            use_cache=True,
            output_hidden_states=self.output_hidden_states,
            logits_to_keep=1,
            **{self.cache_keyword: self.cache},
        )
        self.cache = out[self.cache_keyword]
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
        return self._forward(prompt_ids, positions, self.attention_mask)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append (B,) tokens; returns (B, V) logits for the next action."""
        if self.cache is None:
            raise RuntimeError("CachedLM.step called before prefill")
        ones = torch.ones_like(self.attention_mask[:, :1])
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)  # (B, P+t+1)
        positions = self.next_positions
        self.next_positions = positions + 1
        mask = self.attention_mask
        if self.prepared_mask:
            dtype = self.model.dtype
            blocked = (self.attention_mask[:, None, None, :] == 0).to(dtype)  # (B, 1, 1, P+t+1) 1 on pads
            mask = blocked.mul_(torch.finfo(dtype).min)  # (B, 1, 1, P+t+1) additive: 0, or dtype's min on pads
        return self._forward(tokens[:, None], positions, mask)
