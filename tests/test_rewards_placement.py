"""Each granularity puts exactly the equation's rewards on exactly the right steps (docs/rewards.md)."""
from __future__ import annotations

import pytest
import torch

from tokengym.rewards.base import EpisodeStart, StepBatch
from tokengym.rewards.compose import WeightedSum, make_reward
from tokengym.rewards.fine_grained import FineGrained
from tokengym.rewards.holistic import Holistic
from tokengym.rewards.scorers import TokenScorer
from tokengym.rewards.segmenters import FixedSpan, Sentence, SubSentence, get_segmenter


class PieceTokenizer:
    """Hand-built subword vocabulary: decoding concatenates pieces (like byte-level BPE)."""

    def __init__(self, pieces: list[str]):
        self.pieces = ["<pad>", "<eos>"] + pieces
        self.pad_token_id, self.eos_token_id = 0, 1
        self.ids = {p: i for i, p in enumerate(self.pieces)}

    def __len__(self):
        return len(self.pieces)

    def __call__(self, *pieces: str) -> list[int]:
        return [self.ids[p] for p in pieces]

    def decode(self, ids, skip_special_tokens=False, **kwargs):
        return "".join(self.pieces[i] for i in ids if not (skip_special_tokens and i in (0, 1)))

    def batch_decode(self, seqs, skip_special_tokens=False, **kwargs):
        return [self.decode(s, skip_special_tokens) for s in seqs]


TOK = PieceTokenizer(
    ["Q:", " hi", "He", "llo", " wor", "ld.", " How", " a", "re", " y", "ou?", " Fi", "ne", ",", " th", "anks",
     "!", "\n", " the", " en", "d.N", "ext", " ok", " ", ".", "?!", "a"]
)


def rollout(reward, prompts: list[list[int]], responses: list[list[int]], tok=TOK) -> torch.Tensor:
    """Drive ``reward`` like the env (batch-synchronous episodes); returns (T, B) rewards, summed
    over components and zeroed where a row did not act."""
    batch, width = len(prompts), max(map(len, prompts))
    horizon = max(map(len, responses))
    prompt_ids = torch.zeros(batch, width, dtype=torch.long)
    prompt_mask = torch.zeros(batch, width, dtype=torch.bool)
    for b, p in enumerate(prompts):
        prompt_ids[b, width - len(p):] = torch.tensor(p)
        prompt_mask[b, width - len(p):] = True
    texts = [tok.decode(p, skip_special_tokens=True) for p in prompts]
    reward.reset(EpisodeStart(prompt_ids, prompt_mask, texts, torch.ones(batch, dtype=torch.bool), horizon, tok))
    input_ids = torch.cat([prompt_ids, torch.zeros(batch, horizon, dtype=torch.long)], 1)
    mask = torch.cat([prompt_mask, torch.zeros(batch, horizon, dtype=torch.bool)], 1)
    lengths = torch.tensor([len(r) for r in responses])
    out = []
    for t in range(horizon):
        acted = t < lengths
        actions = torch.tensor([r[t] if t < len(r) else 0 for r in responses])
        input_ids[acted, width + t] = actions[acted]
        mask[acted, width + t] = True
        step = StepBatch(
            input_ids.clone(), mask.clone(), width, torch.minimum(lengths, torch.tensor(t + 1)), actions, acted,
            t == lengths - 1, None, texts, tok,
        )
        output = reward(step)
        total = sum(output.values()) if isinstance(output, dict) else output
        out.append(torch.where(acted, total, 0.0))
    return torch.stack(out)  # (T, B)


class Recorder:
    """Text scorer: score = len(completion) + 0.5; records every call."""

    name = "rec"

    def __init__(self):
        self.calls: list[tuple[list[str], list[str]]] = []

    def __call__(self, prompts, completions, **kwargs):
        assert not kwargs
        self.calls.append((prompts, completions))
        return [len(c) + 0.5 for c in completions]


def length_score(text: str) -> float:
    return len(text) + 0.5


# Response with sentence ends inside multi-character pieces: "Hello world." | " How are you?" | " Fine"
HELLO = TOK("He", "llo", " wor", "ld.", " How", " a", "re", " y", "ou?", " Fi", "ne")


def test_holistic_text_scorer_pays_only_on_the_last_step_with_ragged_ends():
    responses = [HELLO, TOK(" ok", "!", "<eos>"), TOK(" Fi")]
    rewards = rollout(Holistic(Recorder()), [TOK("Q:")] * 3, responses)
    expected = torch.zeros(len(HELLO), 3)
    for b, r in enumerate(responses):
        expected[len(r) - 1, b] = length_score(TOK.decode(r, skip_special_tokens=True))
    assert torch.equal(rewards, expected)


def test_holistic_text_scorer_sees_prompt_and_completion():
    scorer = Recorder()
    rollout(Holistic(scorer), [TOK("Q:", " hi")], [TOK(" ok", "!")])
    assert scorer.calls == [(["Q: hi"], [" ok!"])]


def test_holistic_token_scorer_runs_every_step_and_pays_at_the_end():
    calls = []

    def score(prompt_ids, prompt_mask, response_ids, response_lengths):
        calls.append(1)
        return 10.0 * response_lengths.float() + prompt_mask.sum(-1)

    rewards = rollout(Holistic(TokenScorer(score)), [TOK("Q:"), TOK("Q:", " hi")], [TOK("a", "a", "a"), TOK("a")])
    assert len(calls) == 3
    expected = torch.zeros(3, 2)
    expected[2, 0], expected[0, 1] = 31.0, 12.0
    assert torch.equal(rewards, expected)


def test_sentence_segments_close_on_the_piece_holding_the_punctuation():
    scorer = Recorder()
    rewards = rollout(FineGrained([(scorer, "sentence", 1.0)]), [TOK("Q:")], [HELLO])[:, 0]
    expected = torch.zeros(len(HELLO))
    expected[3] = length_score("Hello world.")  # "ld." closes sentence 1
    expected[8] = length_score(" How are you?")  # "ou?"
    expected[10] = length_score(" Fine")  # open at episode end: closes on the last step
    assert torch.equal(rewards, expected)
    # context convention: prompt + preceding response text, then the segment
    assert [c for call in scorer.calls for c in zip(*call)] == [
        ("Q:", "Hello world."), ("Q:Hello world.", " How are you?"), ("Q:Hello world. How are you?", " Fine"),
    ]


def test_boundary_in_the_middle_of_a_piece_and_newline():
    response = TOK(" the", " en", "d.N", "ext", "\n", " ok")  # " the end." | "Next\n" | " ok"
    rewards = rollout(FineGrained([(Recorder(), "sentence", 1.0)]), [TOK("Q:")], [response])[:, 0]
    expected = torch.tensor([0, 0, length_score(" the end."), 0, length_score("Next\n"), length_score(" ok")])
    assert torch.equal(rewards, expected)
    assert Sentence()(response, TOK) == [2, 4, 5]


def test_sub_sentence_and_punctuation_runs():
    response = TOK(" Fi", "ne", ",", " th", "anks", "?!", " ", ".")  # " Fine," | " thanks?" | "! ." (no content)
    rewards = rollout(FineGrained([(Recorder(), "sub-sentence", 1.0)]), [TOK("Q:")], [response])[:, 0]
    expected = torch.zeros(len(response))
    expected[2] = length_score(" Fine,")
    expected[5] = length_score(" thanks?")
    expected[7] = length_score("! .")  # remainder has non-whitespace: closes on the last step
    assert torch.equal(rewards, expected)
    assert SubSentence()(response, TOK) == [2, 5, 7]


def test_closed_tail_gives_no_extra_segment_and_empty_response_is_one_segment():
    segmenter = FineGrained([(Recorder(), "sentence", 1.0)])
    rewards = rollout(segmenter, [TOK("Q:")] * 2, [TOK(" ok", "!", "<eos>"), TOK("<eos>")])
    assert torch.equal(rewards, torch.tensor([[0.0, 0.5], [length_score(" ok!"), 0.0], [0.0, 0.0]]))


def test_token_and_fixed_span_segmenters():
    response = TOK("He", "llo", " wor", "ld.", " How")
    pieces = [TOK.pieces[i] for i in response]
    token = rollout(FineGrained([(Recorder(), "token", 1.0)]), [TOK("Q:")], [response])[:, 0]
    assert torch.equal(token, torch.tensor([length_score(p) for p in pieces]))
    span = rollout(FineGrained([(Recorder(), FixedSpan(2), 1.0)]), [TOK("Q:")], [response])[:, 0]
    assert torch.equal(span, torch.tensor([0, length_score("Hello"), 0, length_score(" world."), length_score(" How")]))
    assert FixedSpan(2)(response, TOK) == [1, 3, 4]
    assert get_segmenter("span:2")(response, TOK) == [1, 3, 4]
    assert get_segmenter("token")(response, TOK) == [0, 1, 2, 3, 4]


def test_weights_and_components_of_several_models_ragged_batch():
    reward = FineGrained({"sent": (Recorder(), "sentence", 2.0), "tok": (Recorder(), "token", -0.5)})
    responses = [HELLO, TOK(" ok", "!"), TOK("ld.")]
    rollout_rewards = rollout(reward, [TOK("Q:")] * 3, responses)
    for b, response in enumerate(responses):
        sent_steps = Sentence()(response, TOK)
        sent = FineGrained([(Recorder(), "sentence", 1.0)])
        per_sent = rollout(sent, [TOK("Q:")], [response])[:, 0]
        per_tok = torch.tensor([length_score(TOK.pieces[i]) for i in response])
        expected = torch.zeros(len(HELLO))
        expected[: len(response)] = 2.0 * per_sent + -0.5 * per_tok
        assert torch.equal(rollout_rewards[:, b], expected), b
        assert per_sent.nonzero().flatten().tolist() == sent_steps


def test_components_are_named_and_weighted():
    reward = FineGrained({"sent": (Recorder(), "sentence", 2.0)})
    assert FineGrained([(Recorder(), "token", 1.0)]).names == ["rec@token"]
    total = WeightedSum({"fg": (3.0, reward), "hol": (0.5, Holistic(Recorder(), name="len"))})
    outputs = []

    class Spy:
        def reset(self, ep):
            total.reset(ep)

        def __call__(self, step):
            out = total(step)
            outputs.append(out)
            return out

    rollout(Spy(), [TOK("Q:")], [TOK(" ok", "!")])
    assert set(outputs[0]) == {"fg/sent", "hol/len"}
    assert outputs[1]["fg/sent"].item() == 3.0 * 2.0 * length_score(" ok!")
    assert outputs[1]["hol/len"].item() == 0.5 * length_score(" ok!")


def test_custom_segmenter_callable():
    def on_word_ok(text):  # segments end right after each " ok"
        ends, i = [], text.find(" ok")
        while i >= 0:
            ends.append(i + 3)
            i = text.find(" ok", i + 3)
        return ends

    response = TOK(" ok", " hi", " ok", " hi")
    rewards = rollout(FineGrained([(Recorder(), on_word_ok, 1.0)]), [TOK("Q:")], [response])[:, 0]
    assert torch.equal(rewards, torch.tensor([length_score(" ok"), 0, length_score(" hi ok"), length_score(" hi")]))


def test_unknown_segmenter_name_lists_valid_ones():
    with pytest.raises(ValueError, match="sub-sentence.*span:N"):
        get_segmenter("paragraph")
    with pytest.raises(ValueError):
        get_segmenter("span:0")


def test_online_matches_offline_on_a_trained_byte_level_bpe():
    """A byte-level BPE trained without pre-splitting learns pieces like ". what" and "? no"."""
    import random
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    words = ["hello", "world", "end", "next", "line", "fine", "thanks", "what", "yes", "no", "you"]
    marks = [" ", " ", " ", ". ", ", ", "? ", "!", ".", "\n", "; "]
    corpus = ["".join(rng.choice(words) + rng.choice(marks) for _ in range(12)) for _ in range(200)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=200, special_tokens=["<eos>"], show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", pad_token="<eos>")

    def ones(prompts, completions, **kwargs):
        return [1.0] * len(completions)

    texts = ["hello world. what are you? fine, thanks!", "the end.next line\nok; yes: yes", "wait... what?! no",
             "hello world.the end.next you? no"]
    ids = [tok(text)["input_ids"] for text in texts]
    assert tok.decode(ids[0][2]) == ". what"  # punctuation inside a multi-character piece
    for name in ("sentence", "sub-sentence", "token", "span:3"):
        rewards = rollout(FineGrained([(ones, name, 1.0)]), [tok("Q")["input_ids"]] * len(ids), ids, tok)  # (T, B)
        for b, row in enumerate(ids):
            offline = Counter(get_segmenter(name)(row, tok))  # several segments may close on one token
            expected = torch.zeros(rewards.shape[0])
            for t, count in offline.items():
                expected[t] = count
            assert torch.equal(rewards[:, b], expected), (texts[b], name)
    assert Sentence()(ids[3], tok) == [2, 7, 9, 9]  # "? no" closes "you?" and, at the end, " no"
    for row in ids:  # every closed sentence ends on a token whose own text holds the punctuation
        for i in Sentence()(row, tok, final=False):
            assert any(c in tok.decode(row[i : i + 1]) for c in ".!?\n")


def test_make_reward_names_and_errors():
    scorer = Recorder()
    assert isinstance(make_reward("holistic", task_scorer=scorer, tokenizer=TOK), Holistic)
    fg = make_reward("fine-grained", task_scorer=scorer, tokenizer=TOK, segmenter="sub-sentence")
    assert isinstance(fg, FineGrained) and fg.segmenters[0].name == "sub-sentence"
    obj = Holistic(scorer)
    assert make_reward(obj, task_scorer=scorer) is obj
    with pytest.raises(ValueError, match="holistic, fine-grained, kl-shaped, fine-grained\\+kl"):
        make_reward("sparse", task_scorer=scorer, tokenizer=TOK)
    with pytest.raises(TypeError, match="unknown options"):
        make_reward("holistic", task_scorer=scorer, tokenizer=TOK, beta=0.1)
    with pytest.raises(ValueError, match="tokenizer"):
        make_reward("fine-grained", task_scorer=scorer, tokenizer=None)


def test_only_steps_that_can_close_a_segment_are_decoded():
    class Counting(PieceTokenizer):
        decoded = 0

        def decode(self, ids, skip_special_tokens=False, **kwargs):
            Counting.decoded += "clean_up_tokenization_spaces" in kwargs  # the reward's response decodes
            return super().decode(ids, skip_special_tokens)

    tok = Counting(TOK.pieces[2:])
    reward = FineGrained([(Recorder(), "sentence", 1.0)])
    rollout(reward, [tok("Q:")], [tok(*(TOK.pieces[i] for i in HELLO))], tok)
    assert Counting.decoded == 3  # "ld.", "ou?" and the last step; the 8 other steps read no text


def test_make_reward_uses_the_tasks_fine_grained_builder_unless_options_override_it():
    built = FineGrained({"custom": (Recorder(), "token", 2.0)})
    assert make_reward("fine-grained", fine_grained=lambda: built, tokenizer=TOK) is built
    override = make_reward("fine-grained", task_scorer=Recorder(), fine_grained=lambda: built, tokenizer=TOK, segmenter="span:4")
    assert override is not built and override.segmenters[0].name == "span:4"
    with pytest.raises(ValueError, match="task_scorer"):
        make_reward("holistic", tokenizer=TOK)
