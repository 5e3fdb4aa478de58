"""Reward-model training: utilities, data loading, a tiny Bradley–Terry run."""
from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
import torch.nn.functional as F

from tokengym import reward_model as rm_command
from tokengym.rewards import reward_model as rm
from tokengym.rewards.reward_model import load_pairs_jsonl, sentiment_sentence, synthetic_pairs, train_reward_model
from tokengym.rewards.classifier import SequenceClassifierScorer
from tokengym.rewards.scorers import VaderSentiment
from tokengym.rewards.utilities import Log, LogSigmoid, NegPower, Power, PromptAware, make_utility, preference_loss


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# Utilities and the loss
# ---------------------------------------------------------------------------------------------


def test_utility_values():
    x = torch.tensor([0.25, 0.5, 1.0])
    torch.testing.assert_close(LogSigmoid()(x), F.logsigmoid(x))
    torch.testing.assert_close(LogSigmoid(2.0)(x), F.logsigmoid(x / 2))
    torch.testing.assert_close(Power(0.5)(x), torch.tensor([0.5, math.sqrt(0.5), 1.0]))
    torch.testing.assert_close(NegPower(1.0)(x), torch.tensor([-4.0, -2.0, -1.0]))
    torch.testing.assert_close(Log()(x), x.log())


@pytest.mark.parametrize("u", [Power(0.5), Power(1.0), NegPower(0.5), NegPower(1.0), Log(), LogSigmoid(0.5)])
def test_utilities_are_increasing_concave_and_continuous_on_minus_one_to_one(u):
    x = torch.linspace(-1, 1, 2001, dtype=torch.float64)
    y = u(x)
    assert torch.isfinite(y).all()
    slopes = y.diff() / x.diff()
    assert (slopes > 0).all()  # increasing
    assert (slopes.diff() <= 1e-6 * slopes.abs().max()).all()  # concave (tangent continuation at eps)
    eps = getattr(u, "eps", 0.0)
    around = u(torch.tensor([eps - 1e-9, eps + 1e-9], dtype=torch.float64))
    assert abs(around[1] - around[0]) < 1e-4  # continuous where the tangent takes over


def test_make_utility_names():
    assert make_utility("log-sigmoid") == LogSigmoid(1.0)
    assert make_utility("log-sigmoid:2") == LogSigmoid(2.0)
    assert make_utility("power:0.5") == Power(0.5)
    assert make_utility("neg-power:1") == NegPower(1.0)
    assert make_utility("log") == Log()
    with pytest.raises(ValueError, match="log-sigmoid"):
        make_utility("hinge")
    with pytest.raises(ValueError, match="gamma"):
        make_utility("power:2")


def test_preference_loss_is_bradley_terry_with_margin_and_centering():
    chosen, rejected = torch.tensor([1.0, 0.5, -2.0]), torch.tensor([0.0, 1.5, -1.0])
    bt = -F.logsigmoid(chosen - rejected).mean()
    torch.testing.assert_close(preference_loss(chosen, rejected), bt)
    torch.testing.assert_close(preference_loss(chosen, rejected, margin=0.5), -F.logsigmoid(chosen - rejected - 0.5).mean())
    centered = preference_loss(chosen, rejected, center_coef=0.1)
    torch.testing.assert_close(centered, bt + 0.1 * ((chosen + rejected) ** 2).mean())
    bounded = preference_loss(chosen, rejected, Power(1.0))
    torch.testing.assert_close(bounded, -(torch.sigmoid(chosen) - torch.sigmoid(rejected)).clamp(min=0.02).mean()
                               - ((torch.sigmoid(chosen) - torch.sigmoid(rejected)).clamp(max=0.02) - 0.02).mean())


def test_prompt_aware_loss_applies_each_prompts_utility():
    chosen, rejected = torch.tensor([1.0, 0.5, 2.0, 0.0]), torch.tensor([0.0, -1.5, -1.0, -0.3])
    prompts = ["open", "closed", "open", "closed"]
    aware = PromptAware(lambda p: NegPower(1.0) if p == "open" else Power(1.0))
    got = preference_loss(chosen, rejected, aware, prompts)
    d = torch.sigmoid(chosen) - torch.sigmoid(rejected)
    expected = -(NegPower(1.0)(d[[0, 2]]).sum() + Power(1.0)(d[[1, 3]]).sum()) / 4
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="prompt"):
        preference_loss(chosen, rejected, aware)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def test_load_pairs_jsonl(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b", "id": 3}\n\n{"prompt": "", "chosen": "c", "rejected": "d"}\n')
    assert load_pairs_jsonl(path) == [{"prompt": "p", "chosen": "a", "rejected": "b", "id": 3},
                                      {"prompt": "", "chosen": "c", "rejected": "d"}]
    bad = {
        '{"prompt": "p", "chosen": "a"}': r":2: missing field 'rejected'",
        '{"prompt": "p", "chosen": 1, "rejected": "b"}': r":2: field 'chosen' must be a string",
        '{"prompt": "p", "chosen": "a", "rejected": "b"': r":2: invalid JSON",
        '["p", "a", "b"]': r":2: expected a JSON object",
    }
    for line, message in bad.items():
        path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n' + line + "\n")
        with pytest.raises(ValueError, match=message):
            load_pairs_jsonl(path)


def test_synthetic_pairs_are_ordered_by_the_scorer():
    vader = VaderSentiment()
    pairs = synthetic_pairs(sentiment_sentence, vader, 50, prompts=["Review:", "Say:"], min_gap=0.3, seed=1)
    assert len(pairs) == 50 and pairs == synthetic_pairs(sentiment_sentence, vader, 50, prompts=["Review:", "Say:"], min_gap=0.3, seed=1)
    for pair in pairs:
        chosen, rejected = vader([pair["prompt"]] * 2, [pair["chosen"], pair["rejected"]])
        assert chosen > rejected + 0.3
    fixed = synthetic_pairs(["good", "bad", "awful"], vader, 5)
    assert all(p["chosen"] != p["rejected"] for p in fixed)
    with pytest.raises(ValueError, match="could not find"):
        synthetic_pairs(["same", "same"], vader, 3)


# ---------------------------------------------------------------------------------------------
# Training a tiny GPT-2 reward model
# ---------------------------------------------------------------------------------------------


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for s in rm._SUBJECTS for w in s.split()}
                   | set(rm._VERBS + rm._POSITIVE + rm._NEGATIVE + rm._NEUTRAL + ["and", "review:"]))
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]"] + words)}
    wl = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    wl.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=wl, pad_token="[PAD]", unk_token="[UNK]")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny causal LM directory with its tokenizer (what `--base` points at)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("base")
    tok = word_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=32, n_layer=1, n_head=2, bos_token_id=None,
                        eos_token_id=None)
    GPT2LMHeadModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_bradley_terry_reward_model_reaches_90_percent_held_out(base_dir, tmp_path):
    pairs = synthetic_pairs(sentiment_sentence, VaderSentiment(), 500, prompts=["review:"], min_gap=0.3, seed=0)
    out = tmp_path / "rm"
    metrics = train_reward_model(pairs, base_dir, word_tokenizer(), epochs=3, lr=3e-3, batch_size=16, val_fraction=0.2,
                                 out_dir=out, progress=False)
    assert metrics["n_val"] == 100 and metrics["n_train"] == 400
    assert metrics["val_accuracy"] >= 0.9, metrics
    assert metrics["train_loss_per_epoch"][-1] < metrics["train_loss_per_epoch"][0]
    # saved atomically, loadable by the scorer with transformers alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rm"]
    assert json.loads((out / "training_metrics.json").read_text())["val_accuracy"] == metrics["val_accuracy"]
    scorer = SequenceClassifierScorer(out)
    good, bad = scorer(["review:"] * 2, [" the movie was wonderful and lovely", " the movie was awful and boring"])
    assert good > bad
    # scorer and trainer encode identically: same scores as the in-memory model
    with torch.no_grad():
        direct = rm._scores(metrics["model"], word_tokenizer(), ["review: the movie was wonderful and lovely"], 32, "cpu")
    assert direct.item() == pytest.approx(good, abs=1e-5)


def test_retraining_replaces_the_output_dir_and_bad_arguments_raise(base_dir, tmp_path):
    pairs = synthetic_pairs(sentiment_sentence, VaderSentiment(), 20, min_gap=0.3, seed=2)
    out = tmp_path / "rm"
    for utility in ("log-sigmoid", "neg-power:1"):
        metrics = train_reward_model(pairs, base_dir, epochs=1, lr=1e-3, utility=utility, center_coef=0.01,
                                     margin=0.1, val_fraction=0.25, out_dir=out, progress=False)
        assert json.loads((out / "training_metrics.json").read_text())["utility"] == metrics["utility"]
    assert "NegPower" in metrics["utility"] and sorted(p.name for p in tmp_path.iterdir()) == ["rm"]
    with pytest.raises(ValueError, match="val_fraction"):
        train_reward_model(pairs, base_dir, val_fraction=1.0, progress=False)
    from transformers import AutoModelForCausalLM

    with pytest.raises(ValueError, match="num_labels=1"):
        train_reward_model(pairs, AutoModelForCausalLM.from_pretrained(base_dir), word_tokenizer(), progress=False)


def test_cli_rm_train(base_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="tokengym")
    rm_command.add_cli(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli_rm"
    args = parser.parse_args(["rm", "train", "--synthetic", "40", "--base", str(base_dir), "--out", str(out),
                              "--epochs", "1", "--lr", "1e-3", "--utility", "log-sigmoid"])
    assert args.func(args) == 0
    assert (out / "config.json").exists() and "val_accuracy" in json.loads(capsys.readouterr().out)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "", "chosen": "good", "rejected": "bad"}\n' * 4)
    args = parser.parse_args(["rm", "train", "--pairs", str(pairs), "--base", str(base_dir), "--out", str(out)])
    assert args.pairs == str(pairs) and args.func is rm_command._cli_train
    with pytest.raises(SystemExit):
        parser.parse_args(["rm", "train", "--pairs", str(pairs), "--synthetic", "3", "--out", str(out)])
