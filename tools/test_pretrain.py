"""The build script of the embedded model (``tools/pretrain.py``), in quick mode: it learns, its
output loads with plain transformers, it replaces its output atomically, and its command line."""
from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch

import pretrain as pretrain_mod  # tools/ is on sys.path: pytest puts a test file's folder there
from tokengym.lm.loading import EMBEDDED_MODEL_DIR

SUBJECTS = ["The cat", "My brother", "The old farmer", "A young girl", "The teacher", "Our neighbour",
            "The little dog", "His mother", "The doctor", "A tired student", "The king", "Her friend"]
VERBS = ["walked to", "looked at", "talked about", "thought about", "ran past", "cleaned",
         "painted", "found", "visited", "wrote a letter about", "laughed at", "remembered"]
OBJECTS = ["the garden", "the red house", "a quiet river", "the busy market", "an empty room",
           "the big city", "a small boat", "the school", "the green hill", "the kitchen table",
           "the dark forest", "a sunny beach"]
ENDINGS = ["in the morning", "after dinner", "with a smile", "before the rain", "every day",
           "on Sunday", "for a long time", "without a word", "at night", "with great care"]


def _write_corpus(path: Path, n: int = 400, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(ENDINGS)}."
        if rng.random() < 0.3:
            s += f" Then {rng.choice(SUBJECTS).lower()} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
        lines.append(s)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain")
    corpus = _write_corpus(tmp / "corpus.txt")
    out = tmp / "model"
    metrics = pretrain_mod.pretrain(out, [corpus], quick=True, progress=False, seed=0)
    return out, metrics


def test_quick_pretrain_learns(quick_run):
    _, metrics = quick_run
    assert metrics["loss_start"] > metrics["loss_end"] + 1.0, metrics
    assert math.isfinite(metrics["heldout_perplexity"])
    # This corpus is very repetitive; even a few dozen steps beat a uniform guess by far.
    assert metrics["heldout_perplexity"] < metrics["vocab_size"] / 4
    assert metrics["n_params"] > 0 and metrics["bytes_on_disk"] > 0


def test_quick_output_loads_with_plain_transformers(quick_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, metrics = quick_run
    assert not list(out.parent.glob(f".{out.name}.tmp-*")), "temp dir left behind"
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert next(model.parameters()).dtype == torch.float32
    assert (out / "model.safetensors").is_file()
    assert model.config.vocab_size == len(tok) == metrics["vocab_size"]
    assert tok.eos_token == tok.pad_token == tok.bos_token == "<|endoftext|>"
    assert model.config.eos_token_id == tok.eos_token_id == model.config.pad_token_id
    for text in ["The cat walked to the garden.", "Hello,  World!\nA zebra 42 ünïcode"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    # the saved model is usable: logits have the vocabulary width
    ids = tok("The old farmer", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert model(input_ids=ids).logits.shape[-1] == len(tok)


def test_pretrain_rerun_replaces_atomically(tmp_path):
    corpus = _write_corpus(tmp_path / "c.txt", n=200, seed=1)
    out = tmp_path / "m"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    pretrain_mod.pretrain(out, [corpus], quick=True, steps=3, progress=False)
    assert not (out / "stale.txt").exists()
    assert (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt", "m"]


def test_missing_default_corpus_names_debian_packages(monkeypatch, tmp_path):
    monkeypatch.setattr(pretrain_mod, "default_corpus_files", lambda: [tmp_path / "no" / "such" / "fortunes"])
    with pytest.raises(FileNotFoundError) as err:
        pretrain_mod.pretrain(tmp_path / "out", None, quick=True, progress=False)
    msg = str(err.value)
    for pkg in ("fortunes", "fortunes-min", "wordnet-base"):
        assert pkg in msg
    assert "apt-get install" in msg
    assert not (tmp_path / "out").exists()


def test_command_line_defaults_and_flags():
    import argparse

    parser = argparse.ArgumentParser()
    pretrain_mod._add_arguments(parser)
    args = parser.parse_args(["--quick", "--steps", "5", "--seed", "3", "--out", "/tmp/x"])
    assert args.quick and args.steps == 5 and args.seed == 3 and str(args.out) == "/tmp/x"
    defaults = parser.parse_args([])
    assert Path(defaults.out) == EMBEDDED_MODEL_DIR and defaults.corpus is None
