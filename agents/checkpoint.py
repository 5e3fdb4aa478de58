"""Periodic checkpoints of a training run, and resuming from the newest valid one.

Layout of a run directory ``DIR`` (written by ``tokengym train``)::

    DIR/run.json                       the resolved settings of the run (what --resume re-uses)
    DIR/metrics.jsonl                  one line per iteration
    DIR/checkpoints/iter-000004/       one complete checkpoint per --save-every iterations
        weights.safetensors            every policy parameter and buffer (value head included)
        trainer_state.pt               optimizer, every RNG, adaptive-β, progress, metrics so far
        MANIFEST.json                  written last: run id, iteration, sha256 of each file above

A checkpoint is written into a temporary sibling (``checkpoints/.iter-….tmp-…``) by
:func:`tokengym.lm.io.atomic_write_dir`, which fsyncs every file and renames it into place; the
manifest is written last. A checkpoint whose manifest is missing, unreadable, from another run, or whose
files do not match their sha256 is reported and skipped, never loaded half-way.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from tokengym.lm.io import atomic_write_dir

__all__ = ["CHECKPOINTS", "MANIFEST", "write_checkpoint", "list_checkpoints", "check_checkpoint", "newest_valid", "restore"]

CHECKPOINTS = "checkpoints"
MANIFEST = "MANIFEST.json"
WEIGHTS = "weights.safetensors"
STATE = "trainer_state.pt"
FORMAT = 1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checkpoint(agent, run_dir: str | os.PathLike, run_id: str, keep: int) -> Path:
    """Checkpoint ``agent`` as ``run_dir/checkpoints/iter-NNNNNN``; keep the newest ``keep``."""
    from safetensors.torch import save_model

    root = Path(run_dir) / CHECKPOINTS

    def write(tmp: Path) -> None:
        save_model(agent.policy, str(tmp / WEIGHTS))  # handles tied weights (GPT-2's lm_head)
        torch.save(agent._trainer_state(), tmp / STATE)
        files = {name: _sha256(tmp / name) for name in (WEIGHTS, STATE)}
        manifest = {"format": FORMAT, "run_id": run_id, "iteration": agent.iteration,
                    "agent": type(agent).__name__, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))

    path = atomic_write_dir(root / f"iter-{agent.iteration:06d}", write)
    for old in list_checkpoints(run_dir)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint directories (valid or not), newest first; temporary ones are not listed."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("iter-") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]), reverse=True)


def remove_partial(run_dir: str | os.PathLike) -> list[Path]:
    """Delete temporary directories a killed writer left behind; returns them."""
    root = Path(run_dir) / CHECKPOINTS
    stale = [p for p in root.glob(".iter-*") if ".tmp-" in p.name or ".old-" in p.name] if root.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def check_checkpoint(path: Path, run_id: str, agent_name: str) -> str | None:
    """``None`` if ``path`` is a complete checkpoint of this run, else the reason it is not."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        return "no MANIFEST.json (partial write)"
    except (OSError, ValueError) as exc:
        return f"unreadable MANIFEST.json ({exc})"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        return "MANIFEST.json is not a tokengym checkpoint manifest"
    if manifest.get("run_id") != run_id or manifest.get("agent") != agent_name:
        return f"belongs to another run ({manifest.get('agent')}, run id {manifest.get('run_id')})"
    for name, digest in manifest["files"].items():
        if not (path / name).is_file():
            return f"{name} is missing"
        if _sha256(path / name) != digest:
            return f"{name} does not match its sha256 (corrupted)"
    if set(manifest["files"]) != {WEIGHTS, STATE}:
        return f"MANIFEST.json lists {sorted(manifest['files'])}, expected {[STATE, WEIGHTS]}"
    return None


def newest_valid(run_dir, run_id: str, agent_name: str) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest valid checkpoint (or None), and each newer invalid one with its reason."""
    skipped = []
    for path in list_checkpoints(run_dir):
        reason = check_checkpoint(path, run_id, agent_name)
        if reason is None:
            return path, skipped
        skipped.append((path, reason))
    return None, skipped


def restore(agent, path: Path) -> None:
    """Load a checked checkpoint into an agent built with the run's own settings."""
    from safetensors.torch import load_model

    load_model(agent.policy, str(path / WEIGHTS), device=str(agent.env.device))
    state = torch.load(path / STATE, map_location=agent.env.device, weights_only=True)
    agent._restore_trainer_state(state)
