"""Scorers: validation errors name the scorer; shipped scorers give the expected values."""
from __future__ import annotations

import math

import pytest
import torch

from tokengym.rewards.base import StepBatch
from tokengym.rewards.holistic import Holistic
from tokengym.rewards.classifier import SequenceClassifierScorer
from tokengym.rewards.scorers import (
    ExactMatch,
    KeywordInclusion,
    LengthWindow,
    Profanity,
    RegexMatch,
    RepetitionPenalty,
    TokenScorer,
    TRLRewardFunction,
    VaderSentiment,
    score_texts,
    score_tokens,
)


def returning(value, name="my_scorer"):
    def scorer(prompts, completions, **kwargs):
        return value(completions) if callable(value) else value

    scorer.__name__ = name
    return scorer


@pytest.mark.parametrize(
    "value, error, message",
    [
        (lambda c: [float("nan")] * len(c), ValueError, "non-finite"),
        (lambda c: [math.inf] * len(c), ValueError, "non-finite"),
        (lambda c: [1.0], ValueError, "1 scores for 2 texts"),
        (lambda c: ["good", "bad"], TypeError, "expected a float"),
        (lambda c: [None, 1.0], TypeError, "expected a float"),
        (lambda c: [True, False], TypeError, "expected a float"),
        (lambda c: 1.0, TypeError, "expected a sequence"),
    ],
)
def test_bad_text_scores_raise_naming_the_scorer(value, error, message):
    with pytest.raises(error, match=f"my_scorer.*{message}|{message}.*my_scorer"):
        score_texts(returning(value), ["p", "p"], ["a", "b"])


def test_bad_scores_raise_through_a_reward_too():
    class Tok:
        def batch_decode(self, seqs, **kwargs):
            return ["x" for _ in seqs]

    step = StepBatch(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool), 2, torch.ones(2, dtype=torch.long),
                     torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.bool), torch.ones(2, dtype=torch.bool), None,
                     ["p", "q"], Tok())
    with pytest.raises(ValueError, match="'nan_scorer'.*non-finite"):
        Holistic(returning(lambda c: [float("nan")] * len(c), "nan_scorer"))(step)


def test_numpy_and_tensor_scores_are_accepted():
    import numpy as np

    assert score_texts(returning(lambda c: np.array([0.5, 1.0])), ["p", "p"], ["a", "b"]) == [0.5, 1.0]
    assert score_texts(returning(lambda c: torch.tensor([0.5, 1.0])), ["p", "p"], ["a", "b"]) == [0.5, 1.0]


def test_bad_token_scores_raise_naming_the_scorer():
    ids, mask, lengths = torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool), torch.ones(2, dtype=torch.long)
    cases = [
        (lambda *a: [1.0, 2.0], TypeError, "torch.Tensor"),
        (lambda *a: torch.zeros(3), ValueError, r"shape \(3,\)"),
        (lambda *a: torch.zeros(2, dtype=torch.long), TypeError, "float"),
        (lambda *a: torch.tensor([0.0, float("nan")]), ValueError, "non-finite"),
    ]
    for fn, error, message in cases:
        with pytest.raises(error, match=f"'tok'.*{message}"):
            score_tokens(TokenScorer(fn, name="tok"), ids, mask, ids, lengths)


def test_vader_sentiment_signs():
    positive, negative = VaderSentiment()(["", ""], ["I love this, it is wonderful", "I hate this, it is awful"])
    assert positive > 0.5 and negative < -0.5


def test_profanity_probability():
    clean, profane = Profanity()(["", ""], ["have a lovely day", "fuck you, you shit"])
    assert 0 <= clean < 0.5 < profane <= 1


def test_exact_match():
    prompts = ["2+2?", "capital of France?", "2+2?"]
    completions = [" 4 ", "paris", "5"]
    assert ExactMatch({"2+2?": "4", "capital of France?": ["Paris", "paris"]})(prompts, completions) == [1.0, 1.0, 0.0]
    assert ExactMatch("Paris", ignore_case=True)(prompts, completions) == [0.0, 1.0, 0.0]
    assert ExactMatch(lambda p: "4")(prompts, completions) == [1.0, 0.0, 0.0]
    with pytest.raises(KeyError, match="no target"):
        ExactMatch({})(["?"], ["x"])


def test_regex_match():
    assert RegexMatch(r"\d+")(["", ""], ["answer: 42", "none"]) == [1.0, 0.0]
    assert RegexMatch(r"\d+", fullmatch=True)(["", ""], [" 42\n", "answer: 42"]) == [1.0, 0.0]


def test_keyword_inclusion_fraction():
    scorer = KeywordInclusion(["dog", "frisbee", "catch"])
    got = scorer(["", "", ""], ["The dogs catch a frisbee.", "A dogma about catching.", "nothing"])
    assert got == [1.0, pytest.approx(1 / 3), 0.0]  # "catching" counts, "dogma" does not
    per_prompt = KeywordInclusion(lambda prompt: prompt.split(": ")[1].split(", "))
    assert per_prompt(["concepts: sun, beach"], ["sunny beach"]) == [0.5]
    assert KeywordInclusion([])([""], ["x"]) == [1.0]


def test_length_window_and_repetition():
    assert LengthWindow(2, 3)([""] * 4, ["one", "one two", "one two three", "a b c d"]) == [0.0, 1.0, 1.0, 0.0]
    with pytest.raises(ValueError):
        LengthWindow(3, 2)
    got = RepetitionPenalty(2)([""] * 3, ["a b a b", "a b c", "a"])
    assert got == [pytest.approx(-1 / 3), 0.0, 0.0]  # (a b) (b a) (a b): 2 distinct of 3
    assert RepetitionPenalty(1)([""], ["the the the cat"]) == [pytest.approx(-0.5)]


def test_trl_reward_function_adapter():
    seen = {}

    def trl_style(completions, **kwargs):  # TRL functions often take completions and **kwargs only
        seen.update(kwargs)
        return [len(c) if c else None for c in completions]

    adapter = TRLRewardFunction(trl_style, answer=["x", "y"])
    with pytest.raises(TypeError, match="'trl_style'"):
        adapter(prompts=["p", "q"], completions=["abc", ""])
    assert seen["prompts"] == ["p", "q"] and seen["answer"] == ["x", "y"]
    assert TRLRewardFunction(trl_style, none_value=0.0)(["p", "q"], ["abc", ""]) == [3.0, 0.0]
    assert score_texts(TRLRewardFunction(trl_style, name="len", none_value=-1.0), ["p"], [""]) == [-1.0]


def test_sequence_classifier_scorer_batches_with_padding():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2ForSequenceClassification, PreTrainedTokenizerFast

    words = ["<eos>", "[UNK]", "the", "cat", "sat", "on", "a", "mat", "dog"]
    wl = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=wl, eos_token="<eos>", unk_token="[UNK]")  # no pad token, like GPT-2
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(GPT2Config(vocab_size=len(words), n_positions=16, n_embd=16, n_layer=1, n_head=2, num_labels=1))
    scorer = SequenceClassifierScorer(model, tok, batch_size=2)
    prompts = ["the cat", "a", "the dog sat on"]
    completions = [" sat", " mat", " a mat"]
    batched = scorer(prompts, completions)
    single = [scorer([p], [c])[0] for p, c in zip(prompts, completions)]
    assert batched == pytest.approx(single, abs=1e-5)
    assert model.config.pad_token_id == tok.pad_token_id == tok.eos_token_id
    assert len(set(round(x, 5) for x in batched)) == 3
    with pytest.raises(ValueError, match="tokenizer"):
        SequenceClassifierScorer(model)
