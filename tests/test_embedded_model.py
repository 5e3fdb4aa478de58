"""The embedded default model shipped in ``lm/embedded_model/``: small safetensors files, consistent
special-token ids, and a held-out perplexity far below a uniform guess."""
from __future__ import annotations

import json
import math

import pytest
import torch

from tokengym.lm.loading import EMBEDDED_MODEL_DIR, load_causal_lm, load_tokenizer

HELDOUT_SENTENCES = [
    "The weather was cold and wet, so we stayed at home and read books all afternoon.",
    "She opened the door slowly and looked into the dark room.",
    "He was not sure what to say, so he said nothing at all.",
    "Many people believe that money can buy happiness, but they are often wrong.",
    "The children played in the garden until their mother called them in for dinner.",
    "If you want to learn something well, you should teach it to someone else.",
]


@pytest.fixture(scope="module")
def embedded():
    import os

    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        model = load_causal_lm("embedded")
        tok = load_tokenizer("embedded")
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old
    return model, tok


def test_embedded_files_small_and_safetensors():
    files = [p for p in EMBEDDED_MODEL_DIR.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    assert sum(p.stat().st_size for p in files) <= 20 * 1024 * 1024
    from safetensors import safe_open

    with safe_open(str(EMBEDDED_MODEL_DIR / "model.safetensors"), framework="pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {"F32"}


def test_embedded_model_config_and_ids(embedded):
    model, tok = embedded
    V = model.get_output_embeddings().weight.shape[0]
    cfg = model.config
    assert next(model.parameters()).dtype == torch.float32
    for name in ("eos_token_id", "pad_token_id", "bos_token_id"):
        value = getattr(cfg, name)
        assert isinstance(value, int) and 0 <= value < V
    assert cfg.eos_token_id == tok.eos_token_id and cfg.pad_token_id == tok.pad_token_id
    assert tok.convert_ids_to_tokens(cfg.eos_token_id) == "<|endoftext|>"
    assert len(tok) <= V
    assert cfg.resid_pdrop == cfg.embd_pdrop == cfg.attn_pdrop == 0.0
    info = json.loads((EMBEDDED_MODEL_DIR / "training_info.json").read_text())
    assert info["n_params"] == sum(p.numel() for p in model.parameters())


def test_embedded_model_perplexity_far_below_uniform(embedded):
    model, tok = embedded
    V = model.get_output_embeddings().weight.shape[0]
    nll, n = 0.0, 0
    with torch.no_grad():
        for text in HELDOUT_SENTENCES:
            ids = torch.tensor([[tok.eos_token_id] + tok(text, add_special_tokens=False)["input_ids"]])
            logits = model(input_ids=ids).logits[0, :-1]
            nll += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            n += ids.shape[1] - 1
    ppl = math.exp(nll / n)
    assert ppl < V / 20, ppl
