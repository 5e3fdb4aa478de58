"""Every row of docs/errors.md: the flags give exactly that one line on stderr, exit status 2, no
traceback, and nothing written. Most rows run in-process; a few run as a real subprocess."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tokengym.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


def table_rows() -> list[tuple[str, str, str, str]]:
    rows = []
    for line in DOC.read_text().splitlines():
        if not line.startswith("| ") or line.startswith("| Bad input") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        what, flags, setup, message = cells
        rows.append((what, flags.strip("`"), setup, message.strip("`")))
    return rows


ROWS = table_rows()


class BoomScorer:
    """A text scorer that raises on the prompt 't1'."""

    name = "boom"

    def __call__(self, prompts, completions, **kwargs):
        if "t1" in prompts:
            raise ValueError("cannot score prompts that say t1")
        return [0.0] * len(prompts)


def prepare(tmp: Path, setup: str) -> None:
    if setup == "file":
        (tmp / "afile").write_text("")
    elif setup in ("run", "broken-checkpoints"):
        (tmp / "run").mkdir()
        settings = {"env": "tokengym/Calibration-v0", "agent": "ppo", "episodes": 8, "batch_size": 4}
        (tmp / "run" / "run.json").write_text(json.dumps({"tokengym_run": 1, "settings": settings}))
        if setup == "broken-checkpoints":
            (tmp / "run" / "checkpoints" / "iter-000001").mkdir(parents=True)
    elif setup == "blank-line-prompts":
        (tmp / "prompts.txt").write_text("The movie was\n\nThe food\n")
    elif setup == "bad-jsonl":
        (tmp / "prompts.jsonl").write_text('{"prompt": "The movie was"}\n{"prompt": \n')
    elif setup == "model-no-tokenizer":
        from conftest import build_tiny_lm

        build_tiny_lm().save_pretrained(tmp / "model")  # weights and config, no tokenizer files
    elif setup == "norun":
        (tmp / "norun").mkdir()
    elif setup == "foreign":
        (tmp / "foreign").mkdir()
        (tmp / "foreign" / "run.json").write_text('{"model": "something else"}')
    elif setup == "boom-env":
        from tokengym.envs import Task, register_env, register_task
        from tokengym.envs.calibration import HORIZON

        register_task(Task(name="boom", model="calibration", prompts=lambda: [[0], [1]], max_new_tokens=HORIZON,
                           stop=False, scorer=BoomScorer))
        register_env("boom")
    else:
        assert setup == "", setup


def unregister_boom() -> None:
    import gymnasium as gym

    from tokengym.envs import TASKS

    gym.registry.pop("tokengym/Boom-v0", None)
    TASKS.pop("boom", None)


def check(message: str, expected: str, tmp: Path) -> None:
    expected = expected.replace("{tmp}", str(tmp))
    if expected.endswith("…"):
        assert message.startswith(expected[:-1]), message
    else:
        assert message == expected


def test_the_table_covers_the_required_classes():
    flags = " ".join(f for _, f, _, _ in ROWS)
    for needed in ("--env", "--agent", "--reward", "--kl-estimator", "--segmenter", "--episodes -5",
                   "--batch-size 0", "--group-size 1", "--lr 0", "--resume", "Boom"):
        assert needed in flags, needed
    assert len(ROWS) >= 30


@pytest.mark.parametrize("what, flags, setup, expected", ROWS, ids=[r[0] for r in ROWS])
def test_each_bad_input_gives_its_one_line(tmp_path, capsys, request, what, flags, setup, expected):
    if setup == "boom-env":  # registered in this process: unregister it, so no other test sees it
        request.addfinalizer(unregister_boom)
    prepare(tmp_path, setup)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    argv = ["train", *shlex.split(flags.replace("{tmp}", str(tmp_path)))]
    if "--out" not in flags and "--resume" not in flags:
        argv += ["--out", str(tmp_path / "out")]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    check(err[0], expected, tmp_path)
    if setup == "boom-env":  # the scorer ran: the row is named, the checkpoints (none) stay
        assert re.search(r"on row \d \(completion .*\): cannot score prompts that say t1$", err[0]), err[0]
    else:  # validation failed: nothing was written
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


SUBPROCESS_ROWS = [  # the command-line errors a user meets first, each run as a user runs it
    "env id without namespace", "negative count", "an env that needs arguments the CLI cannot pass",
    "model path that does not exist", "prompts file with an empty line", "missing run directory",
]


@pytest.mark.slow
@pytest.mark.parametrize("what", SUBPROCESS_ROWS)
def test_errors_in_a_real_process_have_no_traceback(tmp_path, what):
    what, flags, setup, expected = next(row for row in ROWS if row[0] == what)
    prepare(tmp_path, setup)
    result = subprocess.run(
        [sys.executable, "-m", "tokengym", "train", *shlex.split(flags.replace("{tmp}", str(tmp_path))),
         "--out", str(tmp_path / "out")] if "--out" not in flags and "--resume" not in flags else
        [sys.executable, "-m", "tokengym", "train", *shlex.split(flags.replace("{tmp}", str(tmp_path)))],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    check(lines[0], expected, tmp_path)
    assert not (tmp_path / "out").exists()
