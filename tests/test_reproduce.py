"""The reward-collapse reproduction (Song et al. 2023) at toy scale."""
from __future__ import annotations

import pytest
import torch

from tokengym.benchmarks.reproduce import reward_collapse_experiment

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fixed_utility_collapses_and_prompt_aware_utility_separates():
    result = reward_collapse_experiment(seed=0)
    fixed, aware = result["separation"]["log-sigmoid"], result["separation"]["prompt-aware"]
    assert fixed < 0.05  # open- and closed-ended prompts get the same reward distribution
    assert aware > 0.1 and aware > 3 * fixed
    # the collapsed profile is the prompt-independent optimum of Σ log σ(r_i − r_j) on [0, 1]
    profile = torch.tensor([1.0, 1.0, 1.0, 0.764, 0.236, 0.0, 0.0, 0.0])
    for kind in ("open", "closed"):
        assert result["log-sigmoid"][kind].shape == (4, 8)
        assert (result["log-sigmoid"][kind].mean(0) - profile).abs().max() < 0.15
    # prompt-aware: closed-ended rewards polarise, open-ended ones spread evenly (Beta(1, 1) limit)
    distance_to_extremes = {k: torch.minimum(r, 1 - r).mean().item() for k, r in result["prompt-aware"].items()}
    assert distance_to_extremes["closed"] < 0.1 < distance_to_extremes["open"]
    even = torch.linspace(1, 0, 8)
    assert (result["prompt-aware"]["open"].mean(0) - even).abs().max() < 0.1
