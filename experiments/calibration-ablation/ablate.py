"""Exact KL(π_θ‖π*) on Calibration-v0 (KL-shaped reward, β = 0.5) for one agent config and several seeds.

    OMP_NUM_THREADS=1 python experiments/calibration-ablation/ablate.py ppo --name base \
        --set lr=1e-2 n_epochs=2 n_minibatches=2 target_kl=None --seeds 0 1 2 --iterations 120

Appends one JSON line per seed to ``runs.jsonl`` beside this file: the exact KL every 5 iterations,
its start, and the PPO diagnostics of the last iteration.
"""
from __future__ import annotations

import argparse
import ast
import json
import time
from pathlib import Path

import gymnasium as gym
import torch

import tokengym.envs  # noqa: F401  (registers the envs)
from tokengym.agents import A2C, GRPO, PPO, REINFORCE, A2CConfig, GRPOConfig, PPOConfig, REINFORCEConfig
from tokengym.agents.advantages import sequence_sum_mean
from tokengym.envs import calibration

BETA = 0.5


class PPOWithOldKL(PPO):
    """PPO plus ``β·KL(π_θ‖π_old)`` in the loss (k2 per token: ``½(log π_θ − log π_old)²``, summed
    over the sequence, averaged over sequences). A KL-shaped reward is computed once, at π_old, so
    the surrogate ``E_old[ρ·(−β log π_old/π_ref)]`` covers ``−β E_θ[log π_old/π_ref]`` only; since
    ``KL(π_θ‖π_ref) = KL(π_θ‖π_old) + E_θ[log π_old/π_ref]``, the term it drops is exactly
    ``−β·KL(π_θ‖π_old)``, the KL's curvature around π_old. It is 0 with zero gradient at the first
    step of each update, so the fixed point is unchanged; an experiment, not (yet) in agents/ppo.py."""

    old_kl_coef = BETA

    def loss(self, rollout, b_advantages, b_returns, rows):
        loss, stats = super().loss(rollout, b_advantages, b_returns, rows)
        # Re-scoring costs a second forward; fine for an experiment on a 512-sequence env.
        scored = self.policy.score(rollout.input_ids[rows], rollout.attention_mask[rows], rollout.prompt_width)
        log_ratio = scored.logprobs - rollout.logprobs[rows]  # (b, T) log π_θ − log π_old
        old_kl = sequence_sum_mean(0.5 * log_ratio**2, rollout.mask[rows])
        return loss + self.old_kl_coef * old_kl, stats


AGENTS = {"ppo-old-kl": (PPOWithOldKL, PPOConfig), "reinforce": (REINFORCE, REINFORCEConfig), "a2c": (A2C, A2CConfig), "ppo": (PPO, PPOConfig),
          "grpo": (GRPO, GRPOConfig)}


def parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def fit_to_optimum(model: torch.nn.Module, optimum: torch.Tensor, steps: int = 1500) -> float:
    """Minimise the exact KL(π_θ‖π*) over all 512 sequences by full-batch Adam; returns the KL reached."""
    sequences = calibration.all_sequences()
    input_ids = torch.cat([torch.zeros_like(sequences[:, :1]), sequences], dim=1)  # (512, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        logits = model(input_ids=input_ids).logits[:, :-1]  # (512, 3, V)
        logprobs = logits.log_softmax(-1).gather(-1, sequences[..., None])[..., 0].sum(-1)  # (512,)
        logprobs = logprobs.log_softmax(0)  # already normalised; keeps the KL exact under rounding
        kl = (logprobs.exp() * (logprobs - optimum)).sum()
        optimizer.zero_grad()
        kl.backward()
        optimizer.step()
    return kl.item()


def run(agent_name: str, options: dict, seed: int, iterations: int, batch_size: int, every: int,
        start_at_optimum: bool = False) -> dict:
    agent_class, config_class = AGENTS[agent_name]
    ref_logprobs = calibration.sequence_logprobs(calibration.build_reference_model())
    optimum = calibration.optimal_policy(ref_logprobs, BETA)
    env = gym.make_vec("tokengym/Calibration-v0", num_envs=batch_size, reward="kl-shaped", reward_kwargs={"beta": BETA})
    agent = agent_class(env, config_class(seed=seed, **options))
    if start_at_optimum:  # start from (a fit of) π* itself: does the agent stay there?
        fit_to_optimum(agent.policy.model, optimum)
        agent.optimizer = torch.optim.Adam(agent.policy.parameters(), lr=agent.config.lr)
    exact = lambda: calibration.kl_divergence(calibration.sequence_logprobs(agent.policy.model), optimum).item()  # noqa: E731
    start, kls, t0 = exact(), [], time.perf_counter()
    mean_probs, averaged = torch.zeros_like(optimum), 0  # π_θ averaged over the second half's evaluations
    for i in range(1, iterations + 1):
        stats = agent.train_iteration()
        if i % every == 0:
            kls.append(exact())
            if i > iterations // 2:
                mean_probs += calibration.sequence_logprobs(agent.policy.model).exp()
                averaged += 1
    # Noise around π* averages out (KL of the average ≪ average KL); a shifted fixed point does not.
    kl_of_average = calibration.kl_divergence((mean_probs / averaged).log(), optimum).item()
    keep = ("explained_variance", "approx_kl", "clipfrac", "value_loss", "entropy", "epochs")
    return {"agent": agent_name, "options": options, "seed": seed, "iterations": iterations, "batch_size": batch_size,
            "start": start, "kl_every": every, "kls": kls, "final": kls[-1], "final_mean_last3": sum(kls[-3:]) / 3,
            "ratio": kls[-1] / start,
            "kl_of_average_policy": kl_of_average, "average_kl_second_half": sum(kls[-averaged:]) / averaged, "min": min(kls), "wall_s": time.perf_counter() - t0,
            "last": {k: stats[k] for k in keep if k in stats}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("agent", choices=AGENTS)
    parser.add_argument("--name", required=True)
    parser.add_argument("--set", nargs="*", default=[])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--start-at-optimum", action="store_true", help="fit the policy to π* before training")
    parser.add_argument("--out", default=str(Path(__file__).with_name("runs.jsonl")))
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.set)}
    for seed in args.seeds:
        record = {"name": args.name, **run(args.agent, options, seed, args.iterations, args.batch_size, args.every,
                                            args.start_at_optimum), "start_at_optimum": args.start_at_optimum}
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{args.name} seed {seed}: KL {record['start']:.3f} -> {record['final']:.4f} "
              f"(ratio {record['ratio']:.3f}, min {record['min']:.4f}, 2nd half: mean KL {record['average_kl_second_half']:.4f}, "
              f"KL of mean policy {record['kl_of_average_policy']:.4f}) {record['wall_s']:.0f}s "
              f"curve {' '.join(f'{k:.3f}' for k in record['kls'][::4])}", flush=True)


if __name__ == "__main__":
    main()
