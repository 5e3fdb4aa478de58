"""Experiment trackers for ``tokengym train --report-to`` (TRL's word): TensorBoard and Weights &
Biases, the dashboards researchers watch runs in (cleanrl's ``--track``, SB3's ``tensorboard_log``).

Rank 0 alone reports, through :class:`Trackers`: the run's settings (``run.json``'s record) once,
every field of each ``metrics.jsonl`` line (the step is the line's ``episodes``), and at the end
the sampled continuations of π_ref and the trained π_θ as text. Both packages are optional
(``pip install 'tokengym[track]'``); a missing one is a one-line error before any model loads.

* ``tensorboard``: event files in ``OUT/tensorboard/`` (``tensorboard --logdir OUT``).
* ``wandb``: a run with the id of the tokengym run (a resumed run continues it), in the project
  ``$WANDB_PROJECT`` (default ``tokengym``), its files in ``OUT/wandb/``; ``WANDB_MODE=offline``
  logs without a network (``wandb sync`` uploads later).

A resumed run logs the iterations after its checkpoint again, as ``metrics.jsonl`` does.
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from tokengym.lm.errors import UsageError

__all__ = ["REPORTERS", "EXTRA", "Trackers", "check_trackers"]

REPORTERS = ("none", "tensorboard", "wandb")
"""``--report-to`` choices."""
EXTRA = "track"
"""The optional dependencies' extra: ``pip install 'tokengym[track]'``."""


def check_trackers(names: list[str]) -> None:
    """One line naming the extra to install if a tracker's package is missing."""
    for name in names:
        if name == "none":
            continue
        try:
            importlib.import_module(name)
        except ImportError:
            raise UsageError(f"--report-to {name}: expected the {name} package (pip install 'tokengym[{EXTRA}]')") from None


class TensorBoard:
    """Scalars and text in ``run_dir/tensorboard``."""

    def __init__(self, run_dir: Path, run_id: str, record: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("settings", "```\n" + json.dumps(record, indent=2) + "\n```", global_step=0)

    def log_metrics(self, stats: dict) -> None:
        for key, value in stats.items():
            self.writer.add_scalar(key, value, global_step=stats["episodes"])
        self.writer.flush()

    def log_samples(self, rows: list[tuple[str, str, str]], step: int) -> None:
        table = "| prompt | π_ref (before) | π_θ (after) |\n|---|---|---|\n" + "".join(
            "| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in row) + " |\n" for row in rows)
        self.writer.add_text("samples", table, global_step=step)

    def close(self) -> None:
        self.writer.close()


class WandB:
    """A Weights & Biases run with the tokengym run's id (resumed with it)."""

    def __init__(self, run_dir: Path, run_id: str, record: dict):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "tokengym"), name=run_dir.name, id=run_id,
                              resume="allow", dir=str(run_dir), config=record)

    def log_metrics(self, stats: dict) -> None:
        self.run.log(dict(stats), step=stats["episodes"])

    def log_samples(self, rows: list[tuple[str, str, str]], step: int) -> None:
        table = self.wandb.Table(columns=["prompt", "π_ref (before)", "π_θ (after)"], data=[list(r) for r in rows])
        self.run.log({"samples": table}, step=step)

    def close(self) -> None:
        self.run.finish()


BACKENDS = {"tensorboard": TensorBoard, "wandb": WandB}


class Trackers:
    """The trackers ``names`` (``"none"`` opens nothing), each given the settings ``record`` on
    opening. Only rank 0 should build one."""

    def __init__(self, names: list[str], run_dir: Path, run_id: str, record: dict):
        self.backends = [BACKENDS[name](Path(run_dir), run_id, record) for name in names if name != "none"]

    def __bool__(self) -> bool:
        return bool(self.backends)

    def log_metrics(self, stats: dict) -> None:
        """Every field of one ``metrics.jsonl`` line, at step ``stats["episodes"]``."""
        for backend in self.backends:
            backend.log_metrics(stats)

    def log_samples(self, rows: list[tuple[str, str, str]], step: int) -> None:
        """``(prompt, π_ref's continuation, π_θ's continuation)`` rows as a text table."""
        for backend in self.backends:
            backend.log_samples(rows, step)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
