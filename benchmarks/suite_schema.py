"""The benchmark suite file: its TOML schema, parsed and validated into a :class:`Suite` whose
:meth:`Suite.cells` is the grid of runs (:mod:`tokengym.benchmarks.suite` runs them).

Inside: :class:`RunSettings` (one cell's settings, each field checked), :class:`Variant` (an
entry of the reward axis), :class:`Cell` (one run of the grid), :class:`Suite` (the parsed file:
its layers, the grid and ablations), :func:`parse_suite` / :func:`load_suite`, and
:func:`parse_ablation` for ``--ablate``.

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

import itertools
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from tokengym.agents import AGENTS
from tokengym.benchmarks.probes import check_fixed_point
from tokengym.envs import registered_envs
from tokengym.lm.config import ConfigError, bounded, check_fields, one_of, parse_value
from tokengym.lm.errors import UsageError
from tokengym.rewards import REWARD_NAMES, reward_options

__all__ = [
    "SuiteError", "RunSettings", "Variant", "Cell", "Suite", "load_suite", "parse_suite", "parse_ablation",
    "SUITES_DIR", "EVAL_REWARDS",
]

SUITES_DIR = Path(__file__).parent / "suites"
"""Where the packaged suites (``quick.toml``, ``full.toml``) live."""

EVAL_REWARDS = ("holistic", "fine-grained")
"""Rewards a run can be scored with on the side (``eval_rewards``), never trained on."""


class SuiteError(UsageError, ValueError):
    """An invalid suite: the message names the file section and the field. A :class:`UsageError`, so
    ``tokengym bench`` reports it in one line."""


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSettings:
    """How one cell runs (everything but the env, agent and seed)."""

    episodes: int = bounded(256, at_least=1, integer=True)
    """Episodes to train for (rounded up to whole batches)."""
    batch_size: int = bounded(16, at_least=1, integer=True)
    """Episodes per iteration (the env's ``num_envs``)."""
    max_new_tokens: int | None = bounded(None, at_least=1, integer=True)
    """Episode length T (None: the task's)."""
    reward: str | None = one_of(None, REWARD_NAMES)
    """Reward name for the env (None: the task's default)."""
    reward_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Options of the reward (``beta``, ``estimator``, ...); ``beta`` may be a table
    ``{init_beta, target, horizon}`` for an adaptive β."""
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Any other keyword of ``gymnasium.make_vec`` for this env."""
    eval_rewards: tuple[str, ...] = ()
    """Also score every rollout with these rewards (``"holistic"``, ``"fine-grained"``); logged as
    ``eval/<name>``, never trained on. Gives reward variants a common metric."""
    exact_every: int = bounded(0, at_least=0, integer=True)
    """Calibration-v0 only: every this many iterations, enumerate all 512 sequences and log the
    exact ``KL(π_θ‖π*)``, ``E_πθ[R]``, ``E_π*[R]`` and ``KL(π_θ‖π_ref)`` as ``exact/*`` (0: off)."""
    last_n: int = bounded(5, at_least=1, integer=True)
    """Final values are means over this many last iterations."""
    final_eval_episodes: int = bounded(0, at_least=0, integer=True)
    """After training, sample this many fresh episodes from π_θ and from π_ref and record
    ``final_eval``: the score gain, the sequence KL and distinct-2 of each
    (:mod:`tokengym.benchmarks.evaluate`); 0: off."""
    frontier_samples: int = bounded(0, at_least=0, integer=True)
    """π_ref samples per prompt behind the env's reward–KL frontier, measured once per env and
    settings, on which each judged run is placed (J, J*, the fraction of J* − J_ref captured, the
    KL overspend against best-of-N; ``frontier_<env>.png``); 0: off. Needs final_eval_episodes."""
    agent_options: Mapping[str, Any] = field(default_factory=dict)
    """Fields of the agent's config class (``lr``, ``group_size``, ...); ``seed`` comes from the grid."""

    def __post_init__(self):
        check_fields(self)
        for name in ("reward_kwargs", "env_kwargs", "agent_options"):
            if not isinstance(getattr(self, name), Mapping):
                raise ValueError(f"{name} must be a table, got {getattr(self, name)!r}")
        taken = {"num_envs", "device", "reward", "reward_kwargs", "max_new_tokens"} & set(self.env_kwargs)
        if taken:
            raise ValueError(f"env_kwargs must not set {sorted(taken)}: use the run settings of those names")
        if isinstance(self.eval_rewards, str) or not all(r in EVAL_REWARDS for r in self.eval_rewards):
            raise ValueError(f"eval_rewards must be a list drawn from {list(EVAL_REWARDS)}, got {self.eval_rewards!r}")
        if self.frontier_samples and not self.final_eval_episodes:
            raise ConfigError("frontier_samples", self.frontier_samples, "0 without final_eval_episodes (it places the judged runs)")
        if "seed" in self.agent_options:
            raise ValueError("seed is set by the suite's seeds, not per run")


RUN_KEYS = frozenset(f.name for f in fields(RunSettings)) - {"agent_options"}


def _agent_fields(agent: str) -> set[str]:
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
        layers = [self.run, self.agent.get(agent, {}), self.env.get(env, {}),
                  self.env_agent.get((env, agent), {}), variant.overrides]
        where = f"cell ({env}, {agent}, {variant.label})"
        try:
            settings = _settings(_merge(layers))
        except (TypeError, ValueError) as err:
            raise SuiteError(f"{where}: {err}") from None
        cell = Cell(env, agent, variant.label, seed, settings)
        try:  # the agent config validates its own fields
            config = AGENTS[agent].config_class(seed=seed, **settings.agent_options)
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
        if settings.exact_every:
            try:
                check_fixed_point(
                    estimator=settings.reward_kwargs.get("estimator", "k1"), gamma=config.gamma,
                    temperature=settings.env_kwargs.get("temperature", 1.0),
                    top_k=settings.env_kwargs.get("top_k", 0), top_p=settings.env_kwargs.get("top_p", 1.0),
                )
            except ValueError as err:
                raise SuiteError(f"{where}: {err}") from None
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
    return registered_envs()[env_id].model == "calibration"


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
        out[path] = tuple(parse_value(v.strip()) for v in values.split(","))
    return out


def load_suite(suite: str | os.PathLike | Suite) -> Suite:
    """A :class:`Suite` from ``"quick"``, ``"full"`` (the packaged files), or a TOML path."""
    if isinstance(suite, Suite):
        return suite
    path = Path(suite)
    known = sorted(p.stem for p in SUITES_DIR.glob("*.toml"))
    if not path.is_file():  # a packaged suite's name (a directory of that name, an output say, is not a suite)
        if str(suite) not in known:
            raise SuiteError(f"--suite {suite}: expected one of {', '.join(known)} or a suite .toml file")
        path = SUITES_DIR / f"{suite}.toml"
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise SuiteError(f"--suite {suite}: expected a readable suite .toml file ({err})") from None
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


def to_jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None  # 6 significant digits keep files small
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)
