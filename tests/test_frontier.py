"""The reward–KL frontier: best-of-N's order-statistic estimates equal brute force over every
subset, its exact distribution equals brute force over every draw, the sampled frontier of
Calibration-v0 lies within its error of the exact one, and a run is placed on it as defined."""
from __future__ import annotations

import itertools
import math

import gymnasium as gym
import pytest
import torch

import tokengym  # noqa: F401  (registers the envs)
from tokengym.benchmarks.frontier import (
    best_of_n_from_pool, best_of_n_kl_bound, best_of_n_weights, calibration_frontier, exact_best_of_n,
    frontier_from_samples, place_run,
)
from tokengym.benchmarks.targets import sample_for_targets

POOL = torch.tensor([0.5, -1.0, 0.5, 2.0, 0.0, 0.5, -1.0], dtype=torch.float64)  # ties at 0.5 and −1


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_pool_gain_averages_every_subset_and_its_kl_is_the_empirical_distributions(n):
    subsets = list(itertools.combinations(range(len(POOL)), n))
    maxima = torch.stack([POOL[list(s)].max() for s in subsets])
    brute_gain = float(maxima.mean() - POOL.mean())
    pool = best_of_n_from_pool(POOL[None], n)  # one prompt
    assert float(pool["gain"]) == pytest.approx(brute_gain, abs=1e-12)
    # the KL is best-of-N's on the pool's empirical distribution (the pool's entries, 1/M each)
    empirical = exact_best_of_n(POOL, torch.full((len(POOL),), -math.log(len(POOL)), dtype=torch.float64), n)
    assert float(pool["kl"]) == pytest.approx(empirical["kl"], abs=1e-12)
    assert float(best_of_n_weights(len(POOL), n).sum()) == pytest.approx(1.0, abs=1e-12)


def test_pool_estimates_average_over_prompts():
    pools = torch.stack([POOL, POOL * 2 + 1])  # (2, 7)
    both = best_of_n_from_pool(pools, 3)
    each = [best_of_n_from_pool(p[None], 3) for p in pools]
    assert float(both["gain"]) == pytest.approx((float(each[0]["gain"]) + float(each[1]["gain"])) / 2, abs=1e-12)


def test_exact_best_of_n_is_the_distribution_of_the_best_of_n_draws():
    rewards = torch.tensor([1.0, 0.0, 1.0, 2.0, 0.0], dtype=torch.float64)  # two ties
    probs = torch.tensor([0.1, 0.3, 0.2, 0.15, 0.25], dtype=torch.float64)
    n = 3
    brute = torch.zeros(5, dtype=torch.float64)
    for draw in itertools.product(range(5), repeat=n):  # every n draws, the best one kept (ties: any of them)
        weight = math.prod(float(probs[y]) for y in draw)
        best = max(float(rewards[y]) for y in draw)
        winners = [y for y in draw if float(rewards[y]) == best]
        for y in winners:
            brute[y] += weight / len(winners)
    exact = exact_best_of_n(rewards, probs.log(), n)
    assert exact["logprobs"].exp().tolist() == pytest.approx(brute.tolist(), abs=1e-12)
    assert exact["gain"] == pytest.approx(float(brute @ rewards - probs @ rewards), abs=1e-12)
    assert exact["kl"] == pytest.approx(float(brute @ (brute / probs).log()), abs=1e-12)
    assert exact["kl"] < exact["kl_bound"]  # ties: below log N − (N−1)/N


@pytest.mark.parametrize("n", [2, 8, 32])
def test_the_kl_bound_is_the_limit_of_many_untied_rewards(n):
    S = 512  # uniform over 512 sequences with distinct rewards: nearly a continuous reward
    exact = exact_best_of_n(torch.arange(S, dtype=torch.float64), torch.full((S,), -math.log(S), dtype=torch.float64), n)
    assert 0 < exact["kl_bound"] - exact["kl"] < 1e-3
    assert exact["kl_bound"] == pytest.approx(math.log(n) - (n - 1) / n)
    untied = best_of_n_from_pool(torch.randperm(n, generator=torch.Generator().manual_seed(0))[None].double(), n)
    assert float(untied["kl"]) < exact["kl_bound"]  # N = M: still below the bound (the pool's top alone would be log M)


@pytest.fixture(scope="module")
def frontiers(one_thread):
    """Calibration-v0's frontier from π_ref's samples (4 × 2,048) and exact."""
    env = gym.make_vec("tokengym/Calibration-v0", num_envs=512)
    grid = dict(betas=(0.5, 1.0, 2.0), ns=(2, 8, 32), beta=1.0)
    samples = sample_for_targets(env, n_prompts=4, n_per_prompt=2048, seed=7)
    return frontier_from_samples(samples, **grid), calibration_frontier(**grid)


def test_the_sampled_frontier_lies_within_its_error_of_the_exact_one(frontiers):
    sampled, exact = frontiers
    for got, truth in zip(sampled["p_beta"], exact["p_beta"]):
        assert got["beta"] == truth["beta"] and not got["low_ess"]
        for name in ("gain", "kl", "j_star"):
            assert abs(got[name] - truth[name]) <= 4 * got[f"{name}_se"], (got["beta"], name, got, truth)
    for got, truth in zip(sampled["best_of_n"], exact["best_of_n"]):
        assert got["kl_bound"] == truth["kl_bound"] == best_of_n_kl_bound(got["n"])
        assert abs(got["gain"] - truth["gain"]) <= 4 * got["gain_se"], (got, truth)
        assert abs(got["kl_sampled"] - truth["kl_sampled"]) <= 4 * got["kl_sampled_se"], (got, truth)
        assert truth["kl_sampled"] < truth["kl_bound"]  # four reward values: many ties
    assert sampled["j_star"] == sampled["p_beta"][1]["j_star"] and exact["j_star"] == exact["p_beta"][1]["j_star"]
    assert abs(sampled["reference_score"] - exact["reference_score"]) <= 4 * sampled["reference_score_se"]


def test_a_run_at_p_beta_captures_everything_and_one_at_best_of_n_overspends_nothing(frontiers):
    _, exact = frontiers
    at_p = next(p for p in exact["p_beta"] if p["beta"] == 1.0)
    placed = place_run(exact, gain=at_p["gain"], kl=at_p["kl"])
    assert placed["j"] == pytest.approx(at_p["j_star"], abs=1e-10)  # J(p_β) = J*
    assert placed["fraction_captured"] == pytest.approx(1.0, abs=1e-9)
    bon8 = next(b for b in exact["best_of_n"] if b["n"] == 8)
    placed = place_run(exact, gain=bon8["gain"], kl=bon8["kl_bound"])
    assert placed["bon_n"] == pytest.approx(8.0, abs=1e-9) and placed["kl_overspend"] == pytest.approx(1.0, abs=1e-9)
    twice = place_run(exact, gain=bon8["gain"], kl=2 * bon8["kl_bound"], beta=0.5)
    assert twice["kl_overspend"] == pytest.approx(2.0, abs=1e-9)
    assert twice["j"] == pytest.approx(exact["reference_score"] + bon8["gain"] - 0.5 * 2 * bon8["kl_bound"], abs=1e-12)
    # between two integers the gain curve is interpolated linearly in N, the KL by the bound at that N
    curve = exact["best_of_n_curve"]
    halfway = (curve["gain"][2] + curve["gain"][3]) / 2  # between N = 3 and N = 4
    assert place_run(exact, gain=halfway, kl=1.0)["bon_kl"] == pytest.approx(best_of_n_kl_bound(3.5), abs=1e-12)


def test_placing_a_run_names_what_it_cannot_place(frontiers):
    _, exact = frontiers
    with pytest.raises(ValueError, match=r"beta=0.3 is not on the frontier's p_β grid \[0.5, 1.0, 2.0\]"):
        place_run(exact, gain=0.1, kl=1.0, beta=0.3)
    beyond = place_run(exact, gain=10.0, kl=1.0)
    assert beyond["kl_overspend"] is None and "above best-of-512" in beyond["bon_note"]
    assert place_run(exact, gain=-0.1, kl=1.0)["kl_overspend"] is None
