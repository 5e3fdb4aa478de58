"""``tokengym train``: train one agent on one env, with metrics, a learning curve, periodic
checkpoints and bit-identical resume, optionally sharded (``--fsdp``) and reported to experiment
trackers (``--report-to``, :mod:`tokengym.tracking`).

The command runs in three phases, so that a bad flag never costs a model load or leaves files:

1. :func:`~tokengym.settings.resolve` and 2. :func:`~tokengym.settings.plan`: the flags become
   :class:`~tokengym.settings.TrainSettings` and the agent's config, checked without loading a
   model; each problem is a one-line :class:`~tokengym.lm.errors.UsageError`.
3. :func:`run`: build the env and agent, then (only then) write ``run.json``, ``metrics.jsonl``
   and the checkpoints (``tokengym.agents.checkpoint``), and at the end ``policy/``,
   ``reference/`` and ``curve.png``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from dataclasses import fields
from pathlib import Path

import torch

from tokengym.agents import AGENTS
from tokengym.flags import add_agent_flags, add_flags, given_flags
from tokengym.lm.errors import UsageError, bad_value
from tokengym.lm.io import atomic_write_file, finish_replace, replace_entries, write_json
from tokengym.lm.loading import hub_progress_bars
from tokengym.settings import (
    METRICS_FILE, RUN_FILE, RUN_LEVEL_AGENT_FIELDS, TIMING_FIELDS, Plan, Resolved, TrainSettings, absolute_paths, plan,
    read_run_file, resolve, run_record,
)

__all__ = ["add_cli", "train", "plot_curve", "run", "TIMING_FIELDS"]


# ---------------------------------------------------------------------------------------- plot
def plot_curve(history: list[dict], path: str | Path, title: str = "", beta: float | None = None) -> Path:
    """The run at a glance, saved as a PNG: the task reward (each component but the KL penalty)
    and the total on the left axis, KL(π_θ‖π_ref) per sequence on the right, against episodes.
    Raw per-iteration values are faint; the bold lines are their moving average."""
    from tokengym.lm.plotting import pyplot, save_figure
    from tokengym.rewards.targets import KL_COMPONENTS

    plt = pyplot()
    episodes = [h["episodes"] for h in history]
    window = max(1, len(history) // 10)

    def smooth(values: list[float]) -> list[float]:
        out, total = [], 0.0
        for i, value in enumerate(values):
            total += value - (values[i - window] if i >= window else 0.0)
            out.append(total / min(i + 1, window))
        return out

    components = sorted({k for h in history for k in h if k.startswith("reward/")})
    task = [c for c in components if c.removeprefix("reward/") not in KL_COMPONENTS]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    lines = [("total reward", "reward", "black")] + [(name.removeprefix("reward/"), name, None) for name in task]
    for label, key, color in lines:
        values = [h.get(key, math.nan) for h in history]
        (raw,) = ax.plot(episodes, values, color=color, lw=1, alpha=0.25)
        ax.plot(episodes, smooth(values), color=raw.get_color(), lw=2 if key == "reward" else 1.5, label=label)
    ax.set_xlabel("episodes")
    ax.set_ylabel("mean episode reward")
    twin = ax.twinx()
    kl = [h["kl_ref"] for h in history]
    twin.plot(episodes, kl, color="tab:red", lw=1, alpha=0.25)
    twin.plot(episodes, smooth(kl), color="tab:red", ls="--", lw=1.5, label="KL(π_θ‖π_ref)")
    twin.set_ylabel("KL(π_θ‖π_ref) per sequence, nats", color="tab:red")
    twin.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    twin_handles, twin_labels = twin.get_legend_handles_labels()
    ax.legend(handles + twin_handles, labels + twin_labels, fontsize=7, loc="upper left")
    ax.set_title(title + (f"  (β = {beta:g})" if beta is not None else ""), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


# ----------------------------------------------------------------------------------- 3. run
def _say(message: str) -> None:
    print(f"tokengym train: {message}", file=sys.stderr, flush=True)


def run(resolved: Resolved, plan_: Plan, progress: bool = True) -> list[dict]:
    """Build the env and the agent, train (resuming from the newest valid checkpoint), write outputs.

    Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) every process runs this: each rank
    trains its shard of the global batch, and rank 0 alone writes and reports
    (``docs/architecture.md``); with ``--fsdp`` every rank also writes its shards of each checkpoint."""
    from tokengym.lm import distributed

    with distributed.process_group(resolved.settings.device) as device:
        if resolved.resuming:
            _check_world_size(resolved.run_dir)
        plan_.env_kwargs["device"] = device
        return _run(resolved, plan_, progress)


def _check_world_size(run_dir: Path) -> None:
    """A resumed run continues with the number of processes it was started with (the global batch
    is ``world_size × --batch-size``)."""
    from tokengym.lm.distributed import world

    recorded = read_run_file(run_dir)["world_size"]
    if recorded != world()[1]:
        raise bad_value("--resume", str(run_dir), f"the {recorded} process(es) it was started with "
                        f"(torchrun --nproc-per-node {recorded}); this launch has {world()[1]}")


def _run(resolved: Resolved, plan_: Plan, show: bool) -> list[dict]:
    from tqdm.auto import tqdm

    import tokengym.envs  # noqa: F401  (registers the envs)
    from tokengym.agents import checkpoint
    from tokengym.alarm import OveroptimizationAlarm
    from tokengym.lm.distributed import all_ranks, world
    from tokengym.tracking import Trackers

    s, run_dir = resolved.settings, resolved.run_dir
    rank, world_size = world()
    writer = rank == 0  # the one process that writes files and speaks
    progress = show and writer
    run_id = _run_id(resolved)
    path = None
    if resolved.resuming and writer:
        finish_replace(run_dir)  # a final save a crash cut short: complete it (or leave the old one) first
    if resolved.resuming:  # choose the checkpoint before loading anything
        path, skipped = checkpoint.newest_valid(run_dir, run_id, plan_.agent_class.__name__)
        if path is None and skipped:
            reasons = "; ".join(f"{p.name}: {reason}" for p, reason in skipped)
            raise bad_value("--resume", str(run_dir), f"a valid checkpoint; none of the {len(skipped)} in "
                            f"{run_dir / checkpoint.CHECKPOINTS} is ({reasons})")
        for p, reason in skipped:
            if writer:
                _say(f"skipping checkpoint {p}: {reason}")
    envs, learner = _build(s, plan_)

    metrics_path = run_dir / METRICS_FILE
    if resolved.resuming:
        if path is not None:
            checkpoint.restore(learner, path)  # every rank: they all continue from rank 0's state
        all_ranks(True)  # every rank is done reading checkpoints/ before rank 0 prunes it
        if writer:
            checkpoint.remove_partial(run_dir)
            if learner.episodes >= s.episodes:
                _say(f"{run_dir} already finished its {s.episodes} episodes (iteration {learner.iteration}); nothing to do")
                return learner.history
            _say(f"resuming from {path} (iteration {learner.iteration}, {learner.episodes} episodes)" if path else
                 f"{run_dir} has no checkpoint yet: restarting the run from iteration 0")
            _write_metrics(metrics_path, learner.history)  # drop iterations after the checkpoint
        elif learner.episodes >= s.episodes:
            return learner.history
    elif writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / RUN_FILE, run_record(resolved, learner.config, world_size))
        _write_metrics(metrics_path, [])

    alarm = OveroptimizationAlarm(max_kl=s.kl_alarm, min_entropy=s.entropy_alarm)
    bar = tqdm(total=s.episodes, initial=min(learner.episodes, s.episodes), unit="ep", disable=not progress,
               dynamic_ncols=True, desc=f"{s.agent} {s.env}")
    trackers = Trackers(s.report_to if writer else [], run_dir, run_id,
                        json.loads((run_dir / RUN_FILE).read_text()) if writer else {})
    metrics_file = metrics_path.open("a") if writer else contextlib.nullcontext()
    with metrics_file as metrics, bar:  # the bar closes (and leaves its line) on errors too
        while learner.episodes < s.episodes:
            stats = learner.train_iteration()
            bar.update(world_size * s.batch_size)
            done = learner.episodes >= s.episodes
            save = s.save_every is not None and (learner.iteration % s.save_every == 0 or done)
            if writer:
                metrics.write(json.dumps(stats) + "\n")
                metrics.flush()
                trackers.log_metrics(stats)
                bar.set_postfix(reward=f"{stats['reward']:.3f}", kl=f"{stats['kl_ref']:.2f}")
                for message in alarm.check(stats):  # once per quantity, as one line (not a Python warning)
                    bar.write(f"tokengym train: warning: {message}", file=sys.stderr)
                if save:
                    os.fsync(metrics.fileno())
            if save and (writer or learner.sharded):  # under FSDP every rank writes its shards
                checkpoint.write_checkpoint(learner, run_dir, run_id, s.keep_checkpoints)
    history = learner.history
    samples = []
    if (show or s.report_to != ["none"]) and (writer or learner.sharded):  # sharded forwards need every rank
        with learner.rollout_weights():
            samples = sample_continuations(learner)
    if writer:
        if progress:
            show_samples(samples)
        trackers.log_samples(samples, learner.episodes)
        beta = getattr(envs.unwrapped.reward, "beta", None)
        plot_curve(history, run_dir / "curve.png",
                   title=f"{s.agent} on {s.env} ({plan_.env_kwargs.get('reward', 'reward model')})", beta=beta)
    if writer or learner.sharded:
        _save_final(learner, run_dir)
    trackers.close()
    return history


def _run_id(resolved: Resolved) -> str:
    """The id checkpoints are matched against: ``run.json``'s for a resumed run (older runs hashed
    their settings differently), else a hash of this run's settings."""
    if resolved.resuming:
        recorded = json.loads((resolved.run_dir / RUN_FILE).read_text()).get("run_id")
        if recorded:
            return recorded
    return resolved.run_id


def _write_metrics(path: Path, history: list[dict]) -> None:
    """Rewrite ``metrics.jsonl`` to exactly ``history`` (atomically)."""
    atomic_write_file(path, "".join(json.dumps(stats) + "\n" for stats in history))


def _build(s: TrainSettings, plan_: Plan):
    """The env and the agent (loading models); a setting they refuse is a one-line UsageError."""
    import gymnasium as gym

    from tokengym.agents.policy import Policy
    from tokengym.agents.sharding import Sharding

    env_kwargs = dict(plan_.env_kwargs)
    flag, value = "--env", s.env
    try:
        reward_model = env_kwargs.pop("reward_model", None)
        if reward_model is not None:
            flag, value = "--reward-model", reward_model["name"]
            env_kwargs["reward"] = reward_model_reward(reward_model, env_kwargs, s.trust_remote_code)
        flag, value = ("--model", s.model) if s.model is not None else ("--env", s.env)
        envs = gym.make_vec(s.env, num_envs=s.batch_size, **env_kwargs)
        env = envs.unwrapped
        policy_kwargs = dict(plan_.policy_kwargs)
        if "autocast_dtype" in policy_kwargs:
            policy_kwargs["autocast_dtype"] = getattr(torch, policy_kwargs["autocast_dtype"])
        torch.manual_seed(plan_.config.seed)  # a value head's initialisation is part of the run (determinism)
        policy = Policy.from_pretrained(env.model, device=env.device, value_head=plan_.agent_class.needs_values,
                                        **policy_kwargs)
        flag, value = "--agent", s.agent
        sharding = Sharding(rollout=s.fsdp_rollout) if s.fsdp else None
        learner = plan_.agent_class(envs, plan_.config, policy=policy, sharding=sharding)
    except (ValueError, TypeError, OSError) as exc:  # a setting or a model the env or agent refuses
        raise UsageError(f"{flag} {value}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return envs, learner


def reward_model_reward(spec: dict, env_kwargs: dict, trust_remote_code: bool):
    """The reward object for ``--reward-model``: the task's reward name around the classifier."""
    from tokengym.lm.loading import load_tokenizer
    from tokengym.rewards import make_reward
    from tokengym.rewards.classifier import SequenceClassifierScorer

    scorer = SequenceClassifierScorer(spec["name"], device=env_kwargs["device"], label=spec["label"],
                                      trust_remote_code=trust_remote_code)
    tokenizer = env_kwargs.get("tokenizer") or load_tokenizer(env_kwargs.get("model", "embedded"),
                                                              trust_remote_code=trust_remote_code)
    env_kwargs["tokenizer"] = tokenizer
    return make_reward(spec["reward"], task_scorer=scorer, tokenizer=tokenizer, **env_kwargs.pop("reward_kwargs", {}))


@torch.no_grad()
def sample_continuations(learner, n: int = 3, seed: int = 0) -> list[tuple[str, str, str]]:
    """``(prompt, π_ref's continuation, π_θ's continuation)`` for ``n`` prompts of the last batch,
    sampled at the env's temperature with a private generator (the run's RNG streams are untouched,
    so a resumed run stays bit-identical)."""
    from tokengym.agents.policy import Policy

    env = learner.env
    if env.tokenizer is None:
        return []
    texts = list(dict.fromkeys(env.prompt_texts))[:n]
    encoded = [env.tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    width = max(len(ids) for ids in encoded)
    prompt_ids = torch.full((len(encoded), width), env.pad_token_id, dtype=torch.long, device=env.device)
    prompt_mask = torch.zeros_like(prompt_ids, dtype=torch.bool)
    for row, ids in enumerate(encoded):
        prompt_ids[row, width - len(ids):] = torch.tensor(ids, device=env.device)
        prompt_mask[row, width - len(ids):] = True
    stop = set(env.stop_token_ids)

    def continuations(model, context) -> list[str]:
        policy, generator = Policy(model, sampling=env.sampling), torch.Generator(device=env.device).manual_seed(seed)
        rows: list[list[int]] = [[] for _ in encoded]
        done = [False] * len(encoded)
        with context:
            policy.begin(prompt_ids, prompt_mask)
            for _ in range(env.max_new_tokens):
                actions = policy.act(generator).actions
                for row, token in enumerate(actions.tolist()):
                    if not done[row]:  # the env's rule: a stop token ends a row once min_new_tokens are out
                        rows[row].append(token)
                        done[row] = token in stop and len(rows[row]) >= env.min_new_tokens
                policy.advance(actions)
        return [env.tokenizer.decode(row, skip_special_tokens=True) for row in rows]

    before = continuations(env.reference.model, env.reference.context())
    after = continuations(learner.policy.model, learner.policy.autocast())
    return list(zip(texts, before, after))


def show_samples(samples: list[tuple[str, str, str]]) -> None:
    """Print :func:`sample_continuations`: the reference's (before) and the trained policy's (after)."""
    if not samples:
        return
    print("samples, π_ref (before) and the trained π_θ (after), same prompts and random numbers:")
    for prompt, before, after in samples:
        print(f"  {prompt!r}\n    before: {before!r}\n    after:  {after!r}")


def _save_final(learner, run_dir: Path) -> None:
    """``policy/``, ``reference/`` and the agent's resumable state replace the old ones in
    ``run_dir`` as one transaction (:func:`~tokengym.lm.io.replace_entries`): after a crash, a
    reader sees all the old ones or all the new ones. A sharded agent's every rank takes part in
    the save; rank 0 replaces."""
    from tokengym.lm.distributed import world

    staging = learner.save(run_dir / ".final.tmp")
    if world()[0] == 0:
        replace_entries(run_dir, staging)


def train(env_id: str, agent: str, *, episodes: int, out: str | Path, progress: bool = True, **options) -> list[dict]:
    """Python entry point of ``tokengym train``: ``options`` are the flags' fields by name, the
    run's (``batch_size=32``) and the agent's (``lr=1e-4``, ``clip_eps=0.1``) alike."""
    given = absolute_paths({"env": env_id, "agent": agent, "episodes": episodes, **options})
    resolved = resolve(given, None, str(out))
    return run(resolved, plan(resolved), progress=progress)


def _summary(history: list[dict], n: int = 3) -> str:
    if not history:
        return "no iterations"
    k = min(n, len(history))

    def mean(key: str, rows: list[dict]) -> float:
        return sum(h.get(key, math.nan) for h in rows) / len(rows)

    lines = [f"mean reward: first {k} iterations {mean('reward', history[:k]):.3f} -> last {k} {mean('reward', history[-k:]):.3f}"]
    for key in sorted(key for key in history[-1] if key.startswith("reward/")):
        lines.append(f"  {key[len('reward/'):]}: {mean(key, history[:k]):.3f} -> {mean(key, history[-k:]):.3f}")
    lines.append(f"KL to the reference per sequence: {mean('kl_ref', history[:k]):.2f} -> {mean('kl_ref', history[-k:]):.2f} nats "
                 f"(max {max(h['kl_ref'] for h in history):.2f})")
    return "\n".join(lines)


def _main(args: argparse.Namespace) -> int:
    names = [f.name for f in fields(TrainSettings)] + _agent_field_names()
    resolved = resolve(absolute_paths(given_flags(args, names)), getattr(args, "resume", None), getattr(args, "out", None))
    plan_ = plan(resolved)
    with hub_progress_bars(enabled=False):  # transformers' loading/writing bars would break ours
        history = run(resolved, plan_, progress=not args.quiet)
    if not args.quiet:
        print(_summary(history))
        print(f"wrote {resolved.run_dir}/metrics.jsonl, curve.png, policy/, reference/" + (
            f", checkpoints/ (resume with --resume {resolved.run_dir})" if resolved.settings.save_every else ""))
    return 0


def _agent_field_names() -> list[str]:
    return sorted({f.name for cls in AGENTS.values() for f in fields(cls.config_class)} - set(RUN_LEVEL_AGENT_FIELDS))


def _first_sentence(doc: str | None) -> str:
    words = " ".join((doc or "").split())
    return words.split(": ")[0].split(". ")[0].rstrip(".")


def add_cli(subparsers) -> None:
    agents = "\n".join(f"  {name:<10} {_first_sentence(cls.__doc__)}" for name, cls in AGENTS.items())
    parser = subparsers.add_parser(
        "train", help="train an agent on an env (a few CPU minutes on the embedded model)",
        description="Train one agent on one env. Writes OUT/run.json, OUT/metrics.jsonl (one line per iteration), "
        "OUT/curve.png, OUT/policy/ and OUT/reference/ (transformers alone loads them); with --save-every, "
        "checkpoints that --resume continues from, bit-identically. The defaults are the healthy KL-regularised run: "
        "'tokengym train --env tokengym/Sentiment-v0' trains A2C against VADER − β·KL (about 3 CPU minutes).\n\n"
        f"agents (--agent):\n{agents}",
    )
    add_flags(parser.add_argument_group("the run"), TrainSettings)
    parser.add_argument("--out", metavar="DIR", help="output directory, must not hold a run already (default: runs/train)")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its newest valid checkpoint, "
                        "with its recorded settings")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, samples or summary")
    add_agent_flags(parser.add_argument_group("agent options (the defaults of each agent that has the option)"),
                    {name: cls.config_class for name, cls in AGENTS.items()}, exclude=RUN_LEVEL_AGENT_FIELDS)
    parser.set_defaults(func=_main)
