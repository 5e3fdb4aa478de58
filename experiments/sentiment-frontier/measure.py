"""The reward–KL frontier of tokengym/Sentiment-v0 at the README job's settings, and where the
trained agents sit on it.

Settings: the embedded model as π_ref, VADER on the continuation as r (the README job's reward
without its KL penalty, so the env runs the ``holistic`` reward and never steps π_ref),
16-token episodes (``min_new_tokens=16``), temperature 1. Every one of the task's 40 prompts,
512 π_ref samples each. Reported: best-of-N for N in 2..64 (gain by the U-statistic over the
512-sample pool; KL by the bound and by plug-in), p_β over a β grid that includes the default
0.055, J* at 0.055 with its ESS, and J_ref = E_ref[r].

The runs placed on it are the 4,096-episode, half-lr jobs of BENCHMARKS.md ("Twice the episodes
at half the lr"; the README job is the A2C row): each seed's VADER gain and KL as `tokengym eval`
measured them (256 episodes on the eval seed), placed at β = 0.055.

    OMP_NUM_THREADS=1 python experiments/sentiment-frontier/measure.py

writes ``frontier.json`` and ``frontier.png`` next to this file (two CPU-minutes on one thread; four
minutes of wall time on a shared machine).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import gymnasium as gym
import torch

import tokengym  # noqa: F401  (registers the envs)
from tokengym.benchmarks.frontier import measure_frontier, place_run, plot_frontier
from tokengym.lm.io import atomic_write_file
from tokengym.rewards.kl import DEFAULT_BETA

HERE = Path(__file__).resolve().parent
BETAS = (0.03, 0.04, DEFAULT_BETA, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
NS = (2, 4, 8, 16, 32, 64)
RUNS = {  # BENCHMARKS.md, 4,096 episodes at half the default lr: per seed (VADER gain, KL nats)
    "A2C (README job)": [(0.41, 4.8), (0.41, 4.5), (0.45, 5.1), (0.43, 5.4), (0.38, 4.3), (0.38, 4.2)],
    "PPO": [(0.33, 3.2), (0.43, 5.0), (0.41, 4.9), (0.37, 4.2), (0.37, 4.5), (0.40, 4.5)],
    "GRPO": [(0.39, 5.6), (0.44, 5.5), (0.35, 4.5), (0.38, 4.6), (0.45, 5.9), (0.46, 6.5)],
    "REINFORCE": [(0.42, 5.9), (0.27, 3.7), (0.49, 6.7)],
}


def mean_std(values: list[float | None]) -> dict:
    """Mean and std over the seeds that have a value (``place_run`` gives None where it cannot place)."""
    known = [v for v in values if v is not None]
    return {"mean": statistics.fmean(known) if known else None, "std": statistics.stdev(known) if len(known) > 1 else None,
            "seeds": len(known)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=512, help="π_ref samples per prompt (default: 512)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--out", type=Path, default=HERE, help="where frontier.json and frontier.png go")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    env = gym.make_vec("tokengym/Sentiment-v0", num_envs=args.samples, reward="holistic", min_new_tokens=16,
                       temperature=1.0)
    prompts = env.unwrapped.task.prompts()
    frontier = measure_frontier(env, prompts=prompts, n_per_prompt=args.samples, seed=args.seed, betas=BETAS, ns=NS,
                                beta=DEFAULT_BETA)
    runs = {}
    for label, seeds in RUNS.items():
        placed = [place_run(frontier, gain=gain, kl=kl) for gain, kl in seeds]
        runs[label] = {
            "seeds": [{"gain": gain, "kl": kl} for gain, kl in seeds],
            **{name: mean_std([p[name] for p in placed]) for name in ("gain", "kl", "j", "fraction_captured", "bon_n", "bon_kl", "kl_overspend")},
        }
    seconds = time.perf_counter() - start
    settings = {"env": "tokengym/Sentiment-v0", "model": "embedded", "reward": "VADER on the continuation (holistic)",
                "max_new_tokens": 16, "min_new_tokens": 16, "temperature": 1.0, "prompts": len(prompts),
                "samples_per_prompt": args.samples, "seed": args.seed, "torch_threads": 1, "seconds": round(seconds, 1)}
    report = {"settings": settings, "frontier": frontier, "runs": runs}
    atomic_write_file(args.out / "frontier.json", json.dumps(report, indent=1).encode())
    plot_frontier(frontier, args.out / "frontier.png", runs=RUNS,
                  title=f"Sentiment-v0, embedded model, 16 tokens, VADER: {len(prompts)} prompts × {args.samples} π_ref samples")

    print(f"J_ref = E_ref[VADER] = {frontier['reference_score']:+.3f} ± {frontier['reference_score_se']:.3f}  ({seconds:.0f} s)")
    print(f"J* at β = {DEFAULT_BETA}: {frontier['j_star']:.3f} ± {frontier['j_star_se']:.3f} "
          f"(ESS min {frontier['j_star_ess_min']:.1f}, mean {frontier['j_star_ess_mean']:.1f} of {args.samples})")
    print("best-of-N:   N   gain            KL bound  KL sampled")
    for b in frontier["best_of_n"]:
        print(f"          {b['n']:4d}  {b['gain']:+.3f} ± {b['gain_se']:.3f}  {b['kl_bound']:6.2f}    {b['kl_sampled']:.2f} ± {b['kl_sampled_se']:.2f}")
    print("p_β:       β      gain            KL             ESS min / mean")
    for p in frontier["p_beta"]:
        flag = "  (low ESS)" if p["low_ess"] else ""
        print(f"          {p['beta']:<6g} {p['gain']:+.3f} ± {p['gain_se']:.3f}  {p['kl']:5.2f} ± {p['kl_se']:.2f}   "
              f"{p['ess_min']:6.1f} / {p['ess_mean']:6.1f}{flag}")
    print("runs at β = 0.055 (mean ± std over seeds): gain, KL, J, fraction of J* − J_ref, best-of-N's KL for the gain, overspend")
    for label, run in runs.items():
        cells = [f"{run[k]['mean']:.3f} ± {run[k]['std']:.3f}" for k in ("gain", "kl", "j", "fraction_captured", "bon_kl", "kl_overspend")]
        print(f"  {label:<17} " + "  ".join(cells))


if __name__ == "__main__":
    main()
