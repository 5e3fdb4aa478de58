"""The untrained (embedded) policy's Keywords-v0 reward, with a standard error.

    OMP_NUM_THREADS=1 python benchmarks/results/keywords/untrained.py --batches 32 --batch-size 32

Samples ``batches × batch_size`` episodes from π_ref (each batch its own reset seed and sampler
seed) and prints the mean keyword-inclusion reward, its standard error and the hit rate.
"""
from __future__ import annotations

import argparse
import json
import math

import gymnasium as gym
import torch

import tokengym.envs  # noqa: F401  (registers the envs)
from tokengym.agents import Policy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    envs = gym.make_vec("tokengym/Keywords-v0", num_envs=args.batch_size)
    policy = Policy.from_pretrained(envs.model)
    returns = []
    for seed in range(args.batches):
        obs, _ = envs.reset(seed=1000 + seed)
        P = envs.prompt_width
        policy.begin(obs["input_ids"][:, :P], obs["attention_mask"][:, :P].bool())
        generator = torch.Generator().manual_seed(1000 + seed)
        total = torch.zeros(args.batch_size)
        for _ in range(envs.max_new_tokens):
            step = policy.act(generator)
            obs, rewards, _, _, info = envs.step(step.actions, logprobs=step.logprobs)
            total += rewards
            if envs.all_done:
                break
            policy.advance(step.actions)
        returns.append(total)
    returns = torch.cat(returns)
    n = returns.numel()
    result = {"episodes": n, "mean": returns.mean().item(), "std": returns.std().item(),
              "stderr": returns.std().item() / math.sqrt(n), "hit_rate": (returns > 0).float().mean().item()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
