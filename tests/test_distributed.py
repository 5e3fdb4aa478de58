"""Data parallel under torchrun: 2 CPU ranks (gloo) with B/2 episodes each take exactly the steps
that 1 process with B takes, for every agent, as a user launches it
(``torchrun --nproc-per-node 2 -m tokengym train ...``).

The runs are short but not gentle: lr 1e-2 moves the weights by a lot in 3 iterations, the
KL-shaped reward adapts β (a global batch statistic), PPO splits each global batch into 4
shuffled minibatches (so a rank may hold none of one) and whitens advantages over the global
batch, and REINFORCE's moving-average baseline averages the global batch. A rank that used only
its own episodes for any of these, or averaged instead of summed a gradient, would change the
weights by far more than the tolerance: the B/2 single-process control run shows how far.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # learning or multi-process: CI runs it, `pytest -m slow`

TRAIN = ["train", "--env", "tokengym/Calibration-v0", "--reward", "kl-shaped", "--kl-target", "0.5",
         "--lr", "0.01", "--episodes", "24", "--seed", "3", "--quiet"]


def launch(*args: str, ranks: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if ranks == 1:
        command = [sys.executable, "-m", "tokengym", *args]
    else:  # torchrun itself (python -m torch.distributed.run), on a free port
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
                   "-m", "tokengym", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def train(out: Path, agent: str, batch_size: int, ranks: int = 1) -> dict[str, torch.Tensor]:
    result = launch(*TRAIN, "--agent", agent, "--batch-size", str(batch_size), "--out", str(out), ranks=ranks)
    assert result.returncode == 0, result.stderr[-3000:]
    return load_file(out / "policy" / "model.safetensors")


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest weight difference, leaving out GPT-2's key biases (the middle third of
    ``c_attn.bias``): a key bias adds ``q·b_k`` to every score of a query, which softmax ignores,
    so its gradient is zero up to rounding, and Adam scales that rounding noise into lr-sized
    steps that differ between any two summation orders."""
    def keyless(name: str, weights: torch.Tensor) -> torch.Tensor:
        if name.endswith("c_attn.bias"):
            width = weights.numel() // 3
            weights = torch.cat([weights[:width], weights[2 * width:]])
        return weights

    return max(float((keyless(k, a[k]) - keyless(k, b[k])).abs().max()) for k in a)


@pytest.mark.parametrize("agent", ["reinforce", "a2c", "ppo", "grpo"])
def test_two_ranks_of_half_the_batch_equal_one_process_of_the_whole(tmp_path, agent):
    one = train(tmp_path / "one", agent, batch_size=8)
    two = train(tmp_path / "two", agent, batch_size=4, ranks=2)
    start = load_file(tmp_path / "one" / "reference" / "model.safetensors")
    assert distance(one, start) > 1e-2  # the updates are large ...
    assert distance(two, one) < 1e-5  # ... and the two runs agree on them to float precision

    # rank 0 alone wrote one line per iteration, counting global episodes, with global means
    one_rows, two_rows = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [r["episodes"] for r in two_rows] == [8, 16, 24]
    for a, b in zip(one_rows, two_rows):
        value_keys = ("explained_variance",) if agent in ("a2c", "ppo") else ()  # the global batch's too
        for key in ("reward", "kl_ref", "beta", "entropy", *value_keys):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    assert json.loads((tmp_path / "two" / "run.json").read_text())["world_size"] == 2


def test_the_equivalence_test_can_fail_half_the_batch_in_one_process_differs(tmp_path):
    """Control for the test above: one process with B/2 (what either rank alone would do)."""
    one = train(tmp_path / "one", "ppo", batch_size=8)
    half = train(tmp_path / "half", "ppo", batch_size=4)
    assert distance(half, one) > 1e-3


def test_resume_with_another_number_of_processes_is_a_one_line_error(tmp_path):
    run = tmp_path / "run"
    train(run, "reinforce", batch_size=4, ranks=2)
    result = launch("train", "--resume", str(run), "--quiet")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"tokengym: error: --resume {run}: expected the 2 process(es) it was started with "
        f"(torchrun --nproc-per-node 2); this launch has 1"
    ]


def test_a_two_rank_run_resumes_bit_identical_from_its_checkpoint(tmp_path):
    """Rank 0's checkpoint holds every rank's state (they draw the same streams), so 2 ranks
    resuming from iteration 2 of 3 end exactly where the uninterrupted run ends."""
    flags = ["--agent", "ppo", "--batch-size", "4", "--save-every", "1", "--keep-checkpoints", "5"]
    for name in ("whole", "cut"):
        result = launch(*TRAIN, *flags, "--out", str(tmp_path / name), ranks=2)
        assert result.returncode == 0, result.stderr[-3000:]
    cut = tmp_path / "cut"
    checkpoints = sorted((cut / "checkpoints").iterdir())
    assert [p.name for p in checkpoints] == ["iter-000001", "iter-000002", "iter-000003"]
    shutil.rmtree(checkpoints[-1])  # as if the run died in its last iteration
    shutil.rmtree(cut / "policy")
    result = launch("train", "--resume", str(cut), "--quiet", ranks=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stderr and "iteration 2" in result.stderr
    whole = load_file(tmp_path / "whole" / "policy" / "model.safetensors")
    assert all(torch.equal(whole[k], tensor) for k, tensor in load_file(cut / "policy" / "model.safetensors").items())
    assert [r["episodes"] for r in metrics(cut)] == [8, 16, 24]
