"""Model and tokenizer loading: the embedded default, built-in toy models, hub names, local dirs.

Every path goes through ``AutoTokenizer`` / ``AutoModelForCausalLM.from_pretrained``, so the
embedded model loads exactly as a hub model would. Only a hub name the user typed can touch the
network; ``"embedded"`` and local directories load with ``local_files_only=True``.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

EMBEDDED_MODEL_DIR = Path(__file__).resolve().parent / "embedded_model"
"""Directory of the embedded default causal LM and tokenizer (Hugging Face format)."""

# Built-in models that are constructed rather than loaded (name -> builder(device) -> model).
_BUILTIN_MODELS: dict[str, Callable[[], torch.nn.Module]] = {}
_BUILTIN_TOKENIZERS: dict[str, Callable[[], Any]] = {}


def register_builtin(name: str, model: Callable[[], torch.nn.Module], tokenizer: Callable[[], Any]) -> None:
    """Register a model that is built in code (for example the Calibration env's tiny π_ref)."""
    _BUILTIN_MODELS[name] = model
    _BUILTIN_TOKENIZERS[name] = tokenizer


def resolve_model_name(name: str | os.PathLike) -> str:
    """Map ``"embedded"`` to its directory; leave hub names and local paths as they are."""
    name = os.fspath(name)
    if name == "embedded":
        if not (EMBEDDED_MODEL_DIR / "config.json").exists():
            raise FileNotFoundError(
                f"the embedded model is missing from {EMBEDDED_MODEL_DIR}; rebuild it with "
                "`python tools/pretrain.py` from a source checkout, or reinstall tokengym"
            )
        return str(EMBEDDED_MODEL_DIR)
    return name


def _is_local(name: str) -> bool:
    return Path(name).exists()


def _load_error(kind: str, name: str, err: Exception) -> OSError:
    hint = (
        "a local directory with a config.json, 'embedded', one of the built-in models "
        f"{sorted(_BUILTIN_MODELS)}, or a Hugging Face hub name (needs network)"
    )
    return OSError(f"could not load {kind} {name!r}: {err}. Expected {hint}.")


def load_tokenizer(name: str | os.PathLike = "embedded", *, trust_remote_code: bool = False):
    """Tokenizer for ``name`` (``"embedded"``, a built-in, a local dir or a hub name)."""
    name = os.fspath(name)
    if name in _BUILTIN_TOKENIZERS:
        return _BUILTIN_TOKENIZERS[name]()
    from transformers import AutoTokenizer

    path = resolve_model_name(name)
    try:
        tok = AutoTokenizer.from_pretrained(
            path, local_files_only=_is_local(path), trust_remote_code=trust_remote_code
        )
    except Exception as err:  # transformers raises OSError/ValueError/HF errors for bad names
        raise _load_error("tokenizer", name, err) from err
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    name: str | os.PathLike = "embedded",
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = torch.float32,
    trust_remote_code: bool = False,
) -> torch.nn.Module:
    """A causal LM in eval mode on ``device``: ``"embedded"``, a built-in, a local dir or a hub name."""
    name = os.fspath(name)
    if name in _BUILTIN_MODELS:
        model = _BUILTIN_MODELS[name]()
    else:
        from transformers import AutoModelForCausalLM

        path = resolve_model_name(name)
        try:
            model = AutoModelForCausalLM.from_pretrained(
                path,
                local_files_only=_is_local(path),
                trust_remote_code=trust_remote_code,
                dtype=dtype,
            )
        except Exception as err:
            raise _load_error("model", name, err) from err
    if dtype is not None:
        model = model.to(dtype)
    return model.to(device).eval()


def load_model_config(name: str | os.PathLike = "embedded", *, trust_remote_code: bool = False):
    """The model's config without its weights (enough for the env's spaces)."""
    name = os.fspath(name)
    if name in _BUILTIN_MODELS:
        return _BUILTIN_MODELS[name]().config
    from transformers import AutoConfig

    path = resolve_model_name(name)
    try:
        return AutoConfig.from_pretrained(path, local_files_only=_is_local(path), trust_remote_code=trust_remote_code)
    except Exception as err:
        raise _load_error("model config", name, err) from err


def vocab_width(model_or_config) -> int:
    """V: the logits width (``lm_head`` out-features), which may exceed ``len(tokenizer)``."""
    model = model_or_config
    if hasattr(model, "get_output_embeddings") and model.get_output_embeddings() is not None:
        return int(model.get_output_embeddings().weight.shape[0])
    config = getattr(model, "config", model)
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    return int(config.vocab_size)


def max_positions(config) -> int | None:
    """The model's context length, if its config declares one."""
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    for attr in ("n_positions", "max_position_embeddings", "n_ctx", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@contextlib.contextmanager
def hub_progress_bars(enabled: bool) -> Iterator[None]:
    """Inside, transformers' and huggingface_hub's own progress bars (loading and writing weights,
    downloads) are off unless ``enabled``; their previous state comes back on exit."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging

    were = logging.is_progress_bar_enabled(), not are_progress_bars_disabled()
    if not enabled:
        logging.disable_progress_bar()
        disable_progress_bars()
    try:
        yield
    finally:
        logging.enable_progress_bar() if were[0] else logging.disable_progress_bar()
        enable_progress_bars() if were[1] else disable_progress_bars()
