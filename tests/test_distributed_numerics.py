"""Numbers that must stay right when a run is spread over ranks: the adaptive β at a large global
batch, and the data-parallel gradient sum over buffers of several dtypes.

Launches use torchrun on CPU (gloo), as ``tests/test_distributed.py`` does, so they are marked
slow; the dtype-order check in separate interpreters is the cheap complement.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tokengym.rewards.kl import DEFAULT_BETA

KL_HORIZON = 128  # the CLI's (agents/settings.py)


def torchrun(*args: str, ranks: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow
def test_adaptive_beta_stays_positive_at_a_1024_episode_global_batch(tmp_path):
    """Two ranks of 512 episodes: 1,024 finished episodes per update, 8 horizons of the CLI's
    controller. The KL stays far below the target of 6 nats (π_θ starts at π_ref), so the error
    is −0.2 and β falls by exactly e^−0.2 per iteration; the linear update gave
    0.055·(1 − 0.2·1024/128) = −0.033 after the first."""
    out = tmp_path / "run"
    result = torchrun("-m", "tokengym", "train", "--env", "tokengym/Calibration-v0", "--agent", "reinforce",
                      "--reward", "kl-shaped", "--kl-target", "6", "--batch-size", "512", "--episodes", "2048",
                      "--seed", "0", "--quiet", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["episodes"] for r in rows] == [1024, 2048]
    assert all(r["kl_ref"] < 0.8 * 6 for r in rows)  # the error is clipped at −0.2 in both windows
    for i, row in enumerate(rows, start=1):
        assert row["beta"] == pytest.approx(DEFAULT_BETA * math.exp(-0.2 * i), rel=1e-9)


SUM_GRADIENTS = textwrap.dedent("""
    import sys
    import torch
    import torch.distributed as dist
    sys.path.insert(0, {tests!r})
    from conftest import build_tiny_lm
    from tokengym.agents.policy import Policy
    from tokengym.lm import distributed

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    # bf16 weights, fp32 value head: two gradient buckets of different dtypes and sizes
    policy = Policy.from_pretrained(build_tiny_lm(), dtype=torch.bfloat16, value_head=True)
    assert {{p.dtype for p in policy.parameters()}} == {{torch.bfloat16, torch.float32}}
    for p in policy.parameters():
        p.grad = torch.full_like(p, rank + 1)  # rank 0 holds 1, rank 1 holds 2: every sum is 3
    distributed.sum_gradients(policy.parameters())
    wrong = [name for name, p in policy.named_parameters() if not torch.equal(p.grad, torch.full_like(p, 3))]
    assert not wrong, wrong[:5]
    dist.destroy_process_group()
    distributed.exit_process(0)  # as tokengym's entry points end a torchrun worker
""")


@pytest.mark.slow
def test_mixed_dtype_gradients_sum_correctly_across_two_ranks_on_every_launch(tmp_path):
    """A bf16 policy with an fp32 value head, summed over 2 gloo ranks, 8 launches. Each
    interpreter ordered a Python set of dtypes its own way (the dtypes hash by address), so about
    half of all launches paired the bf16 bucket on one rank with the fp32 bucket on the other: a
    crash, a hang or wrong sums. 8 launches all agree by chance with probability 2⁻⁸."""
    script = tmp_path / "sum_gradients.py"
    script.write_text(SUM_GRADIENTS.format(tests=str(Path(__file__).parent)))
    for launch in range(8):
        try:
            result = torchrun(str(script), timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"launch {launch} hung in a collective")
        assert result.returncode == 0, f"launch {launch}: {result.stderr[-2000:]}"


ORDER = textwrap.dedent("""
    import torch
    from unittest import mock
    from tokengym.lm import distributed

    order = []
    params = [torch.nn.Parameter(torch.zeros(3, dtype=d)) for d in (torch.float32, torch.bfloat16, torch.float16)]
    for p in params:
        p.grad = torch.ones_like(p)
    with mock.patch.object(distributed, "is_distributed", return_value=True), \\
         mock.patch.object(distributed.dist, "all_reduce", side_effect=lambda t, op: order.append(str(t.dtype))):
        distributed.sum_gradients(params)
    print(",".join(order))
""")


@pytest.mark.slow
def test_gradient_buckets_are_reduced_in_one_order_in_every_interpreter():
    """The order of the per-dtype collectives must not depend on the interpreter: 6 processes
    with different hash seeds (and address layouts) all reduce float16, bfloat16, float32 in that
    order. Six processes print one order by chance with probability at most 6·6⁻⁶ for 3 dtypes."""
    orders = set()
    for seed in range(6):
        env = {**os.environ, "PYTHONHASHSEED": str(seed), "OMP_NUM_THREADS": "1"}
        result = subprocess.run([sys.executable, "-c", ORDER], capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        orders.add(result.stdout.strip())
    assert orders == {"torch.bfloat16,torch.float16,torch.float32"}


@pytest.mark.parametrize("world_size", ["1", "2"])
def test_exit_process_flushes_and_exits_with_the_code(world_size):
    """A torchrun worker leaves through os._exit (no finalization) but loses none of its output;
    a single process exits through sys.exit and so still runs its atexit handlers."""
    script = ("import atexit, sys; from tokengym.lm.distributed import exit_process\n"
              "atexit.register(lambda: print('atexit ran', file=sys.stderr))\n"
              "print('buffered', end=''); sys.stderr.write('on stderr'); exit_process(3)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "WORLD_SIZE": world_size})
    assert result.returncode == 3 and result.stdout == "buffered"
    assert result.stderr.startswith("on stderr") and ("atexit ran" in result.stderr) == (world_size == "1")
