"""Shared fixtures: tiny models and tokenizers built from configs (no downloads, no network)."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

WORDS = [
    "<eos>", "the", "a", "movie", "food", "was", "is", "good", "bad", "great", "awful", "i",
    "love", "hate", "it", "this", "and", "but", "very", "not", "nice", ".", ",", "!", "we",
    "they", "ate", "saw", "place", "day", "happy", "sad",
]


def build_word_tokenizer(words=WORDS):
    """A word-level fast tokenizer over ``words``; ``<eos>`` (id 0) is eos and pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<eos>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>")


def build_tiny_lm(vocab_size=len(WORDS), n_positions=64, seed=0, n_layer=2, n_embd=32):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=2,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread avoids contention with other processes on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def word_tokenizer():
    return build_word_tokenizer()


@pytest.fixture
def tiny_lm():
    return build_tiny_lm()


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
