"""Learning on language as a user runs it (the README's main job, and the defaults), judged on fresh
samples against the untrained reference (`tokengym.benchmarks.evaluate`); the 3-seed runs of the
defaults are `tokengym bench --suite kl-sentiment`.

Sentiment-v0 with the KL-shaped reward at the project's default β, 16-token episodes. VADER must rise
by ≥ +0.30 (and by more than 5 standard errors) at a sampled KL(π_θ‖π_ref) ≤ 6 nats per sequence, with
distinct-2 ≥ 0.7× the reference's.

- A2C at lr 1.5e-4 (the default) over 4,096 episodes in batches of 32, half the default budget. Over seeds 0-5
  it measured +0.41 @ 4.8, +0.41 @ 4.5, +0.45 @ 5.1, +0.43 @ 5.4, +0.38 @ 4.3 and +0.38 @ 4.2 nats
  (`experiments/kl-sentiment-defaults/longer-budget.json`). The test runs seeds 0 and 1.
- PPO at lr 3e-4 over 2,048 episodes in batches of 32: +0.48 @ 7.8, +0.33 @ 5.4, +0.33 @ 5.5 on
  seeds 0-2. The test runs seed 1, a regression check on a fixed seed, not a claim for every seed:
  over seeds 0-5 these settings meet the bar on four (BENCHMARKS.md).

These are shorter budgets than `tokengym train`'s default (8,192 episodes in batches of 64), which
the kl-sentiment suite measures on 3 seeds; at 2,048 episodes no agent meets the bar on every seed.

Keywords-v0, the GRPO task (task reward only, 960 episodes in batches of 16, lr 5e-4 as in
`experiments/keywords`): GRPO and REINFORCE beat the untrained policy by more than 4
standard errors on seeds 0 and 1.
"""
from __future__ import annotations

import math

import pytest

from tokengym.train import train
from tokengym.evaluate import evaluate_run

pytestmark = pytest.mark.slow  # learning or multi-process: CI runs it, `pytest -m slow`


def standard_error(report: dict) -> float:
    """Standard error of the score gain: two independent means over ``report['episodes']`` each."""
    p, r, n = report["policy"], report["reference"], report["episodes"]
    return math.sqrt((p["score_std"] ** 2 + r["score_std"] ** 2) / n)


@pytest.mark.parametrize("agent, seed, episodes, lr", [
    ("a2c", 0, 4096, 1.5e-4), ("a2c", 1, 4096, 1.5e-4),
    ("ppo", 1, 2048, 3e-4),
])
def test_sentiment_rises_with_the_kl_bounded_and_text_diverse(agent, seed, episodes, lr, tmp_path, one_thread):
    train("tokengym/Sentiment-v0", agent, episodes=episodes, batch_size=32, lr=lr, reward="kl-shaped",
          min_new_tokens=16, seed=seed, out=tmp_path / "run", progress=False)
    report = evaluate_run(tmp_path / "run", frontier_samples=0)
    summary = {k: report[k] for k in ("score_gain", "kl", "distinct_2_ratio")}
    assert report["score_gain"] >= 0.30 and report["score_gain"] > 5 * standard_error(report), summary
    assert report["kl"] <= 6.0, summary
    assert report["distinct_2_ratio"] >= 0.7, summary


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("agent", ["reinforce", "grpo"])
def test_grpo_and_reinforce_beat_the_untrained_policy_on_keywords(agent, seed, tmp_path, one_thread):
    train("tokengym/Keywords-v0", agent, episodes=960, batch_size=16, lr=5e-4, seed=seed, reward="holistic",
          out=tmp_path / "run", progress=False)
    report = evaluate_run(tmp_path / "run", frontier_samples=0)
    assert report["score_gain"] > 4 * standard_error(report), (report["score_gain"], standard_error(report))
