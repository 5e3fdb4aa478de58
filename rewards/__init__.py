"""tokengym.rewards: the reward protocol, holistic / fine-grained / KL-shaped rewards, offline
scorers, composition, and reward-model training."""
from tokengym.lm.kl import ESTIMATORS, kl_estimate
from tokengym.rewards.base import (
    EpisodeStart, Reward, RewardOutput, StepBatch, as_components, check_scores, reference_request,
)
from tokengym.rewards.compose import REWARD_NAMES, WeightedSum, make_reward, reward_options
from tokengym.rewards.fine_grained import FineGrained
from tokengym.rewards.holistic import Holistic
from tokengym.rewards.kl import AdaptiveKL, KLShaped
from tokengym.rewards.reward_model import load_pairs_jsonl, synthetic_pairs, train_reward_model
from tokengym.rewards.scorers import (
    ExactMatch, KeywordInclusion, LengthWindow, Profanity, RegexMatch, RepetitionPenalty,
    TokenScorer, TRLRewardFunction, VaderSentiment, score_texts, score_tokens,
)
from tokengym.rewards.classifier import SequenceClassifierScorer
from tokengym.rewards.trl import TRLReward
from tokengym.rewards.segmenters import FixedSpan, Segmenter, Sentence, SubSentence, TokenSegmenter, get_segmenter
from tokengym.rewards.utilities import Log, LogSigmoid, NegPower, Power, PromptAware, make_utility, preference_loss

__all__ = [
    "AdaptiveKL", "ESTIMATORS", "EpisodeStart", "ExactMatch", "FineGrained", "FixedSpan", "Holistic",
    "KLShaped", "KeywordInclusion", "LengthWindow", "Log", "LogSigmoid", "NegPower", "Power", "Profanity",
    "PromptAware", "REWARD_NAMES", "RegexMatch", "RepetitionPenalty", "Reward", "RewardOutput", "Segmenter",
    "Sentence", "SequenceClassifierScorer", "StepBatch", "SubSentence", "TRLReward", "TRLRewardFunction", "TokenScorer",
    "TokenSegmenter", "VaderSentiment", "WeightedSum", "as_components", "check_scores", "get_segmenter",
    "kl_estimate", "load_pairs_jsonl", "make_reward", "make_utility", "preference_loss",
    "reference_request", "reward_options", "score_texts", "score_tokens", "synthetic_pairs", "train_reward_model",
]
