"""Tables and figures of benchmark records (the dicts :func:`tokengym.benchmarks.suite.run_suite`
returns): markdown tables, learning curves and reward–KL plots with mean ± std over seeds, the
frontier of an ablation, and the reward-collapse histograms; and the figures of the performance
runs (:func:`tokengym.benchmarks.perf.run_perf`). The matplotlib setup is
:mod:`tokengym.lm.plotting`'s."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from tokengym.lm.plotting import pyplot, save_figure

__all__ = [
    "group_runs", "mean_std", "fmt", "results_table", "ablation_table", "curve",
    "plot_learning_curves", "plot_reward_vs_kl", "plot_score_vs_kl", "placement_table", "best_of_n_table", "plot_bands", "plot_reward_collapse",
    "plot_rollout", "plot_cost_growth",
]


def group_runs(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], list[Mapping[str, Any]]]:
    """Records grouped by (env, agent, config), seeds together, in first-seen order."""
    groups: dict[tuple[str, str, str], list] = {}
    for r in records:
        groups.setdefault((r["env"], r["agent"], r["config"]), []).append(r)
    return groups


def mean_std(values: Sequence[float | None]) -> tuple[float, float] | None:
    """Mean and sample std (0 for one value) of the values that are not None."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values)), std


def fmt(stat: tuple[float, float] | None, digits: int = 3, n: int = 1) -> str:
    """``mean ± std`` (``mean`` alone for one run; ``–`` when missing)."""
    if stat is None:
        return "–"
    mean, std = stat
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def _short(env: str) -> str:
    return env.split("/")[-1]


def _label(key: tuple[str, str, str], groups: Mapping) -> str:
    """Line label: the agent, plus the config when the grid has several."""
    env, agent, config = key
    configs = {k[2] for k in groups}
    agents = {k[1] for k in groups}
    if len(configs) == 1:
        return agent
    return config if len(agents) == 1 else f"{agent} · {config}"


def results_table(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown lines: one row per (env, agent, config), mean ± std over seeds; then the final
    value of each reward component."""
    groups = group_runs(records)
    evals = sorted({k for r in records for k in r.get("eval", {})})
    exact = any(r.get("exact") for r in records)
    head = ["env", "agent", "reward config", "seeds", "reward: first → final", "best", "score", "KL to ref", "entropy"]
    head += [f"eval: {e}" for e in evals]
    if exact:
        head += ["E_πθ[R] (exact)", "E_π*[R]", "KL(π_θ‖π*) (exact)"]
    head += ["episodes", "tokens/s", "wall s", "peak RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (env, agent, config), runs in groups.items():
        n = len(runs)
        col = lambda key, d=3: fmt(mean_std([r.get(key) for r in runs]), d, n)  # noqa: E731
        row = [_short(env), agent, config, str(n),
               f"{fmt(mean_std([r['initial_reward'] for r in runs]), 3, n)} → {col('final_reward')}",
               col("best_reward"), col("final_score"), col("final_kl"), col("final_entropy")]
        row += [fmt(mean_std([r.get("eval", {}).get(e) for r in runs]), 3, n) for e in evals]
        if exact:
            row += [fmt(mean_std([r.get("exact", {}).get(k) for r in runs]), 3, n)
                    for k in ("exact/reward", "exact/optimal_reward", "exact/kl_to_optimum")]
        row += [str(runs[0]["episodes"]), col("tokens_per_s", 0), col("wall_s", 1), col("peak_rss_mb", 0)]
        lines.append("| " + " | ".join(row) + " |")
    components = list(dict.fromkeys(c for r in records for c in r.get("components", {})))
    if components:
        lines += ["", "Final value of each reward component (per-episode total, mean ± std over seeds):", ""]
        head = ["env", "agent", "reward config"] + [f"`{c}`" for c in components]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for (env, agent, config), runs in groups.items():
            row = [_short(env), agent, config]
            row += [fmt(mean_std([r["components"].get(c) for r in runs]), 3, len(runs)) for c in components]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def final_eval_table(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown lines: each (env, agent, config)'s ``final_eval`` (fresh samples of the trained
    policy against π_ref), mean ± std over seeds, with each seed's gain @ KL."""
    head = ["env", "agent", "reward config", "seeds", "score: π_ref → π_θ", "gain", "KL(π_θ‖π_ref)", "distinct-2: π_ref → π_θ",
            "distinct-2 ratio", "per seed: gain @ KL"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (env, agent, config), runs in group_runs(r for r in records if r.get("final_eval")).items():
        n, evals = len(runs), [r["final_eval"] for r in runs]
        col = lambda key, d=3: fmt(mean_std([e.get(key) for e in evals]), d, n)  # noqa: E731
        seeds = ", ".join(f"s{r['seed']} {r['final_eval']['score_gain']:+.2f} @ {r['final_eval']['kl']:.1f}" for r in runs)
        lines.append("| " + " | ".join([
            _short(env), agent, config, str(n), f"{col('reference_score')} → {col('score')}", col("score_gain"),
            col("kl", 2), f"{col('reference_distinct_2')} → {col('distinct_2')}", col("distinct_2_ratio", 2), seeds,
        ]) + " |")
    return lines


def placement_table(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown lines: each (env, agent, config)'s judged runs placed on the env's frontier
    (``placement``), mean ± std over seeds: J against J*, the fraction of J* − J_ref captured, and
    the KL overspend against best-of-N for the same gain."""
    head = ["env", "agent", "reward config", "seeds", "β", "J", "J* (ESS min)", "J_ref", "fraction of J* − J_ref",
            "KL overspend vs best-of-N", "per seed: fraction, overspend"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (env, agent, config), runs in group_runs(r for r in records if r.get("placement")).items():
        n, places = len(runs), [r["placement"] for r in runs]
        col = lambda key, d=3: fmt(mean_std([p.get(key) for p in places]), d, n)  # noqa: E731
        seeds = ", ".join(f"s{r['seed']} {r['placement']['fraction_captured']:.2f}, "
                          + (f"{r['placement']['kl_overspend']:.1f}×" if r["placement"]["kl_overspend"] is not None else "n/a")
                          for r in runs)
        first = places[0]
        lines.append("| " + " | ".join([
            _short(env), agent, config, str(n), f"{first['beta']:g}", col("j"),
            f"{first['j_star']:.3f} ({first['j_star_ess_min']:.0f})", f"{first['j_ref']:.3f}", col("fraction_captured", 2),
            col("kl_overspend", 1) + "×", seeds,
        ]) + " |")
    return lines


def best_of_n_table(frontiers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Markdown lines: best-of-N sampling from π_ref on each measured frontier, the inference-time
    row beside the trained ones (no training; its KL is the sampled KL(BoN‖π_ref), bounded by
    log N − (N−1)/N, not zero): gain, KL, J = J_ref + gain − β·KL and the fraction of J* − J_ref."""
    head = ["frontier", "method", "β", "gain", "KL sampled (bound)", "J", "fraction of J* − J_ref"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, frontier in frontiers.items():
        beta, j_ref, j_star = frontier["beta"], frontier["reference_score"], frontier["j_star"]
        for point in frontier["best_of_n"]:
            j = j_ref + point["gain"] - beta * point["kl_sampled"]
            lines.append("| " + " | ".join([
                key, f"best-of-{point['n']} (no training)", f"{beta:g}", f"{point['gain']:+.3f}",
                f"{point['kl_sampled']:.2f} ({point['kl_bound']:.2f})", f"{j:.3f}", f"{(j - j_ref) / (j_star - j_ref):.2f}",
            ]) + " |")
    return lines


def ablation_table(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown lines comparing the configs of each (env, agent): final reward, score, KL,
    entropy and side scores, mean ± std over seeds."""
    groups = group_runs(records)
    evals = sorted({k for r in records for k in r.get("eval", {})})
    head = ["env", "agent", "value", "seeds", "final reward", "score (no KL term)", "KL to ref", "entropy"]
    head += [f"eval: {e}" for e in evals]
    exact = [k for k in ("exact/reward", "exact/kl_to_optimum") if any(k in r.get("exact", {}) for r in records)]
    names = {"exact/reward": "E_πθ[R] (exact)", "exact/kl_to_optimum": "KL(π_θ‖π*) (exact)"}
    head += [names[k] for k in exact] + ["wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (env, agent, config), runs in groups.items():
        n = len(runs)
        row = [_short(env), agent, f"`{config}`", str(n)]
        row += [fmt(mean_std([r.get(k) for r in runs]), 3, n) for k in ("final_reward", "final_score", "final_kl", "final_entropy")]
        row += [fmt(mean_std([r.get("eval", {}).get(e) for r in runs]), 3, n) for e in evals]
        row += [fmt(mean_std([r.get("exact", {}).get(k) for r in runs]), 3, n) for k in exact]
        row.append(fmt(mean_std([r["wall_s"] for r in runs]), 1, n))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def curve(runs: Sequence[Mapping[str, Any]], key: str, x: str = "episodes") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, mean, std) over seeds of ``history[key]`` at the x values every seed logged it.

    An ``exact/*`` key also gets the run's value before training (x = 0) from ``exact_start``."""
    per_run = []
    for r in runs:
        points = {h[x]: h[key] for h in r["history"] if h.get(key) is not None}
        if key in r.get("exact_start", {}):
            points[0] = r["exact_start"][key]
        per_run.append(points)
    xs = sorted(set.intersection(*(set(p) for p in per_run))) if per_run else []
    values = np.array([[p[v] for v in xs] for p in per_run], dtype=float)  # (seeds, len(xs))
    if not xs:
        return np.array([]), np.array([]), np.array([])
    std = values.std(0, ddof=1) if len(per_run) > 1 else np.zeros(len(xs))
    return np.array(xs, dtype=float), values.mean(0), std


def _panels(records, plt, ncols_max: int = 3):
    envs = list(dict.fromkeys(r["env"] for r in records))
    ncols = min(len(envs), ncols_max)
    nrows = math.ceil(len(envs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.8 * nrows), squeeze=False)
    for ax in axes.flat[len(envs):]:
        ax.set_visible(False)
    return fig, dict(zip(envs, axes.flat))


def plot_learning_curves(records, path: str | Path, y: str = "reward", ylabel: str | None = None, log: bool = False) -> Path:
    """``y`` against episodes, one panel per env that logged it, one line per agent (× config),
    mean ± std band."""
    records = [r for r in records if any(y in h for h in r["history"])]
    plt = pyplot()
    groups = group_runs(records)
    fig, axes = _panels(records, plt)
    for key, runs in groups.items():
        xs, mean, std = curve(runs, y)
        if not len(xs):
            continue
        ax = axes[key[0]]
        (line,) = ax.plot(xs, mean, label=f"{_label(key, groups)} (n={len(runs)})")
        lower = np.maximum(mean - std, mean * 0.05) if log else mean - std
        ax.fill_between(xs, lower, mean + std, color=line.get_color(), alpha=0.2)
    for env, ax in axes.items():
        ax.set_title(_short(env))
        ax.set_xlabel("episodes")
        ax.set_ylabel(ylabel or y)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_reward_vs_kl(records, path: str | Path) -> Path:
    """The score (reward without the KL term) against KL(π_θ‖π_ref) along training, per agent:
    the mean path over seeds, with ± std error bars at a few points."""
    plt = pyplot()
    groups = group_runs(records)
    fig, axes = _panels(records, plt)
    for key, runs in groups.items():
        xs, kl, kl_std = curve(runs, "kl_ref")
        _, score, score_std = curve(runs, "score")
        if not len(xs) or len(score) != len(kl):
            continue
        ax = axes[key[0]]
        (line,) = ax.plot(kl, score, label=f"{_label(key, groups)} (n={len(runs)})", alpha=0.9)
        every = max(1, len(xs) // 6)
        ax.errorbar(kl[::every], score[::every], xerr=kl_std[::every], yerr=score_std[::every], fmt="o",
                    ms=3, color=line.get_color(), alpha=0.6, capsize=2)
        ax.plot(kl[-1:], score[-1:], marker="*", ms=10, color=line.get_color())
    for env, ax in axes.items():
        ax.set_title(f"{_short(env)} (★ = end of training)")
        ax.set_xlabel("KL(π_θ‖π_ref) per sequence")
        ax.set_ylabel("score (reward without KL term)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_score_vs_kl(records, path: str | Path, y: str = "final_score", ylabel: str = "final score (reward without KL term)",
                     x: str = "final_kl", xlabel: str = "final KL(π_θ‖π_ref) per sequence") -> Path:
    """Final ``y`` against final KL to the reference (``x``), one point per config, error bars =
    std over seeds, one panel per env whose runs have both: the configs of an ablation side by
    side (``tokengym.benchmarks.frontier.plot_frontier`` draws the optimum's frontier itself)."""
    records = [r for r in records if _get(r, x) is not None and _get(r, y) is not None]
    plt = pyplot()
    groups = group_runs(records)
    fig, axes = _panels(records, plt)
    frontier: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for key, runs in groups.items():
        kl = mean_std([_get(r, x) for r in runs])
        value = mean_std([_get(r, y) for r in runs])
        if kl is None or value is None:
            continue
        ax = axes[key[0]]
        ax.errorbar(kl[0], value[0], xerr=kl[1], yerr=value[1], fmt="o", capsize=3, label=f"{_label(key, groups)} (n={len(runs)})")
        ax.annotate(key[2], (kl[0], value[0]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        frontier.setdefault(key[:2], []).append((kl[0], value[0]))
    for (env, _), points in frontier.items():  # one agent's configs, joined in order of KL
        points.sort()
        axes[env].plot(*zip(*points), color="gray", lw=0.8, alpha=0.6, zorder=0)
    for env, ax in axes.items():
        ax.margins(0.15)
        ax.set_title(f"{_short(env)}: score against KL")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def _get(record: Mapping[str, Any], key: str) -> Any:
    """``record[key]``, or a nested value for ``"eval/holistic"``-style keys."""
    if key in record:
        return record[key]
    head, _, tail = key.partition("/")
    return record.get(head, {}).get(tail)


def plot_bands(curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: str | Path, *, xlabel: str,
               ylabel: str, title: str = "", log: bool = False, hlines: Mapping[str, float] | None = None) -> Path:
    """Several (x, mean, std) curves on one axis, with bands; optional labelled horizontal lines."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, (xs, mean, std) in curves.items():
        (line,) = ax.plot(xs, mean, label=label)
        lower = np.maximum(mean - std, mean * 0.05) if log else mean - std
        ax.fill_between(xs, lower, mean + std, color=line.get_color(), alpha=0.2)
    for label, value in (hlines or {}).items():
        ax.axhline(value, color="black", ls="--", lw=1, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_reward_collapse(result: Mapping[str, Any], path: str | Path) -> Path:
    """Reward distributions per prompt type (open- vs closed-ended) under each utility of
    :func:`tokengym.benchmarks.reproduce.reward_collapse_experiment`: histograms, and the mean
    reward at each rank."""
    plt = pyplot()
    utilities = [k for k in result if k != "separation"]
    fig, axes = plt.subplots(2, len(utilities), figsize=(5.2 * len(utilities), 7.0), squeeze=False)
    bins = np.linspace(0, 1, 21)
    for j, name in enumerate(utilities):
        hist, ranks = axes[0, j], axes[1, j]
        for kind, color in (("open", "tab:blue"), ("closed", "tab:orange")):
            rewards = np.asarray(result[name][kind], dtype=float)  # (prompts, completions), best first
            hist.hist(rewards.ravel(), bins=bins, alpha=0.55, color=color, label=f"{kind}-ended")
            rank = np.arange(1, rewards.shape[1] + 1)
            ranks.plot(rank, rewards.mean(0), marker="o", color=color, label=f"{kind}-ended (mean)")
            ranks.fill_between(rank, rewards.min(0), rewards.max(0), color=color, alpha=0.15)
        hist.set_title(f"{name}: W1(open, closed) = {result['separation'][name]:.3f}")
        hist.set_xlabel("reward")
        hist.set_ylabel("completions")
        hist.legend(fontsize=8)
        ranks.set_xlabel("rank of the completion (1 = most preferred)")
        ranks.set_ylabel("reward (band: min–max over prompts)")
        ranks.grid(alpha=0.3)
        ranks.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


# --------------------------------------------------------------------------------------------
# Performance runs (tokengym bench --perf)
# --------------------------------------------------------------------------------------------


def plot_rollout(rollout: Mapping[str, Mapping[str, Any]], path: str | Path, *, goal: float) -> Path:
    """Gym-loop / generate() throughput ratio per model and batch, against the ``goal`` ratio."""
    plt = pyplot()
    models = list(rollout)
    batches = list(rollout[models[0]])
    width = 0.8 / len(batches)
    fig, ax = plt.subplots(figsize=(1.6 + 1.9 * len(models), 3.4))
    for j, batch in enumerate(batches):
        x = [i + (j - (len(batches) - 1) / 2) * width for i in range(len(models))]
        ratios = [rollout[m][batch]["ratio"] for m in models]
        ax.bar(x, ratios, width, label=f"B={batch}")
        for xi, m, r in zip(x, models, ratios):
            ax.annotate(f"{rollout[m][batch]['env_tokens_per_s']:.0f}", (xi, r), ha="center", va="bottom", fontsize=7)
    ax.axhline(goal, color="k", ls="--", lw=1, label=f"goal {goal:g}")
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("Gym loop ÷ generate() tokens/s")
    ax.set_title("rollout throughput (labels: Gym loop tokens/s)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def plot_cost_growth(growth: Mapping[str, Any], model: str, path: str | Path) -> Path:
    """Milliseconds per generated token against context, with and without the KV cache."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    ms = lambda seconds: [1e3 * s for s in seconds]  # noqa: E731
    ax.plot(growth["contexts"], ms(growth["cached_seconds_per_token"]), "o-", label="KV cache (CachedLM.step)")
    ax.plot(growth["contexts"], ms(growth["uncached_seconds_per_token"]), "s--", label="no cache (full forward)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context (tokens)")
    ax.set_ylabel("ms per generated token")
    ax.set_title(f"{model}, batch 1", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)
