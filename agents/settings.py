"""The settings of ``tokengym train``: phases 1 and 2 of the command (see ``agents/train.py``).

1. :func:`resolve_settings`: the flags given (or, with ``--resume DIR``, ``DIR/run.json``) become
   one dict of settings; a flag that conflicts with a resumed run is an error.
2. :func:`validate`: every setting is checked without loading a model; each problem is a
   :class:`~tokengym.lm.errors.UsageError` naming the flag, the value and what was expected, and
   becomes a :class:`Plan` (the agent class, its config, the env's and the policy's keywords).

To add a flag: add it to :data:`DEFAULTS` here and to ``add_cli`` in ``agents/train.py``, and
check it in :func:`validate`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tokengym.lm.errors import UsageError, bad_value

__all__ = ["DEFAULTS", "Plan", "resolve_settings", "validate", "read_prompts_file"]

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
AGENT_NAMES = ("reinforce", "a2c", "ppo", "grpo", "fdpg", "dpo")
BETA_AGENTS = ("grpo", "fdpg", "dpo")
"""Agents with a β of their own (GRPO's KL term; the RLKL target of f-DPG and DPO), set by --beta."""
KL_REWARDS = ("kl-shaped", "fine-grained+kl")
FINE_GRAINED_REWARDS = ("fine-grained", "fine-grained+kl")
TIMING_FIELDS = ("tokens_per_s", "rollout_tokens_per_s")
"""Metrics that measure the machine, not the run (excluded when runs are compared)."""

DEFAULTS: dict[str, Any] = {
    "env": "tokengym/Sentiment-v0",
    "agent": "ppo",
    "model": None,
    "tokenizer": None,
    "trust_remote_code": False,
    "prompts": None,
    "reward_model": None,
    "reward_label": None,
    "lora": None,
    "lora_alpha": None,
    "lora_dropout": None,
    "lora_targets": None,
    "dtype": "float32",
    "reward": None,
    "beta": None,
    "kl_target": None,
    "kl_estimator": None,
    "segmenter": None,
    "episodes": 512,
    "batch_size": 16,
    "group_size": None,
    "lr": None,
    "minibatch_size": None,
    "max_new_tokens": None,
    "min_new_tokens": None,
    "temperature": 1.0,
    "top_k": 0,
    "top_p": 1.0,
    "kl_alarm": 15.0,
    "entropy_alarm": 0.3,
    "seed": 0,
    "device": "cpu",
    "set": [],
    "save_every": None,
    "keep_checkpoints": 2,
}
"""Every recorded setting and its default; ``run.json`` holds all of them, resolved."""

_FLAG = {name: "--" + name.replace("_", "-") for name in DEFAULTS}
DTYPES = ("float32", "bfloat16", "float16")
KL_HORIZON = 128
"""Episodes over which the adaptive-β controller corrects a KL error (Ziegler et al. use 10 000
steps; a run of a few thousand episodes needs a shorter horizon to reach its target)."""
"""--dtype choices: float32, or autocast to a half type with float32 master weights."""


# ------------------------------------------------------------------------------- 1. resolve
def resolve_settings(given: dict[str, Any], resume: str | None, out: str | None) -> tuple[dict, Path, bool]:
    """``(settings, run directory, resuming)`` from the flags given explicitly."""
    if resume is None:
        return {**DEFAULTS, **given}, Path(out if out is not None else "runs/train"), False
    run_dir = Path(resume)
    if not run_dir.is_dir():
        raise bad_value("--resume", resume, "a run directory written by tokengym train (no such directory)")
    try:
        recorded = json.loads((run_dir / RUN_FILE).read_text())
    except FileNotFoundError:
        raise bad_value("--resume", resume, f"a run directory written by tokengym train (it has no {RUN_FILE})") from None
    except (OSError, ValueError) as exc:
        raise bad_value("--resume", resume, f"a readable {RUN_FILE} ({exc})") from None
    if not isinstance(recorded, dict) or recorded.get("tokengym_run") != 1 or not isinstance(recorded.get("settings"), dict):
        raise bad_value("--resume", resume, f"a tokengym run; its {RUN_FILE} is not one (foreign file)")
    settings = {**DEFAULTS, **recorded["settings"]}
    if out is not None and Path(out).resolve() != run_dir.resolve():
        raise bad_value("--out", out, f"no --out with --resume (the run continues in {resume})")
    for name, value in given.items():
        if _normal(value) != _normal(settings.get(name)):
            raise bad_value(
                _FLAG[name], _show(value),
                f"nothing, or the recorded {_show(settings.get(name))}: --resume continues the run in {resume} with its own settings",
            )
    return settings, run_dir, True


def _normal(value):
    return json.loads(json.dumps(value))


def _show(value) -> str:
    return " ".join(value) if isinstance(value, list) else str(value)


# ------------------------------------------------------------------------------ 2. validate
@dataclass
class Plan:
    """What :func:`validate` derived from the settings: enough to build everything."""

    agent_class: type
    config: Any
    env_kwargs: dict
    policy_kwargs: dict


def _check_number(flag, value, *, low, integer=False, low_open=False, allow_none=True):
    if value is None and allow_none:
        return
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > low if low_open else value >= low)
    if not ok:
        raise bad_value(flag, value, f"{kind} {'>' if low_open else '≥'} {low}")


def _check_env(env_id: str):
    import gymnasium as gym

    import tokengym.envs  # noqa: F401  (registers the envs)
    from tokengym.envs import registered_envs

    envs = registered_envs()
    if env_id in envs:
        return envs[env_id]
    if f"tokengym/{env_id}" in envs:
        raise bad_value("--env", env_id, f"a registered env id; did you mean tokengym/{env_id}?")
    if env_id in gym.registry:
        raise bad_value("--env", env_id, "a tokengym/ env (tokengym train drives token-level envs only; see 'tokengym envs')")
    raise bad_value("--env", env_id, f"one of {', '.join(sorted(envs))} (see 'tokengym envs')")


def validate(settings: dict, run_dir: Path, resuming: bool, given: frozenset[str] = frozenset()) -> Plan:
    """Check every setting without loading a model; raise :class:`UsageError` on the first problem.

    ``given``: the flags the user typed (a flag with no effect is an error only then)."""
    s = settings
    unknown = set(s) - set(DEFAULTS)
    if unknown:
        raise bad_value("--resume", str(run_dir), f"a {RUN_FILE} with known settings, got {sorted(unknown)}")
    task = _check_env(s["env"])
    if task.name == "custom" and (s["prompts"] is None or s["reward_model"] is None):
        raise bad_value(
            "--env", s["env"],
            "an env with a built-in task, or --prompts FILE and --reward-model NAME_OR_DIR (with --model): "
            "tokengym/Custom-v0 has no prompts or reward of its own (in Python: gymnasium.make_vec("
            "'tokengym/Custom-v0', model=..., prompts=..., reward=...))",
        )
    model_kwargs = _check_model_flags(s, given)
    if s["agent"] not in AGENT_NAMES:
        raise bad_value("--agent", s["agent"], f"one of {', '.join(AGENT_NAMES)}")
    from tokengym.agents import AGENTS
    from tokengym.rewards import ESTIMATORS, REWARD_NAMES

    agent_class = AGENTS[s["agent"]]
    if s["reward"] is not None and s["reward"] not in REWARD_NAMES:
        raise bad_value("--reward", s["reward"], f"one of {', '.join(REWARD_NAMES)}")
    reward = s["reward"] if s["reward"] is not None else task.reward
    kl_reward, grpo = reward in KL_REWARDS, s["agent"] == "grpo"

    for name in ("episodes", "batch_size"):
        _check_number(_FLAG[name], s[name], low=1, integer=True, allow_none=False)
    _check_number("--seed", s["seed"], low=0, integer=True, allow_none=False)
    _check_number("--max-new-tokens", s["max_new_tokens"], low=1, integer=True)
    _check_number("--min-new-tokens", s["min_new_tokens"], low=0, integer=True)
    _check_number("--temperature", s["temperature"], low=0, low_open=True, allow_none=False)
    _check_number("--top-k", s["top_k"], low=0, integer=True, allow_none=False)
    _check_number("--top-p", s["top_p"], low=0, low_open=True, allow_none=False)
    if s["top_p"] > 1:
        raise bad_value("--top-p", s["top_p"], "a number in (0, 1] (1 disables it)")
    _check_number("--kl-alarm", s["kl_alarm"], low=0, low_open=True)
    _check_number("--entropy-alarm", s["entropy_alarm"], low=0, low_open=True)
    _check_number("--lr", s["lr"], low=0, low_open=True)
    _check_number("--beta", s["beta"], low=0)
    _check_number("--kl-target", s["kl_target"], low=0, low_open=True)
    if s["kl_target"] is not None and not kl_reward:
        raise bad_value("--kl-target", s["kl_target"], f"a KL-shaped reward (--reward {' or '.join(KL_REWARDS)}); "
                        f"with reward {reward!r} it would have no effect")
    _check_number("--save-every", s["save_every"], low=1, integer=True)
    _check_number("--keep-checkpoints", s["keep_checkpoints"], low=1, integer=True, allow_none=False)
    if "keep_checkpoints" in given and s["save_every"] is None:
        raise bad_value("--keep-checkpoints", s["keep_checkpoints"], "--save-every too (without it no checkpoint is written)")

    if s["beta"] is not None and not (kl_reward or s["agent"] in BETA_AGENTS):
        raise bad_value(
            "--beta", s["beta"],
            f"a KL-shaped reward (--reward {' or '.join(KL_REWARDS)}) or --agent {', '.join(BETA_AGENTS)}; with reward {reward!r} "
            f"and --agent {s['agent']} it would have no effect",
        )
    if s["kl_estimator"] is not None:
        if s["kl_estimator"] not in ESTIMATORS:
            raise bad_value("--kl-estimator", s["kl_estimator"], f"one of {', '.join(ESTIMATORS)}")
        if not (kl_reward or grpo):
            raise bad_value(
                "--kl-estimator", s["kl_estimator"],
                f"a KL-shaped reward or --agent grpo; with reward {reward!r} and --agent {s['agent']} it would have no effect",
            )
    reward_kwargs: dict[str, Any] = {}
    if s["segmenter"] is not None:
        from tokengym.rewards import get_segmenter

        try:
            get_segmenter(s["segmenter"])
        except ValueError:
            from tokengym.rewards.segmenters import SEGMENTER_NAMES

            raise bad_value("--segmenter", s["segmenter"], f"one of {', '.join(SEGMENTER_NAMES)}") from None
        if reward not in FINE_GRAINED_REWARDS:
            raise bad_value(
                "--segmenter", s["segmenter"],
                f"a fine-grained reward (--reward {' or '.join(FINE_GRAINED_REWARDS)}); with reward {reward!r} it would have no effect",
            )
        reward_kwargs["segmenter"] = s["segmenter"]
    if kl_reward and s["kl_target"] is not None:  # Ziegler et al.'s controller; --beta is its start
        from tokengym.rewards.kl import DEFAULT_BETA, AdaptiveKL

        start = s["beta"] if s["beta"] else DEFAULT_BETA  # the controller's start
        reward_kwargs["beta"] = AdaptiveKL(init_beta=start, target=s["kl_target"], horizon=KL_HORIZON)
    elif kl_reward and s["beta"] is not None:
        reward_kwargs["beta"] = s["beta"]
    if kl_reward and s["kl_estimator"] is not None:
        from tokengym.lm.kl import REWARD_ESTIMATORS

        if s["kl_estimator"] not in REWARD_ESTIMATORS:  # the reward's per-token penalty must be unbiased per token (docs/kl.md)
            raise bad_value("--kl-estimator", s["kl_estimator"], f"{' or '.join(REWARD_ESTIMATORS)} for a KL-shaped reward "
                            "(with one, GRPO's loss has no KL term of its own)")
        reward_kwargs["estimator"] = s["kl_estimator"]

    # Agent config: named flags, then --set FIELD=VALUE, then the dataclass's own checks.
    config_fields = {f.name for f in fields(agent_class.config_class)}
    flagged = {"lr": "--lr", "minibatch_size": "--minibatch-size", "group_size": "--group-size", "seed": "--seed", "beta": "--beta", "kl_estimator": "--kl-estimator"}
    kwargs: dict[str, Any] = {"seed": s["seed"]}
    if s["lr"] is not None:
        kwargs["lr"] = s["lr"]
    if s["minibatch_size"] is not None:
        _check_number("--minibatch-size", s["minibatch_size"], low=1, integer=True)
        kwargs["minibatch_size"] = s["minibatch_size"]
    if grpo and kl_reward:  # one KL penalty: the reward's; a second one in GRPO's loss would count it twice
        kwargs["beta"] = 0.0
    elif s["agent"] in BETA_AGENTS and s["beta"] is not None:
        kwargs["beta"] = s["beta"]
    if grpo and not kl_reward and s["kl_estimator"] is not None:
        kwargs["kl_estimator"] = s["kl_estimator"]
    for item in s["set"]:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise bad_value("--set", item, "FIELD=VALUE")
        if key in flagged:
            raise bad_value("--set", item, f"{flagged[key]} instead of --set {key}=")
        if key not in config_fields:
            raise bad_value("--set", item, f"a field of {agent_class.config_class.__name__}: {', '.join(sorted(config_fields - set(flagged)))}")
        kwargs[key] = _parse_value(text)
    baseline = kwargs.get("baseline", getattr(agent_class.config_class, "baseline", None))  # REINFORCE's, default included
    if s["group_size"] is not None:
        _check_number("--group-size", s["group_size"], low=1, integer=True)
        if grpo and s["group_size"] < 2:
            raise bad_value("--group-size", s["group_size"], "an integer ≥ 2 for --agent grpo (groups are compared within)")
        uses_groups = grpo or s["agent"] == "fdpg" or (s["agent"] == "reinforce" and baseline == "leave-one-out")
        if not uses_groups:
            raise bad_value(
                "--group-size", s["group_size"],
                "--agent grpo or fdpg, or --agent reinforce --set baseline=leave-one-out; "
                f"--agent {s['agent']} does not use groups, so it would have no effect",
            )
        kwargs["group_size"] = s["group_size"]
    try:
        config = agent_class.config_class(**kwargs)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{' '.join('--set ' + i for i in s['set']) or '--agent ' + s['agent']}: {exc}") from None
    if s["batch_size"] % config.group_size:
        raise bad_value("--batch-size", s["batch_size"], f"a multiple of the group size {config.group_size}")
    n_minibatches = getattr(config, "n_minibatches", 1)
    if n_minibatches > s["batch_size"]:
        raise bad_value("--batch-size", s["batch_size"], f"at least n_minibatches={n_minibatches} episodes for --agent {s['agent']}")

    import torch

    try:
        device = torch.device(s["device"])
    except (RuntimeError, ValueError):
        raise bad_value("--device", s["device"], "a torch device such as cpu, cuda or cuda:1") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise bad_value("--device", s["device"], "an available device (torch sees no CUDA device here)")

    if not resuming:
        if run_dir.exists() and not run_dir.is_dir():
            raise bad_value("--out", str(run_dir), "a directory (a file is in the way)")
        if (run_dir / RUN_FILE).exists() or (run_dir / METRICS_FILE).exists():
            raise bad_value("--out", str(run_dir), f"a new directory; it holds a run: continue it with --resume {run_dir}, or choose another --out")

    env_kwargs: dict[str, Any] = {"device": s["device"], **model_kwargs}
    if s["reward_model"] is not None:
        if reward in FINE_GRAINED_REWARDS:
            raise bad_value("--reward-model", s["reward_model"], "a holistic or kl-shaped reward (it scores whole "
                            f"completions); with reward {reward!r} use a segment scorer in Python")
        # The reward model replaces the task's holistic scorer; loaded in run(), after validation.
        env_kwargs["reward_model"] = {"name": s["reward_model"], "label": s["reward_label"], "reward": reward}
    elif s["reward"] is not None:
        env_kwargs["reward"] = s["reward"]
    if s["max_new_tokens"] is not None:
        env_kwargs["max_new_tokens"] = s["max_new_tokens"]
    if s["min_new_tokens"] is not None:
        env_kwargs["min_new_tokens"] = s["min_new_tokens"]
    for name in ("temperature", "top_k", "top_p"):  # the env owns the sampling: agents, π_ref and the KL read it
        if s[name] != DEFAULTS[name]:
            env_kwargs[name] = s[name]
    if reward_kwargs:
        env_kwargs["reward_kwargs"] = reward_kwargs
    policy_kwargs: dict[str, Any] = {"trust_remote_code": s["trust_remote_code"]}
    if s["lora"] is not None:
        from tokengym.lm.lora import LoRAConfig

        try:
            policy_kwargs["lora"] = LoRAConfig(
                rank=s["lora"], **{k: v for k, v in (("alpha", s["lora_alpha"]), ("dropout", s["lora_dropout"]),
                                                     ("target_modules", s["lora_targets"])) if v is not None})
        except ValueError as exc:
            raise bad_value("--lora", s["lora"], str(exc)) from None
    if s["dtype"] != "float32":
        policy_kwargs["autocast_dtype"] = s["dtype"]
    return Plan(agent_class, config, env_kwargs, policy_kwargs)


def _looks_local(name: str) -> bool:
    """A path, not a hub name ("org/model"): it exists, or it is written like a path."""
    return os.path.exists(name) or name.startswith((".", "/", "~")) or name.endswith("/") or name.count("/") >= 2


def _check_model_flags(s: dict, given: frozenset[str]) -> dict[str, Any]:
    """Validate --model/--tokenizer/--prompts/--reward-model/--lora/--dtype without loading a model;
    returns the env keywords they become."""
    kwargs: dict[str, Any] = {}
    for flag, name in (("--model", s["model"]), ("--tokenizer", s["tokenizer"]), ("--reward-model", s["reward_model"])):
        if name is None or not _looks_local(name):
            continue  # a hub name: loaded (and checked) in run(); only a name you type touches the network
        path = Path(name).expanduser()
        if not path.exists():
            raise bad_value(flag, name, "an existing local directory (no such directory) or a Hugging Face hub name")
        if not (path / "config.json").is_file() and flag != "--tokenizer":
            raise bad_value(flag, name, "a model directory with a config.json (save_pretrained writes one)")
    if s["model"] is not None:
        kwargs["model"] = s["model"]
        if s["tokenizer"] is None and _looks_local(s["model"]):
            path = Path(s["model"]).expanduser()
            if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")):
                raise bad_value("--model", s["model"], "a directory with a tokenizer (tokenizer.json or "
                                "tokenizer_config.json), or pass --tokenizer NAME_OR_DIR")
    if s["tokenizer"] is not None:
        kwargs["tokenizer"] = s["tokenizer"]
    if s["trust_remote_code"]:
        kwargs["trust_remote_code"] = True
    if s["prompts"] is not None:
        kwargs["prompts"] = read_prompts_file(s["prompts"])
    if s["reward_label"] is not None and s["reward_model"] is None:
        raise bad_value("--reward-label", s["reward_label"], "--reward-model too (it picks that model's label)")
    _check_number("--lora", s["lora"], low=1, integer=True)
    for name in ("lora_alpha", "lora_dropout", "lora_targets"):
        if s[name] is not None and s["lora"] is None:
            raise bad_value(_FLAG[name], _show(s[name]), "--lora RANK too (it configures the adapters)")
    if s["dtype"] not in DTYPES:
        raise bad_value("--dtype", s["dtype"], f"one of {', '.join(DTYPES)}")
    return kwargs


def read_prompts_file(path: str):
    """Prompts from ``--prompts FILE``: ``.txt`` (one prompt per line) or ``.jsonl`` (records with a
    ``prompt`` field and any other columns). Errors name the file and the line."""
    from tokengym.envs.records import load_prompt_records

    file = Path(path)
    if not file.is_file():
        raise bad_value("--prompts", path, "an existing .txt or .jsonl file (no such file)")
    if file.suffix == ".txt":
        lines = file.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                raise bad_value("--prompts", path, f"one non-empty prompt per line; line {number} is empty")
        if not lines:
            raise bad_value("--prompts", path, "at least one prompt (the file is empty)")
        return lines
    if file.suffix == ".jsonl":
        try:
            return load_prompt_records(str(file))
        except ValueError as exc:
            raise bad_value("--prompts", path, f"valid prompt records ({exc})") from None
    raise bad_value("--prompts", path, "a .txt file (one prompt per line) or a .jsonl file (records with a 'prompt' field)")


def _parse_value(text: str):
    """JSON for numbers, booleans, null, lists and dicts; anything else is a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text
