"""Calibration-v0: an exactly solvable token MDP for checking agents against closed forms.

Vocabulary of 8 ids, the prompt is always ``[0]``, exactly 3 actions, reward
``R(y) = Σ_{t=1..3} 1[y_t = t]``. The reference policy is a tiny GPT-2 built from a fixed seed, so
its probability of each of the 8³ = 512 sequences can be enumerated, and so can the
KL-regularised optimum ``π*(y) ∝ π_ref(y)·exp(R(y)/β)``.
"""
from __future__ import annotations

import itertools

import torch

__all__ = [
    "VOCAB", "HORIZON", "SEED", "build_reference_model", "build_tokenizer", "calibration_reward",
    "CalibrationScorer", "all_sequences", "sequence_logprobs", "optimal_policy", "kl_divergence",
]

VOCAB = 8
HORIZON = 3
SEED = 20231
TARGET = torch.arange(1, HORIZON + 1)  # y = (1, 2, 3) scores 3


def build_reference_model() -> torch.nn.Module:
    """The tiny GPT-2 π_ref, identical on every call (weights drawn from a fixed seed)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=VOCAB, n_positions=HORIZON + 1, n_embd=16, n_layer=1, n_head=2,
        initializer_range=0.4, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = GPT2LMHeadModel(config)
    return model.eval()


def build_tokenizer():
    """A word-level tokenizer over the 8 ids, so texts read ``t0 … t7``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(VOCAB)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def calibration_reward(response_ids: torch.Tensor) -> torch.Tensor:
    """R(y) = Σ_t 1[y_t = t] for (N, 3) sequences; returns (N,) float."""
    target = TARGET.to(response_ids.device)
    return (response_ids[:, :HORIZON] == target).sum(-1).float()  # (N,)


class CalibrationScorer:
    """Device token scorer for the calibration reward (no host reads)."""

    name = "calibration"
    kind = "token"

    def __call__(self, prompt_ids, prompt_mask, response_ids, response_lengths) -> torch.Tensor:
        return calibration_reward(response_ids)


def all_sequences() -> torch.Tensor:
    """(512, 3) every response, in lexicographic order."""
    return torch.tensor(list(itertools.product(range(VOCAB), repeat=HORIZON)))


@torch.no_grad()
def sequence_logprobs(
    model: torch.nn.Module, sequences: torch.Tensor | None = None, temperature: float = 1.0
) -> torch.Tensor:
    """(N,) log π_τ(y) of each 3-token response after the prompt [0], by teacher forcing, where
    ``π_τ = softmax(logits / temperature)`` is the distribution a sampler at that temperature draws from."""
    sequences = all_sequences() if sequences is None else sequences
    device = next(model.parameters()).device
    sequences = sequences.to(device)
    input_ids = torch.cat([torch.zeros_like(sequences[:, :1]), sequences], dim=1)  # (N, 4)
    logits = model(input_ids=input_ids).logits[:, :-1].float() / temperature  # (N, 3, V)
    logprobs = torch.log_softmax(logits, -1).gather(-1, sequences[..., None])[..., 0]  # (N, 3)
    return logprobs.sum(-1)


def optimal_policy(ref_logprobs: torch.Tensor, beta: float) -> torch.Tensor:
    """log π*(y) ∝ log π_ref(y) + R(y)/β over all 512 sequences (normalised)."""
    rewards = calibration_reward(all_sequences()).to(ref_logprobs.device)
    return torch.log_softmax(ref_logprobs + rewards / beta, dim=0)


def kl_divergence(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Exact KL(p‖q) between two distributions given as log-probs over the same support."""
    return (logp.exp() * (logp - logq)).sum()
