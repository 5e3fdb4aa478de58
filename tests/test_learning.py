"""Learning on language with the defaults, judged on fresh samples against the untrained
reference (`tokengym.benchmarks.evaluate`); the 3-seed runs are `tokengym bench --suite kl-sentiment`.

Sentiment-v0 with the KL-shaped reward at the project's default β and the agent's default config,
2,048 episodes of 16 tokens (A2C is the README's main job). VADER must rise by ≥ +0.30 (and by more
than 5 standard errors) at a sampled KL(π_θ‖π_ref) ≤ 6 nats per sequence, with distinct-2 ≥ 0.7× the
reference's. Measured on 3 seeds, A2C: +0.33 @ 4.9, +0.38 @ 5.9, +0.35 @ 5.4 nats; PPO: +0.48 @ 7.8,
+0.33 @ 5.4, +0.33 @ 5.5. The test runs each on the two seeds that meet the bar with room (A2C's
seed 1 at 5.9 nats is too close to hold across CPUs whose float kernels differ; PPO's seed 0 is over
it). These are regression checks on fixed seeds, not a claim for every seed: on held-out seeds 3-5
A2C meets the bar on none and PPO on two (BENCHMARKS.md). REINFORCE's defaults meet it on no seed;
GRPO's on seeds 1 and 2 through the suite runner but on none through `train()`, this test's path
(+0.30 and +0.28 there; BENCHMARKS.md).

Keywords-v0, the GRPO task (task reward only, 960 episodes in batches of 16, lr 5e-4 as in
`benchmarks/results/keywords`): GRPO and REINFORCE beat the untrained policy by more than 4
standard errors on seeds 0 and 1.
"""
from __future__ import annotations

import math

import pytest

from tokengym.agents.train import train
from tokengym.benchmarks.evaluate import evaluate_run


def standard_error(report: dict) -> float:
    """Standard error of the score gain: two independent means over ``report['episodes']`` each."""
    p, r, n = report["policy"], report["reference"], report["episodes"]
    return math.sqrt((p["score_std"] ** 2 + r["score_std"] ** 2) / n)


@pytest.mark.parametrize("agent, seed", [("a2c", 0), ("a2c", 2), ("ppo", 1), ("ppo", 2)])
def test_defaults_raise_sentiment_with_the_kl_bounded_and_text_diverse(agent, seed, tmp_path, one_thread):
    train("tokengym/Sentiment-v0", agent, episodes=2048, batch_size=32, reward="kl-shaped", min_new_tokens=16,
          seed=seed, out=tmp_path / "run", progress=False)
    report = evaluate_run(tmp_path / "run")
    summary = {k: report[k] for k in ("score_gain", "kl", "distinct_2_ratio")}
    assert report["score_gain"] >= 0.30 and report["score_gain"] > 5 * standard_error(report), summary
    assert report["kl"] <= 6.0, summary
    assert report["distinct_2_ratio"] >= 0.7, summary


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("agent", ["reinforce", "grpo"])
def test_grpo_and_reinforce_beat_the_untrained_policy_on_keywords(agent, seed, tmp_path, one_thread):
    train("tokengym/Keywords-v0", agent, episodes=960, batch_size=16, lr=5e-4, seed=seed, out=tmp_path / "run",
          progress=False)
    report = evaluate_run(tmp_path / "run")
    assert report["score_gain"] > 4 * standard_error(report), (report["score_gain"], standard_error(report))
