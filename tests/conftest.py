"""Shared fixtures: tiny models and tokenizers built from configs (no downloads, no network); and
the warnings policy: a DeprecationWarning or FutureWarning that our own call causes fails the test."""
from __future__ import annotations

import contextlib
import os
import re
import sys
import warnings
from pathlib import Path

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


def perturbed(model: torch.nn.Module, scale: float = 0.3, seed: int = 1) -> torch.nn.Module:
    """A copy of ``model`` with seeded Gaussian noise of std ``scale`` added to every weight: a
    policy that differs from π_ref by a known, reproducible amount."""
    import copy

    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return model


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


# ---------------------------------------------------------------------------------------------
# Deprecations caused by our own calls are errors
# ---------------------------------------------------------------------------------------------
# setup.cfg lets every DeprecationWarning and FutureWarning through ("always"); this hook decides.
# A module filter (error::FutureWarning:tokengym) cannot: it matches the module a warning is
# attributed to by `stacklevel`, and transformers' deprecate_kwarg points at its own wrapper, not at
# our call. So the stack is walked instead: from the frame that issued the warning, past the
# issuing library's own frames and call plumbing, to the first other frame. If that is ours (this
# repository, outside any site-packages) our call caused the warning, and it is raised as an error
# where it was issued; if it is another library, that library's call caused it.

ROOT = Path(__file__).resolve().parent.parent
DEPRECATIONS = (DeprecationWarning, FutureWarning)
PLUMBING = {"warnings", "functools", "contextlib", "torch.nn.modules.module", "torch.utils._contextlib"}
"""Modules that only forward a call (nn.Module.__call__, decorators): not who made it."""
THIRD_PARTY = [
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated",
     "peft 0.21's PeftModel.__init__ reads it from the transformers 5.x model"),
]
"""Known deprecations that one library's call into another causes: dropped, not recorded. Checked
first, so a false attribution (a C-level warning whose issuing frame is a library's Python code)
can be listed here too."""


def _is_ours(frame) -> bool:
    path = Path(frame.f_code.co_filename)
    return path.is_relative_to(ROOT) and "site-packages" not in path.parts


def _module(frame) -> str:
    return frame.f_globals.get("__name__", "")


def caused_by_our_call(frame) -> bool:
    """``frame``: where the warning machinery was entered. Is the first caller outside the issuing
    library (and plumbing) our code?"""
    while frame is not None and _module(frame) in PLUMBING:
        frame = frame.f_back  # up to the frame that called warnings.warn (or the C function that warned)
    if frame is None:
        return False
    issuer = _module(frame).split(".")[0]
    while frame is not None:
        if _is_ours(frame):
            return True
        if _module(frame) not in PLUMBING and _module(frame).split(".")[0] != issuer:
            return False
        frame = frame.f_back
    return False


@contextlib.contextmanager
def deprecations_from_our_calls_fail():
    record = warnings._showwarnmsg_impl  # pytest's recorder inside its catch_warnings

    def show(message: warnings.WarningMessage) -> None:
        if issubclass(message.category, DEPRECATIONS):
            if any(issubclass(message.category, category) and re.search(pattern, str(message.message))
                   for category, pattern, _ in THIRD_PARTY):
                return
            if caused_by_our_call(sys._getframe(1)):
                raise message.message
        record(message)

    warnings._showwarnmsg_impl = show
    try:
        yield
    finally:
        warnings._showwarnmsg_impl = record


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item):
    with deprecations_from_our_calls_fail():  # inside pytest's own catch_warnings for the item
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_collection(session):
    with deprecations_from_our_calls_fail():  # imports of our modules
        return (yield)
