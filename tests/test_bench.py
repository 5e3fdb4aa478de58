"""Benchmark suites: a tiny Calibration-v0 grid runs, writes its results, resumes without retraining,
ablates a field; bad suite files fail naming the field; the packaged suites are valid."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

import tokengym  # noqa: F401  (registers the envs)
from tokengym.agents import AGENTS
from tokengym.benchmarks import suite as bench
from tokengym.envs import registered_envs

TINY = """
name = "tiny"
envs = ["tokengym/Calibration-v0"]
agents = ["reinforce", "grpo"]
seeds = 2

[run]
episodes = 32
batch_size = 16
lr = 1e-2
reward = "kl-shaped"
reward_kwargs = { beta = 0.5 }
eval_rewards = ["holistic"]
exact_every = 1
last_n = 2
final_eval_episodes = 64
frontier_samples = 64

[agent.grpo]
group_size = 8
beta = 0.0
"""

RECORD_KEYS = {
    "env", "agent", "config", "reward", "seed", "initial_reward", "final_reward", "best_reward", "final_score",
    "components", "eval", "exact", "final_kl", "final_entropy", "episodes", "tokens", "wall_s", "tokens_per_s",
    "peak_rss_mb", "history", "settings",
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    (root / "tiny.toml").write_text(TINY)
    records = bench.run_suite(root / "tiny.toml", root / "out", progress=False)
    return root, records


def test_judged_runs_are_placed_on_one_measured_frontier_whose_optimum_is_exact(tiny_run):
    from tokengym.benchmarks.frontier import calibration_frontier

    root, records = tiny_run
    out = root / "out"
    frontiers = sorted((out / bench.FRONTIERS_DIR).glob("*.json"))
    assert len(frontiers) == 1  # measured once, shared by the four cells (same env, reward and β)
    frontier, exact = json.loads(frontiers[0].read_text()), calibration_frontier(beta=0.5)
    assert abs(frontier["j_star"] - exact["j_star"]) <= 4 * frontier["j_star_se"] + 1e-3
    for r in records:
        placement, judged = r["placement"], r["final_eval"]
        assert placement["beta"] == 0.5 and r["frontier_key"] == frontiers[0].stem
        assert placement["j"] == pytest.approx(frontier["reference_score"] + judged["score_gain"] - 0.5 * judged["kl"])
    text = (out / "results.md").read_text()
    assert "fraction of J* − J_ref" in text and (out / f"frontier_{frontiers[0].stem}.png").stat().st_size > 0
    best_of_2 = next(p for p in frontier["best_of_n"] if p["n"] == 2)  # the inference-time row, its KL not zero
    j = frontier["reference_score"] + best_of_2["gain"] - 0.5 * best_of_2["kl_sampled"]
    assert f"| best-of-2 (no training) | 0.5 | {best_of_2['gain']:+.3f} | {best_of_2['kl_sampled']:.2f} " in text
    assert f"| {j:.3f} |" in text and best_of_2["kl_sampled"] > 0


def test_tiny_suite_writes_one_record_per_run_and_the_reports(tiny_run):
    root, records = tiny_run
    out = root / "out"
    saved = json.loads((out / "results.json").read_text())
    assert len(records) == len(saved) == 4  # 2 agents × 2 seeds
    assert {(r["agent"], r["seed"]) for r in saved} == {(a, s) for a in ("reinforce", "grpo") for s in (0, 1)}
    for r in saved:
        assert RECORD_KEYS <= set(r), RECORD_KEYS - set(r)
        assert r["episodes"] == 32 and len(r["history"]) == 2 and r["tokens"] == 32 * 3
        assert {"calibration", "kl_penalty"} <= set(r["components"])
        # The side score is the task's holistic reward: it equals the reward's own component.
        assert r["eval"]["holistic"] == pytest.approx(r["components"]["calibration"], abs=1e-6)
        assert r["final_score"] == pytest.approx(r["final_reward"] - r["components"]["kl_penalty"], abs=1e-5)
        # Exact enumeration: π_θ starts at π_ref; π*'s expected reward beats π_ref's.
        assert r["exact_start"]["exact/kl_ref"] == pytest.approx(0.0, abs=1e-6)
        assert r["exact"]["exact/optimal_reward"] > r["exact_start"]["exact/reward"]
        assert r["peak_rss_mb"] > 0 and r["wall_s"] > 0
    table = (out / "results.md").read_text()
    assert "| Calibration-v0 | reinforce | default | 2 |" in table
    assert "| Calibration-v0 | grpo | default | 2 |" in table
    for png in ("curves_reward.png", "curves_reward_kl.png", "curves_kl_optimum.png"):
        assert (out / png).stat().st_size > 1000, png
    assert len(list((out / "cells").glob("*.json"))) == 4


def test_rerun_skips_every_completed_cell(tiny_run, monkeypatch):
    root, records = tiny_run
    cells = sorted((root / "out" / "cells").glob("*.json"))
    mtimes = {p: p.stat().st_mtime_ns for p in cells}

    def no_training(*args, **kwargs):
        raise AssertionError("a completed cell was trained again")

    monkeypatch.setattr(bench, "run_cell", no_training)
    again = bench.run_suite(root / "tiny.toml", root / "out", progress=False)
    assert [r["fingerprint"] for r in again] == [r["fingerprint"] for r in records]
    assert {p: p.stat().st_mtime_ns for p in cells} == mtimes
    assert len(json.loads((root / "out" / "results.json").read_text())) == 4


def test_rerun_trains_only_missing_or_changed_cells(tiny_run, monkeypatch, tmp_path):
    root, _ = tiny_run
    out = tmp_path / "out"
    out.mkdir()
    for p in (root / "out" / "cells").glob("*.json"):
        (out / "cells").mkdir(exist_ok=True)
        (out / "cells" / p.name).write_text(p.read_text())
    (out / "cells" / "Calibration-v0__grpo__default__seed1.json").unlink()
    trained = []
    real = bench.run_cell
    monkeypatch.setattr(bench, "run_cell", lambda cell, **kw: trained.append(cell.key) or real(cell, **kw))
    bench.run_suite(root / "tiny.toml", out, progress=False)
    assert trained == ["Calibration-v0__grpo__default__seed1"]
    # Changing a setting of one agent invalidates that agent's cells only (their fingerprint differs).
    (tmp_path / "changed.toml").write_text(TINY.replace("beta = 0.0", "beta = 0.01"))
    trained.clear()
    old = lambda cell: json.loads((out / "cells" / f"{cell.key}.json").read_text())  # noqa: E731
    monkeypatch.setattr(bench, "run_cell", lambda cell, **kw: trained.append(cell.key) or old(cell))
    bench.run_suite(tmp_path / "changed.toml", out, progress=False)
    assert trained == ["Calibration-v0__grpo__default__seed0", "Calibration-v0__grpo__default__seed1"]


def test_a_changed_agent_default_makes_that_agents_cells_stale(tiny_run, monkeypatch, tmp_path):
    """The suite file is the same, but a new release moved REINFORCE's default gradient clip: its
    cells were trained with other settings, so they run again; GRPO's stay."""
    root, _ = tiny_run
    shutil.copytree(root / "out", tmp_path / "out")  # the cells and the measured frontier
    config_class = AGENTS["reinforce"].config_class
    retuned = dataclasses.make_dataclass("RetunedConfig", [("max_grad_norm", float, 0.25)], bases=(config_class,))
    monkeypatch.setattr(AGENTS["reinforce"], "config_class", retuned)
    trained = []
    old = lambda cell, **kw: json.loads((root / "out" / "cells" / f"{cell.key}.json").read_text())  # noqa: E731
    monkeypatch.setattr(bench, "run_cell", lambda cell, **kw: trained.append(cell.key) or old(cell))
    bench.run_suite(root / "tiny.toml", tmp_path / "out", progress=False)
    assert trained == ["Calibration-v0__reinforce__default__seed0", "Calibration-v0__reinforce__default__seed1"]


def test_ablation_over_beta_gives_one_row_per_value_and_a_frontier(tiny_run, tmp_path):
    root, _ = tiny_run
    records = bench.run_suite(root / "tiny.toml", tmp_path, ablate=["reward_kwargs.beta=0.1,2.0"], seeds=1, progress=False)
    assert [r["config"] for r in records] == ["reward_kwargs.beta=0.1", "reward_kwargs.beta=2.0"]
    assert [r["settings"]["reward_kwargs"]["beta"] for r in records] == [0.1, 2.0]
    assert {r["agent"] for r in records} == {"reinforce"}  # the suite's first cell
    rows = [line for line in (tmp_path / "ablation.md").read_text().splitlines() if line.startswith("| Calibration")]
    assert len(rows) == 2
    assert (tmp_path / "frontier.png").stat().st_size > 1000
    # A KL-shaped penalty of the same rollout KL is 20× larger at β=2 than at β=0.1.
    kl_terms = [r["components"]["kl_penalty"] / r["final_kl"] for r in records]
    assert kl_terms == pytest.approx([-0.1, -2.0], rel=1e-3)


def test_ablation_specs_parse_toml_literals():
    assert bench.parse_ablation(["reward=holistic,kl-shaped", "reward_kwargs.beta=0.1,1", "whiten_advantages=true,false"]) == {
        "reward": ("holistic", "kl-shaped"), "reward_kwargs.beta": (0.1, 1), "whiten_advantages": (True, False),
    }
    with pytest.raises(bench.SuiteError, match="FIELD=V1,V2"):
        bench.parse_ablation(["reward"])
    with pytest.raises(bench.SuiteError, match="dotted path"):
        bench.parse_ablation(["lr.x=1"])


def test_switching_the_reward_drops_the_previous_rewards_options():
    s = bench.parse_suite({
        "envs": ["tokengym/Calibration-v0"], "agents": ["reinforce"],
        "rewards": ["default", "holistic", {"label": "kl-2", "reward_kwargs": {"beta": 2.0}}],
        "run": {"reward": "kl-shaped", "reward_kwargs": {"beta": 0.5, "estimator": "k3"}},
    })
    settings = {c.variant: c.settings for c in s.cells()}
    assert settings["default"].reward_kwargs == {"beta": 0.5, "estimator": "k3"}
    assert settings["holistic"].reward == "holistic" and settings["holistic"].reward_kwargs == {}
    assert settings["kl-2"].reward_kwargs == {"beta": 2.0, "estimator": "k3"}


BASE = {"envs": ["tokengym/Calibration-v0"], "agents": ["reinforce", "ppo"]}


@pytest.mark.parametrize(
    "patch, match",
    [
        ({"run": {"episode": 10}}, r"\[run\]: unknown field 'episode'"),
        ({"run": {"batch_size": 0}}, r"batch_size must be an integer ≥ 1"),
        ({"run": {"n_epochs": 2}}, r"\[run\]: unknown field 'n_epochs'.*reinforce"),
        ({"agent": {"ppo": {"clip_eps": -1.0}}}, r"cell \(tokengym/Calibration-v0, ppo, default\): clip_eps"),
        ({"agent": {"a2c": {"lr": 1.0}}}, r"\[agent.a2c\]: 'a2c' is not in agents"),
        ({"run": {"reward": "bogus"}}, r"reward must be one of"),
        ({"run": {"eval_rewards": ["kl-shaped"]}}, r"eval_rewards must be a list"),
        ({"run": {"seed": 3}}, r"\[run\]: seed is set by the suite's seeds"),
        ({"run": {"env_kwargs": {"num_envs": 3}}}, r"env_kwargs must not set \['num_envs'\]"),
        ({"agent": {"ppo": {"group_size": 3}}}, r"batch_size=16 must be a multiple of group_size=3"),
        ({"envs": ["tokengym/Nope-v0"]}, r"envs: 'tokengym/Nope-v0' is not a registered env"),
        ({"agents": ["dqn"]}, r"agents: unknown agent 'dqn'"),
        ({"seeds": 0}, r"seeds must be an integer >= 1"),
        ({"seeds": [0, 0]}, r"seeds has duplicates"),
        ({"rewards": [3]}, r"rewards\[0\]: each entry is a reward name or a table"),
        ({"episodes": 10}, r"unknown top-level field\(s\) \['episodes'\]"),
        ({"envs": ["tokengym/Sentiment-v0"], "run": {"exact_every": 1}}, r"exact_every needs tokengym/Calibration-v0"),
        ({"run": {"reward_kwargs": {"beta": 0.1}}}, r"reward_kwargs \['beta'\] do not apply to reward 'holistic'"),
    ],
)
def test_invalid_suite_fields_raise_naming_the_field(patch, match):
    with pytest.raises(bench.SuiteError, match=match):
        bench.parse_suite({**BASE, **patch})


def test_suite_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('envs = ["tokengym/Calibration-v0"]\nagents = ["ppo"]\n[run]\nlr = -1.0\n')
    with pytest.raises(bench.SuiteError, match=r"bad.toml: cell .*lr must be a number"):
        bench.load_suite(path)
    with pytest.raises(bench.SuiteError, match=r"--suite nope: expected one of full, kl-sentiment, quick or a suite"):
        bench.load_suite("nope")
    with pytest.raises(bench.SuiteError, match=r"--suite .*: expected one of"):
        bench.load_suite(tmp_path)  # a directory is not a suite file
    with pytest.raises(bench.SuiteError, match=r"unknown field 'nope'"):
        bench.load_suite("quick").ablation(bench.parse_ablation(["nope=1,2"]))


def test_a_directory_named_like_a_packaged_suite_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quick").mkdir()  # e.g. the suite's own --out, made in the working directory
    assert bench.load_suite("quick").name == "quick"


def test_bench_reports_a_bad_suite_file_in_one_line(tmp_path, capsys):
    from tokengym.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nenvs = ["tokengym/Sentiment-v0"]\nagents = ["ppo"]\n[env."tokengym/Keywords-v0"]\nlr = 1e-3\n')
    assert main(["bench", "--suite", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"tokengym: error: {bad}: [env.\"tokengym/Keywords-v0\"]: 'tokengym/Keywords-v0' is not in envs "
                   "['tokengym/Sentiment-v0']"]
    assert not (tmp_path / "out").exists()


def test_packaged_suites_name_only_registered_envs_and_agents():
    envs = registered_envs()
    quick, full = bench.load_suite("quick"), bench.load_suite("full")
    for suite in (quick, full):
        assert set(suite.envs) <= set(envs) and set(suite.agents) <= set(AGENTS)
        assert suite.cells()  # every cell resolves and its agent config validates
    assert quick.envs == ("tokengym/Sentiment-v0",) and set(quick.agents) == set(AGENTS) and len(quick.seeds) == 1
    # full: every registered env that runs without user-supplied models, every agent, 3 seeds.
    assert set(full.envs) == {e for e, task in envs.items() if task.name != "custom"}
    assert set(full.agents) == set(AGENTS) and len(full.seeds) == 3


def test_fdpg_and_dpo_cells_target_the_optimum_their_cell_is_judged_against():
    """f-DPG's and DPO's β is their target's: in the full suite they take each env's KL β (0.5 on
    Calibration-v0, the default elsewhere), which the exact probe and the frontier judge them by."""
    cells = [c for c in bench.load_suite("full").cells() if c.agent in ("fdpg", "dpo") and c.seed == 0]
    betas = {(c.env, c.agent): bench.agent_config(c).beta for c in cells}
    assert betas[("tokengym/Calibration-v0", "fdpg")] == betas[("tokengym/Calibration-v0", "dpo")] == 0.5
    assert betas[("tokengym/Sentiment-v0", "fdpg")] == betas[("tokengym/Sentiment-v0", "dpo")] == bench.DEFAULT_BETA
    assert all(bench.agent_config(c).beta == bench.objective_beta(c.settings) for c in cells)
