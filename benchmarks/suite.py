"""Benchmark suites, the runner: a grid of envs × agents × reward configurations × seeds.

``tokengym bench --suite quick|full|FILE.toml --out DIR`` runs every cell of the grid, records each
finished cell atomically under ``DIR/cells/`` (a second run skips them), and rebuilds
``results.json``, ``results.md`` and the learning-curve PNGs from all of the grid's cells.

The split: :mod:`tokengym.benchmarks.suite_schema` is what to run (the suite file parsed and
checked into cells; its names are re-exported here); this module is how a cell runs, in order:
its env's keywords and its agent's config (:func:`env_kwargs`, :func:`agent_config`), training,
the judgement on fresh samples, its place on the frontier (:func:`objective_beta`,
:func:`frontier_key`), its record (:func:`summarise`), and the suite's results
(:func:`write_results`). The exact Calibration-v0 probe is :mod:`tokengym.benchmarks.probes`.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import gymnasium as gym
import torch
from tqdm.auto import tqdm

from tokengym.agents import AGENTS
from tokengym.benchmarks import plots
from tokengym.benchmarks.evaluate import evaluate
from tokengym.benchmarks.frontier import env_frontier, place_run, plot_frontier
from tokengym.benchmarks.memory import peak_rss_bytes, reset_peak_rss
from tokengym.benchmarks.probes import CalibrationProbe
from tokengym.benchmarks.suite_schema import (
    EVAL_REWARDS, SUITES_DIR, Cell, RunSettings, Suite, SuiteError, Variant, to_jsonable, load_suite, parse_ablation,
    parse_suite,
)
from tokengym.envs import get_task, load_tokenizer, registered_envs
from tokengym.lm.io import write_json
from tokengym.rewards import make_reward
from tokengym.rewards.kl import DEFAULT_BETA, AdaptiveKL
from tokengym.rewards.side_scores import SideScores
from tokengym.rewards.targets import KL_COMPONENTS

__all__ = [
    "SuiteError", "RunSettings", "Variant", "Cell", "Suite", "load_suite", "parse_suite", "parse_ablation",
    "run_suite", "run_cell", "env_kwargs", "agent_config", "objective_beta", "frontier_key", "summarise",
    "write_results", "SUITES_DIR", "EVAL_REWARDS",
]

CELLS_DIR = "cells"
"""Where each finished cell's record goes, under the suite's output directory."""
FRONTIERS_DIR = "frontiers"
"""Where a suite keeps each measured frontier (``<key>.json``), so a rerun reuses it."""


# ---------------------------------------------------------------------------------------------
# Running one cell
# ---------------------------------------------------------------------------------------------


def env_kwargs(settings: RunSettings) -> dict[str, Any]:
    """``gymnasium.make_vec`` keywords of a cell's settings (besides ``num_envs`` and ``device``)."""
    kwargs = dict(settings.env_kwargs)
    if settings.reward is not None:
        kwargs["reward"] = settings.reward
    if settings.reward_kwargs:
        reward_kwargs = dict(settings.reward_kwargs)
        if isinstance(reward_kwargs.get("beta"), Mapping):  # an adaptive β's table
            reward_kwargs["beta"] = AdaptiveKL(**reward_kwargs["beta"])
        kwargs["reward_kwargs"] = reward_kwargs
    if settings.max_new_tokens is not None:
        kwargs["max_new_tokens"] = settings.max_new_tokens
    return kwargs


def agent_config(cell: Cell):
    """The cell's agent config: its options and the grid's seed. An agent whose β is its target's
    (f-DPG, DPO) takes the cell's objective β unless its options name one, so it is trained towards
    the optimum the cell is judged against (a Calibration-v0 cell's β = 0.5, say)."""
    agent_class = AGENTS[cell.agent]
    options = dict(cell.settings.agent_options)
    if agent_class.beta_is_target and "beta" not in options:
        options["beta"] = objective_beta(cell.settings)
    return agent_class.config_class(seed=cell.seed, **options)


def fingerprint(cell: Cell) -> str:
    """Hash of everything that defines the run, the agent's whole config included (a default that
    changed makes the cells it trained stale): a cell file with another one is stale."""
    parts = [cell.env, cell.agent, cell.variant, cell.seed, asdict(cell.settings), asdict(agent_config(cell))]
    return hashlib.sha1(json.dumps(to_jsonable(parts), sort_keys=True).encode()).hexdigest()[:16]


def objective_beta(settings: RunSettings) -> float:
    """β of a cell's KL-regularised objective: its KL-shaped reward's (an adaptive β's start), else
    its agent's own KL coefficient, else the default β."""
    beta = settings.reward_kwargs.get("beta")
    if isinstance(beta, Mapping):
        return float(beta["init_beta"])
    if beta is not None:
        return float(beta)
    if settings.reward not in ("kl-shaped", "fine-grained+kl") and settings.agent_options.get("beta"):
        return float(settings.agent_options["beta"])
    return DEFAULT_BETA


def frontier_key(cell: Cell) -> str:
    """Cells whose env, episodes, reward (its KL term aside) and β are the same share a frontier."""
    s = cell.settings
    kwargs = {k: v for k, v in env_kwargs(s).items() if k not in ("reward", "reward_kwargs")}
    reward = {"kl-shaped": "holistic", "fine-grained+kl": "fine-grained"}.get(s.reward, s.reward)
    text = json.dumps([cell.env, reward, to_jsonable(kwargs), s.frontier_samples, s.batch_size, objective_beta(s)],
                      sort_keys=True)
    return f"{cell.env.split('/')[-1]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _side_scored(env_id: str, settings: RunSettings, device: str) -> tuple[dict[str, Any], SideScores | None]:
    """``gymnasium.make_vec`` keywords for the cell's env; with ``eval_rewards``, its reward is
    built here and passed in wrapped in :class:`SideScores`, together with the tokenizer the
    rewards were built for. Returns the keywords and the wrapper (None without side scores)."""
    kwargs = env_kwargs(settings)
    if not settings.eval_rewards:
        return kwargs, None
    task = get_task(kwargs.get("task", registered_envs()[env_id]))
    # The tokenizer the env would load (TokenVectorEnv's rule), loaded once and given to both.
    model = kwargs.get("model", task.model)
    tokenizer = kwargs.get("tokenizer")
    if tokenizer is None:
        tokenizer = task.tokenizer if task.tokenizer is not None else None if isinstance(model, torch.nn.Module) else model
    if isinstance(tokenizer, str):
        tokenizer = load_tokenizer(tokenizer, trust_remote_code=kwargs.get("trust_remote_code", False))

    def build(name: str, **options: Any) -> Any:
        return make_reward(name, task_scorer=task.scorer() if task.scorer is not None else None,
                           fine_grained=task.fine_grained, tokenizer=tokenizer, **options)

    # π_ref is the env's (the policy's starting weights unless the reward names one).
    reward = build(kwargs.pop("reward", task.reward), **kwargs.pop("reward_kwargs", {}))
    side = SideScores(reward, {name: build(name) for name in settings.eval_rewards})
    return {**kwargs, "reward": side, "tokenizer": tokenizer}, side


def run_cell(cell: Cell, *, device: str = "cpu", on_iteration: Callable[[dict], None] | None = None,
             frontiers: dict[str, dict] | None = None) -> dict:
    """Train ``cell``'s agent on its env through ``Agent.learn``; returns the cell's record. With
    ``frontier_samples``, the judged run is placed on its env's frontier, taken from ``frontiers``
    (keyed by :func:`frontier_key`) or measured on the cell's env and added to it."""
    s = cell.settings
    config = agent_config(cell)
    make_kwargs, side = _side_scored(cell.env, s, device)
    envs = gym.make_vec(cell.env, num_envs=s.batch_size, device=device, **make_kwargs)
    env = envs.unwrapped
    probe = None
    if s.exact_every:
        probe = CalibrationProbe(side.reward if side is not None else env.reward, gamma=config.gamma,
                                 temperature=env.sampling.temperature, top_k=env.sampling.top_k,
                                 top_p=env.sampling.top_p)
    agent = AGENTS[cell.agent](env, config)
    start_exact = probe(agent.policy.model) if probe else {}

    def callback(stats: dict) -> None:
        stats["score"] = stats["reward"] - sum(stats.get(f"reward/{name}", 0.0) for name in KL_COMPONENTS)
        if side is not None:
            stats.update(side.means())
        if probe is not None and (stats["iteration"] % s.exact_every == 0 or stats["episodes"] >= s.episodes):
            stats.update(probe(agent.policy.model))
        if on_iteration is not None:
            on_iteration(stats)

    scope = reset_peak_rss()
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    history = agent.learn(s.episodes, callback=callback)
    wall_s = time.perf_counter() - start
    record = summarise(cell, history, wall_s=wall_s)
    record.update(peak_rss_mb=peak_rss_bytes() / 2**20, peak_rss_scope=scope, device=str(device))
    if cuda:
        record["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    if start_exact:
        record["exact_start"] = start_exact
    if s.final_eval_episodes:
        record["final_eval"] = final_eval(agent, s.final_eval_episodes)
    if s.frontier_samples:
        frontiers = {} if frontiers is None else frontiers
        key, beta = frontier_key(cell), objective_beta(s)
        if key not in frontiers:
            frontiers[key] = env_frontier(env, n_per_prompt=s.frontier_samples, beta=beta)
        record["frontier_key"] = key
        record["placement"] = place_run(frontiers[key], gain=record["final_eval"]["score_gain"],
                                        kl=record["final_eval"]["kl"], beta=beta)
    envs.close()
    return record


def final_eval(agent, episodes: int) -> dict[str, Any]:
    """The trained policy and π_ref on ``episodes`` fresh samples of the cell's env (its reward
    without the KL penalty): the flat figures of :func:`~tokengym.benchmarks.evaluate.evaluate`."""
    report = evaluate(agent.env, agent.policy.model, episodes=episodes, context=agent.policy.autocast())
    policy, reference = report["policy"], report["reference"]
    return {"score_gain": report["score_gain"], "kl": report["kl"], "distinct_2_ratio": report["distinct_2_ratio"],
            "score": policy["score"], "reference_score": reference["score"], "distinct_2": policy["distinct_2"],
            "reference_distinct_2": reference["distinct_2"], "length": policy["length"], "episodes": episodes,
            "seed": report["seed"], "samples": policy["samples"], "reference_samples": reference["samples"]}


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
        "settings": to_jsonable(asdict(s)),
        "fingerprint": fingerprint(cell),
        "history": [dict(h) for h in history],
    }


# ---------------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------------


def load_cell(out: Path, cell: Cell) -> dict | None:
    """The recorded result of ``cell``, or None if it is missing or was run with other settings."""
    path = Path(out) / CELLS_DIR / f"{cell.key}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if record.get("fingerprint") == fingerprint(cell) else None


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
    suite = load_suite(suite)
    if seeds is not None:
        suite = suite.with_seeds(seeds)
    if ablate:
        suite = suite.ablation(dict(ablate) if isinstance(ablate, Mapping) else parse_ablation(ablate))
    cells = suite.cells()
    out = Path(out)
    (out / CELLS_DIR).mkdir(parents=True, exist_ok=True)

    frontiers = {path.stem: json.loads(path.read_text()) for path in sorted((out / FRONTIERS_DIR).glob("*.json"))}
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

        known = set(frontiers)
        record = run_cell(cell, device=device, on_iteration=tick, frontiers=frontiers)
        for key in set(frontiers) - known:
            write_json(out / FRONTIERS_DIR / f"{key}.json", to_jsonable(frontiers[key]), indent=None)
        record["suite"] = suite.name
        write_json(out / CELLS_DIR / f"{cell.key}.json", to_jsonable(record), indent=None)
        done[cell.key] = record
        bar.update(start_n + cell.settings.episodes - bar.n)
    bar.close()

    records = [done[c.key] for c in cells]
    write_results(out, suite, records)
    return records


def environment_line() -> str:
    """What ran the suite: CPU, threads, library versions."""
    cpu = platform.processor() or platform.machine()
    return (f"{platform.system()} {cpu}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''}), Python {platform.python_version()}")


def write_results(out: Path, suite: Suite, records: list[dict]) -> None:
    """``results.json``, ``results.md`` and the PNGs; with several reward variants also
    ``ablation.md`` and ``frontier.png``."""
    out = Path(out)
    write_json(out / "results.json", to_jsonable(records), indent=None)
    md = [f"# Suite `{suite.name}`", ""]
    if suite.description:
        md += [suite.description, ""]
    if suite.ablated:
        md += [f"Ablation of the suite's first cell over {', '.join(f'`{k}`' for k in suite.ablated)}.", ""]
    md += [f"Measured on: {environment_line()}.", "",
           "Final values: mean of each run's last iterations (`last_n`), then mean ± std over seeds. "
           "`score` is the reward without the KL penalty; `KL` is the per-sequence KL(π_θ‖π_ref) of the "
           "rollouts; wall time and tokens/s cover the whole training of one run.", ""]
    md += plots.results_table(records)
    md += ["", "Learning curves: `curves_reward.png` (reward vs episodes), `curves_reward_kl.png` "
           "(score vs KL to the reference), mean ± std over seeds.", ""]
    if any(r.get("final_eval") for r in records):
        episodes = next(r["final_eval"]["episodes"] for r in records if r.get("final_eval"))
        md += [f"Judged after training on {episodes} fresh episodes of π_θ and of π_ref each (same prompts and random "
               "numbers; `tokengym.benchmarks.evaluate`): the score without the KL penalty, the sampled sequence "
               "KL(π_θ‖π_ref) in nats, and distinct-2 (distinct word bigrams ÷ all, pooled over the samples). "
               "`frontier_final.png` plots the gain against the KL.", ""]
        md += plots.final_eval_table(records) + [""]
        plots.plot_score_vs_kl(records, out / "frontier_final.png", x="final_eval/kl", y="final_eval/score_gain",
                               xlabel="KL(π_θ‖π_ref) per sequence, fresh samples", ylabel="score gain over π_ref, fresh samples")
    if any(r.get("placement") for r in records):
        md += ["Each judged run placed on its env's reward–KL frontier, measured from π_ref's samples "
               "(`tokengym.benchmarks.frontier`): `J = E[r] − β·KL` against the optimum's `J* = β·E_x log Z(x)` "
               "(a low ESS understates J*), the fraction of `J* − J_ref` the run captures, and its KL ÷ the KL "
               "best-of-N sampling needs for the same gain (by the bound log N − (N−1)/N). Plots: `frontier_<key>.png`.", ""]
        md += plots.placement_table(records) + [""]
        keys = sorted({r["frontier_key"] for r in records if r.get("placement")})
        frontiers = {key: json.loads((out / FRONTIERS_DIR / f"{key}.json").read_text()) for key in keys}
        md += ["Best-of-N sampling from π_ref on the same frontiers: the inference-time method, no training.", ""]
        md += plots.best_of_n_table(frontiers) + [""]
        for key, frontier in frontiers.items():
            runs: dict[str, list[tuple[float, float]]] = {}
            for r in records:
                if r.get("frontier_key") == key:
                    label = r["agent"] if r["config"] == "default" else f"{r['agent']} ({r['config']})"
                    runs.setdefault(label, []).append((r["final_eval"]["score_gain"], r["final_eval"]["kl"]))
            plot_frontier(frontier, out / f"frontier_{key}.png", runs=runs, title=f"{suite.name}: {key}")
    (out / "results.md").write_text("\n".join(md) + "\n")
    plots.plot_learning_curves(records, out / "curves_reward.png", y="reward")
    plots.plot_reward_vs_kl(records, out / "curves_reward_kl.png")
    if any(r["exact"] for r in records):
        plots.plot_learning_curves(records, out / "curves_kl_optimum.png", y="exact/kl_to_optimum",
                                   ylabel="exact KL(π_θ‖π*)", log=True)
    if len({r["config"] for r in records}) > 1:
        table = [f"# Ablation: `{suite.name}`", ""] + plots.ablation_table(records)
        (out / "ablation.md").write_text("\n".join(table) + "\n")
        plots.plot_score_vs_kl(records, out / "frontier.png")
