"""Best-of-N distillation by supervised fine-tuning (BOND's forward-KL target, Sessa et al. 2024;
RAFT, Dong et al. 2023): sample N continuations of π_ref per prompt, keep the one with the highest
VADER, take one SFT step (−Σ_t log π_θ(y_t|·)) on the kept ones; EPISODES samples of π_ref in all.
The target is the best-of-N distribution of π_ref, whose KL is at most log N − (N−1)/N. Judged
like tokengym eval; one JSON line appended to runs.jsonl.
Usage: python bond_sft.py N LR SEED [EPISODES] [--from-policy]  (--from-policy: sample from π_θ, iterated BoN)"""
import json
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import tokengym.envs  # noqa: F401
from tokengym.agents.policy import Policy
from tokengym.benchmarks.evaluate import evaluate

torch.set_num_threads(1)
N, LR, SEED = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
EPISODES = int(sys.argv[4]) if len(sys.argv) > 4 and not sys.argv[4].startswith("--") else 8192
FROM_POLICY = "--from-policy" in sys.argv
PROMPTS_PER_BATCH = 8
torch.manual_seed(SEED)
env = gym.make_vec("tokengym/Sentiment-v0", num_envs=N * PROMPTS_PER_BATCH, min_new_tokens=16).unwrapped
policy = Policy.from_pretrained(env.model, device=env.device)
policy.sampling = env.sampling
sampler = policy if FROM_POLICY else Policy(env.reference.model, sampling=env.sampling)
optimizer = torch.optim.Adam(policy.model.parameters(), lr=LR)
generator = torch.Generator().manual_seed(SEED)
start, episodes, kept_vader = time.perf_counter(), 0, []
while episodes < EPISODES:
    with torch.no_grad():
        obs, _ = env.reset(seed=SEED if episodes == 0 else None, options={"group_size": N})
        P, T = env.prompt_width, env.max_new_tokens
        sampler.begin(obs["input_ids"][:, :P], obs["attention_mask"][:, :P].bool())
        for t in range(T):
            step = sampler.act(generator)
            obs, _, _, _, info = env.step(step.actions, logprobs=step.logprobs)
            if t + 1 < T:
                sampler.advance(step.actions)
    vader = info["reward_components"]["vader"]  # (B,)
    best = vader.view(-1, N).argmax(1) + torch.arange(0, len(vader), N)  # (B/N,)
    kept_vader.append(vader[best].mean().item())
    ids, mask = obs["input_ids"][best], obs["attention_mask"][best].bool()
    policy.train()
    scored = policy.score(ids, mask, P)
    loss = -(scored.logprobs * mask[:, P:]).sum(-1).mean()
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.model.parameters(), 1.0)
    optimizer.step()
    policy.eval()
    episodes += len(vader)
seconds = time.perf_counter() - start
eval_env = gym.make_vec("tokengym/Sentiment-v0", num_envs=64, min_new_tokens=16)
report = evaluate(eval_env, policy.model)
record = {"arm": f"bond-sft-N{N}-lr{LR:g}" + ("-from-policy" if FROM_POLICY else ""), "agent": "bond-sft", "seed": SEED,
          "episodes": EPISODES, "batch_size": PROMPTS_PER_BATCH, "lr": LR, "group_size": N, "note": "",
          "score_gain": round(report["score_gain"], 4), "kl": round(report["kl"], 3),
          "distinct_2_ratio": round(report["distinct_2_ratio"], 3),
          "reward_policy": round(report["policy"]["score"], 4), "reward_ref": round(report["reference"]["score"], 4),
          "J": round(report["policy"]["score"] - 0.055 * report["kl"], 4),
          "J_minus_Jref": round(report["score_gain"] - 0.055 * report["kl"], 4),
          "gain_per_sqrt_kl": round(report["score_gain"] / max(report["kl"], 1e-6) ** 0.5, 4),
          "kept_vader_every_16": [round(float(np.mean(kept_vader[i:i + 16])), 3) for i in range(0, len(kept_vader), 16)],
          "train_seconds": round(seconds, 1), "wall_seconds": round(time.perf_counter() - start, 1),
          "samples": report["policy"]["samples"][:2]}
import os
with (Path(__file__).resolve().parent / os.environ.get("CTG_RUNS", "runs.jsonl")).open("a") as f:
    f.write(json.dumps(record) + "\n")
print(json.dumps({k: v for k, v in record.items() if k != "samples"}))
