"""The reproductions written up in BENCHMARKS.md. Run from the repository root::

    tokengym bench --reproduce calibration    # agents vs the exact KL-regularised optimum
    tokengym bench --reproduce collapse       # reward collapse (Song et al. 2023)
    tokengym bench --reproduce fine-grained   # fine-grained vs holistic (Wu et al. 2023)
    tokengym bench --reproduce algorithms     # the full suite, 3 seeds: the algorithm table

Each writes into ``benchmarks/results/<name>/`` (``--out`` to change): the suite it ran
(``suite.toml``, so ``tokengym bench --suite benchmarks/results/<name>/suite.toml`` reruns it; the
algorithm table runs the packaged ``full`` suite), the
suite's outputs (``cells/``, ``results.json``, ``results.md``, curves), and ``summary.md`` /
``summary.json`` with the numbers BENCHMARKS.md quotes. Finished cells are skipped on a rerun.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from tokengym.benchmarks import plots
from tokengym.benchmarks.suite import environment_line, run_suite
from tokengym.benchmarks.suite_schema import to_jsonable
from tokengym.lm.io import write_json
from tokengym.rewards.utilities import LogSigmoid, NegPower, Power, PromptAware, preference_loss

RESULTS_DIR = Path("benchmarks") / "results"

# ---------------------------------------------------------------------------------------------
# The suites (swapping a reward, an agent or a seed count is one line)
# ---------------------------------------------------------------------------------------------

CALIBRATION_SUITE = """\
name = "calibration"
description = "Each agent on Calibration-v0 with a KL-shaped reward (beta = 0.5): KL(pi_theta || pi*) by exact enumeration of the 512 sequences."
envs = ["tokengym/Calibration-v0"]
agents = ["reinforce", "a2c", "ppo", "grpo"]
seeds = 3

[run]
episodes = 30720        # 120 iterations of 256
batch_size = 256
lr = 1e-2
reward = "kl-shaped"
reward_kwargs = { beta = 0.5 }
exact_every = 5
last_n = 10

[agent.a2c]
gae_lambda = 1.0

[agent.grpo]            # the KL lives in the env's reward: no beta term in the loss, Dr. GRPO advantages
group_size = 8
beta = 0.0
scale_rewards = false
"""

FINE_GRAINED_SUITE = """\
name = "fine-grained"
description = "PPO (its defaults) on SentimentFineGrained-v0 trained on the holistic reward (the same criteria scored once on the whole text) vs the fine-grained one (per-sentence sentiment and profanity, holistic length), each with the KL-shaped penalty at the default β; both scored on both."
envs = ["tokengym/SentimentFineGrained-v0"]
agents = ["ppo"]
seeds = 3
rewards = ["kl-shaped", "fine-grained+kl"]

[run]
episodes = 1024         # 32 iterations of 32
batch_size = 32
env_kwargs = { min_new_tokens = 16 }   # no stopping early to dodge the per-token KL penalty
eval_rewards = ["holistic", "fine-grained"]
last_n = 5
"""

def _write_suite(out: Path, text: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "suite.toml"
    path.write_text(text)
    return path


def _summary(out: Path, title: str, command: str, lines: Sequence[str], data: Mapping[str, Any]) -> None:
    md = [f"# {title}", "", f"Reproduce: `{command}`", "", f"Measured on: {environment_line()}.", "", *lines]
    (out / "summary.md").write_text("\n".join(md) + "\n")
    write_json(out / "summary.json", to_jsonable(data), indent=None)


def _by_agent(records: Sequence[Mapping[str, Any]], key: str = "agent") -> dict[str, list]:
    groups: dict[str, list] = {}
    for r in records:
        groups.setdefault(r[key], []).append(r)
    return groups


# ---------------------------------------------------------------------------------------------
# KL-regularised optimum on Calibration-v0
# ---------------------------------------------------------------------------------------------


def _calibration_table(records: Sequence[Mapping[str, Any]]) -> tuple[list[str], dict]:
    """Markdown rows and data per agent: exact KL(π_θ‖π*), E_πθ[R] and the objective, start → final."""
    rows, data = [], {}
    head = ["agent", "seeds", "KL(π_θ‖π*) start → final", "E_πθ[R] start → final", "E_π*[R]",
            "objective E[R] − β·KL(π_θ‖π_ref)", "optimum β·log Z", "wall s"]
    rows += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for agent, runs in _by_agent(records).items():
        n = len(runs)
        stat = lambda f: plots.mean_std([f(r) for r in runs])  # noqa: E731
        start_kl, final_kl = stat(lambda r: r["exact_start"]["exact/kl_to_optimum"]), stat(lambda r: r["exact"]["exact/kl_to_optimum"])
        start_r, final_r = stat(lambda r: r["exact_start"]["exact/reward"]), stat(lambda r: r["exact"]["exact/reward"])
        optimum_r = stat(lambda r: r["exact"]["exact/optimal_reward"])
        objective, optimum = stat(lambda r: r["exact"]["exact/objective"]), stat(lambda r: r["exact"]["exact/optimal_objective"])
        wall = stat(lambda r: r["wall_s"])
        rows.append(f"| {agent} | {n} | {plots.fmt(start_kl, 3, n)} → {plots.fmt(final_kl, 3, n)} | "
                    f"{plots.fmt(start_r, 3, n)} → {plots.fmt(final_r, 3, n)} | {plots.fmt(optimum_r, 3)} | "
                    f"{plots.fmt(objective, 3, n)} | {plots.fmt(optimum, 3)} | {plots.fmt(wall, 0, n)} |")
        data[agent] = {"kl_to_optimum_start": start_kl, "kl_to_optimum_final": final_kl, "reward_start": start_r,
                       "reward_final": final_r, "optimal_reward": optimum_r, "objective_final": objective,
                       "optimal_objective": optimum, "wall_s": wall, "seeds": n}
    return rows, data


def reproduce_calibration(out: Path, progress: bool = True) -> dict:
    """KL(π_θ‖π*) against episodes per agent, and E_πθ[R] vs E_π*[R], all by exact enumeration."""
    records = run_suite(_write_suite(out, CALIBRATION_SUITE), out, progress=progress)
    rows, data = _calibration_table(records)
    lines = ["Exact values (enumerating all 512 responses) of the final policy of each run; mean ± std over seeds.", "",
             *rows, "", "![KL to the optimum](curves_kl_optimum.png)"]
    _summary(out, "KL-regularised optimum on Calibration-v0", "tokengym bench --reproduce calibration", lines, data)
    return data


# ---------------------------------------------------------------------------------------------
# Reward collapse (Song et al. 2023)
# ---------------------------------------------------------------------------------------------


def _wasserstein_1d(a: torch.Tensor, b: torch.Tensor) -> float:
    """W1 between two equal-size samples: mean gap between their sorted values."""
    return (a.flatten().sort().values - b.flatten().sort().values).abs().mean().item()


def reward_collapse_experiment(
    n_prompts: int = 4, n_completions: int = 8, steps: int = 600, hidden: int = 32, lr: float = 5e-2, seed: int = 0
) -> dict[str, Any]:
    """Reward collapse, in the paper's set-up at toy scale.

    ``n_prompts`` open-ended and ``n_prompts`` closed-ended prompts each have ``n_completions``
    completions with a full ranking (every ordered pair is a training pair). A completion is a
    feature vector: its latent quality, which sets the ranking, plus three noise features. The
    reward model is an MLP over a learned prompt embedding and the completion features with a
    sigmoid output, so rewards lie in [0, 1] as the paper assumes; it is large enough to
    interpolate the rankings. It is trained twice, full batch with Adam:

    * ``"log-sigmoid"``: the fixed ``U(x) = log σ(x)`` for every prompt;
    * ``"prompt-aware"``: ``U(x) = x`` for closed-ended and ``U(x) = −1/x`` for open-ended prompts.

    Returns, per utility, the rewards of every prompt's completions from most to least preferred
    (``{"open": (n_prompts, n_completions), "closed": ...}`` tensors), and ``"separation"``: the
    1-D Wasserstein distance between the pooled open and pooled closed rewards. With the fixed
    utility both types converge to the same prompt-independent profile (for 8 completions about
    ``[1, 1, 1, .76, .24, 0, 0, 0]``), so the separation is near 0: collapse. The prompt-aware
    utility polarises closed-ended rewards towards {0, 1} and spreads open-ended ones evenly.
    """
    gen = torch.Generator().manual_seed(seed)
    n_total = 2 * n_prompts
    quality = torch.randn(n_total, n_completions, generator=gen)  # latent quality: sets the ranking
    features = torch.cat([quality[..., None], torch.randn(n_total, n_completions, 3, generator=gen)], -1)
    ranked = quality.argsort(dim=1, descending=True)  # (prompt, rank) completion index
    closed = torch.arange(n_total) >= n_prompts  # the second half of the prompts is closed-ended
    w_rank, l_rank = torch.triu_indices(n_completions, n_completions, offset=1)  # rank i beats rank j > i
    kinds = ["closed" if c else "open" for c in closed.repeat_interleave(len(w_rank)).tolist()]
    prompt_aware = PromptAware(lambda kind: Power(1.0) if kind == "closed" else NegPower(1.0))

    def train(utility: Any) -> torch.Tensor:
        torch.manual_seed(seed)
        embed = torch.nn.Embedding(n_total, 8)
        mlp = torch.nn.Sequential(torch.nn.Linear(8 + features.shape[-1], hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
        optimizer = torch.optim.Adam([*embed.parameters(), *mlp.parameters()], lr=lr)

        def scores() -> torch.Tensor:  # (prompt, rank) raw scores
            inputs = torch.cat([embed.weight[:, None].expand(-1, n_completions, -1), features], -1)
            return mlp(inputs).squeeze(-1).gather(1, ranked)

        for _ in range(steps):
            s = scores()
            loss = preference_loss(s[:, w_rank].flatten(), s[:, l_rank].flatten(), utility, kinds)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return torch.sigmoid(scores())  # (prompt, rank) rewards in [0, 1]

    out: dict[str, Any] = {"separation": {}}
    for name, utility in (("log-sigmoid", LogSigmoid(1.0, bounded=True)), ("prompt-aware", prompt_aware)):
        rewards = train(utility)
        out[name] = {"open": rewards[~closed], "closed": rewards[closed]}
        out["separation"][name] = _wasserstein_1d(rewards[~closed], rewards[closed])
    return out


def reproduce_collapse(out: Path, progress: bool = True) -> dict:
    """Reward distributions per prompt type under log-sigmoid and prompt-aware utilities."""
    import time

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = reward_collapse_experiment()
    seconds = time.perf_counter() - start
    plots.plot_reward_collapse(result, out / "reward_collapse.png")
    data: dict[str, Any] = {"wall_s": seconds, "separation": result["separation"]}
    head = ["utility", "prompt type", "mean reward at rank 1 … 8 (most → least preferred)", "std over all", "W1(open, closed)"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in ("log-sigmoid", "prompt-aware"):
        for kind in ("open", "closed"):
            rewards = np.asarray(result[name][kind], dtype=float)  # (prompts, completions)
            profile = rewards.mean(0)
            data[f"{name}/{kind}"] = {"mean_by_rank": profile.tolist(), "std": float(rewards.std())}
            rows.append(f"| {name} | {kind}-ended | {' '.join(f'{v:.2f}' for v in profile)} | {rewards.std():.3f} | "
                        f"{result['separation'][name]:.3f} |")
    lines = ["`reward_collapse_experiment()` with its defaults (4 open- and 4 closed-ended prompts, 8 ranked "
             "completions each, an MLP reward model with sigmoid rewards trained to convergence).", "",
             *rows, "", "![reward collapse](reward_collapse.png)"]
    _summary(out, "Reward collapse", "tokengym bench --reproduce collapse", lines, data)
    return data


# ---------------------------------------------------------------------------------------------
# Fine-grained vs holistic (Wu et al. 2023)
# ---------------------------------------------------------------------------------------------


def samples_to_threshold(history: Sequence[Mapping[str, Any]], key: str, threshold: float, window: int = 3) -> int | None:
    """Episodes until the ``window``-iteration moving average of ``history[key]`` first reaches
    ``threshold`` (None: never)."""
    values = [h[key] for h in history]
    for i in range(window - 1, len(values)):
        if np.mean(values[i - window + 1 : i + 1]) >= threshold:
            return int(history[i]["episodes"])
    return None


def reproduce_fine_grained(out: Path, progress: bool = True) -> dict:
    """PPO with the holistic vs the fine-grained reward (each KL-shaped), compared on the holistic score of the samples."""
    records = run_suite(_write_suite(out, FINE_GRAINED_SUITE), out, progress=progress)
    arms = _by_agent(records, key="config")
    metric = "eval/holistic"
    start = float(np.mean([r["history"][0][metric] for r in records]))
    finals = {arm: float(np.mean([r["eval"]["holistic"] for r in runs])) for arm, runs in arms.items()}
    threshold = start + 0.5 * (max(finals.values()) - start)
    data: dict[str, Any] = {"metric": metric, "untrained_score": start, "threshold": threshold}
    head = ["trained on", "seeds", "holistic score: final", "fine-grained score: final", "training reward: final",
            f"episodes to holistic ≥ {threshold:.3f}", "KL to ref", "wall s"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, runs in arms.items():
        n = len(runs)
        hits = [samples_to_threshold(r["history"], metric, threshold) for r in runs]
        reached = [h for h in hits if h is not None]
        cap = runs[0]["episodes"]
        hit_text = f"{plots.fmt(plots.mean_std(reached), 0, len(reached))} ({len(reached)}/{n} seeds reached; per seed: " \
                   f"{', '.join(str(h) if h is not None else f'>{cap}' for h in hits)})" if reached else f"not reached in {cap} ({n} seeds)"
        stat = lambda f: plots.mean_std([f(r) for r in runs])  # noqa: E731
        holistic, fine = stat(lambda r: r["eval"]["holistic"]), stat(lambda r: r["eval"]["fine-grained"])
        reward, kl, wall = stat(lambda r: r["final_reward"]), stat(lambda r: r["final_kl"]), stat(lambda r: r["wall_s"])
        rows.append(f"| {arm} | {n} | {plots.fmt(holistic, 3, n)} | {plots.fmt(fine, 3, n)} | {plots.fmt(reward, 3, n)} | "
                    f"{hit_text} | {plots.fmt(kl, 2, n)} | {plots.fmt(wall, 0, n)} |")
        data[arm] = {"holistic_final": holistic, "fine_grained_final": fine, "reward_final": reward, "kl_final": kl,
                     "samples_to_threshold": hits, "wall_s": wall, "seeds": n}
    curves = {f"trained on {arm} (n={len(runs)})": plots.curve(runs, metric) for arm, runs in arms.items()}
    plots.plot_bands(curves, out / "holistic_score.png", xlabel="episodes", ylabel="holistic score of the samples",
                     title="SentimentFineGrained-v0, PPO", hlines={f"threshold {threshold:.3f}": threshold})
    curves = {f"trained on {arm} (n={len(runs)})": plots.curve(runs, "eval/fine-grained") for arm, runs in arms.items()}
    plots.plot_bands(curves, out / "fine_grained_score.png", xlabel="episodes", ylabel="fine-grained score of the samples",
                     title="SentimentFineGrained-v0, PPO")
    lines = [
        "Common metric: the **holistic score** of each iteration's samples, `VADER(y) − P(profane|y) + 0.5·1[8 ≤ words ≤ 40]` "
        "on the whole continuation (the task's holistic reward), computed on the side for both arms (`eval_rewards`). "
        "The fine-grained score (per-sentence VADER and profanity, summed, plus the same length term) is shown too. "
        f"Threshold: halfway from the untrained policy's holistic score ({start:.3f}, first iteration, all runs) "
        "to the better arm's final score; samples-to-threshold uses a 3-iteration moving average. "
        "Final values: mean of the last iterations of each run, then mean ± std over seeds.", "",
        *rows, "", "![holistic score](holistic_score.png)", "", "![fine-grained score](fine_grained_score.png)",
    ]
    _summary(out, "Fine-grained vs holistic reward (PPO, SentimentFineGrained-v0)",
             "tokengym bench --reproduce fine-grained", lines, data)
    return data


# ---------------------------------------------------------------------------------------------
# Algorithm table
# ---------------------------------------------------------------------------------------------


def reproduce_algorithms(out: Path, progress: bool = True) -> dict:
    """REINFORCE, A2C, PPO and GRPO with their defaults on every env of the ``full`` suite, 3 seeds:
    the language tasks judged on fresh samples against π_ref, Calibration-v0 by the exact KL to π*."""
    records = run_suite("full", out, progress=progress)
    rows, _ = _calibration_table([r for r in records if r["exact"]])
    keys = ("env", "agent", "seed", "initial_reward", "final_reward", "final_kl", "final_eval", "exact", "tokens_per_s", "wall_s")
    lines = ["The `full` suite (`tokengym bench --suite full`): each agent's defaults, 3 seeds. Language tasks: the task "
             "reward minus β·KL at the default β, each run judged on 256 fresh samples against π_ref (score = the task "
             "reward without the KL term).", "", *plots.final_eval_table(records), "",
             "Calibration-v0 (KL-shaped reward, β = 0.5, lr 1e-2), exact over all 512 responses at the last iteration:", "",
             *rows, "", "![reward](curves_reward.png)"]
    data = {"runs": [{k: r.get(k) for k in keys} for r in records]}
    _summary(out, "Algorithm table", "tokengym bench --reproduce algorithms", lines, data)
    return data


REPRODUCTIONS = {
    "calibration": reproduce_calibration,
    "collapse": reproduce_collapse,
    "fine-grained": reproduce_fine_grained,
    "algorithms": reproduce_algorithms,
}


def reproduce(name: str, out: str | Path | None = None, *, progress: bool = True) -> Path:
    """Run one reproduction (a key of :data:`REPRODUCTIONS`) into ``out`` (default
    ``benchmarks/results/<name>``); returns the directory, whose ``summary.md`` has the figures."""
    out = Path(out) if out is not None else RESULTS_DIR / name
    REPRODUCTIONS[name](out, progress=progress)
    return out
