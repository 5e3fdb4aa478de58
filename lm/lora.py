"""LoRA adapters through PEFT: the config, default target modules per architecture, and the base
model's weights without the adapters.

A LoRA policy is a ``peft.PeftModel`` around the base causal LM. Only the adapters train, and π_ref
is the same module with the adapters disabled (:meth:`tokengym.lm.reference.Reference.adapters_off`),
so the base weights are in memory once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["LoRAConfig", "apply_lora", "base_state_dict", "default_target_modules", "is_peft_model"]

DEFAULT_TARGET_MODULES: dict[str, tuple[str, ...]] = {
    "gpt2": ("c_attn", "c_proj"),
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "mistral": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "gpt_neox": ("query_key_value",),
    "phi": ("q_proj", "k_proj", "v_proj", "dense"),
}
"""Attention projections adapted by default, by ``config.model_type``. GPT-2's ``c_proj`` names
both the attention output and the MLP output projection; both are adapted."""

_FAN_IN_FAN_OUT = ("gpt2",)
"""Model types whose linear layers are ``Conv1D`` (weights stored transposed)."""


@dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adapters ``W + (alpha / rank) · B A`` on the target modules (Hu et al. 2021)."""

    rank: int = 8
    """r, the rank of each adapter; integer >= 1."""
    alpha: float = 16.0
    """Scale numerator: the update is multiplied by ``alpha / rank``; > 0."""
    dropout: float = 0.0
    """Dropout on the adapter input, in [0, 1). Keep 0 for RL: a PPO ratio needs a deterministic π."""
    target_modules: tuple[str, ...] | None = None
    """Module names to adapt; None picks :data:`DEFAULT_TARGET_MODULES` for the model type, else peft's own."""

    def __post_init__(self):
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRA rank must be an integer >= 1, got {self.rank!r}")
        if isinstance(self.alpha, bool) or not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < math.inf):
            raise ValueError(f"LoRA alpha must be a finite number > 0, got {self.alpha!r}")
        if isinstance(self.dropout, bool) or not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if self.target_modules is not None:
            if isinstance(self.target_modules, str) or not self.target_modules:
                raise ValueError(f"LoRA target_modules must be a non-empty list of module names, got {self.target_modules!r}")
            object.__setattr__(self, "target_modules", tuple(self.target_modules))


def is_peft_model(model: torch.nn.Module) -> bool:
    """Is ``model`` a ``peft.PeftModel`` (without importing peft when it is not)?"""
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter") and hasattr(model, "get_base_model")


def default_target_modules(model: torch.nn.Module) -> tuple[str, ...]:
    """The modules to adapt in ``model``: ours for known types, else peft's mapping; a clear error if neither."""
    model_type = getattr(model.config, "model_type", None)
    if model_type in DEFAULT_TARGET_MODULES:
        return DEFAULT_TARGET_MODULES[model_type]
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    if model_type in PEFT_DEFAULTS:
        return tuple(PEFT_DEFAULTS[model_type])
    raise ValueError(
        f"no default LoRA target modules for model type {model_type!r}; pass "
        "LoRAConfig(target_modules=[...]) naming its attention projections (for example 'q_proj', 'v_proj')"
    )


def apply_lora(model: torch.nn.Module, config: LoRAConfig) -> torch.nn.Module:
    """``model`` wrapped as a ``peft.PeftModel`` with fresh adapters; only the adapters train.

    The adapters start at ``B = 0``, so the wrapped model computes exactly what ``model`` does.
    """
    from peft import LoraConfig, get_peft_model

    targets = config.target_modules or default_target_modules(model)
    peft_config = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(targets),
        fan_in_fan_out=getattr(model.config, "model_type", None) in _FAN_IN_FAN_OUT,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_config).eval()


def base_state_dict(peft_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base model's own state dict, adapters left out: the weights π_ref uses.

    PEFT wraps each adapted layer, renaming ``<m>.weight`` to ``<m>.base_layer.weight`` and adding
    ``lora_*`` tensors; this undoes both so ``save_pretrained(state_dict=...)`` writes a plain model.
    """
    base = peft_model.get_base_model()
    state = {}
    for key, value in base.state_dict().items():
        if ".lora_" in key:
            continue
        state[key.replace(".base_layer.", ".")] = value
    return state
