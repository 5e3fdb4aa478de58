"""Data parallel under torchrun: 2 CPU ranks (gloo) with B/2 episodes each take exactly the steps
that 1 process with B takes, for every agent, as a user launches it
(``torchrun --nproc-per-node 2 -m tokengym train ...``); the same with the policy and π_ref sharded
(``--fsdp``, FSDP2), and with the two ranks started by two launchers, as two nodes would be.

The runs are short but not gentle: lr 1e-2 moves the weights by a lot in 3 iterations, the
KL-shaped reward adapts β (a global batch statistic), PPO splits each global batch into 4
shuffled minibatches (so a rank may hold none of one) and whitens advantages over the global
batch, and REINFORCE's moving-average baseline averages the global batch. A rank that used only
its own episodes for any of these, or averaged instead of summed a gradient, would change the
weights by far more than the tolerance: the B/2 single-process control run shows how far.

Each one-process run of B is trained once and compared with every multi-process run of its agent.
Every test here starts processes: they are marked slow.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # learning or multi-process: CI runs it, `pytest -m slow`

TRAIN = ["train", "--env", "tokengym/Calibration-v0", "--reward", "kl-shaped", "--kl-target", "0.5",
         "--lr", "0.01", "--episodes", "24", "--seed", "3", "--quiet"]
AGENTS = ["reinforce", "a2c", "ppo", "grpo"]
GROUPS = {"reinforce": ["--group-size", "4"], "grpo": ["--group-size", "4"]}  # a rank's 4 episodes are one group


def launch(*args: str, ranks: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if ranks == 1:
        command = [sys.executable, "-m", "tokengym", *args]
    else:  # torchrun itself (python -m torch.distributed.run), on a free port
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
                   "-m", "tokengym", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def train(out: Path, agent: str, batch_size: int, *flags: str, ranks: int = 1) -> dict[str, torch.Tensor]:
    result = launch(*TRAIN, "--agent", agent, *GROUPS.get(agent, []), "--batch-size", str(batch_size), *flags,
                    "--out", str(out), ranks=ranks)
    assert result.returncode == 0, result.stderr[-3000:]
    return load_file(out / "policy" / "model.safetensors")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """``one_process(agent)``: the run directory and weights of one process with the whole batch
    (B = 8), trained on first use and shared by every comparison in this module."""
    runs = {}

    def run(agent: str) -> tuple[Path, dict[str, torch.Tensor]]:
        if agent not in runs:
            out = tmp_path_factory.mktemp(f"one-{agent}") / "run"
            runs[agent] = out, train(out, agent, 8)
        return runs[agent]

    return run


def assert_same_run(out: Path, weights: dict[str, torch.Tensor], one: Path, one_weights: dict[str, torch.Tensor],
                    agent: str) -> None:
    """The weights and the logged global statistics of ``out`` (a multi-process run of B/2 per rank)
    are the one-process run's, to float precision, after updates far larger than that."""
    start = load_file(one / "reference" / "model.safetensors")
    assert distance(one_weights, start) > 1e-2  # the updates are large ...
    assert distance(weights, one_weights) < 1e-5  # ... and the two runs agree on them to float precision

    # rank 0 alone wrote one line per iteration, counting global episodes, with global means
    one_rows, rows = metrics(one), metrics(out)
    assert [r["episodes"] for r in rows] == [8, 16, 24]
    for a, b in zip(one_rows, rows):
        value_keys = ("explained_variance",) if agent in ("a2c", "ppo") else ()  # the global batch's too
        for key in ("reward", "kl_ref", "beta", "entropy", *value_keys):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    assert json.loads((out / "run.json").read_text())["world_size"] == 2


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


@pytest.mark.parametrize("agent", AGENTS)
def test_two_ranks_of_half_the_batch_equal_one_process_of_the_whole(tmp_path, agent, one_process):
    one, one_weights = one_process(agent)
    two = train(tmp_path / "two", agent, 4, ranks=2)
    assert_same_run(tmp_path / "two", two, one, one_weights, agent)


def test_the_equivalence_test_can_fail_half_the_batch_in_one_process_differs(tmp_path, one_process):
    """Control for the test above: one process with B/2 (what either rank alone would do)."""
    _, one = one_process("ppo")
    half = train(tmp_path / "half", "ppo", 4)
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


# ------------------------------------------------------------------------------------ FSDP
FSDP_FLAGS = {  # each agent's sharded run also covers one more path
    "reinforce": ["--fsdp-rollout", "gathered"],  # the rollout gathers the full weights once
    "a2c": ["--fsdp-rollout", "sharded"],  # the rollout all-gathers every block per token (π_ref's too)
    "ppo": ["--save-every", "1", "--keep-checkpoints", "5"],  # sharded checkpoints, for the resume test
    "grpo": ["--report-to", "tensorboard"],  # rank 0 alone reports
}


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    """``fsdp_run(agent)``: 2 ranks × B/2 with ``--fsdp`` and the agent's :data:`FSDP_FLAGS`."""
    runs = {}

    def run(agent: str) -> tuple[Path, dict[str, torch.Tensor]]:
        if agent not in runs:
            out = tmp_path_factory.mktemp(f"fsdp-{agent}") / "run"
            runs[agent] = out, train(out, agent, 4, "--fsdp", *FSDP_FLAGS[agent], ranks=2)
        return runs[agent]

    return run


@pytest.mark.parametrize("agent", AGENTS)
def test_fsdp_two_ranks_of_half_the_batch_equal_one_process_of_the_whole(tmp_path, agent, one_process, fsdp_run):
    """With the policy, its gradients, Adam's moments and π_ref sharded over 2 ranks, the steps are
    the one-process run's (FSDP's reduce-scatter sums each rank's share-weighted gradient)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out, weights = fsdp_run(agent)
    one, one_weights = one_process(agent)
    assert_same_run(out, weights, one, one_weights, agent)
    # sharded for real: each rank wrote its own shard of Adam's state, which read back whole is
    # the one-process run's, moment for moment
    assert sorted(p.name for p in (out / "optimizer").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert "optimizer" not in torch.load(out / "trainer_state.pt", weights_only=True)
    dcp_to_torch_save(out / "optimizer", tmp_path / "adam.pt")
    adam = torch.load(tmp_path / "adam.pt", weights_only=True)["optimizer"]["state"]
    whole = torch.load(one / "trainer_state.pt", weights_only=True)
    assert set(adam) == set(whole["trainable"])
    for i, name in enumerate(whole["trainable"]):  # the unsharded optimizer numbers them in this order
        for moment in ("exp_avg", "exp_avg_sq"):
            assert torch.allclose(adam[name][moment], whole["optimizer"]["state"][i][moment], rtol=1e-4, atol=1e-7), name
    if agent == "grpo":  # rank 0 alone reported: one event file, one scalar per iteration
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        (events,) = (out / "tensorboard").glob("events.out.tfevents.*")
        rewards = EventAccumulator(str(events)).Reload().Scalars("reward")
        assert [(e.step, e.value) for e in rewards] == [(r["episodes"], pytest.approx(r["reward"])) for r in metrics(out)]


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it, parents first (Linux ``/proc``); torchrun starts its
    workers in sessions of their own, so killing its process group would miss them."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def test_an_fsdp_run_killed_mid_run_resumes_bit_identical(tmp_path, fsdp_run):
    """SIGKILL every process of a sharded PPO run once its first checkpoint is complete; the run
    resumed from its newest valid checkpoint (each rank reading its own shards of the weights and
    Adam's moments) ends bit-identical to the uninterrupted run, with the same metrics."""
    import signal
    import time

    whole, whole_weights = fsdp_run("ppo")
    cut = tmp_path / "cut"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "tokengym",
               *TRAIN, "--agent", "ppo", "--batch-size", "4", "--fsdp", *FSDP_FLAGS["ppo"], "--out", str(cut)]
    launcher = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (cut / "checkpoints" / "iter-000001" / "MANIFEST.json").exists():
            assert launcher.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
            time.sleep(0.02)
    finally:
        for pid in reversed(process_tree(launcher.pid)):  # workers first, then torchrun
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        launcher.wait()
    assert not (cut / "policy").exists()  # killed before the end
    result = launch("train", "--resume", str(cut), "--quiet", ranks=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stderr
    resumed = load_file(cut / "policy" / "model.safetensors")
    assert resumed.keys() == whole_weights.keys()
    assert all(torch.equal(whole_weights[k], resumed[k]) for k in resumed)
    untimed = lambda rows: [{k: v for k, v in r.items() if k not in ("tokens_per_s", "rollout_tokens_per_s")}  # noqa: E731
                            for r in rows]
    assert untimed(metrics(cut)) == untimed(metrics(whole))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_started_by_two_launchers_equal_one_process(tmp_path, one_process):
    """Multi-node on one machine: two torchrun launchers (``--nnodes 2 --node-rank 0|1``, one
    process each) meet at a c10d rendezvous, as two machines would, and train A2C sharded; the
    result is the one-process run's. Each node writes its shards into the shared --out."""
    port, out = free_port(), tmp_path / "two-nodes"
    launchers = [
        subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
                          "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                          "--rdzv-id", "two-nodes", "-m", "tokengym", *TRAIN, "--agent", "a2c", "--batch-size", "4",
                          "--fsdp", "--save-every", "3", "--out", str(out)],
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for node in (0, 1)
    ]
    outputs = [launcher.communicate(timeout=300) for launcher in launchers]
    for launcher, (_, stderr) in zip(launchers, outputs):
        assert launcher.returncode == 0, stderr[-3000:]
    assert_same_run(out, load_file(out / "policy" / "model.safetensors"), *one_process("a2c"), "a2c")
    manifest = json.loads((out / "checkpoints" / "iter-000003" / "MANIFEST.json").read_text())
    assert {"shards/__0_0.distcp", "shards/__1_0.distcp"} <= set(manifest["files"])
