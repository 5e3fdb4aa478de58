"""A hand-made history-aware policy: π_ref with positive VADER-lexicon tokens' logits raised by
k·valence only until the continuation holds one (VADER's compound saturates: x/√(x²+15)), and
negative ones lowered by k·|valence| throughout. Judged like tokengym eval. Compare with
lexical_tilt.py (the same tilt in every state). Usage: python history_tilt.py K [K ...]"""
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
positive, negative = valence.clamp(min=0), valence.clamp(max=0)
for k in [float(x) for x in sys.argv[1:]]:
    model = copy.deepcopy(base)
    state = {}

    def pre(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids.shape[1] > 1:  # prefill: a new batch of prompts
            state["seen"] = torch.zeros(ids.shape[0], dtype=torch.bool)
        else:  # one new token per row
            state["seen"] |= positive[ids[:, -1]] > 0

    def post(module, inputs, output):
        if output.shape[1] > 1 and output.dim() == 3 and state.get("teacher"):
            return output
        boost = k * (positive[None, :] * (~state["seen"])[:, None].float() + negative[None, :])  # (B, V)
        return output + (boost[:, None, :] if output.dim() == 3 else boost)

    model.register_forward_pre_hook(pre, with_kwargs=True)
    model.get_output_embeddings().register_forward_hook(post)
    r = evaluate(env, model)
    out = {"k": k, "history_aware": True, "score_gain": round(r["score_gain"], 4), "kl": round(r["kl"], 3),
           "distinct_2_ratio": round(r["distinct_2_ratio"], 3), "gain_per_sqrt_kl": round(r["score_gain"] / max(r["kl"], 1e-6) ** .5, 3)}
    print(json.dumps(out), flush=True)
    with open("lexical-tilt.jsonl", "a") as f:
        f.write(json.dumps(out) + "\n")
