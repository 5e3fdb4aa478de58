"""Merge independently trained policies (WARP's merge, Ramé et al. 2024): the mean of their task
vectors θ_i − θ_ref (linear) and that mean rescaled to the runs' mean norm (SLERP's norm-preserving
effect, per tensor), each judged like tokengym eval. Usage: python merge.py RUN_DIR RUN_DIR [...]"""
import json
import sys

import gymnasium as gym
import torch

import tokengym.envs  # noqa: F401
from tokengym.agents.policy import Policy
from tokengym.benchmarks.evaluate import evaluate

torch.set_num_threads(1)
env = gym.make_vec("tokengym/Sentiment-v0", num_envs=64, min_new_tokens=16)
ref = env.unwrapped.reference.model
init = {n: p.detach().clone() for n, p in ref.named_parameters()}
runs = [Policy.from_pretrained(f"{d}/policy", device="cpu").model for d in sys.argv[1:]]
tasks = [{n: p.detach() - init[n] for n, p in m.named_parameters()} for m in runs]
model = runs[0]
results = {"runs": sys.argv[1:]}
for i, m in enumerate(runs):
    r = evaluate(env, m)
    results[f"run{i}"] = {"score_gain": round(r["score_gain"], 4), "kl": round(r["kl"], 3)}
    print(i, results[f"run{i}"], flush=True)
with torch.no_grad():
    cos = []
    for n in init:
        a, b = tasks[0][n].flatten(), tasks[1][n].flatten()
        cos.append((torch.dot(a, b) / (a.norm() * b.norm() + 1e-12)).item())
    results["mean_cosine_of_task_vectors"] = round(sum(cos) / len(cos), 3)
    for mode in ("linear", "norm-preserving"):
        for n, p in model.named_parameters():
            mean = sum(t[n] for t in tasks) / len(tasks)
            if mode == "norm-preserving":
                target = sum(t[n].norm() for t in tasks) / len(tasks)
                mean = mean * (target / (mean.norm() + 1e-12))
            p.copy_(init[n] + mean)
        r = evaluate(env, model)
        results[mode] = {"score_gain": round(r["score_gain"], 4), "kl": round(r["kl"], 3),
                         "distinct_2_ratio": round(r["distinct_2_ratio"], 3)}
        print(mode, results[mode], flush=True)
print(json.dumps(results))
with open("merge.jsonl", "a") as f:
    f.write(json.dumps(results) + "\n")
