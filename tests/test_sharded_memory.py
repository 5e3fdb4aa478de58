"""FSDP's memory, measured: on GPT-2 small's shape (12 layers × 768, 50,257 tokens: 124,439,808
parameters, built from a config, no download), each of 2 sharded ranks holds at most 0.6× the
parameter, gradient and Adam bytes of one unsharded process, counted from the tensors each
process holds after one training step (a sharded tensor counts its local shard only:
``tokengym.benchmarks.sharded``, which ``tokengym bench --perf`` runs too)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tokengym.benchmarks.sharded import ENV_ARGS

GPT2_SMALL_PARAMETERS = 124_439_808
"""GPT-2 small's parameters, the LM head tied to the token embedding."""
GPT2_SMALL_TENSORS = 148
"""Its parameter tensors (Adam keeps a 4-byte step count for each)."""


def measure(tmp_path, ranks: int) -> dict:
    out = tmp_path / f"ranks-{ranks}.json"
    keywords = {"batch": 2, "prompt_tokens": 4, "new_tokens": 1, "iterations": 1, "repeats": 0, "out": str(out)}
    module = ["-m", "tokengym.benchmarks.sharded"]
    command = [sys.executable, *module] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", *module]
    env = {**os.environ, "OMP_NUM_THREADS": "1", ENV_ARGS: json.dumps(keywords)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_each_of_two_fsdp_ranks_holds_half_the_training_state_of_one_process(tmp_path):
    one, two = measure(tmp_path, 1), measure(tmp_path, 2)
    P, float32 = GPT2_SMALL_PARAMETERS, 4
    (whole,) = [rank["held_bytes"] for rank in one["ranks"]]
    # one process: every float32 weight, its gradient and Adam's two moments, and π_ref's weights
    assert whole["parameters"] == whole["gradients"] == whole["reference"] == float32 * P
    assert whole["optimizer"] == 2 * float32 * P + float32 * GPT2_SMALL_TENSORS
    shards = [rank["held_bytes"] for rank in two["ranks"]]
    for kind in ("parameters", "gradients", "reference"):  # the ranks' shards partition every tensor
        assert sum(shard[kind] for shard in shards) == whole[kind], kind
    state = lambda held: held["parameters"] + held["gradients"] + held["optimizer"]  # noqa: E731
    assert max(state(shard) for shard in shards) <= 0.6 * state(whole)
    assert two["training_state_bytes"] / one["training_state_bytes"] == pytest.approx(0.5, abs=1e-5)
