"""``tokengym train --report-to``: TensorBoard's event file, read back with tensorboard's own reader,
holds every field of every ``metrics.jsonl`` line, the run's settings and the printed samples; W&B
in offline mode (no network) writes its run directory with the same; a missing package is one line
naming the extra. (Rank 0 alone reports: the 2-rank GRPO run of ``tests/test_distributed.py``
leaves one event file.)"""
from __future__ import annotations

import ast
import json
import sys
import time

import pytest

from tokengym.cli import main

RUN = ["train", "--env", "tokengym/Calibration-v0", "--agent", "reinforce", "--group-size", "4", "--episodes", "16",
       "--batch-size", "8"]


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def printed_samples(stdout: str) -> list[tuple[str, str, str]]:
    """The ``(prompt, before, after)`` rows ``tokengym train`` printed."""
    lines = stdout.split("same prompts and random numbers:\n", 1)[1].splitlines()
    rows = []
    while lines and lines[0].startswith("  '"):
        prompt, before, after = lines[:3]
        rows.append((ast.literal_eval(prompt.strip()), ast.literal_eval(before.split(":", 1)[1].strip()),
                     ast.literal_eval(after.split(":", 1)[1].strip())))
        lines = lines[3:]
    assert rows, stdout
    return rows


def test_tensorboard_holds_every_metric_the_settings_and_the_samples(tmp_path, capsys, one_thread):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    out = tmp_path / "run"
    assert main([*RUN, "--report-to", "tensorboard", "--out", str(out)]) == 0
    samples = printed_samples(capsys.readouterr().out)
    (events,) = (out / "tensorboard").glob("events.out.tfevents.*")
    logged = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    rows = metrics(out)
    assert set(logged.Tags()["scalars"]) == set(rows[0])  # every field, at every iteration, step = episodes
    for key in rows[0]:
        assert [(e.step, e.value) for e in logged.Scalars(key)] == [(r["episodes"], pytest.approx(r[key])) for r in rows]

    def text(tag: str) -> str:
        (event,) = logged.Tensors(f"{tag}/text_summary")
        return make_ndarray(event.tensor_proto).item().decode()

    assert json.loads(text("settings").strip("`\n")) == json.loads((out / "run.json").read_text())
    for row in samples:
        assert "| " + " | ".join(row) + " |" in text("samples")


def test_wandb_offline_writes_its_run_directory(tmp_path, capsys, monkeypatch, one_thread):
    monkeypatch.setenv("WANDB_MODE", "offline")  # no network
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    assert main([*RUN, "--report-to", "wandb", "--out", str(out)]) == 0
    samples = printed_samples(capsys.readouterr().out)
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    (run,) = (out / "wandb").glob(f"offline-run-*-{run_id}")  # the W&B run has the tokengym run's id
    log = run / f"run-{run_id}.wandb"  # W&B's log of protobuf records, values as JSON text
    for _ in range(60):  # W&B's own service process writes it; on a loaded machine it can trail finish()
        records = log.read_bytes()
        if b"tokengym/Calibration-v0" in records and b"iteration" in records:
            break
        time.sleep(0.5)
    for row in metrics(out):
        for key, value in row.items():
            assert key.encode() in records, key
            if isinstance(value, float) and not value.is_integer():
                assert json.dumps(value).encode() in records, (key, value)
    assert b'"kl_target"' in records and b"tokengym/Calibration-v0" in records  # the settings
    (table,) = (run / "files" / "media" / "table").glob("samples_*.table.json")
    assert json.loads(table.read_text())["data"] == [list(row) for row in samples]


@pytest.mark.parametrize("package", ["tensorboard", "wandb"])
def test_a_missing_tracker_package_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # importing it fails, as if it were not installed
    assert main([*RUN, "--report-to", package, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"tokengym: error: --report-to {package}: expected the {package} package (pip install 'tokengym[track]')"
    ]
    assert not (tmp_path / "out").exists()
