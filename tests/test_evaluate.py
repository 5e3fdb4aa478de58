"""`tokengym eval` and the suite's final evaluation: the sampled score and sequence KL agree with
exact enumeration on Calibration-v0, the reference is at KL 0, and distinct-2 is the pooled ratio."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import gymnasium as gym
import pytest
import torch
from transformers import AutoModelForCausalLM

import tokengym  # noqa: F401  (registers the envs)
from tokengym.benchmarks.evaluate import distinct_n, evaluate
from tokengym.evaluate import EVAL_FILE
from tokengym.cli import main
from tokengym.envs import calibration


def test_distinct_n_pools_word_ngrams_over_all_texts():
    assert distinct_n(["a b a b", "a b c"], 2) == pytest.approx(3 / 5)  # (a b) (b a) (a b) | (a b) (b c)
    assert distinct_n(["a b c", "d e f"], 2) == 1.0
    assert distinct_n(["one", ""], 2) == 0.0  # no bigram at all
    assert distinct_n(["x x x"], 1) == pytest.approx(1 / 3)


def exact(model) -> tuple[float, float]:
    """E_π[R] and KL(π‖π_ref) of ``model`` on Calibration-v0, by enumerating its 512 sequences."""
    logprobs = calibration.sequence_logprobs(model)
    ref_logprobs = calibration.sequence_logprobs(calibration.build_reference_model())
    rewards = calibration.calibration_reward(calibration.all_sequences())
    return float((logprobs.exp() * rewards).sum()), float(calibration.kl_divergence(logprobs, ref_logprobs))


def assert_within(sampled: float, std: float, n: int, value: float) -> None:
    assert abs(sampled - value) < 4 * std / math.sqrt(n) + 1e-6, (sampled, value, std, n)


@pytest.mark.parametrize("reward", [None, "kl-shaped"])  # π_ref scored after the episode, or stepped by the env
def test_sampled_score_and_kl_match_exact_enumeration(reward, one_thread):
    envs = gym.make_vec("tokengym/Calibration-v0", num_envs=256, **({"reward": reward} if reward else {}))
    assert envs.unwrapped.steps_reference == (reward is not None)
    model = calibration.build_reference_model()
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    report = evaluate(envs, model, episodes=2048, seed=1)
    score, kl = exact(model)
    ref_score, _ = exact(calibration.build_reference_model())
    assert kl > 0.2  # the perturbation moved the policy measurably
    policy, reference = report["policy"], report["reference"]
    assert_within(policy["score"], policy["score_std"], 2048, score)
    assert_within(policy["kl"], policy["kl_std"], 2048, kl)
    assert_within(reference["score"], reference["score_std"], 2048, ref_score)
    # π_ref against itself: 0 up to the float difference of cached sampling and a full forward
    assert abs(reference["kl"]) < 1e-5 and reference["kl_std"] < 1e-5
    assert report["score_gain"] == pytest.approx(policy["score"] - reference["score"])
    assert report["distinct_2_ratio"] == pytest.approx(policy["distinct_2"] / reference["distinct_2"])


def test_eval_of_a_run_directory_writes_figures_that_match_its_saved_policy(tmp_path, one_thread):
    run = tmp_path / "run"
    assert main(["train", "--env", "tokengym/Calibration-v0", "--agent", "reinforce", "--episodes", "64",
                 "--batch-size", "16", "--lr", "0.05", "--beta", "0.5", "--out", str(run), "--quiet"]) == 0
    done = subprocess.run([sys.executable, "-m", "tokengym", "eval", "--run", str(run), "--episodes", "1024"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "score gain" in done.stdout
    assert "Loading weights" not in done.stderr  # transformers' bars stay quiet, as under train
    report = json.loads((run / EVAL_FILE).read_text())
    score, kl = exact(AutoModelForCausalLM.from_pretrained(run / "policy"))
    assert kl > 0.05
    policy = report["policy"]
    assert policy["episodes"] == 1024 and abs(report["reference"]["kl"]) < 1e-5
    assert_within(policy["score"], policy["score_std"], 1024, score)
    assert_within(policy["kl"], policy["kl_std"], 1024, kl)
    # placed on the frontier at the run's own β, whose J* is known exactly on Calibration-v0
    from tokengym.benchmarks.frontier import calibration_frontier

    placement, exact_frontier = report["placement"], calibration_frontier(beta=0.5)
    assert placement["beta"] == 0.5 and placement["beta_source"] == "the KL-shaped reward's β"
    assert abs(placement["j_star"] - exact_frontier["j_star"]) <= 4 * report["frontier"]["j_star_se"] + 1e-3
    assert abs(placement["j_ref"] - exact_frontier["reference_score"]) <= 4 * report["frontier"]["reference_score_se"]
    assert placement["j"] == pytest.approx(placement["j_ref"] + report["score_gain"] - 0.5 * report["kl"])
    assert placement["fraction_captured"] == pytest.approx(
        (placement["j"] - placement["j_ref"]) / (placement["j_star"] - placement["j_ref"]))
    assert "of J* − J_ref captured" in done.stdout and (run / "frontier.png").stat().st_size > 0


@pytest.mark.parametrize("flags, message", [
    (["--run", "{tmp}/missing"], "--run {tmp}/missing: expected a run directory written by tokengym train (no such directory)"),
    (["--run", "{tmp}", "--episodes", "0"], "--episodes 0: expected an integer ≥ 1"),
])
def test_eval_refuses_bad_input_in_one_line(tmp_path, capsys, flags, message):
    assert main(["eval", *(f.format(tmp=tmp_path) for f in flags)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"tokengym: error: {message.format(tmp=tmp_path)}"
    assert not (tmp_path / EVAL_FILE).exists()
