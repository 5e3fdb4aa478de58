"""``tokengym eval --run DIR``: judge a trained run's policy against its reference on fresh
samples (:func:`tokengym.benchmarks.evaluate.evaluate`), with the run's own env, and write
``DIR/eval.json``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tokengym.benchmarks.evaluate import EVAL_SEED, evaluate
from tokengym.lm.io import atomic_write_file

__all__ = ["EVAL_FILE", "evaluate_run", "add_cli"]

EVAL_FILE = "eval.json"
"""Where ``tokengym eval`` writes its figures, inside the run directory."""


def evaluate_run(run_dir: str | Path, *, episodes: int = 256, seed: int = EVAL_SEED, batch_size: int = 64,
                 device: str | None = None) -> dict[str, Any]:
    """:func:`evaluate` of a ``tokengym train`` run directory: its ``policy/`` against its env
    (model, prompts, lengths, sampling, from ``run.json``) with the task reward only."""
    import gymnasium as gym

    from tokengym.agents.policy import Policy
    from tokengym.lm.errors import UsageError
    from tokengym.settings import plan, resolve
    from tokengym.train import reward_model_reward

    run_dir = Path(run_dir)
    try:
        resolved = resolve({}, str(run_dir))
    except UsageError as exc:
        raise UsageError(str(exc).replace("--resume", "--run", 1)) from None
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
    return evaluate(envs, policy.model, episodes=episodes, seed=seed)


def _line(name: str, stats: dict[str, Any]) -> str:
    distinct = "   n/a" if stats["distinct_2"] is None else f"{stats['distinct_2']:6.3f}"
    return f"  {name:<10} {stats['score']:+7.3f} ± {stats['score_std']:.3f}  {stats['kl']:7.2f}  {distinct}  {stats['length']:6.1f}"


def _main(args: argparse.Namespace) -> int:
    from tokengym.lm.errors import UsageError

    for flag, value in (("--episodes", args.episodes), ("--batch-size", args.batch_size)):
        if value < 1:
            raise UsageError(f"{flag} {value}: expected an integer ≥ 1")
    report = evaluate_run(args.run, episodes=args.episodes, seed=args.seed, batch_size=args.batch_size, device=args.device)
    atomic_write_file(Path(args.run) / EVAL_FILE, json.dumps(report, indent=2).encode())
    print(f"{args.episodes} fresh episodes each (seed {args.seed}), the env's task reward:")
    print(f"  {'':<10} {'score':>7}   {'(std)':<5}  {'KL nats':>7}  {'dist-2':>6}  {'tokens':>6}")
    print(_line("reference", report["reference"]))
    print(_line("policy", report["policy"]))
    ratio = "n/a" if report["distinct_2_ratio"] is None else f"{report['distinct_2_ratio']:.2f}×"
    print(f"score gain {report['score_gain']:+.3f}, KL {report['kl']:.2f} nats, distinct-2 {ratio} the reference's "
          f"(written to {Path(args.run) / EVAL_FILE})")
    return 0


def add_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="judge a trained run's policy against its reference on fresh samples",
        description="Sample fresh episodes from DIR/policy and from the reference on the run's env, and report "
                    "the task score, the sequence KL to the reference and distinct-2 of each; writes DIR/eval.json.",
    )
    parser.add_argument("--run", required=True, metavar="DIR", help="a run directory written by tokengym train")
    parser.add_argument("--episodes", type=int, default=256, metavar="N", help="episodes per model (default: 256)")
    parser.add_argument("--batch-size", type=int, default=64, metavar="N", help="episodes sampled at once (default: 64)")
    parser.add_argument("--seed", type=int, default=EVAL_SEED, metavar="N", help=f"seed of prompts and samples (default: {EVAL_SEED})")
    parser.add_argument("--device", default=None, help="torch device (default: the run's)")
    parser.set_defaults(func=_main)
