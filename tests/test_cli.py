"""The CLI explains itself (help with defaults and names, Custom-v0's requirements) and its curve
shows each reward component; each runs the CLI in a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def tokengym(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400"}  # no wrapping inside the names checked below
    return subprocess.run([sys.executable, "-m", "tokengym", *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def test_help_is_user_facing_and_train_help_shows_defaults_agents_and_rewards():
    top = tokengym("--help")
    assert top.returncode == 0 and "``" not in top.stdout and "reinforcement learning" in top.stdout
    train = tokengym("train", "--help")
    assert train.returncode == 0
    text = " ".join(train.stdout.split())
    for needed in ("Episodes to train for (default: 8192)", "--agent NAME The algorithm", "(default: a2c)",
                   "(default: tokengym/Sentiment-v0)", "grpo Group-relative policy optimisation",
                   "{holistic,fine-grained,kl-shaped,fine-grained+kl}", "{k1,k2,k3}", "--save-every", "--resume",
                   "--clip-eps F Ratio clip ε (default: 0.2; ppo, grpo only)", "(default: reinforce: 0.000125, a2c: 0.00015, ppo: 0.00015, grpo: 0.000125, fdpg: 0.000125, dpo: 0.000125)"):
        assert needed in text, needed


def test_envs_lists_what_custom_v0_requires():
    out = tokengym("envs").stdout
    custom = next(line for line in out.splitlines() if line.startswith("tokengym/Custom-v0"))
    assert "model=, prompts= and reward=" in custom and "(required)" in custom


@pytest.mark.slow
def test_curve_smooths_the_task_reward_beside_the_kl_and_states_beta(tmp_path):
    code = (
        "import sys, matplotlib.axes\n"
        "lines, titles = [], []\n"
        "plot, set_title = matplotlib.axes.Axes.plot, matplotlib.axes.Axes.set_title\n"
        "def spy(self, *a, **k):\n"
        "    lines.append((k.get('label'), k.get('alpha', 1)))\n"
        "    return plot(self, *a, **k)\n"
        "def spy_title(self, text, *a, **k):\n"
        "    titles.append(text)\n"
        "    return set_title(self, text, *a, **k)\n"
        "matplotlib.axes.Axes.plot, matplotlib.axes.Axes.set_title = spy, spy_title\n"
        "from tokengym.cli import main\n"
        f"rc = main(['train', '--env', 'tokengym/Calibration-v0', '--agent', 'ppo', '--reward', 'kl-shaped', '--beta', '0.1',"
        f" '--episodes', '8', '--batch-size', '4', '--out', {str(tmp_path / 'run')!r}, '--quiet'])\n"
        "print(repr((lines, titles)))\n"
        "sys.exit(rc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines, titles = eval(result.stdout.strip().splitlines()[-1])
    labelled = {label for label, alpha in lines if label is not None}
    assert {"total reward", "calibration", "KL(π_θ‖π_ref)"} <= labelled, labelled
    assert "kl_penalty" not in labelled  # the penalty is the KL line, not a reward line dwarfing the task reward
    assert sum(alpha < 1 for label, alpha in lines if label is None) == 3  # each smoothed line has its raw one, faint
    assert any("β = 0.1" in title for title in titles), titles
    assert (tmp_path / "run" / "curve.png").stat().st_size > 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [1, 2]
    assert {"iteration", "episodes", "reward", "kl_ref"} <= set(rows[0])


def test_grpo_with_a_kl_shaped_reward_penalises_the_kl_once(tmp_path):
    from tokengym.settings import plan, resolve

    def planned(**given):
        return plan(resolve(given, None, str(tmp_path / "run")))

    shaped = planned(agent="grpo", reward="kl-shaped", beta=0.07)
    assert shaped.env_kwargs["reward_kwargs"]["beta"] == 0.07 and shaped.config.beta == 0.0  # in the reward only
    plain = planned(agent="grpo", reward="holistic", beta=0.07)
    assert plain.config.beta == 0.07 and "reward_kwargs" not in plain.env_kwargs  # in the loss only


def test_fdpg_and_dpo_take_beta_as_their_targets_and_train_on_the_task_reward(tmp_path, capsys):
    from tokengym.cli import main
    from tokengym.settings import plan, resolve

    def planned(**given):
        return plan(resolve(given, None, str(tmp_path / "run")))

    fdpg = planned(agent="fdpg", beta=0.2, group_size=4, divergence="js")
    assert (fdpg.config.beta, fdpg.config.group_size, fdpg.config.divergence) == (0.2, 4, "js")
    assert fdpg.env_kwargs["reward"] == "holistic" and "reward_kwargs" not in fdpg.env_kwargs  # β is the target's
    assert planned(agent="dpo", beta=0.3).config.beta == 0.3
    assert main(["train", "--agent", "dpo", "--reward", "kl-shaped", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip() == (
        "tokengym: error: --reward kl-shaped: expected the task reward for --agent dpo (its --beta is its target's, "
        "p ∝ π_ref·exp(r/β); a KL-shaped reward would penalise the KL a second time)")


def test_reinforce_groups_only_with_the_leave_one_out_baseline(tmp_path):
    from tokengym.settings import plan, resolve

    def config(**given):
        return plan(resolve({"agent": "reinforce", **given}, None, str(tmp_path / "run"))).config

    assert (config().baseline, config().group_size) == ("leave-one-out", 16)  # RLOO by default
    assert config(group_size=8).group_size == 8
    assert config(baseline="moving-average").group_size == 1  # distinct prompts without the groups' baseline


@pytest.mark.slow
def test_resume_from_another_directory_and_of_a_finished_run_is_one_line_and_exit_0(tmp_path):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    (work / "prompts.txt").write_text("The movie was\nThe food is\n")
    flags = ["--env", "tokengym/Sentiment-v0", "--agent", "reinforce", "--group-size", "4", "--prompts", "prompts.txt", "--episodes", "8",
             "--batch-size", "4", "--max-new-tokens", "4", "--save-every", "1", "--quiet"]
    first = tokengym("train", *flags, "--out", "run", cwd=work)
    assert first.returncode == 0, first.stderr
    recorded = json.loads((work / "run" / "run.json").read_text())["settings"]
    assert recorded["prompts"] == str(work / "prompts.txt")  # absolute: --resume works from anywhere
    again = tokengym("train", "--resume", "../work/run", cwd=elsewhere)
    assert again.returncode == 0, again.stderr
    lines = [line for line in again.stderr.splitlines() if line.startswith("tokengym")]
    assert lines == ["tokengym train: ../work/run already finished its 8 episodes (iteration 2); nothing to do"], again.stderr
    assert "Traceback" not in again.stderr


@pytest.mark.slow
def test_a_dependency_warning_prints_once_per_run_not_once_per_iteration(tmp_path):
    code = (
        "import sys, warnings\n"
        "from tokengym.envs import Task, register_env, register_task\n"
        "from tokengym.envs.calibration import HORIZON\n"
        "class Noisy:\n"
        "    name = 'noisy'\n"
        "    def __call__(self, prompts, completions, **kwargs):\n"
        "        warnings.warn('a dependency says this every call', FutureWarning)\n"
        "        return [0.0] * len(prompts)\n"
        "register_task(Task(name='noisy', model='calibration', prompts=lambda: [[0]], max_new_tokens=HORIZON, stop=False,\n"
        "                   scorer=Noisy))\n"
        "register_env('noisy')\n"
        "from tokengym.cli import main\n"
        f"sys.exit(main(['train', '--env', 'tokengym/Noisy-v0', '--agent', 'reinforce', '--group-size', '4', '--episodes', '32', '--batch-size', '4',"
        f" '--out', {str(tmp_path / 'run')!r}, '--quiet']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("a dependency says this every call") == 1, result.stderr  # 8 iterations, one line
