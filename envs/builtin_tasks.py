"""The tasks behind the registered env ids. Scorers load lazily (on first env construction)."""
from __future__ import annotations

from tokengym.envs import calibration
from tokengym.envs.prompts import KEYWORD_PROMPTS, SENTIMENT_PROMPTS, arithmetic_records, keywords_of
from tokengym.envs.tasks import Task, register_task

__all__ = ["SentimentQuality", "answer_match", "sentiment_fine_grained_reward"]

PROFANITY_WEIGHT = 1.0
"""Weight of the (negated) profanity probability in the sentiment-quality rewards."""
LENGTH_WEIGHT = 0.5
"""Weight of the holistic length-window term."""
LENGTH_WINDOW = (8, 40)
"""Words a continuation should have for the length term."""


class SentimentQuality:
    """Holistic counterpart of the fine-grained sentiment task, on the whole continuation:
    ``VADER(y) − w_p · P(profane | y) + w_l · 1[len(y) in window]``."""

    name = "sentiment_quality"

    def __init__(self):
        from tokengym.rewards.scorers import LengthWindow, Profanity, VaderSentiment

        self.sentiment, self.profanity, self.length = VaderSentiment(), Profanity(), LengthWindow(*LENGTH_WINDOW)

    def __call__(self, prompts, completions, **kwargs):
        sentiment = self.sentiment(prompts, completions)
        profanity = self.profanity(prompts, completions)
        length = self.length(prompts, completions)
        return [s - PROFANITY_WEIGHT * p + LENGTH_WEIGHT * n for s, p, n in zip(sentiment, profanity, length)]


def sentiment_fine_grained_reward():
    """Wu et al. (2023) in miniature: per-sentence sentiment and per-sentence profanity penalty,
    plus a holistic length term, each reported as its own component."""
    from tokengym.rewards import FineGrained, Holistic, WeightedSum
    from tokengym.rewards.scorers import LengthWindow, Profanity, VaderSentiment

    per_sentence = FineGrained({
        "sentiment": (VaderSentiment(), "sentence", 1.0),
        "profanity": (Profanity(), "sentence", -PROFANITY_WEIGHT),
    })
    return WeightedSum({
        "sentence": (1.0, per_sentence),
        "length": (LENGTH_WEIGHT, Holistic(LengthWindow(*LENGTH_WINDOW))),
    })


def _vader():
    from tokengym.rewards.scorers import VaderSentiment

    return VaderSentiment()


def _keywords():
    from tokengym.rewards.scorers import KeywordInclusion

    return KeywordInclusion(keywords_of)


register_task(Task(
    name="sentiment",
    description="Continue a review opening; holistic VADER sentiment of the continuation.",
    prompts=lambda: list(SENTIMENT_PROMPTS),
    max_new_tokens=16,
    scorer=_vader,
    train_min_new_tokens=16,
))
register_task(Task(
    name="sentiment-fine-grained",
    description="Multi-sentence review; per-sentence sentiment and profanity, holistic length.",
    prompts=lambda: list(SENTIMENT_PROMPTS),
    max_new_tokens=48,
    reward="fine-grained",
    scorer=SentimentQuality,
    fine_grained=sentiment_fine_grained_reward,
))
register_task(Task(
    name="keywords",
    description="Verifiable: use both words named in the prompt; reward = fraction used (GRPO).",
    prompts=lambda: list(KEYWORD_PROMPTS),
    max_new_tokens=24,
    scorer=_keywords,
))
def answer_match(completions: list[str], answer: list[str], **kwargs) -> list[float]:
    """TRL reward function: 1.0 if the completion's first word (trailing ``.,;:!?`` removed) is
    exactly the row's ``answer`` column, else 0.0."""
    out = []
    for completion, expected in zip(completions, answer):
        words = completion.split()
        out.append(float(bool(words) and words[0].rstrip(".,;:!?") == expected))
    return out


def _answer_match():
    from tokengym.rewards.scorers import TRLRewardFunction

    return TRLRewardFunction(answer_match)


register_task(Task(
    name="arithmetic",
    description="Verifiable: single-digit sums; exact match with the dataset's answer column (GRPO).",
    prompts=arithmetic_records,
    max_new_tokens=3,
    scorer=_answer_match,
))
register_task(Task(
    name="calibration",
    description="8-token vocabulary, prompt [0], 3 actions, R(y)=Σ 1[y_t=t]; exact optimum known.",
    model="calibration",
    prompts=lambda: [[0]],
    max_new_tokens=calibration.HORIZON,
    stop=False,
    scorer=calibration.CalibrationScorer,
))
register_task(Task(
    name="custom",
    description="Your own model/tokenizer, prompts and reward (pass them as keywords).",
))
