"""``tokengym eval --run DIR``: judge a trained run's policy against its reference on fresh
samples (:func:`tokengym.benchmarks.evaluate.evaluate`), with the run's own env, and write
``DIR/eval.json``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tokengym.benchmarks.evaluate import EVAL_SEED, evaluate
from tokengym.lm.io import write_json
from tokengym.lm.loading import hub_progress_bars

__all__ = ["EVAL_FILE", "FRONTIER_FILE", "evaluate_run", "objective_beta", "add_cli"]

EVAL_FILE = "eval.json"
"""Where ``tokengym eval`` writes its figures, inside the run directory."""
FRONTIER_FILE = "frontier.png"
"""Where ``tokengym eval`` draws the run on its env's reward–KL frontier."""
FRONTIER_SAMPLES = 128
"""π_ref samples per prompt behind the frontier ``tokengym eval`` places a run on."""


def evaluate_run(run_dir: str | Path, *, episodes: int = 256, seed: int = EVAL_SEED, batch_size: int = 64,
                 device: str | None = None, frontier_samples: int = FRONTIER_SAMPLES) -> dict[str, Any]:
    """:func:`evaluate` of a ``tokengym train`` run directory: its ``policy/`` against its env
    (model, prompts, lengths, sampling, from ``run.json``) with the task reward only; then, unless
    ``frontier_samples`` is 0, the env's reward–KL frontier from that many π_ref samples per prompt
    (:func:`~tokengym.benchmarks.frontier.env_frontier`) and the run placed on it at its own β
    (``placement``: J, J*, the fraction of J* − J_ref captured, the KL overspend against best-of-N)."""
    import gymnasium as gym

    from tokengym.agents.policy import Policy
    from tokengym.lm.errors import UsageError
    from tokengym.lm.io import finish_replace
    from tokengym.settings import plan, resolve
    from tokengym.train import reward_model_reward

    run_dir = Path(run_dir)
    try:
        resolved = resolve({}, str(run_dir))
    except UsageError as exc:
        raise UsageError(str(exc).replace("--resume", "--run", 1)) from None
    finish_replace(run_dir)  # a final save a crash cut short: complete it first
    if not (run_dir / "policy").is_dir():
        raise UsageError(f"--run {run_dir}: expected a finished run (it has no policy/ yet)")
    if device is not None:
        resolved.settings.device = device
    s, plan_ = resolved.settings, plan(resolved)
    env_kwargs = {k: v for k, v in plan_.env_kwargs.items() if k not in ("reward", "reward_kwargs")}
    spec = env_kwargs.pop("reward_model", None)
    if spec is not None:  # the run's reward model, holistic, stands in for the task's scorer
        env_kwargs["reward"] = reward_model_reward({**spec, "reward": "holistic"}, env_kwargs, s.trust_remote_code)
    envs = gym.make_vec(s.env, num_envs=batch_size, **env_kwargs)
    policy_kwargs = {k: v for k, v in plan_.policy_kwargs.items() if k not in ("lora", "autocast_dtype")}
    policy = Policy.from_pretrained(run_dir / "policy", device=envs.unwrapped.device, **policy_kwargs)
    report = evaluate(envs, policy.model, episodes=episodes, seed=seed)
    if frontier_samples:
        from tokengym.benchmarks.frontier import env_frontier, place_run

        beta, why = objective_beta(plan_)
        frontier = env_frontier(envs, n_per_prompt=frontier_samples, beta=beta)
        report["frontier"] = frontier
        report["placement"] = {**place_run(frontier, gain=report["score_gain"], kl=report["kl"]), "beta_source": why}
    return report


def objective_beta(plan_) -> tuple[float, str]:
    """The β of the run's KL-regularised objective, and where it comes from: its KL-shaped
    reward's (an adaptive β's start), else its agent's own KL coefficient, else the default."""
    from tokengym.rewards.kl import DEFAULT_BETA, AdaptiveKL
    from tokengym.settings import KL_REWARDS

    kwargs = plan_.env_kwargs
    reward = kwargs.get("reward") or kwargs.get("reward_model", {}).get("reward")
    beta = kwargs.get("reward_kwargs", {}).get("beta", DEFAULT_BETA)
    if reward in KL_REWARDS:
        if isinstance(beta, AdaptiveKL):
            return beta.init_beta, "the adaptive KL-shaped reward's starting β"
        return float(beta), "the KL-shaped reward's β"
    if getattr(plan_.config, "beta", 0.0):
        return float(plan_.config.beta), "the agent's own KL coefficient"
    return DEFAULT_BETA, "the default β: the run had no KL term"


def _line(name: str, stats: dict[str, Any]) -> str:
    distinct = "   n/a" if stats["distinct_2"] is None else f"{stats['distinct_2']:6.3f}"
    return f"  {name:<10} {stats['score']:+7.3f} ± {stats['score_std']:.3f}  {stats['kl']:7.2f}  {distinct}  {stats['length']:6.1f}"


def _main(args: argparse.Namespace) -> int:
    from tokengym.lm.errors import UsageError

    for flag, value, low in (("--episodes", args.episodes, 1), ("--batch-size", args.batch_size, 1),
                             ("--frontier-samples", args.frontier_samples, 0)):
        if value < low:
            raise UsageError(f"{flag} {value}: expected an integer ≥ {low}")
    n = args.frontier_samples
    if n and args.batch_size % n and n % args.batch_size:
        raise UsageError(f"--frontier-samples {n}: expected a divisor or a multiple of --batch-size {args.batch_size}")
    run = Path(args.run)
    with hub_progress_bars(enabled=False):  # transformers' loading bars, twice (π_θ and π_ref), say nothing
        report = evaluate_run(run, episodes=args.episodes, seed=args.seed, batch_size=args.batch_size,
                              device=args.device, frontier_samples=n)
    write_json(run / EVAL_FILE, report)
    print(f"{args.episodes} fresh episodes each (seed {args.seed}), the env's task reward:")
    print(f"  {'':<10} {'score':>7}   {'(std)':<5}  {'KL nats':>7}  {'dist-2':>6}  {'tokens':>6}")
    print(_line("reference", report["reference"]))
    print(_line("policy", report["policy"]))
    ratio = "n/a" if report["distinct_2_ratio"] is None else f"{report['distinct_2_ratio']:.2f}×"
    print(f"score gain {report['score_gain']:+.3f}, KL {report['kl']:.2f} nats, distinct-2 {ratio} the reference's")
    if "placement" in report:
        from tokengym.benchmarks.frontier import plot_frontier

        p = report["placement"]
        print(f"against the optimum at β = {p['beta']:g} ({p['beta_source']}): J = {p['j']:.3f}, J* = {p['j_star']:.3f} "
              f"(ESS min {p['j_star_ess_min']:.0f}), J_ref = {p['j_ref']:.3f}: {p['fraction_captured']:.2f} of J* − J_ref captured")
        if p["kl_overspend"] is not None:
            print(f"best-of-{p['bon_n']:.1f} sampling gains as much at ≤ {p['bon_kl']:.2f} nats: "
                  f"KL overspend {p['kl_overspend']:.1f}×")
        else:
            print(f"KL overspend: n/a ({p['bon_note']})")
        plot_frontier(report["frontier"], run / FRONTIER_FILE, runs={"this run": [(report["score_gain"], report["kl"])]},
                      title=f"{run.name}: reward–KL frontier")
    print(f"written to {run / EVAL_FILE}" + (f" and {run / FRONTIER_FILE}" if "placement" in report else ""))
    return 0


def add_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="judge a trained run on fresh samples and place it on its env's reward–KL frontier",
        description="Sample fresh episodes from DIR/policy and from the reference on the run's env and report the task "
                    "score, the sequence KL to the reference and distinct-2 of each; then measure the env's reward–KL "
                    "frontier from π_ref's samples (the optimum p_β ∝ π_ref·exp(r/β) and best-of-N) and place the "
                    "run on it: J = E[r] − β·KL against J*, and the KL best-of-N needs for the same gain. Writes "
                    "DIR/eval.json and DIR/frontier.png. About 1 min on 2 CPU cores for the embedded model "
                    "(--frontier-samples 0: a few seconds).",
    )
    parser.add_argument("--run", required=True, metavar="DIR", help="a run directory written by tokengym train")
    parser.add_argument("--episodes", type=int, default=256, metavar="N", help="episodes per model (default: 256)")
    parser.add_argument("--batch-size", type=int, default=64, metavar="N", help="episodes sampled at once (default: 64)")
    parser.add_argument("--seed", type=int, default=EVAL_SEED, metavar="N", help=f"seed of prompts and samples (default: {EVAL_SEED})")
    parser.add_argument("--frontier-samples", type=int, default=FRONTIER_SAMPLES, metavar="N",
                        help=f"π_ref samples per prompt for the frontier; 0: no frontier (default: {FRONTIER_SAMPLES})")
    parser.add_argument("--device", default=None, help="torch device (default: the run's)")
    parser.set_defaults(func=_main)
