"""The over-optimisation alarm warns once per quantity, naming the iteration and the value."""
import pytest

from tokengym.alarm import OveroptimizationAlarm, OveroptimizationWarning


def test_warns_once_per_quantity_with_iteration_and_value():
    alarm = OveroptimizationAlarm(max_kl=6.0, min_entropy=0.5)
    assert alarm({"iteration": 1, "kl_ref": 5.9, "entropy": 2.0}) == []
    with pytest.warns(OveroptimizationWarning, match=r"iteration 2: KL to the reference is 7\.25"):
        assert len(alarm({"iteration": 2, "kl_ref": 7.25, "entropy": 2.0})) == 1
    with pytest.warns(OveroptimizationWarning, match=r"iteration 3: per-token entropy is 0\.100"):
        messages = alarm({"iteration": 3, "kl_ref": 9.0, "entropy": 0.1})  # KL already warned
    assert len(messages) == 1 and "entropy" in messages[0]
    assert alarm({"iteration": 4, "kl_ref": 30.0, "entropy": 0.0}) == []  # once each


def test_thresholds_are_validated_and_can_be_switched_off():
    with pytest.raises(ValueError, match="max_kl"):
        OveroptimizationAlarm(max_kl=0.0)
    assert OveroptimizationAlarm(max_kl=None, min_entropy=None)({"iteration": 1, "kl_ref": 1e9, "entropy": 0}) == []
