"""``tokengym train``: train one agent on one env, with metrics, a learning curve, periodic
checkpoints and bit-identical resume.

The command runs in three phases, so that a bad flag never costs a model load or leaves files:

1. ``resolve_settings`` and 2. ``validate`` (``tokengym/settings.py``): the flags become one dict of
   settings, checked without loading a model; each problem is a one-line
   :class:`~tokengym.lm.errors.UsageError`.
3. :func:`run`: build the env and agent, then (only then) write ``run.json``, ``metrics.jsonl``
   and the checkpoints (``tokengym.agents.checkpoint``), and at the end ``policy/``,
   ``reference/`` and ``curve.png``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import warnings
from pathlib import Path

import torch

from tokengym.settings import (
    AGENT_NAMES, DEFAULTS, DTYPES, METRICS_FILE, RUN_FILE, TIMING_FIELDS, Plan, resolve_settings, validate,
)
from tokengym.lm.errors import UsageError, bad_value
from tokengym.lm.io import atomic_write_file
from tokengym.lm.loading import hub_progress_bars

__all__ = ["add_cli", "train", "plot_curve", "run", "TIMING_FIELDS"]


# ---------------------------------------------------------------------------------------- plot
def plot_curve(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Total reward, each reward component (task reward, KL penalty, …) and KL to the reference
    against episodes, saved as a PNG."""
    from tokengym.lm.plotting import pyplot, save_figure

    plt = pyplot()

    episodes = [h["episodes"] for h in history]
    components = sorted({k for h in history for k in h if k.startswith("reward/")})
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(episodes, [h["reward"] for h in history], color="black", lw=2, label="total reward")
    for name in components:
        ax.plot(episodes, [h.get(name, math.nan) for h in history], lw=1, label=name)
    ax.set_xlabel("episodes")
    ax.set_ylabel("mean episode reward")
    twin = ax.twinx()
    twin.plot(episodes, [h["kl_ref"] for h in history], color="tab:red", ls="--", alpha=0.6, label="KL to reference")
    twin.set_ylabel("KL(π_θ‖π_ref) per sequence", color="tab:red")
    lines, labels = ax.get_legend_handles_labels()
    twin_lines, twin_labels = twin.get_legend_handles_labels()
    ax.legend(lines + twin_lines, labels + twin_labels, fontsize=7, loc="best")
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


# ----------------------------------------------------------------------------------- 3. run
def _run_id(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _write_json_atomic(path: Path, data) -> None:
    atomic_write_file(path, json.dumps(data, indent=2) + "\n")


def _write_metrics(path: Path, history: list[dict]) -> None:
    """Rewrite ``metrics.jsonl`` to exactly ``history`` (atomically)."""
    atomic_write_file(path, "".join(json.dumps(stats) + "\n" for stats in history))


def _say(message: str) -> None:
    print(f"tokengym train: {message}", file=sys.stderr, flush=True)


def run(settings: dict, plan: Plan, run_dir: Path, resuming: bool, progress: bool = True) -> list[dict]:
    """Build the env and the agent, train (resuming from the newest valid checkpoint), write outputs.

    Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) every process runs this: each rank
    trains its shard of the global batch, and rank 0 alone writes (``docs/architecture.md``)."""
    from tokengym.lm import distributed

    with distributed.process_group(settings["device"]) as device:
        _check_world_size(run_dir, resuming)
        plan.env_kwargs["device"] = device
        return _run(settings, plan, run_dir, resuming, progress and distributed.world()[0] == 0)


def _check_world_size(run_dir: Path, resuming: bool) -> None:
    """A resumed run continues with the number of processes it was started with (the global batch
    is ``world_size × --batch-size``)."""
    from tokengym.lm.distributed import world

    if resuming:
        recorded = json.loads((run_dir / RUN_FILE).read_text()).get("world_size", 1)
        if recorded != world()[1]:
            raise bad_value("--resume", str(run_dir), f"the {recorded} process(es) it was started with "
                            f"(torchrun --nproc-per-node {recorded}); this launch has {world()[1]}")


def _run(settings: dict, plan: Plan, run_dir: Path, resuming: bool, progress: bool) -> list[dict]:
    import contextlib

    from tqdm.auto import tqdm

    import tokengym.envs  # noqa: F401  (registers the envs)
    from tokengym.agents import checkpoint
    from tokengym.alarm import OveroptimizationAlarm
    from tokengym.lm.distributed import all_ranks, world

    s = settings
    rank, world_size = world()
    writer = rank == 0  # the one process that writes files and speaks
    run_id = _run_id(s)
    path = None
    if resuming:  # choose the checkpoint before loading anything
        path, skipped = checkpoint.newest_valid(run_dir, run_id, plan.agent_class.__name__)
        if path is None and skipped:
            reasons = "; ".join(f"{p.name}: {reason}" for p, reason in skipped)
            raise bad_value("--resume", str(run_dir), f"a valid checkpoint; none of the {len(skipped)} in "
                            f"{run_dir / checkpoint.CHECKPOINTS} is ({reasons})")
        for p, reason in skipped:
            if writer:
                _say(f"skipping checkpoint {p}: {reason}")
    envs, learner = _build(s, plan)

    metrics_path = run_dir / METRICS_FILE
    if resuming:
        if path is not None:
            checkpoint.restore(learner, path)  # every rank: they all continue from rank 0's state
        all_ranks(True)  # every rank is done reading checkpoints/ before rank 0 prunes it
        if writer:
            checkpoint.remove_partial(run_dir)
            _say(f"resuming from {path} (iteration {learner.iteration}, {learner.episodes} episodes)" if path else
                 f"{run_dir} has no checkpoint yet: restarting the run from iteration 0")
            _write_metrics(metrics_path, learner.history)  # drop iterations after the checkpoint
    elif writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(run_dir / RUN_FILE, {"tokengym_run": 1, "run_id": run_id, "settings": s,
                                                "world_size": world_size})
        _write_metrics(metrics_path, [])

    alarm = OveroptimizationAlarm(max_kl=s["kl_alarm"], min_entropy=s["entropy_alarm"])
    total = s["episodes"]
    bar = tqdm(total=total, initial=min(learner.episodes, total), unit="ep", disable=not progress,
               dynamic_ncols=True, desc=f"{s['agent']} {s['env']}")
    metrics_file = metrics_path.open("a") if writer else contextlib.nullcontext()
    with metrics_file as metrics, bar:  # the bar closes (and leaves its line) on errors too
        while learner.episodes < total:
            stats = learner.train_iteration()
            bar.update(world_size * s["batch_size"])
            if not writer:
                continue
            metrics.write(json.dumps(stats) + "\n")
            metrics.flush()
            bar.set_postfix(reward=f"{stats['reward']:.3f}", kl=f"{stats['kl_ref']:.2f}")
            with warnings.catch_warnings():  # the alarm speaks once per quantity, as one line
                warnings.simplefilter("ignore")
                for message in alarm(stats):
                    bar.write(f"tokengym train: warning: {message}", file=sys.stderr)
            done = learner.episodes >= total
            if s["save_every"] is not None and (learner.iteration % s["save_every"] == 0 or done):
                os.fsync(metrics.fileno())
                checkpoint.write_checkpoint(learner, run_dir, run_id, s["keep_checkpoints"])
    history = learner.history
    if not writer:
        return history
    if progress:
        show_samples(learner)
    plot_curve(history, run_dir / "curve.png", title=f"{s['agent']} on {s['env']} ({s['reward'] or 'default reward'})")
    _save_final(learner, run_dir)
    return history


def _build(s: dict, plan: Plan):
    """The env and the agent (loading models); a setting they refuse is a one-line UsageError."""
    import gymnasium as gym
    import torch

    from tokengym.agents.policy import Policy

    env_kwargs = dict(plan.env_kwargs)
    flag, value = "--env", s["env"]
    try:
        reward_model = env_kwargs.pop("reward_model", None)
        if reward_model is not None:
            flag, value = "--reward-model", reward_model["name"]
            env_kwargs["reward"] = reward_model_reward(reward_model, env_kwargs, s)
        flag, value = ("--model", s["model"]) if s["model"] is not None else ("--env", s["env"])
        envs = gym.make_vec(s["env"], num_envs=s["batch_size"], **env_kwargs)
        env = envs.unwrapped
        policy_kwargs = dict(plan.policy_kwargs)
        if "autocast_dtype" in policy_kwargs:
            policy_kwargs["autocast_dtype"] = getattr(torch, policy_kwargs["autocast_dtype"])
        torch.manual_seed(plan.config.seed)  # a value head's initialisation is part of the run (determinism)
        policy = Policy.from_pretrained(env.model, device=env.device, value_head=plan.agent_class.needs_values,
                                        **policy_kwargs)
        flag, value = "--agent", s["agent"]
        learner = plan.agent_class(envs, plan.config, policy=policy)
    except (ValueError, TypeError, OSError) as exc:  # a setting or a model the env or agent refuses
        raise UsageError(f"{flag} {value}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return envs, learner


def reward_model_reward(spec: dict, env_kwargs: dict, s: dict):
    """The reward object for ``--reward-model``: the task's reward name around the classifier."""
    from tokengym.lm.loading import load_tokenizer
    from tokengym.rewards import make_reward
    from tokengym.rewards.classifier import SequenceClassifierScorer

    scorer = SequenceClassifierScorer(spec["name"], device=env_kwargs.get("device", s["device"]), label=spec["label"],
                                      trust_remote_code=s["trust_remote_code"])
    tokenizer = env_kwargs.get("tokenizer") or load_tokenizer(
        env_kwargs.get("model", "embedded"), trust_remote_code=s["trust_remote_code"])
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


def show_samples(learner) -> None:
    """Print three continuations of the reference (before) and the trained policy (after)."""
    print("samples, π_ref (before) and the trained π_θ (after), same prompts and random numbers:")
    for prompt, before, after in sample_continuations(learner):
        print(f"  {prompt!r}\n    before: {before!r}\n    after:  {after!r}")


def _save_final(learner, run_dir: Path) -> None:
    """``policy/``, ``reference/`` and the agent's resumable state, each renamed into ``run_dir``."""
    import shutil

    staging = learner.save(run_dir / ".final.tmp")
    for child in staging.iterdir():
        target = run_dir / child.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(child, target)
    staging.rmdir()


def train(env_id: str, agent: str, *, episodes: int, out: str | Path, progress: bool = True, **settings) -> list[dict]:
    """Python entry point of ``tokengym train`` (same settings as the flags, by their names)."""
    given = {"env": env_id, "agent": agent, "episodes": episodes, **settings}
    s, run_dir, resuming = resolve_settings(given, None, str(out))
    plan = validate(s, run_dir, resuming, frozenset(given))
    return run(s, plan, run_dir, resuming, progress=progress)


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
    given = {name: value for name, value in vars(args).items() if name in DEFAULTS}
    settings, run_dir, resuming = resolve_settings(given, getattr(args, "resume", None), getattr(args, "out", None))
    plan = validate(settings, run_dir, resuming, frozenset(given))
    quiet = getattr(args, "quiet", False)
    with hub_progress_bars(enabled=not quiet):  # --quiet silences transformers' weight-loading bars too
        history = run(settings, plan, run_dir, resuming, progress=not quiet)
    print(_summary(history))
    print(f"wrote {run_dir}/metrics.jsonl, curve.png, policy/, reference/" + (
        f", checkpoints/ (resume with --resume {run_dir})" if settings["save_every"] else ""))
    return 0


def add_cli(subparsers) -> None:
    from tokengym.rewards import ESTIMATORS, REWARD_NAMES
    from tokengym.rewards.segmenters import SEGMENTER_NAMES

    d = DEFAULTS
    parser = subparsers.add_parser(
        "train", help="train an agent on an env",
        description="Train one agent on one env. Writes OUT/metrics.jsonl (one line per iteration), "
        "OUT/curve.png, OUT/policy/ and OUT/reference/; with --save-every, checkpoints that "
        "--resume continues from, bit-identically.",
        argument_default=argparse.SUPPRESS,  # only the flags typed reach the settings
    )
    add = parser.add_argument
    add("--env", metavar="ID", help=f"env id, see `tokengym envs` (default: {d['env']})")
    add("--agent", choices=AGENT_NAMES, help="reinforce: Monte-Carlo policy gradient; a2c: actor-critic; "
        "ppo: clipped PPO with GAE (KL via --reward kl-shaped); grpo: group-relative PPO with a KL term "
        f"(default: {d['agent']})")
    add("--model", metavar="NAME_OR_DIR", help="any causal LM: a local directory or a Hugging Face hub name (default: the env's, the embedded model)")
    add("--tokenizer", metavar="NAME_OR_DIR", help="tokenizer, if not the model's own (default: the model's)")
    add("--trust-remote-code", action="store_true", help="allow models and tokenizers that run their own code (default: off)")
    add("--prompts", metavar="FILE", help="prompts: .txt (one per line) or .jsonl (records with a 'prompt' field; other fields reach the reward) (default: the env's)")
    add("--reward-model", metavar="NAME_OR_DIR", help="a sequence classifier as the holistic reward (default: the env's scorer)")
    add("--reward-label", metavar="LABEL", help="which label of --reward-model is the reward: an index or a name such as POSITIVE (needed if it has several)")
    add("--lora", type=int, metavar="RANK", help="train LoRA adapters of this rank only (PEFT); π_ref is the base with adapters off (default: full fine-tuning)")
    add("--lora-alpha", type=float, metavar="F", help="LoRA alpha; adapters scale by alpha / rank (default: 16)")
    add("--lora-dropout", type=float, metavar="P", help="LoRA dropout (default: 0)")
    add("--lora-targets", nargs="+", metavar="MODULE", help="LoRA target modules (default: per architecture, e.g. q_proj k_proj v_proj o_proj)")
    add("--dtype", choices=DTYPES, help=f"autocast dtype; master weights stay float32 (default: {d['dtype']})")
    add("--reward", metavar="NAME", help=f"reward name: {', '.join(REWARD_NAMES)} (default: the env's task reward)")
    add("--beta", type=float, metavar="F", help="KL coefficient: of a KL-shaped reward, else of GRPO's KL term in its loss (with a KL-shaped "
        "reward, GRPO's loss has none: the KL is penalised once) (default: theirs)")
    add("--kl-target", type=float, metavar="NATS", help="adapt the KL-shaped reward's β towards this KL per sequence "
        "(Ziegler et al.'s controller, starting at --beta) (default: a fixed β)")
    add("--kl-estimator", metavar="K", help=f"KL estimator: {', '.join(ESTIMATORS)} (KL-shaped reward, GRPO; default: theirs)")
    add("--segmenter", metavar="NAME", help=f"segmenter of a fine-grained reward: {', '.join(SEGMENTER_NAMES)} (default: the task's)")
    add("--episodes", type=int, metavar="N", help=f"episodes to train for (default: {d['episodes']})")
    add("--batch-size", type=int, metavar="N", help=f"episodes per iteration (num_envs) (default: {d['batch_size']})")
    add("--group-size", type=int, metavar="G", help="samples per prompt: GRPO, REINFORCE with the leave-one-out baseline (default: the agent's)")
    add("--minibatch-size", type=int, metavar="N", help="episodes per forward/backward in an update, gradients "
        "accumulated: bounds the update's memory (default: all of a step's episodes at once)")
    add("--lr", type=float, metavar="F", help="learning rate (default: the agent's)")
    add("--max-new-tokens", type=int, metavar="T", help="episode length T (default: the env's)")
    add("--min-new-tokens", type=int, metavar="M", help="a stop token before M actions is an ordinary token: guards against a policy that stops early to dodge the KL penalty (default: 0)")
    add("--temperature", type=float, metavar="TAU", help=f"sampling temperature; π_ref and the KL are taken at it too (default: {d['temperature']})")
    add("--top-k", type=int, metavar="K", help=f"sample among the K likeliest tokens, 0: off (default: {d['top_k']})")
    add("--top-p", type=float, metavar="P", help=f"nucleus sampling mass, 1: off (default: {d['top_p']})")
    add("--kl-alarm", type=float, metavar="NATS", help=f"warn once when KL to the reference per sequence exceeds this (default: {d['kl_alarm']})")
    add("--entropy-alarm", type=float, metavar="NATS", help=f"warn once when the per-token entropy falls below this (default: {d['entropy_alarm']})")
    add("--seed", type=int, metavar="N", help=f"seeds prompts, sampling and initialisation (default: {d['seed']})")
    add("--device", help=f"torch device (default: {d['device']})")
    add("--set", action="append", metavar="FIELD=VALUE", help="any other agent config field, e.g. --set n_epochs=2 (repeatable)")
    add("--out", metavar="DIR", help="output directory, must not hold a run already (default: runs/train)")
    add("--save-every", type=int, metavar="ITERATIONS", help="checkpoint every this many iterations and at the end (default: never)")
    add("--keep-checkpoints", type=int, metavar="K", help=f"keep the newest K checkpoints (default: {d['keep_checkpoints']})")
    add("--resume", metavar="DIR", help="continue the run in DIR from its newest valid checkpoint, with its recorded settings")
    add("--quiet", action="store_true", help="no progress bars (transformers' too) and no before/after samples")
    parser.set_defaults(func=_main)
