"""Judge a trained policy against its reference on fresh samples (``tokengym eval --run DIR``).

Both models continue the same prompts (a seed of their own, not the training one) through the
env's ``reset``/``step``, scored by the env's reward without a KL-shaped reward's penalty (for a
run directory, the task reward alone). For each model:

* ``score``: the mean episode return of the task reward (VADER on Sentiment-v0);
* ``kl``: the sampled sequence KL ``E_y~π[Σ_t log π(y_t|·) − log π_ref(y_t|·)]`` in nats, the
  k1 sum that the KL-shaped reward penalises (0 for the reference, by construction);
* ``distinct_2``: distinct word bigrams over all bigrams of all samples (Li et al. 2016), the
  diversity a mode-collapsed policy loses;
* ``length``: mean tokens per episode.

The verdict compares the two: ``score_gain`` (policy − reference) and ``distinct_2_ratio``
(policy ÷ reference).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
from pathlib import Path
from typing import Any

import torch

from tokengym.lm.io import atomic_write_file

__all__ = ["distinct_n", "sample_stats", "evaluate", "evaluate_run", "add_cli"]

EVAL_FILE = "eval.json"
"""Where ``tokengym eval`` writes its figures, inside the run directory."""
EVAL_SEED = 20_261_122
"""Default seed of the evaluation prompts and samples: not a training seed."""


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct word ``n``-grams ÷ all word ``n``-grams, pooled over ``texts`` (0 if there are none)."""
    grams = [tuple(words[i:i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


@torch.no_grad()
def sample_stats(env, model: torch.nn.Module, *, episodes: int, seed: int,
                 context: contextlib.AbstractContextManager | None = None) -> dict[str, Any]:
    """Sample ``episodes`` episodes of ``model`` through the vector ``env`` (its reward less any KL
    penalty, its π_ref, its sampling) and return the mean score, sequence KL to ``env.reference``, distinct-2
    and length, with the continuations' texts. ``context``: the model's forward context (autocast,
    or a PEFT model's adapters disabled)."""
    from tokengym.agents.policy import Policy
    from tokengym.benchmarks.episodes import run_episodes

    env = env.unwrapped
    policy = Policy(model, sampling=env.sampling)
    generator = torch.Generator(device=env.device).manual_seed(seed)
    scores, kls, lengths, texts = [], [], [], []
    with context if context is not None else contextlib.nullcontext():
        for batch in range(math.ceil(episodes / env.num_envs)):
            batch_episodes = run_episodes(env, policy, generator, seed=seed if batch == 0 else None)
            mask = batch_episodes.mask  # (B, T) response tokens
            kls.append(torch.where(mask, batch_episodes.logprobs - batch_episodes.ref_logprobs, 0.0).sum(-1))
            scores.append(sum(batch_episodes.components.values()))  # (B,) episode totals
            lengths.append(mask.sum(-1).float())
            if env.tokenizer is not None:
                texts += batch_episodes.texts(env.tokenizer)
    score, kl, length = (torch.cat(x)[:episodes].double() for x in (scores, kls, lengths))
    texts = texts[:episodes]
    return {
        "episodes": int(score.numel()),
        "score": score.mean().item(), "score_std": score.std().item() if score.numel() > 1 else 0.0,
        "kl": kl.mean().item(), "kl_std": kl.std().item() if kl.numel() > 1 else 0.0,
        "distinct_2": distinct_n(texts, 2) if texts else None,
        "length": length.mean().item(),
        "samples": texts[:5],
    }


def evaluate(env, model: torch.nn.Module, *, episodes: int = 256, seed: int = EVAL_SEED,
             context: contextlib.AbstractContextManager | None = None) -> dict[str, Any]:
    """``model`` (π_θ) and ``env.reference`` (π_ref) on the same prompts and random numbers: each
    one's :func:`sample_stats`, the score gain and the distinct-2 ratio."""
    reference = env.unwrapped.reference
    ref = sample_stats(env, reference.model, episodes=episodes, seed=seed, context=reference.context())
    policy = sample_stats(env, model, episodes=episodes, seed=seed, context=context)
    ratio = policy["distinct_2"] / ref["distinct_2"] if policy["distinct_2"] is not None and ref["distinct_2"] else None
    return {"policy": policy, "reference": ref, "score_gain": policy["score"] - ref["score"],
            "kl": policy["kl"], "distinct_2_ratio": ratio, "episodes": episodes, "seed": seed}


def evaluate_run(run_dir: str | Path, *, episodes: int = 256, seed: int = EVAL_SEED, batch_size: int = 64,
                 device: str | None = None) -> dict[str, Any]:
    """:func:`evaluate` of a ``tokengym train`` run directory: its ``policy/`` against its env
    (model, prompts, lengths, sampling, from ``run.json``) with the task reward only."""
    import gymnasium as gym

    from tokengym.agents.policy import Policy
    from tokengym.agents.settings import resolve_settings, validate
    from tokengym.agents.train import reward_model_reward
    from tokengym.lm.errors import UsageError

    run_dir = Path(run_dir)
    try:
        s, _, _ = resolve_settings({}, str(run_dir), None)
    except UsageError as exc:
        raise UsageError(str(exc).replace("--resume", "--run", 1)) from None
    if not (run_dir / "policy").is_dir():
        raise UsageError(f"--run {run_dir}: expected a finished run (it has no policy/ yet)")
    if device is not None:
        s["device"] = device
    plan = validate(s, run_dir, resuming=True)
    env_kwargs = {k: v for k, v in plan.env_kwargs.items() if k not in ("reward", "reward_kwargs")}
    spec = env_kwargs.pop("reward_model", None)
    if spec is not None:  # the run's reward model, holistic, stands in for the task's scorer
        env_kwargs["reward"] = reward_model_reward({**spec, "reward": "holistic"}, env_kwargs, s)
    envs = gym.make_vec(s["env"], num_envs=batch_size, **env_kwargs)
    policy_kwargs = {k: v for k, v in plan.policy_kwargs.items() if k not in ("lora", "autocast_dtype")}
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
