"""The CLI explains itself (help with defaults and names, Custom-v0's requirements) and its curve
shows each reward component; each runs the CLI in a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def tokengym(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400"}  # no wrapping inside the names checked below
    return subprocess.run([sys.executable, "-m", "tokengym", *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def test_help_is_user_facing_and_train_help_shows_defaults_agents_and_rewards():
    top = tokengym("--help")
    assert top.returncode == 0 and "``" not in top.stdout and "reinforcement learning" in top.stdout
    train = tokengym("train", "--help")
    assert train.returncode == 0
    text = " ".join(train.stdout.split())
    for needed in ("(default: 512)", "(default: ppo)", "(default: tokengym/Sentiment-v0)", "grpo: group-relative",
                   "holistic, fine-grained, kl-shaped, fine-grained+kl", "k1, k2, k3", "--save-every", "--resume"):
        assert needed in text, needed


def test_envs_lists_what_custom_v0_requires():
    out = tokengym("envs").stdout
    custom = next(line for line in out.splitlines() if line.startswith("tokengym/Custom-v0"))
    assert "model=, prompts= and reward=" in custom and "(required)" in custom


def test_curve_plots_each_reward_component_and_kl(tmp_path):
    code = (
        "import sys, matplotlib.axes\n"
        "labels = []\n"
        "plot = matplotlib.axes.Axes.plot\n"
        "def spy(self, *a, **k):\n"
        "    labels.append(k.get('label'))\n"
        "    return plot(self, *a, **k)\n"
        "matplotlib.axes.Axes.plot = spy\n"
        "from tokengym.cli import main\n"
        f"rc = main(['train', '--env', 'tokengym/Calibration-v0', '--agent', 'ppo', '--reward', 'kl-shaped', '--beta', '0.1',"
        f" '--episodes', '8', '--batch-size', '4', '--out', {str(tmp_path / 'run')!r}, '--quiet'])\n"
        "print(repr(labels))\n"
        "sys.exit(rc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    labels = result.stdout.strip().splitlines()[-1]
    for needed in ("total reward", "reward/calibration", "reward/kl_penalty", "KL to reference"):
        assert needed in labels, (needed, labels)
    assert (tmp_path / "run" / "curve.png").stat().st_size > 0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2]
    assert {"iteration", "episodes", "reward", "kl_ref"} <= set(json.loads(lines[0]))


def test_grpo_with_a_kl_shaped_reward_penalises_the_kl_once(tmp_path):
    from tokengym.agents.settings import resolve_settings, validate

    def plan(*flags):
        given = dict(zip(flags[::2], flags[1::2]))
        s, run_dir, resuming = resolve_settings(given, None, str(tmp_path / "run"))
        return validate(s, run_dir, resuming, frozenset(given))

    shaped = plan("agent", "grpo", "reward", "kl-shaped", "beta", 0.07)
    assert shaped.env_kwargs["reward_kwargs"]["beta"] == 0.07 and shaped.config.beta == 0.0  # in the reward only
    plain = plan("agent", "grpo", "beta", 0.07)
    assert plain.config.beta == 0.07 and "reward_kwargs" not in plain.env_kwargs  # in the loss only


def test_fdpg_and_dpo_take_beta_and_fdpg_its_group_size_from_the_flags(tmp_path):
    from tokengym.agents.settings import resolve_settings, validate

    def plan(*flags):
        given = dict(zip(flags[::2], flags[1::2]))
        s, run_dir, resuming = resolve_settings(given, None, str(tmp_path / "run"))
        return validate(s, run_dir, resuming, frozenset(given))

    fdpg = plan("agent", "fdpg", "beta", 0.2, "group_size", 4, "set", ["divergence=js"])
    assert (fdpg.config.beta, fdpg.config.group_size, fdpg.config.divergence) == (0.2, 4, "js")
    assert "reward_kwargs" not in fdpg.env_kwargs  # β is the target's, not a penalty in the env's reward
    assert plan("agent", "dpo", "beta", 0.3).config.beta == 0.3


def test_reinforce_groups_only_with_the_leave_one_out_baseline(tmp_path):
    from tokengym.agents.settings import resolve_settings, validate

    def config(*flags, **given):
        s, run_dir, resuming = resolve_settings({"agent": "reinforce", "set": list(flags), **given}, None, str(tmp_path / "run"))
        return validate(s, run_dir, resuming, frozenset(["agent", "set", *given])).config

    assert (config().baseline, config().group_size) == ("leave-one-out", 4)  # RLOO by default
    assert config(group_size=8).group_size == 8
    assert config("baseline=moving-average").group_size == 1  # distinct prompts without the groups' baseline
