"""Merge independently trained policies with tokengym.lm.merge.merge_task_vectors (WARP's merge,
Ramé et al. 2024) and judge each merge like tokengym eval (256 fresh episodes, seed 20261122):
the mean task vector at each scale in MERGE_SCALES (default 1) and the norm-preserving (SLERP) merge.
Appends one JSON line to merge.jsonl. Usage: python merge.py LABEL RUN_DIR RUN_DIR [...]"""
import json
import os
import sys

import gymnasium as gym
import torch

import tokengym.envs  # noqa: F401
from tokengym.agents.policy import Policy
from tokengym.benchmarks.evaluate import evaluate
from tokengym.lm.merge import merge_task_vectors

torch.set_num_threads(1)
BETA = 0.055
label, dirs = sys.argv[1], sys.argv[2:]
env = gym.make_vec("tokengym/Sentiment-v0", num_envs=64, min_new_tokens=16)
base = env.unwrapped.reference.model
models = [Policy.from_pretrained(f"{d}/policy", device="cpu").model for d in dirs]
flat = [torch.cat([(p - q).flatten() for p, q in zip(m.parameters(), base.parameters())]) for m in models]
results = {"label": label, "runs": dirs,
           "cosines_of_task_vectors": [round((torch.dot(flat[i], flat[j]) / (flat[i].norm() * flat[j].norm())).item(), 3)
                                       for i in range(len(flat)) for j in range(i + 1, len(flat))]}
variants = [(f"linear x{k}", dict(scale=float(k))) for k in os.environ.get("MERGE_SCALES", "1").split(",")]
variants.append(("norm-preserving", dict(norm_preserving=True)))
for name, kwargs in variants:
    r = evaluate(env, merge_task_vectors(base, models, **kwargs))
    results[name] = {"score_gain": round(r["score_gain"], 4), "kl": round(r["kl"], 3),
                     "distinct_2_ratio": round(r["distinct_2_ratio"], 3),
                     "J_minus_Jref": round(r["score_gain"] - BETA * r["kl"], 4),
                     "gain_per_sqrt_kl": round(r["score_gain"] / max(r["kl"], 1e-6) ** 0.5, 4)}
    print(name, results[name], flush=True)
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "merge.jsonl"), "a") as f:
    f.write(json.dumps(results) + "\n")
