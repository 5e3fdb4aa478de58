"""CalibrationProbe refuses settings under which π* ∝ π_ref·exp(R/β) is not the fixed point of
training (and the suite refuses them when it is parsed); the SideScores reward wrapper."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import tokengym  # noqa: F401  (registers the envs)
from tokengym.benchmarks.probes import CalibrationProbe
from tokengym.benchmarks.suite_schema import SuiteError, parse_suite
from tokengym.rewards.kl import AdaptiveKL, KLShaped
from tokengym.rewards.side_scores import SideScores


def kl_reward(**options) -> KLShaped:
    return KLShaped(inner=None, beta=0.5, **options)  # never called: the probe reads its settings


@pytest.mark.parametrize("estimator", ["k2", "k3"])
def test_probe_refuses_a_kl_estimator_other_than_k1(estimator):
    # KLShaped itself refuses k2/k3; a duck-typed reward with another estimator is refused here too.
    reward = SimpleNamespace(estimator=estimator, beta=0.5, controller=None)
    with pytest.raises(ValueError, match=rf"estimator='{estimator}'.*k1.*not the fixed point"):
        CalibrationProbe(reward)


def test_probe_refuses_a_discount_below_one():
    with pytest.raises(ValueError, match=r"gamma=0.9.*discounted.*not the fixed point"):
        CalibrationProbe(kl_reward(), gamma=0.9)


def test_probe_refuses_a_sampling_temperature_other_than_one():
    with pytest.raises(ValueError, match=r"sampling temperature=0.7.*not the fixed point"):
        CalibrationProbe(kl_reward(), temperature=0.7)


def test_probe_refuses_truncated_sampling():
    with pytest.raises(ValueError, match=r"top_k=4.*truncated"):
        CalibrationProbe(kl_reward(), top_k=4)
    with pytest.raises(ValueError, match=r"top_p=0.9.*truncated"):
        CalibrationProbe(kl_reward(), top_p=0.9)


def test_probe_accepts_k1_undiscounted_untempered_and_targets_pi_star():
    probe = CalibrationProbe(kl_reward(), gamma=1.0, temperature=1.0)
    assert probe.beta == 0.5 and probe.optimum.shape == (512,)
    assert CalibrationProbe(KLShaped(None, beta=AdaptiveKL(init_beta=0.1, target=6.0, horizon=1000))).optimum is None  # adaptive β: no single π*


CALIBRATION = {"envs": ["tokengym/Calibration-v0"], "agents": ["reinforce"]}


@pytest.mark.parametrize(
    "run, match",
    [
        ({"reward_kwargs": {"beta": 0.5, "estimator": "k3"}}, r"reward estimator='k3'"),
        ({"gamma": 0.9}, r"gamma=0.9"),
        ({"env_kwargs": {"temperature": 0.7}}, r"sampling temperature=0.7"),
    ],
)
def test_suite_refuses_exact_probing_where_pi_star_is_not_the_fixed_point(run, match):
    settings = {"reward": "kl-shaped", "reward_kwargs": {"beta": 0.5}, "exact_every": 1, **run}
    with pytest.raises(SuiteError, match=r"cell \(tokengym/Calibration-v0, reinforce, default\): CalibrationProbe: " + match):
        parse_suite({**CALIBRATION, "run": settings})
    parse_suite({**CALIBRATION, "run": {**settings, "exact_every": 0}})  # without the probe it is a valid run


class Recorder:
    """A reward that records what it was given and returns ones."""

    def __init__(self):
        self.resets = 0

    def reset(self, episodes):
        self.resets += 1

    def __call__(self, step):
        return torch.ones(step.acted.shape[0])


class Step:
    acted = torch.tensor([True, False])


def test_side_scores_pass_the_reward_through_and_total_the_extras():
    reward, extra = Recorder(), Recorder()
    side = SideScores(reward, {"holistic": extra})
    assert side.children() == [reward, extra]  # the env asks every one of them whether it needs π_ref
    assert side.update_beta is None  # the wrapped reward has no adaptive β
    side.reset(None)
    assert reward.resets == extra.resets == 1
    for _ in range(3):
        assert side(Step()).tolist() == [1.0, 1.0]
    assert side.means() == {"eval/holistic": 1.5}  # totals (3, 0), rows that did not act add nothing
    kl = KLShaped(None, beta=AdaptiveKL(init_beta=0.1, target=6.0, horizon=1000))
    assert SideScores(kl, {}).update_beta == kl.update_beta
