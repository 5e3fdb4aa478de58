"""A hand-made policy: π_ref with every VADER-lexicon token's logit moved by k·valence (K, or
K_POS:K_NEG for separate factors on positive and negative words) (a unigram
tilt, no training), judged like tokengym eval for several k: how close does a pure lexical tilt come
to the best-of-N frontier? Usage: python lexical_tilt.py K [K ...]"""
import copy
import json
import sys

import gymnasium as gym
import torch

import tokengym.envs  # noqa: F401
from tokengym.benchmarks.evaluate import evaluate

torch.set_num_threads(1)
env = gym.make_vec("tokengym/Sentiment-v0", num_envs=64, min_new_tokens=16)
base = env.unwrapped.reference.model
tok = env.unwrapped.tokenizer
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

lexicon = SentimentIntensityAnalyzer().lexicon
V = base.get_output_embeddings().weight.shape[0]
valence = torch.zeros(V)
for v in range(V):
    text = tok.decode([v]).strip().lower()
    if text in lexicon:
        valence[v] = lexicon[text]
positive_only = "--positive" in sys.argv
if positive_only:
    valence = valence.clamp(min=0)
print("lexicon tokens", int((valence != 0).sum()), file=sys.stderr)
for spec in [x for x in sys.argv[1:] if not x.startswith("--")]:
    k_pos, _, k_neg = spec.partition(":")  # K or K_POS:K_NEG (the negative words' own factor)
    k_pos = float(k_pos)
    k_neg = float(k_neg) if k_neg else k_pos
    k = spec
    model = copy.deepcopy(base)
    bias = k_pos * valence.clamp(min=0) + k_neg * valence.clamp(max=0)
    model.get_output_embeddings().register_forward_hook(lambda m, i, o, b=bias: o + b)
    r = evaluate(env, model)
    out = {"k": k, "positive_only": positive_only, "score_gain": round(r["score_gain"], 4), "kl": round(r["kl"], 3),
           "distinct_2_ratio": round(r["distinct_2_ratio"], 3), "gain_per_sqrt_kl": round(r["score_gain"] / max(r["kl"], 1e-6) ** .5, 3)}
    print(json.dumps(out), flush=True)
    with open("lexical-tilt.jsonl", "a") as f:
        f.write(json.dumps(out) + "\n")
