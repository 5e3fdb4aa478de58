"""Adding an agent is one file and one registry entry: a toy agent written to its own file here,
registered in ``tokengym.agents.AGENTS``, trains from ``tokengym train``, its config's fields become
flags with their docstrings as help, and its run resumes."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from tokengym.agents import AGENTS
from tokengym.cli import build_parser, main

TOY_AGENT = '''
"""A toy agent: REINFORCE with the whole return as every token's advantage, scaled."""
from dataclasses import dataclass

from tokengym.agents.advantages import sequence_sum_mean
from tokengym.agents.base import Agent, AgentConfig
from tokengym.lm.config import bounded


@dataclass
class ToyConfig(AgentConfig):
    """The toy's settings."""

    scale: float = bounded(1.0, above=0)
    """How much the return counts."""


class Toy(Agent):
    """Scaled whole-return policy gradient."""

    config_class = ToyConfig

    def update(self, rollout):
        def loss(rows):
            scored = self.policy.score(rollout.input_ids[rows], rollout.attention_mask[rows], rollout.prompt_width)
            advantages = self.config.scale * rollout.scores[rows, None]  # (b, 1)
            pg_loss = -sequence_sum_mean(scored.logprobs * advantages, rollout.mask[rows])
            return pg_loss, {"loss": pg_loss, "pg_loss": pg_loss}

        return self.batch_step(loss)
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    path = tmp_path / "toy_agent.py"  # the one new file
    path.write_text(TOY_AGENT)
    spec = importlib.util.spec_from_file_location("toy_agent", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "toy_agent", module)
    spec.loader.exec_module(module)
    monkeypatch.setitem(AGENTS, "toy", module.Toy)  # the one registry entry
    return module


def test_a_toy_agent_in_one_file_trains_from_the_cli_with_its_own_flag(toy, tmp_path, capsys):
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    assert "toy Scaled whole-return policy gradient" in help_text
    assert "--scale F How much the return counts (default: 1.0; toy only)" in help_text
    out = tmp_path / "run"
    argv = ["train", "--env", "tokengym/Calibration-v0", "--agent", "toy", "--scale", "2.5", "--lr", "0.05",
            "--episodes", "16", "--batch-size", "8", "--save-every", "1", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    recorded = json.loads((out / "run.json").read_text())
    assert recorded["agent_config"]["scale"] == 2.5 and recorded["settings"]["agent"] == "toy"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["episodes"] for row in rows] == [8, 16] and all("pg_loss" in row for row in rows)
    assert main(["train", "--env", "tokengym/Calibration-v0", "--agent", "toy", "--scale", "0", "--out",
                 str(tmp_path / "bad"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == "tokengym: error: --scale 0.0: expected a number > 0 for --agent toy"
    assert main(["train", "--resume", str(out), "--episodes", "24", "--quiet"]) == 2  # its own settings, recorded
