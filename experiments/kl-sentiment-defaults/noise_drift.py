"""How much of the KL to π_ref is drift from gradient noise? (issue 12, 2026-11-22)

PPO with its defaults on Sentiment-v0 (KL-shaped reward at the default β, 16-token episodes, batches of
32) for 16 iterations, three ways, on seeds 0-2:

* ``vader``: the real task reward;
* ``noise``: VADER replaced by a reward that ignores the text, N(0, σ²) per episode with σ the
  reference's VADER std over 256 episodes (0.268), so that every gradient step is noise;
* ``noise, top block only``: the same noise, with every parameter but the last transformer block and
  the final layer norm frozen.

Prints and writes ``noise-drift.json``: the training KL (mean Σ_t log π_θ/π_ref of each batch) after
every iteration. Usage: ``OMP_NUM_THREADS=1 python noise_drift.py [OUT.json]``.
"""
import json
import re
import sys

import gymnasium as gym
import numpy as np
import torch

import tokengym.envs  # noqa: F401  (registers the envs)
from tokengym.agents import PPO, PPOConfig
from tokengym.agents.policy import Policy
from tokengym.rewards.holistic import Holistic
from tokengym.rewards.kl import KLShaped

ITERATIONS, BATCH = 16, 32
FROZEN_BELOW_TOP = r"wte|wpe|h\.[012]\."  # the embedded model has 4 blocks, h.0 .. h.3


def run(arm: str, seed: int, sigma: float) -> list[float]:
    rng = np.random.default_rng(seed)
    kwargs = {"reward": "kl-shaped"}
    if arm != "vader":
        noise = Holistic(lambda prompts, completions: rng.normal(0, sigma, len(completions)).tolist(), name="noise")
        kwargs["reward"] = KLShaped(noise)  # the default β
    env = gym.make_vec("tokengym/Sentiment-v0", num_envs=BATCH, min_new_tokens=16, **kwargs)
    torch.manual_seed(seed)
    policy = Policy.from_pretrained(env.unwrapped.model, device=env.unwrapped.device, value_head=True)
    if arm == "noise, top block only":
        for name, parameter in policy.model.named_parameters():
            parameter.requires_grad_(re.search(FROZEN_BELOW_TOP, name) is None)
    agent = PPO(env, PPOConfig(seed=seed), policy=policy)
    return [round(agent.train_iteration()["kl_ref"], 3) for _ in range(ITERATIONS)]


def reference_vader_std() -> float:
    env = gym.make_vec("tokengym/Sentiment-v0", num_envs=256, min_new_tokens=16, reward="kl-shaped")
    agent = PPO(env, PPOConfig(seed=0))
    return float(agent.collect().components["vader"].std())


if __name__ == "__main__":
    sigma = reference_vader_std()
    results = {"sigma": round(sigma, 3), "kl_by_iteration": {}}
    for arm in ("vader", "noise", "noise, top block only"):
        for seed in (0, 1, 2):
            kl = run(arm, seed, sigma)
            results["kl_by_iteration"][f"{arm} / seed {seed}"] = kl
            print(f"{arm:>22} seed {seed}: " + " ".join(f"{k:.1f}" for k in kl), flush=True)
    with open(sys.argv[1] if len(sys.argv) > 1 else "noise-drift.json", "w") as f:
        json.dump(results, f, indent=1)
