"""``tokengym train``: train one agent on one env, with a progress bar, metrics and a learning curve."""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import fields
from pathlib import Path

__all__ = ["add_cli", "train", "plot_curve"]


def plot_curve(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Reward (and KL to the reference) against episodes, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episodes = [h["episodes"] for h in history]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(episodes, [h["reward"] for h in history], color="tab:blue", label="mean episode reward")
    ax.set_xlabel("episodes")
    ax.set_ylabel("mean episode reward", color="tab:blue")
    twin = ax.twinx()
    twin.plot(episodes, [h["kl_ref"] for h in history], color="tab:red", alpha=0.6, label="KL to reference")
    twin.set_ylabel("KL(π_θ‖π_ref) per sequence", color="tab:red")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def train(
    env_id: str,
    agent: str,
    *,
    episodes: int,
    out: str | Path,
    reward: str | None = None,
    batch_size: int = 16,
    seed: int = 0,
    device: str = "cpu",
    beta: float | None = None,
    max_new_tokens: int | None = None,
    progress: bool = True,
    **agent_kwargs,
) -> list[dict]:
    """Train ``agent`` on ``env_id`` for ``episodes`` episodes; write metrics, curve and models to ``out``.

    ``beta`` is the KL coefficient: it goes to a KL-shaped reward and to GRPO's KL term.
    """
    import gymnasium as gym
    from tqdm.auto import tqdm

    import tokengym.envs  # noqa: F401  (registers the envs)
    from tokengym.agents import AGENTS

    if agent not in AGENTS:
        raise ValueError(f"unknown agent {agent!r}; expected one of {sorted(AGENTS)}")
    agent_class = AGENTS[agent]
    env_kwargs: dict = {"device": device}
    if reward is not None:
        env_kwargs["reward"] = reward
    if max_new_tokens is not None:
        env_kwargs["max_new_tokens"] = max_new_tokens
    if beta is not None and reward is not None and "kl" in reward:
        env_kwargs["reward_kwargs"] = {"beta": beta}
    config_fields = {f.name for f in fields(agent_class.config_class)}
    if beta is not None and "beta" in config_fields:
        agent_kwargs["beta"] = beta
    unknown = set(agent_kwargs) - config_fields
    if unknown:
        raise ValueError(f"{agent} has no option(s) {sorted(unknown)}; options: {sorted(config_fields)}")
    config = agent_class.config_class(seed=seed, **agent_kwargs)
    envs = gym.make_vec(env_id, num_envs=batch_size, **env_kwargs)
    learner = agent_class(envs, config)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("")
    bar = tqdm(total=episodes, unit="ep", disable=not progress, dynamic_ncols=True, desc=f"{agent} {env_id}")

    def log(stats: dict) -> None:
        with metrics_path.open("a") as f:
            f.write(json.dumps(stats) + "\n")
        bar.update(batch_size)
        bar.set_postfix(reward=f"{stats['reward']:.3f}", kl=f"{stats['kl_ref']:.2f}", tok_s=f"{stats['tokens_per_s']:.0f}")

    history = learner.learn(episodes, callback=log)
    bar.close()
    plot_curve(history, out / "curve.png", title=f"{agent} on {env_id} ({reward or 'default reward'})")
    learner.save(out, keep=("metrics.jsonl", "curve.png"))  # policy/, reference/, resumable state
    return history


def _summary(history: list[dict], n: int = 3) -> str:
    first = sum(h["reward"] for h in history[:n]) / min(n, len(history))
    last = sum(h["reward"] for h in history[-n:]) / min(n, len(history))
    return f"mean reward: first {min(n, len(history))} iterations {first:.3f} -> last {min(n, len(history))} {last:.3f}"


def _run(args: argparse.Namespace) -> int:
    agent_kwargs = {k: v for k, v in {"lr": args.lr, "group_size": args.group_size}.items() if v is not None}
    for item in args.set or []:
        key, _, value = item.partition("=")
        agent_kwargs[key] = json.loads(value) if value[:1] in "-0123456789[{tfn" else value
    history = train(
        args.env, args.agent, episodes=args.episodes, out=args.out, reward=args.reward,
        batch_size=args.batch_size, seed=args.seed, device=args.device, beta=args.beta,
        max_new_tokens=args.max_new_tokens, **agent_kwargs,
    )
    print(_summary(history))
    print(f"wrote {args.out}/metrics.jsonl, {args.out}/curve.png, {args.out}/policy, {args.out}/reference")
    return 0


def add_cli(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train an agent on an env")
    parser.add_argument("--env", default="tokengym/Sentiment-v0", help="env id (see `tokengym envs`)")
    parser.add_argument("--agent", default="ppo", choices=["reinforce", "a2c", "ppo", "grpo"])
    parser.add_argument("--reward", default=None, help="reward name (default: the task's)")
    parser.add_argument("--episodes", type=int, default=512, help="episodes to train for")
    parser.add_argument("--batch-size", type=int, default=16, help="episodes per iteration (num_envs)")
    parser.add_argument("--group-size", type=int, default=None, help="samples per prompt (GRPO, RLOO)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate")
    parser.add_argument("--beta", type=float, default=None, help="KL coefficient (KL-shaped reward and GRPO)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="episode length T")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", help="any other agent config field")
    parser.add_argument("--out", default="runs/train", help="output directory")
    parser.set_defaults(func=_run)
