"""Tiny random causal LMs of five architectures, built from configs and saved like a hub checkpoint."""
from __future__ import annotations

from pathlib import Path

import torch
import transformers

from conftest import WORDS, build_word_tokenizer

ARCHITECTURES = ["gpt2", "llama", "qwen2", "gpt_neox", "phi", "mistral"]
"""``config.model_type`` of each tiny architecture the model tests cover."""


def tiny_config(arch: str, vocab_size: int = len(WORDS)):
    """A 2-layer, hidden-32 config of ``arch`` (ids 0 = eos = pad, as the word tokenizer has)."""
    ids = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    decoder = dict(
        num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4, max_position_embeddings=64
    )
    if arch == "gpt2":
        return transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, **ids)
    if arch == "llama":
        return transformers.LlamaConfig(num_key_value_heads=2, **decoder, **ids)
    if arch == "qwen2":
        return transformers.Qwen2Config(num_key_value_heads=2, **decoder, **ids)
    if arch == "gpt_neox":
        return transformers.GPTNeoXConfig(**decoder, **ids)
    if arch == "phi":
        return transformers.PhiConfig(**decoder, **ids)
    if arch == "mistral":
        return transformers.MistralConfig(num_key_value_heads=2, **decoder, **ids)
    raise ValueError(arch)


def build_tiny(arch: str, seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transformers.AutoModelForCausalLM.from_config(tiny_config(arch)).eval()


def save_tiny(directory: Path, arch: str, seed: int = 0) -> Path:
    """Save a tiny ``arch`` model and the 32-word tokenizer to ``directory``, as a hub checkpoint is."""
    build_tiny(arch, seed).save_pretrained(directory)
    build_word_tokenizer().save_pretrained(directory)
    return directory


class LengthScore:
    """A tiny holistic text scorer: the number of words in the completion."""

    def __call__(self, prompts, completions, **kwargs):
        return [float(len(c.split())) for c in completions]
