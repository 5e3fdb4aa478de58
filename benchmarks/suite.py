"""Benchmark suites: a grid of envs × agents × reward configurations × seeds, declared in TOML.

``tokengym bench --suite quick|full|FILE.toml --out DIR`` runs every cell of the grid, records each
finished cell atomically under ``DIR/cells/`` (a second run skips them), and rebuilds
``results.json``, ``results.md`` and the learning-curve PNGs from all of the grid's cells.

A suite file::

    name = "demo"
    description = "one line for results.md"
    envs = ["tokengym/Sentiment-v0"]
    agents = ["reinforce", "ppo"]
    seeds = 3                             # seeds 0, 1, 2; or a list, [0, 7]
    rewards = ["default", "kl-shaped"]    # the reward axis (see below); default ["default"]

    [run]                                 # settings of every cell
    episodes = 480
    batch_size = 16
    lr = 1e-4

    [agent.ppo]                           # settings of one agent, on every env
    n_epochs = 2

    [env."tokengym/Calibration-v0"]       # settings of one env, for every agent
    batch_size = 256
    reward = "kl-shaped"
    reward_kwargs = { beta = 0.5 }

    [env."tokengym/Calibration-v0".agent.grpo]   # one env × one agent
    group_size = 8

A settings key is a run setting (a field of :class:`RunSettings`) or a field of the agent's config
class (``lr``, ``group_size``, ``clip_eps``, ...; see ``tokengym.agents``). Layers apply in the
order ``[run]`` < ``[agent.X]`` < ``[env.E]`` < ``[env.E.agent.X]`` < reward-axis entry < ablation
value; ``reward_kwargs`` and ``env_kwargs`` merge key by key. ``reward_kwargs`` belong to the reward
they were given with: a layer that switches ``reward`` to another name starts from empty
``reward_kwargs`` unless it gives its own. TOML has no null: ``"none"`` sets a field to None
(``target_kl = "none"``).

The reward axis: ``"default"`` (the task's own reward), a reward name (``"holistic"``,
``"fine-grained"``, ``"kl-shaped"``, ``"fine-grained+kl"``), or a table of settings with an
optional ``label``, e.g. ``{ label = "kl-0.1", reward = "kl-shaped", reward_kwargs = { beta = 0.1 } }``.

Ablations (``--ablate FIELD=V1,V2,...``, repeatable; several give their product) run the suite's
first cell (first env, agent and reward-axis entry) once per value, and add ``ablation.md`` and a
reward–KL ``frontier.png``. ``FIELD`` is any settings key, or ``reward_kwargs.<option>`` /
``env_kwargs.<option>``; values are TOML literals (``0.5``, ``true``) or bare strings (``k3``).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

__all__ = [
    "SuiteError", "RunSettings", "Variant", "Cell", "Suite", "load_suite", "parse_ablation",
    "run_suite", "run_cell", "SUITES_DIR",
]

SUITES_DIR = Path(__file__).parent / "suites"
"""Where the packaged suites (``quick.toml``, ``full.toml``) live."""

CELLS_DIR = "cells"
EVAL_REWARDS = ("holistic", "fine-grained")
"""Rewards a run can be scored with on the side (``eval_rewards``), never trained on."""
KL_COMPONENT = "kl_penalty"
"""The KL-shaped reward's component name; ``score`` is the reward without it."""


class SuiteError(ValueError):
    """An invalid suite: the message names the file section and the field."""


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class RunSettings:
    """How one cell runs (everything but the env, agent and seed)."""

    episodes: int = 256
    """Episodes to train for (rounded up to whole batches), >= 1."""
    batch_size: int = 16
    """Episodes per iteration (the env's ``num_envs``), >= 1."""
    max_new_tokens: int | None = None
    """Episode length T (None: the task's)."""
    reward: str | None = None
    """Reward name for the env (None: the task's default)."""
    reward_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Options of the reward (``beta``, ``estimator``, ...); ``beta`` may be a table
    ``{init_beta, target, horizon}`` for an adaptive β."""
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Any other keyword of ``gymnasium.make_vec`` for this env."""
    eval_rewards: tuple[str, ...] = ()
    """Also score every rollout with these rewards (``"holistic"``, ``"fine-grained"``); logged as
    ``eval/<name>``, never trained on. Gives reward variants a common metric."""
    exact_every: int = 0
    """Calibration-v0 only: every this many iterations, enumerate all 512 sequences and log the
    exact ``KL(π_θ‖π*)``, ``E_πθ[R]``, ``E_π*[R]`` and ``KL(π_θ‖π_ref)`` as ``exact/*`` (0: off)."""
    last_n: int = 5
    """Final values are means over this many last iterations, >= 1."""
    agent_options: Mapping[str, Any] = field(default_factory=dict)
    """Fields of the agent's config class (``lr``, ``group_size``, ...); ``seed`` comes from the grid."""

    def __post_init__(self):
        from tokengym.rewards import REWARD_NAMES

        _check_int("episodes", self.episodes, 1)
        _check_int("batch_size", self.batch_size, 1)
        if self.max_new_tokens is not None:
            _check_int("max_new_tokens", self.max_new_tokens, 1)
        if self.reward is not None and self.reward not in REWARD_NAMES:
            raise ValueError(f"reward must be one of {', '.join(REWARD_NAMES)}, got {self.reward!r}")
        for name in ("reward_kwargs", "env_kwargs", "agent_options"):
            if not isinstance(getattr(self, name), Mapping):
                raise ValueError(f"{name} must be a table, got {getattr(self, name)!r}")
        taken = {"num_envs", "device", "reward", "reward_kwargs", "max_new_tokens"} & set(self.env_kwargs)
        if taken:
            raise ValueError(f"env_kwargs must not set {sorted(taken)}: use the run settings of those names")
        if isinstance(self.eval_rewards, str) or not all(r in EVAL_REWARDS for r in self.eval_rewards):
            raise ValueError(f"eval_rewards must be a list drawn from {list(EVAL_REWARDS)}, got {self.eval_rewards!r}")
        _check_int("exact_every", self.exact_every, 0)
        _check_int("last_n", self.last_n, 1)
        if "seed" in self.agent_options:
            raise ValueError("seed is set by the suite's seeds, not per run")

    def env_make_kwargs(self) -> dict[str, Any]:
        """Keywords for ``gymnasium.make_vec`` (besides ``num_envs`` and ``device``)."""
        from tokengym.rewards.kl import AdaptiveKL

        kwargs = dict(self.env_kwargs)
        if self.reward is not None:
            kwargs["reward"] = self.reward
        if self.reward_kwargs:
            reward_kwargs = dict(self.reward_kwargs)
            if isinstance(reward_kwargs.get("beta"), Mapping):
                reward_kwargs["beta"] = AdaptiveKL(**reward_kwargs["beta"])
            kwargs["reward_kwargs"] = reward_kwargs
        if self.max_new_tokens is not None:
            kwargs["max_new_tokens"] = self.max_new_tokens
        return kwargs


RUN_KEYS = frozenset(f.name for f in fields(RunSettings)) - {"agent_options"}


def _agent_fields(agent: str) -> set[str]:
    from tokengym.agents import AGENTS

    return {f.name for f in fields(AGENTS[agent].config_class)}


def _check_keys(where: str, layer: Mapping[str, Any], agents: Sequence[str]) -> None:
    """Every key of a settings layer is a run setting or a config field of each agent it reaches."""
    if not isinstance(layer, Mapping):
        raise SuiteError(f"{where} must be a table of settings, got {layer!r}")
    for key in layer:
        if key in RUN_KEYS:
            continue
        if key == "seed":
            raise SuiteError(f"{where}: seed is set by the suite's seeds, not per run")
        if key == "agent_options":
            raise SuiteError(f"{where}: give agent options as plain keys (lr = ...), not in agent_options")
        lacking = [a for a in agents if key not in _agent_fields(a)]
        if lacking:
            options = sorted(set.intersection(*(_agent_fields(a) for a in lacking)) - {"seed"})
            raise SuiteError(
                f"{where}: unknown field {key!r}: neither a run setting ({', '.join(sorted(RUN_KEYS))}) "
                f"nor an option of {', '.join(lacking)} ({', '.join(options)}); "
                "agent-specific options go under [agent.<name>]"
            )


def _merge(layers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for layer in layers:
        if "reward" in layer and layer["reward"] != merged.get("reward") and "reward_kwargs" not in layer:
            merged.pop("reward_kwargs", None)  # options of the previous reward do not carry over
        for key, value in layer.items():
            if key in ("reward_kwargs", "env_kwargs") and isinstance(value, Mapping):
                merged[key] = {**merged.get(key, {}), **value}
            else:
                merged[key] = value
    return merged


def _settings(merged: Mapping[str, Any]) -> RunSettings:
    merged = {k: None if v == "none" else v for k, v in merged.items()}  # TOML has no null
    run = {k: v for k, v in merged.items() if k in RUN_KEYS}
    if isinstance(run.get("eval_rewards"), list):
        run["eval_rewards"] = tuple(run["eval_rewards"])
    return RunSettings(**run, agent_options={k: v for k, v in merged.items() if k not in RUN_KEYS})


@dataclass(frozen=True)
class Variant:
    """One entry of the reward axis (or one ablation value): settings applied on top of the
    env's and agent's, under a label."""

    label: str
    """Names the variant in tables, plots and cell files."""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """Settings keys (see the module docstring)."""

    def __post_init__(self):
        if not isinstance(self.label, str) or not self.label:
            raise ValueError(f"label must be a non-empty string, got {self.label!r}")

    @classmethod
    def parse(cls, entry: Any, where: str) -> "Variant":
        if isinstance(entry, str):
            return cls(entry, {} if entry == "default" else {"reward": entry})
        if isinstance(entry, Mapping):
            overrides = {k: v for k, v in entry.items() if k != "label"}
            label = entry.get("label") or _label(overrides) or "default"
            return cls(label, overrides)
        raise SuiteError(f"{where}: each entry is a reward name or a table of settings, got {entry!r}")


def _label(overrides: Mapping[str, Any]) -> str:
    parts = []
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            parts += [f"{key}.{k}={v}" for k, v in value.items()]
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", text).strip("_")


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    env: str
    agent: str
    variant: str
    seed: int
    settings: RunSettings

    @property
    def key(self) -> str:
        """File name of the cell's record under ``out/cells/``."""
        return f"{_slug(self.env.split('/')[-1])}__{self.agent}__{_slug(self.variant)}__seed{self.seed}"

    @property
    def fingerprint(self) -> str:
        """Hash of everything that defines the run: a cell file with another one is stale."""
        text = json.dumps([self.env, self.agent, self.variant, self.seed, _jsonable(asdict(self.settings))], sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def agent_config(self):
        from tokengym.agents import AGENTS

        return AGENTS[self.agent].config_class(seed=self.seed, **self.settings.agent_options)


@dataclass(frozen=True)
class Suite:
    """A parsed suite file; :meth:`cells` expands the grid."""

    name: str
    """Names the suite in results."""
    envs: tuple[str, ...]
    """Registered env ids (``tokengym envs``)."""
    agents: tuple[str, ...]
    """Agent names (``tokengym.agents.AGENTS``)."""
    seeds: tuple[int, ...] = (0,)
    """Seeds of every cell."""
    variants: tuple[Variant, ...] = (Variant("default"),)
    """The reward axis."""
    run: Mapping[str, Any] = field(default_factory=dict)
    """``[run]``: settings of every cell."""
    agent: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """``[agent.<name>]``."""
    env: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """``[env."<id>"]`` (without its ``agent`` sub-tables)."""
    env_agent: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    """``[env."<id>".agent.<name>]``, keyed by (env, agent)."""
    ablated: tuple[str, ...] = ()
    """The fields an ablation varies (set by :meth:`ablation`)."""
    description: str = ""
    """One line for results.md."""

    def __post_init__(self):
        import tokengym.envs  # noqa: F401  (registers the envs)
        from tokengym.agents import AGENTS
        from tokengym.envs import registered_envs

        for name, values in (("envs", self.envs), ("agents", self.agents), ("seeds", self.seeds), ("rewards", self.variants)):
            if not values:
                raise SuiteError(f"{name} must not be empty")
        known_envs = registered_envs()
        for env in self.envs:
            if env not in known_envs:
                raise SuiteError(f"envs: {env!r} is not a registered env; registered: {', '.join(sorted(known_envs))}")
        for agent in self.agents:
            if agent not in AGENTS:
                raise SuiteError(f"agents: unknown agent {agent!r}; expected one of {', '.join(sorted(AGENTS))}")
        for seed in self.seeds:
            if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
                raise SuiteError(f"seeds: each seed must be an integer >= 0, got {seed!r}")
        for name, values in (("envs", self.envs), ("agents", self.agents), ("seeds", self.seeds),
                             ("rewards", [v.label for v in self.variants])):
            if len(set(values)) != len(values):
                raise SuiteError(f"{name} has duplicates: {list(values)}")
        _check_keys("[run]", self.run, self.agents)
        for agent, layer in self.agent.items():
            if agent not in self.agents:
                raise SuiteError(f"[agent.{agent}]: {agent!r} is not in agents {list(self.agents)}")
            _check_keys(f"[agent.{agent}]", layer, [agent])
        for env, layer in self.env.items():
            if env not in self.envs:
                raise SuiteError(f'[env."{env}"]: {env!r} is not in envs {list(self.envs)}')
            _check_keys(f'[env."{env}"]', layer, self.agents)
        for (env, agent), layer in self.env_agent.items():
            if env not in self.envs or agent not in self.agents:
                raise SuiteError(f'[env."{env}".agent.{agent}]: not a cell of this suite')
            _check_keys(f'[env."{env}".agent.{agent}]', layer, [agent])
        for variant in self.variants:
            _check_keys(f"rewards entry {variant.label!r}", variant.overrides, self.agents)
        self.cells()  # resolves and validates every cell's settings

    def resolve(self, env: str, agent: str, variant: Variant, seed: int) -> Cell:
        """The cell's settings: the layers merged in order, then validated."""
        from tokengym.envs import registered_envs
        from tokengym.rewards import reward_options

        layers = [self.run, self.agent.get(agent, {}), self.env.get(env, {}),
                  self.env_agent.get((env, agent), {}), variant.overrides]
        where = f"cell ({env}, {agent}, {variant.label})"
        try:
            settings = _settings(_merge(layers))
        except (TypeError, ValueError) as err:
            raise SuiteError(f"{where}: {err}") from None
        cell = Cell(env, agent, variant.label, seed, settings)
        try:
            config = cell.agent_config()  # the agent config validates its own fields
        except (TypeError, ValueError) as err:
            raise SuiteError(f"{where}: {err}") from None
        if settings.batch_size % config.group_size:
            raise SuiteError(f"{where}: batch_size={settings.batch_size} must be a multiple of group_size={config.group_size}")
        reward = settings.reward or registered_envs()[env].reward
        accepted = reward_options(reward)  # None: an unknown name, which make_reward reports
        if accepted is not None and set(settings.reward_kwargs) - accepted:
            raise SuiteError(f"{where}: reward_kwargs {sorted(set(settings.reward_kwargs) - accepted)} do not apply to "
                             f"reward {reward!r} (it accepts {sorted(accepted) or 'none'})")
        if settings.exact_every and not _is_calibration(env):
            raise SuiteError(f"{where}: exact_every needs tokengym/Calibration-v0 (exact enumeration)")
        return cell

    def cells(self) -> list[Cell]:
        """The grid, env-major: env × agent × reward-axis entry × seed."""
        return [self.resolve(e, a, v, s) for e, a, v, s in itertools.product(self.envs, self.agents, self.variants, self.seeds)]

    def with_seeds(self, seeds: int | Sequence[int]) -> "Suite":
        """The same suite with seeds ``0..n-1`` (an int) or the given list."""
        seeds = tuple(range(seeds)) if isinstance(seeds, int) else tuple(seeds)
        return replace(self, seeds=seeds)

    def ablation(self, values: Mapping[str, Sequence[Any]]) -> "Suite":
        """The suite's first cell run once per value (the product over several fields)."""
        if not values:
            raise SuiteError("an ablation needs at least one FIELD=V1,V2,...")
        env, agent, base = self.envs[0], self.agents[0], self.variants[0]
        variants = []
        for combination in itertools.product(*values.values()):
            layer: dict[str, Any] = {}
            for path, value in zip(values, combination):
                key, _, option = path.partition(".")
                if option:
                    layer.setdefault(key, {})[option] = value
                else:
                    layer[key] = value
            _check_keys(f"--ablate {', '.join(values)}", layer, [agent])
            label = _label(dict(zip(values, combination)))
            variants.append(Variant(label, _merge([base.overrides, layer])))
        return replace(
            self, name=f"{self.name}-ablation", envs=(env,), agents=(agent,), variants=tuple(variants),
            agent={k: v for k, v in self.agent.items() if k == agent},
            env={k: v for k, v in self.env.items() if k == env},
            env_agent={k: v for k, v in self.env_agent.items() if k == (env, agent)},
            ablated=tuple(values),
        )


def _is_calibration(env_id: str) -> bool:
    from tokengym.envs import registered_envs

    return registered_envs()[env_id].model == "calibration"


def _parse_value(text: str) -> Any:
    """A TOML literal (``0.5``, ``true``, ``"x"``), else the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_ablation(specs: Sequence[str] | None) -> dict[str, tuple[Any, ...]]:
    """``["reward=holistic,fine-grained", "reward_kwargs.beta=0.1,0.5"]`` -> ``{field: values}``."""
    out: dict[str, tuple[Any, ...]] = {}
    for spec in specs or []:
        path, sep, values = spec.partition("=")
        path = path.strip()
        if not sep or not path or not values.strip():
            raise SuiteError(f"--ablate {spec!r}: expected FIELD=V1,V2,...")
        key, _, option = path.partition(".")
        if option and key not in ("reward_kwargs", "env_kwargs"):
            raise SuiteError(f"--ablate {spec!r}: only reward_kwargs.<option> and env_kwargs.<option> take a dotted path")
        if path in out:
            raise SuiteError(f"--ablate: {path!r} is given twice")
        out[path] = tuple(_parse_value(v.strip()) for v in values.split(","))
    return out


def load_suite(suite: str | os.PathLike | Suite) -> Suite:
    """A :class:`Suite` from ``"quick"``, ``"full"`` (the packaged files), or a TOML path."""
    if isinstance(suite, Suite):
        return suite
    path = Path(suite)
    if not path.suffix and not path.exists():
        packaged = SUITES_DIR / f"{suite}.toml"
        if not packaged.exists():
            known = sorted(p.stem for p in SUITES_DIR.glob("*.toml"))
            raise SuiteError(f"no suite {str(suite)!r}: expected one of {known} or a .toml file")
        path = packaged
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{path}: invalid TOML ({err})") from None
    try:
        return parse_suite(data, default_name=path.stem)
    except SuiteError as err:
        raise SuiteError(f"{path}: {err}") from None


TOP_LEVEL_KEYS = {"name", "description", "envs", "agents", "seeds", "rewards", "run", "agent", "env"}


def parse_suite(data: Mapping[str, Any], default_name: str = "suite") -> Suite:
    """A :class:`Suite` from a parsed TOML document."""
    unknown = set(data) - TOP_LEVEL_KEYS
    if unknown:
        raise SuiteError(f"unknown top-level field(s) {sorted(unknown)}; expected {sorted(TOP_LEVEL_KEYS)} "
                         "(per-run settings go under [run])")
    for key in ("envs", "agents"):
        if key not in data:
            raise SuiteError(f"missing field {key!r}")
        if not isinstance(data[key], list) or not all(isinstance(x, str) for x in data[key]):
            raise SuiteError(f"{key} must be a list of strings, got {data[key]!r}")
    seeds = data.get("seeds", 1)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise SuiteError(f"seeds must be an integer >= 1 or a list of seeds, got {seeds!r}")
        seeds = list(range(seeds))
    if not isinstance(seeds, list):
        raise SuiteError(f"seeds must be an integer >= 1 or a list of seeds, got {seeds!r}")
    rewards = data.get("rewards", ["default"])
    if not isinstance(rewards, list):
        raise SuiteError(f"rewards must be a list, got {rewards!r}")
    env_layers, env_agent = {}, {}
    for env, layer in data.get("env", {}).items():
        if not isinstance(layer, Mapping):
            raise SuiteError(f'[env."{env}"] must be a table, got {layer!r}')
        layer = dict(layer)
        for agent, sub in layer.pop("agent", {}).items():
            env_agent[(env, agent)] = sub
        env_layers[env] = layer
    for name in ("name", "description"):
        if name in data and not isinstance(data[name], str):
            raise SuiteError(f"{name} must be a string, got {data[name]!r}")
    for name in ("run", "agent"):
        if not isinstance(data.get(name, {}), Mapping):
            raise SuiteError(f"[{name}] must be a table, got {data[name]!r}")
    return Suite(
        name=data.get("name", default_name),
        description=data.get("description", ""),
        envs=tuple(data["envs"]),
        agents=tuple(data["agents"]),
        seeds=tuple(seeds),
        variants=tuple(Variant.parse(r, f"rewards[{i}]") for i, r in enumerate(rewards)),
        run=data.get("run", {}),
        agent=data.get("agent", {}),
        env=env_layers,
        env_agent=env_agent,
    )


# ---------------------------------------------------------------------------------------------
# Running one cell
# ---------------------------------------------------------------------------------------------


class SideScores:
    """Wraps the env's reward: passes its output through unchanged, and scores the same episodes
    with extra rewards that are only logged (``totals``: per-episode sums, (B,) each)."""

    def __init__(self, reward: Any, extra: Mapping[str, Any]):
        self.reward, self.extra = reward, dict(extra)
        self.totals: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:  # update_beta, beta, ... of the wrapped reward
        if name in ("reward", "extra", "totals"):
            raise AttributeError(name)
        return getattr(self.reward, name)

    def reset(self, episodes) -> None:
        self.reward.reset(episodes)
        for reward in self.extra.values():
            reward.reset(episodes)
        self.totals = {}

    def __call__(self, step):
        from tokengym.rewards.base import as_components

        for name, reward in self.extra.items():
            step_total = sum(as_components(reward(step), name).values()) * step.acted  # (B,)
            self.totals[name] = self.totals.get(name, 0) + step_total
        return self.reward(step)

    def means(self) -> dict[str, float]:
        return {f"eval/{name}": float(total.float().mean()) for name, total in self.totals.items()}


def _attach_side_scores(env, names: Sequence[str]) -> SideScores | None:
    if not names:
        return None
    from tokengym.rewards import make_reward

    task = env.task
    extra = {
        name: make_reward(name, task_scorer=task.scorer() if task.scorer else None, fine_grained=task.fine_grained,
                          tokenizer=env.tokenizer)
        for name in names
    }
    env.reward = SideScores(env.reward, extra)
    return env.reward


class CalibrationProbe:
    """Exact quantities on Calibration-v0 by enumerating its 512 sequences: ``E_πθ[R]``,
    ``KL(π_θ‖π_ref)``, and with a fixed-β KL-shaped reward ``KL(π_θ‖π*)`` and ``E_π*[R]`` for the
    optimum ``π* ∝ π_ref·exp(R/β)``."""

    def __init__(self, reward: Any):
        from tokengym.envs import calibration

        self.calibration = calibration
        self.ref_logprobs = calibration.sequence_logprobs(calibration.build_reference_model())  # (512,)
        self.rewards = calibration.calibration_reward(calibration.all_sequences())  # (512,)
        beta = getattr(reward, "beta", None)  # a KL-shaped reward's; None for other rewards
        fixed = getattr(reward, "controller", None) is None  # an adaptive β has no single π*
        self.beta = float(beta) if beta and fixed else None
        self.optimum = calibration.optimal_policy(self.ref_logprobs, self.beta) if self.beta else None

    def __call__(self, model) -> dict[str, float]:
        kl = self.calibration.kl_divergence
        logprobs = self.calibration.sequence_logprobs(model).cpu()  # (512,)
        out = {
            "exact/reward": float((logprobs.exp() * self.rewards).sum()),
            "exact/kl_ref": float(kl(logprobs, self.ref_logprobs)),
        }
        if self.optimum is not None:
            out["exact/kl_to_optimum"] = float(kl(logprobs, self.optimum))
            out["exact/optimal_reward"] = float((self.optimum.exp() * self.rewards).sum())
            out["exact/objective"] = out["exact/reward"] - self.beta * out["exact/kl_ref"]
            out["exact/optimal_objective"] = self.beta * float(
                (self.ref_logprobs + self.rewards / self.beta).logsumexp(0))  # β log Z = max of the objective
        return out


def _reset_peak_rss() -> str:
    """Reset the kernel's RSS high-water mark (Linux); returns the scope the peak will have."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return "cell"
    except OSError:
        return "process"


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def run_cell(cell: Cell, *, device: str = "cpu", on_iteration: Callable[[dict], None] | None = None) -> dict:
    """Train ``cell``'s agent on its env through ``Agent.learn``; returns the cell's record."""
    import gymnasium as gym
    import torch

    import tokengym.envs  # noqa: F401  (registers the envs)
    from tokengym.agents import AGENTS

    s = cell.settings
    envs = gym.make_vec(cell.env, num_envs=s.batch_size, device=device, **s.env_make_kwargs())
    env = envs.unwrapped
    side = _attach_side_scores(env, s.eval_rewards)
    probe = CalibrationProbe(env.reward) if s.exact_every else None
    agent = AGENTS[cell.agent](env, cell.agent_config())
    start_exact = probe(agent.policy.model) if probe else {}

    def callback(stats: dict) -> None:
        stats["score"] = stats["reward"] - stats.get(f"reward/{KL_COMPONENT}", 0.0)
        if side is not None:
            stats.update(side.means())
        if probe is not None and (stats["iteration"] % s.exact_every == 0 or stats["episodes"] >= s.episodes):
            stats.update(probe(agent.policy.model))
        if on_iteration is not None:
            on_iteration(stats)

    scope = _reset_peak_rss()
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    history = agent.learn(s.episodes, callback=callback)
    wall_s = time.perf_counter() - start
    record = summarise(cell, history, wall_s=wall_s)
    record.update(peak_rss_mb=_peak_rss_mb(), peak_rss_scope=scope, device=str(device))
    if cuda:
        record["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    if start_exact:
        record["exact_start"] = start_exact
    envs.close()
    return record


def _tail_mean(history: Sequence[Mapping[str, Any]], key: str, n: int) -> float | None:
    values = [h[key] for h in history if key in h][-n:]
    return sum(values) / len(values) if values else None


def summarise(cell: Cell, history: Sequence[Mapping[str, Any]], *, wall_s: float) -> dict:
    """A cell's record: final values are means of the last ``last_n`` iterations."""
    s, n = cell.settings, cell.settings.last_n
    keys = list(dict.fromkeys(k for h in history for k in h))
    tokens = sum(h["response_tokens"] * s.batch_size for h in history)
    exact = {k: v for k, v in history[-1].items() if k.startswith("exact/")}
    return {
        "env": cell.env,
        "agent": cell.agent,
        "config": cell.variant,
        "reward": s.reward or "default",
        "seed": cell.seed,
        "initial_reward": history[0]["reward"],
        "final_reward": _tail_mean(history, "reward", n),
        "best_reward": max(h["reward"] for h in history),
        "final_score": _tail_mean(history, "score", n),
        "components": {k[len("reward/"):]: _tail_mean(history, k, n) for k in keys if k.startswith("reward/")},
        "eval": {k[len("eval/"):]: _tail_mean(history, k, n) for k in keys if k.startswith("eval/")},
        "exact": exact,
        "final_kl": _tail_mean(history, "kl_ref", n),
        "final_entropy": _tail_mean(history, "entropy", n),
        "episodes": history[-1]["episodes"],
        "iterations": len(history),
        "tokens": int(round(tokens)),
        "wall_s": wall_s,
        "tokens_per_s": tokens / wall_s if wall_s > 0 else None,
        "settings": _jsonable(asdict(s)),
        "fingerprint": cell.fingerprint,
        "history": [dict(h) for h in history],
    }


# ---------------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None  # 6 significant digits keep files small
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary sibling, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_jsonable(data), f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_cell(out: Path, cell: Cell) -> dict | None:
    """The recorded result of ``cell``, or None if it is missing or was run with other settings."""
    path = Path(out) / CELLS_DIR / f"{cell.key}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if record.get("fingerprint") == cell.fingerprint else None


def run_suite(
    suite: str | os.PathLike | Suite,
    out: str | os.PathLike,
    *,
    ablate: Sequence[str] | Mapping[str, Sequence[Any]] | None = None,
    device: str = "cpu",
    seeds: int | Sequence[int] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Run every cell of ``suite`` not yet recorded in ``out``; rebuild the results from all cells.

    ``suite``: ``"quick"``, ``"full"``, a TOML path or a :class:`Suite`. ``ablate``: ``FIELD=V1,V2``
    strings (or ``{field: values}``) to run the suite's first cell across. ``seeds``: a number of seeds (0..n-1) or a list, replacing the
    suite's. Returns the records of the grid, in grid order.
    """
    from tqdm.auto import tqdm

    suite = load_suite(suite)
    if seeds is not None:
        suite = suite.with_seeds(seeds)
    if ablate:
        suite = suite.ablation(dict(ablate) if isinstance(ablate, Mapping) else parse_ablation(ablate))
    cells = suite.cells()
    out = Path(out)
    (out / CELLS_DIR).mkdir(parents=True, exist_ok=True)

    done = {cell.key: load_cell(out, cell) for cell in cells}
    todo = [c for c in cells if done[c.key] is None]
    total = sum(c.settings.episodes for c in cells)
    skipped = sum(c.settings.episodes for c in cells if done[c.key] is not None)
    bar = tqdm(total=total, initial=skipped, unit="ep", disable=not progress, dynamic_ncols=True, desc=suite.name)
    if progress and len(todo) < len(cells):
        bar.write(f"{len(cells) - len(todo)} of {len(cells)} cells already in {out / CELLS_DIR}: skipped")
    for cell in todo:
        bar.set_description(f"{cell.env.split('/')[-1]} {cell.agent} {cell.variant} s{cell.seed}")
        start_n = bar.n

        def tick(stats: dict, start_n=start_n) -> None:
            bar.update(min(stats["episodes"], cell.settings.episodes) - (bar.n - start_n))
            bar.set_postfix(reward=f"{stats['reward']:.3f}", kl=f"{stats['kl_ref']:.3f}")

        record = run_cell(cell, device=device, on_iteration=tick)
        record["suite"] = suite.name
        write_json_atomic(out / CELLS_DIR / f"{cell.key}.json", record)
        done[cell.key] = record
        bar.update(start_n + cell.settings.episodes - bar.n)
    bar.close()

    records = [done[c.key] for c in cells]
    write_results(out, suite, records)
    return records


def environment_line() -> str:
    """What ran the suite: CPU, threads, library versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    return (f"{platform.system()} {cpu}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}")


def write_results(out: Path, suite: Suite, records: list[dict]) -> None:
    """``results.json``, ``results.md`` and the PNGs; with several reward variants also
    ``ablation.md`` and ``frontier.png``."""
    from tokengym.benchmarks import plots

    out = Path(out)
    write_json_atomic(out / "results.json", records)
    md = [f"# Suite `{suite.name}`", ""]
    if suite.description:
        md += [suite.description, ""]
    if suite.ablated:
        md += [f"Ablation of the suite's first cell over {', '.join(f'`{k}`' for k in suite.ablated)}.", ""]
    md += [f"Measured on: {environment_line()}.", "",
           f"Final values: mean of each run's last iterations (`last_n`), then mean ± std over seeds. "
           f"`score` is the reward without the KL penalty; `KL` is the per-sequence KL(π_θ‖π_ref) of the "
           f"rollouts; wall time and tokens/s cover the whole training of one run.", ""]
    md += plots.results_table(records)
    md += ["", "Learning curves: `curves_reward.png` (reward vs episodes), `curves_reward_kl.png` "
           "(score vs KL to the reference), mean ± std over seeds.", ""]
    (out / "results.md").write_text("\n".join(md) + "\n")
    plots.plot_learning_curves(records, out / "curves_reward.png", y="reward")
    plots.plot_reward_vs_kl(records, out / "curves_reward_kl.png")
    if any(r["exact"] for r in records):
        plots.plot_learning_curves(records, out / "curves_kl_optimum.png", y="exact/kl_to_optimum",
                                   ylabel="exact KL(π_θ‖π*)", log=True)
    if len({r["config"] for r in records}) > 1:
        table = [f"# Ablation: `{suite.name}`", ""] + plots.ablation_table(records)
        (out / "ablation.md").write_text("\n".join(table) + "\n")
        plots.plot_frontier(records, out / "frontier.png")
