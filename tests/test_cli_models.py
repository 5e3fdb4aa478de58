"""Bring your own model, as a user does it: `tokengym train --model DIR` for each architecture, then
transformers alone loads and generates with `policy/`; `--lora` then peft alone; `--dtype`;
`--prompts FILE` and `--reward-model DIR --reward-label` on Custom-v0; `tokengym export --merge`."""
from __future__ import annotations

import json

import pytest
import torch
from tiny_models import ARCHITECTURES, save_tiny
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from tokengym.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

# The moving-average baseline: with batches of 2, leave-one-out is one group of 2 whose advantage is 0
# whenever both samples score alike, and these 2-iteration runs must move the weights.
FAST = ["--agent", "reinforce", "--baseline", "moving-average", "--episodes", "4", "--batch-size", "2", "--max-new-tokens", "3", "--quiet"]


def train(argv: list[str]) -> None:
    assert main(["train", *argv, *FAST]) == 0


def prompts_file(tmp_path) -> str:
    """Sentiment-v0 prompts in the tiny models' 32-word vocabulary, one per line."""
    path = tmp_path / "prompts.txt"
    path.write_text("the movie was\ni love this place\nthe food is\n")
    return str(path)


def generates(directory, tokenizer_source) -> None:
    """transformers alone loads ``directory`` and generates; its tokenizer is the source's, exactly."""
    model = AutoModelForCausalLM.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    expected = AutoTokenizer.from_pretrained(tokenizer_source)
    sentence = "the movie was good"
    ids = expected(sentence)["input_ids"]
    assert len(tokenizer) == len(expected) > 1 and tokenizer(sentence)["input_ids"] == ids
    assert tokenizer.decode(ids) == expected.decode(ids) != ""
    text = pipeline("text-generation", model=model, tokenizer=tokenizer)(sentence, max_new_tokens=3, do_sample=False)
    assert text[0]["generated_text"].startswith(sentence) and len(text[0]["generated_text"]) > len(sentence)


def save_reward_model(directory, num_labels: int = 1):
    """A tiny random sequence classifier (a reward model) with the 32-word tokenizer."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from conftest import build_word_tokenizer

    labels = {} if num_labels == 1 else {"id2label": {0: "NEGATIVE", 1: "POSITIVE"}, "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}
    torch.manual_seed(0)
    GPT2ForSequenceClassification(GPT2Config(
        vocab_size=32, n_positions=64, n_embd=16, n_layer=1, n_head=2, num_labels=num_labels, pad_token_id=0, **labels,
    )).save_pretrained(directory)
    build_word_tokenizer().save_pretrained(directory)
    return str(directory)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_train_any_local_causal_lm_and_transformers_alone_loads_the_policy(tmp_path, arch):
    model_dir = save_tiny(tmp_path / arch, arch)
    out = tmp_path / "run"
    train(["--env", "tokengym/Custom-v0", "--model", str(model_dir), "--prompts", prompts_file(tmp_path),
           "--reward-model", save_reward_model(tmp_path / "rm"), "--out", str(out)])
    assert json.loads((out / "run.json").read_text())["settings"]["model"] == str(model_dir)
    for sub in ("policy", "reference"):
        generates(out / sub, model_dir)
    trained = AutoModelForCausalLM.from_pretrained(out / "policy").state_dict()
    base = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    assert any(not torch.equal(trained[k], base[k]) for k in base)  # it trained


def test_one_progress_bar_transformers_bars_off_quiet_is_quiet_and_restored(tmp_path, capfd):
    from transformers.utils import logging

    model_dir = save_tiny(tmp_path / "gpt2", "gpt2")
    argv = ["--model", str(model_dir), "--prompts", prompts_file(tmp_path)]
    capfd.readouterr()
    assert main(["train", *argv, *[a for a in FAST if a != "--quiet"], "--out", str(tmp_path / "loud")]) == 0
    loud = capfd.readouterr()
    assert "reinforce tokengym/Sentiment-v0: 100%" in loud.err  # tokengym's own bar
    assert "Loading weights" not in loud.err and "Writing model shards" not in loud.err  # transformers' would break it
    assert "mean reward" in loud.out
    train([*argv, "--out", str(tmp_path / "quiet")])
    quiet = capfd.readouterr()
    assert quiet.out == "" and quiet.err == "", (quiet.out[-300:], quiet.err[-300:])
    assert logging.is_progress_bar_enabled()  # an in-process caller gets its bars back


def test_lora_trains_adapters_only_and_peft_alone_loads_it_and_export_merges(tmp_path, capsys):
    from peft import AutoPeftModelForCausalLM

    model_dir = save_tiny(tmp_path / "llama", "llama")
    out = tmp_path / "run"
    train(["--model", str(model_dir), "--prompts", prompts_file(tmp_path), "--lora", "4", "--out", str(out)])
    assert (out / "policy" / "adapter_config.json").is_file() and not (out / "policy" / "model.safetensors").exists()
    peft_model = AutoPeftModelForCausalLM.from_pretrained(out / "policy")
    tokenizer = AutoTokenizer.from_pretrained(out / "policy")
    ids = tokenizer("the movie was", return_tensors="pt")["input_ids"]
    assert peft_model.generate(ids, max_new_tokens=2, do_sample=False).shape == (1, ids.shape[1] + 2)
    base = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    reference = AutoModelForCausalLM.from_pretrained(out / "reference").state_dict()
    assert all(torch.equal(reference[k], base[k]) for k in base)  # the base never trained

    capsys.readouterr()
    assert main(["export", str(out), "--merge", "--out", str(tmp_path / "merged")]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'merged'}: the policy's merged weights and its tokenizer")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, peft_model(ids).logits, atol=1e-5, rtol=1e-5)


def test_bfloat16_autocast_run_keeps_float32_weights(tmp_path):
    model_dir = save_tiny(tmp_path / "gpt2", "gpt2")
    train(["--model", str(model_dir), "--prompts", prompts_file(tmp_path), "--dtype", "bfloat16",
           "--out", str(tmp_path / "run")])
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "policy")
    assert {p.dtype for p in saved.parameters()} == {torch.float32}


def test_custom_env_with_a_prompts_file_and_a_reward_model_label(tmp_path):
    rm_dir = save_reward_model(tmp_path / "rm", num_labels=2)
    model_dir = save_tiny(tmp_path / "qwen2", "qwen2")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "the movie was", "id": 0}\n{"prompt": "i love this", "id": 1}\n')
    out = tmp_path / "run"
    argv = ["--env", "tokengym/Custom-v0", "--model", str(model_dir), "--prompts", str(prompts),
            "--reward-model", rm_dir, "--reward-label", "POSITIVE", "--out", str(out)]
    train(argv)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(key.startswith("reward/") for key in metrics[0] if key.startswith("reward/"))
    assert any(key.startswith("reward/rm:") for key in metrics[0])
    # a classifier with two labels and no --reward-label is refused with the labels named
    assert main(["train", *argv[:-4], "--out", str(tmp_path / "run2"), *FAST]) == 2
