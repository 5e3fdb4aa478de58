"""Keywords-v0 with the GDC binary target: f-DPG (forward KL, i.e. DPG) against REINFORCE.

The target is π_ref conditioned on using both words, ``p(y|x) ∝ π_ref(y|x)·b(x, y)`` with
``b = 1[keyword coverage ≥ 1]`` (``GDCBinary(threshold=1.0)``; Khalifa et al. 2021, Go et al. 2023).
Each run is judged on two figures:

* the fraction of fresh samples that use both words, before (π_ref) and after (π_θ), with the
  two-proportion z of the rise;
* ``KL(p‖π_θ) = E_x E_{y~p}[log π_ref(y) − log Z(x) − log π_θ(y)]``, ``log Z(x) = log P_ref(b = 1|x)``.
  p's samples are π_ref's samples that satisfy the constraint (rejection sampling), drawn once by
  ``reference`` and stored; ``log Z(x)`` is their acceptance rate's log, the same for every run.

Prompts: four pairs of frequent words. With the stock 25 pairs the embedded model uses both words
in 0 of 2,048 samples (24 tokens; 5 of 2,048 at 48 tokens), so p has no samples to measure with
and no signal to learn from in a CPU budget; these pairs have P_ref(both) of a few percent.

Fair comparison: REINFORCE gets the constraint itself as its reward (``b``, 0/1), the only thing
p knows about the task, rather than the env's fractional coverage, which would also pay half a
success. Both agents at their defaults (lr 2.5e-4; groups of 8 for f-DPG, 4 for REINFORCE's
leave-one-out baseline), and both at lr 5e-5; 32 episodes a batch. Results: README.md.

    python experiments/keywords-gdc/run.py reference              # p's samples and log Z(x), once
    python experiments/keywords-gdc/run.py train fdpg 0           # one run at a time, one thread
    python experiments/keywords-gdc/run.py train reinforce 0 5e-5 # METHOD SEED [LR]
    python experiments/keywords-gdc/run.py summary                # results.json and the table
"""
from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path

import gymnasium as gym
import torch

import tokengym  # noqa: F401  (registers the envs)
from tokengym.agents import FDPG, REINFORCE, FDPGConfig, Policy, REINFORCEConfig
from tokengym.agents.advantages import sequence_sum
from tokengym.envs.prompts import keyword_prompt, keywords_of
from tokengym.lm.io import atomic_write_file
from tokengym.rewards import Holistic
from tokengym.rewards.scorers import KeywordInclusion

HERE = Path(__file__).resolve().parent
PAIRS = [("it", "is"), ("you", "that"), ("you", "the"), ("to", "of")]
PROMPTS = [keyword_prompt(a, b) for a, b in PAIRS]
EPISODES = 2048
BATCH = 32
REFERENCE_SAMPLES = 1024  # per prompt, for p's samples and log Z(x)
EVAL_SAMPLES = 128  # fresh samples per prompt after training
SAMPLE_BATCH = 128


class BothWords:
    """``b(x, y) = 1[both words used]``: the GDC constraint as a 0/1 reward (REINFORCE's)."""

    name = "both_words"

    def __init__(self):
        self.coverage = KeywordInclusion(keywords_of)

    def __call__(self, prompts, completions, **kwargs):
        return [float(c >= 1.0) for c in self.coverage(prompts, completions)]


def make_env(num_envs: int, reward=None):
    kwargs = {} if reward is None else {"reward": reward}
    return gym.make_vec("tokengym/Keywords-v0", num_envs=num_envs, prompts=PROMPTS, **kwargs).unwrapped


@torch.no_grad()
def sample(policy: Policy, env, prompt: str, generator: torch.Generator):
    """One batch of ``env.num_envs`` episodes of ``prompt`` from ``policy``: the (B, P+T) buffer,
    its mask, the (B, T) response mask, (B,) log-probs of the sampler and the coverage."""
    obs, _ = env.reset(options={"prompts": [prompt], "group_size": env.num_envs})
    P = env.prompt_width
    policy.begin(obs["input_ids"][:, :P], obs["attention_mask"][:, :P].bool())
    logprobs = torch.zeros(env.num_envs, env.max_new_tokens)
    for t in range(env.max_new_tokens):
        step = policy.act(generator)
        obs, _, _, _, info = env.step(step.actions, logprobs=step.logprobs)
        logprobs[:, t] = step.logprobs
        if bool(env.all_done):
            break
        policy.advance(step.actions)
    attention_mask = obs["attention_mask"].bool()
    mask = attention_mask[:, P:]
    return obs["input_ids"], attention_mask, mask, sequence_sum(logprobs, mask), info["reward_components"]["keyword_inclusion"]


def reference() -> None:
    """π_ref's samples per prompt: the both-words rate (before), log Z(x), and p's samples."""
    torch.set_num_threads(1)
    env = make_env(SAMPLE_BATCH)
    policy = Policy(env.reference.model, sampling=env.sampling)
    generator = torch.Generator().manual_seed(1234)
    out = {}
    for prompt in PROMPTS:
        accepted, n = [], 0
        while n < REFERENCE_SAMPLES:
            input_ids, attention_mask, mask, logprobs, coverage = sample(policy, env, prompt, generator)
            prompt_ids = input_ids[0, : env.prompt_width][attention_mask[0, : env.prompt_width]].tolist()
            for row in (coverage >= 1).nonzero().flatten().tolist():
                accepted.append({"response": input_ids[row, env.prompt_width:][mask[row]].tolist(),
                                 "ref_logprob": float(logprobs[row])})
            n += env.num_envs
        out[prompt] = {"samples": n, "prompt_ids": prompt_ids, "accepted": accepted, "log_z": math.log(len(accepted) / n)}
        print(f"{prompt!r}: {len(accepted)}/{n} use both words, log Z = {out[prompt]['log_z']:.3f}", flush=True)
    atomic_write_file(HERE / "reference.json", json.dumps(out))


def forward_kl_to_p(policy: Policy, env, reference_samples: dict) -> tuple[float, float]:
    """KL(p‖π_θ) averaged over the prompts, and its standard error (from p's stored samples)."""
    means, variances = [], []
    for record in reference_samples.values():
        P, responses = len(record["prompt_ids"]), [s["response"] for s in record["accepted"]]
        T = max(len(r) for r in responses)
        input_ids = torch.zeros(len(responses), P + T, dtype=torch.long)  # (n, P+T) responses right-padded
        attention_mask = torch.zeros(len(responses), P + T, dtype=torch.bool)
        for row, response in enumerate(responses):
            input_ids[row, : P + len(response)] = torch.tensor(record["prompt_ids"] + response)
            attention_mask[row, : P + len(response)] = True
        with torch.no_grad():
            scored = policy.score(input_ids, attention_mask, P).logprobs  # (n, T)
        log_pi = sequence_sum(scored, attention_mask[:, P:])  # (n,)
        log_ratios = [s["ref_logprob"] - float(lp) for s, lp in zip(record["accepted"], log_pi)]  # log π_ref − log π_θ
        means.append(statistics.mean(log_ratios) - record["log_z"])
        variances.append(statistics.variance(log_ratios) / len(log_ratios))
    k = len(means)
    return statistics.mean(means), math.sqrt(sum(variances)) / k


def evaluate(policy: Policy, env, seed: int) -> dict:
    """Fresh samples of π_θ per prompt: the both-words fraction and the sampled KL(π_θ‖π_ref)."""
    generator = torch.Generator().manual_seed(10_000 + seed)
    both, n, kl_ref = 0, 0, []
    for prompt in PROMPTS:
        for _ in range(EVAL_SAMPLES // SAMPLE_BATCH or 1):
            input_ids, attention_mask, mask, logprobs, coverage = sample(policy, env, prompt, generator)
            ref = sequence_sum(env.reference.score(input_ids, attention_mask, env.prompt_width), mask)
            kl_ref += (logprobs - ref).tolist()
            both += int((coverage >= 1).sum())
            n += len(coverage)
    return {"both_words": both / n, "eval_samples": n, "kl_ref": statistics.mean(kl_ref)}


def train(method: str, seed: int, lr: float | None = None) -> None:
    """One run: ``method`` at its defaults, or at learning rate ``lr``."""
    torch.set_num_threads(1)
    overrides = {} if lr is None else {"lr": lr}
    if method in ("fdpg", "fdpg-reference"):
        proposal = "reference" if method == "fdpg-reference" else "policy"
        agent = FDPG(make_env(BATCH), FDPGConfig(divergence="forward-kl", target="gdc-binary", threshold=1.0,
                                                 proposal=proposal, seed=seed, **overrides))
    elif method == "reinforce":
        agent = REINFORCE(make_env(BATCH, reward=Holistic(BothWords())), REINFORCEConfig(seed=seed, **overrides))
    else:
        raise ValueError(f"method must be fdpg, fdpg-reference or reinforce, got {method!r}")
    start = time.perf_counter()
    history = agent.learn(EPISODES)
    seconds = time.perf_counter() - start
    reference_samples = json.loads((HERE / "reference.json").read_text())
    env = make_env(SAMPLE_BATCH)
    agent.policy.eval()
    kl_p, kl_p_se = forward_kl_to_p(agent.policy, env, reference_samples)
    result = {
        "method": method, "seed": seed, "lr": agent.config.lr, "episodes": agent.episodes, "train_seconds": round(seconds, 1),
        **evaluate(agent.policy, env, seed), "kl_p_policy": kl_p, "kl_p_policy_se": kl_p_se,
        "train_reward_last_5": statistics.mean(h["reward"] for h in history[-5:]),
    }
    print(json.dumps(result), flush=True)
    name = method if lr is None else f"{method}-lr{lr:g}"
    atomic_write_file(HERE / "runs" / f"{name}-{seed}.json", json.dumps(result, indent=2))


def summary() -> None:
    reference_samples = json.loads((HERE / "reference.json").read_text())
    n_ref = sum(r["samples"] for r in reference_samples.values())
    before = sum(len(r["accepted"]) for r in reference_samples.values()) / n_ref
    kl_p_ref = -statistics.mean(r["log_z"] for r in reference_samples.values())  # KL(p‖π_ref) = −log Z
    runs = [json.loads(p.read_text()) for p in sorted((HERE / "runs").glob("*.json"))]
    for run in runs:  # two-proportion z of the rise over π_ref's rate
        se = math.sqrt(before * (1 - before) / n_ref + run["both_words"] * (1 - run["both_words"]) / run["eval_samples"])
        run["z_rise"] = (run["both_words"] - before) / se
        run["arm"] = f"{run['method']} lr {run['lr']:g}"
    table = {"pairs": PAIRS, "reference": {"both_words": before, "samples": n_ref, "kl_p_reference": kl_p_ref,
             "log_z": {p: r["log_z"] for p, r in reference_samples.items()}}, "runs": runs}
    print(f"π_ref: both words {before:.3f} of {n_ref}; KL(p‖π_ref) = {kl_p_ref:.2f}")
    print("| arm | seed | both words | z of the rise | KL(p‖π_θ) ± se | KL(π_θ‖π_ref) | minutes |")
    print("|---|---|---|---|---|---|---|")
    for run in sorted(runs, key=lambda r: (r["arm"], r["seed"])):
        print(f"| {run['arm']} | {run['seed']} | {before:.3f} → {run['both_words']:.3f} | {run['z_rise']:.1f} | "
              f"{run['kl_p_policy']:.2f} ± {run['kl_p_policy_se']:.2f} | {run['kl_ref']:.2f} | {run['train_seconds'] / 60:.1f} |")
    for arm in sorted({r["arm"] for r in runs}):
        rows = [r for r in runs if r["arm"] == arm]
        stats = {key: (statistics.mean(r[key] for r in rows), statistics.stdev(r[key] for r in rows) if len(rows) > 1 else 0.0)
                 for key in ("both_words", "kl_p_policy", "kl_ref")}
        table[arm] = {"seeds": [r["seed"] for r in rows], **stats}
        print(f"{arm} ({len(rows)} seeds): " + ", ".join(f"{k} {m:.3f} ± {s:.3f}" for k, (m, s) in stats.items()))
    atomic_write_file(HERE / "results.json", json.dumps(table, indent=2))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"reference": reference, "summary": summary,
     "train": lambda: train(args[0], int(args[1]), float(args[2]) if len(args) > 2 else None)}[command]()
