"""Runs that survive: SIGKILL at several points, resume, and end bit-identical to an uninterrupted
run; the same command twice is bit-identical; corrupted, partial and foreign checkpoints are
reported and skipped, never loaded."""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tokengym.train import TIMING_FIELDS
from tokengym.cli import main

AGENTS = ["reinforce", "a2c", "ppo", "grpo"]
EPISODES, BATCH, SAVE_EVERY = 24, 4, 2  # 6 iterations, checkpoints at 2, 4, 6


def command(agent: str, out: Path, seed: int = 0) -> list[str]:
    groups = ["--group-size", "4"] if agent in ("reinforce", "grpo") else []  # the defaults' 16 exceed the batch
    return ["train", "--env", "tokengym/Calibration-v0", "--agent", agent, *groups, "--episodes", str(EPISODES),
            "--batch-size", str(BATCH), "--lr", "0.01", "--seed", str(seed), "--save-every", str(SAVE_EVERY),
            "--out", str(out), "--quiet"]


def metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_FIELDS}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def weights(run: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted((run / "policy").rglob("*.safetensors")):
        tensors.update({f"{path.name}:{k}": v for k, v in load_file(path).items()})
    assert tensors
    return tensors


def assert_identical(a: Path, b: Path) -> None:
    assert metrics(a) == metrics(b)
    assert [m["iteration"] for m in metrics(b)] == list(range(1, EPISODES // BATCH + 1))
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory):
    """One uninterrupted run per agent, in this process."""
    root = tmp_path_factory.mktemp("reference")
    for agent in AGENTS:
        assert main(command(agent, root / agent)) == 0
    return root


_DRIVER = """
import os, signal, sys, torch
torch.set_num_threads(int(sys.argv[1]))
mode, at = sys.argv[2], int(sys.argv[3])
from tokengym.agents import base, checkpoint
from tokengym.cli import main
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if mode == "mid-update":  # during the optimizer step of iteration `at`: weights half-updated in memory
    step = base.Agent._clip_and_step
    def _clip_and_step(self):
        done = step(self)
        if self.iteration + 1 == at:
            die()
        return done
    base.Agent._clip_and_step = _clip_and_step
elif mode == "mid-write":  # inside checkpoint number `at`: files written, manifest not yet
    sha, calls = checkpoint._sha256, [0]
    def _sha256(path):
        calls[0] += 1
        if calls[0] == 2 * (at - 1) + 1:
            die()
        return sha(path)
    checkpoint._sha256 = _sha256
sys.exit(main(sys.argv[4:]))
"""


def killed_run(argv: list[str], mode: str, at: int) -> int:
    result = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(torch.get_num_threads()), mode, str(at), *argv],
        capture_output=True, text=True, timeout=300,
    )
    return result.returncode


def resume(run: Path, capsys) -> str:
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    return capsys.readouterr().err


@pytest.mark.parametrize("agent, mode, at", [
    ("ppo", "mid-write", 2),  # killed writing the checkpoint of iteration 4: resumes from 2
    ("ppo", "mid-update", 6),  # killed in the last iteration's update: resumes from 4
    ("reinforce", "mid-update", 3),
    ("a2c", "mid-update", 4),
    ("grpo", "mid-write", 3),
])
@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(reference_runs, tmp_path, capsys, agent, mode, at):
    run = tmp_path / "run"
    assert killed_run(command(agent, run), mode, at) == -signal.SIGKILL
    assert not (run / "policy").exists()
    if mode == "mid-write":
        assert any(".tmp-" in p.name for p in (run / "checkpoints").iterdir())
    err = resume(run, capsys)
    assert "resuming from" in err
    assert not any(".tmp-" in p.name for p in (run / "checkpoints").iterdir())
    assert_identical(reference_runs / agent, run)


@pytest.mark.slow
def test_sigkill_at_an_arbitrary_moment_after_the_first_checkpoint(reference_runs, tmp_path, capsys):
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "tokengym", *command("ppo", run)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())},
    )
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "iter-000002" / "MANIFEST.json").exists() and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.kill()
    process.wait()
    resume(run, capsys)
    assert_identical(reference_runs / "ppo", run)


def test_corrupted_and_foreign_checkpoints_are_reported_and_skipped(reference_runs, tmp_path, capsys):
    run, other = tmp_path / "run", tmp_path / "other"
    shutil.copytree(reference_runs / "reinforce", run)
    newest = run / "checkpoints" / "iter-000006"
    data = bytearray((newest / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last tensor
    (newest / "weights.safetensors").write_bytes(bytes(data))
    # a checkpoint of another run (another seed), dropped in as if it were newer
    assert main(command("reinforce", other, seed=1)) == 0
    shutil.copytree(other / "checkpoints" / "iter-000006", run / "checkpoints" / "iter-000008")
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text() + '{"iteration": 99}\n')

    err = resume(run, capsys)
    lines = [line for line in err.splitlines() if "checkpoint" in line]
    assert "iter-000008: belongs to another run" in lines[0]
    assert "iter-000006: weights.safetensors does not match its sha256" in lines[1]
    assert "resuming from" in lines[2] and "iter-000004" in lines[2]
    assert_identical(reference_runs / "reinforce", run)


def test_no_valid_checkpoint_is_an_error_not_a_restart(reference_runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference_runs / "a2c", run)
    for path in (run / "checkpoints").iterdir():
        (path / "MANIFEST.json").unlink()
    before = (run / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("tokengym: error: --resume") and "a valid checkpoint" in err[-1]
    assert (run / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize("agent", AGENTS)
def test_the_same_command_twice_is_bit_identical(reference_runs, tmp_path, agent):
    assert main(command(agent, tmp_path / "again")) == 0
    assert_identical(reference_runs / agent, tmp_path / "again")


def test_resume_refuses_conflicting_flags_and_keeps_k_checkpoints(reference_runs, capsys):
    run = reference_runs / "grpo"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter-000004", "iter-000006"]
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--episodes", "48"]) == 2
    assert "--episodes 48: expected nothing, or the recorded 24" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--episodes", "24", "--quiet"]) == 0  # same value: fine


def test_an_adaptive_beta_anywhere_in_the_reward_tree_is_checkpointed(tmp_path):
    """The trainer state walks the reward's ``children()``: a KL controller inside ``SideScores``
    (a benchmark's wrapper) is saved and restored like a top-level one."""
    import gymnasium as gym

    from tokengym.agents import REINFORCE, REINFORCEConfig
    from tokengym.envs.calibration import CalibrationScorer
    from tokengym.rewards import AdaptiveKL, make_reward
    from tokengym.rewards.side_scores import SideScores

    def env():
        shaped = make_reward("kl-shaped", task_scorer=CalibrationScorer(), beta=AdaptiveKL(0.1, target=100.0, horizon=8))
        return gym.make_vec("tokengym/Calibration-v0", num_envs=8, reward=SideScores(shaped, {}))

    agent = REINFORCE(env(), REINFORCEConfig(lr=1e-2, group_size=4))
    agent.learn(total_episodes=16)
    beta = agent.env.reward.reward.beta
    assert beta == pytest.approx(0.1 * math.exp(-0.4))  # the KL stays far below its target: two steps down
    agent.save(tmp_path / "agent")
    resumed = REINFORCE.load(tmp_path / "agent", env())
    assert resumed.env.reward.reward.beta == beta
