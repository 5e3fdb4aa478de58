"""The one atomic-write helper: a failed write leaves the old content and no temporaries behind; a
successful write replaces; ``keep`` carries files over."""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from tokengym.lm.io import REPLACE_JOURNAL, atomic_write_dir, atomic_write_file, finish_replace, replace_entries

LM_DIR = Path(__file__).resolve().parent.parent / "lm"


class Boom(RuntimeError):
    pass


def _fail(*_):
    raise Boom("writer failed")


def test_file_write_replaces_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic_write_file(path, json.dumps({"v": 1}))
    atomic_write_file(path, b'{"v": 2}')
    assert json.loads(path.read_text()) == {"v": 2}
    atomic_write_file(path, lambda f: f.write(b"3"))
    assert path.read_text() == "3"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not tempfile's private 0600


def test_file_write_failure_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_file(path, "old")

    def half_then_fail(f):
        f.write(b"partial")
        raise Boom

    with pytest.raises(Boom):
        atomic_write_file(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_dir_write_creates_then_replaces(tmp_path):
    path = tmp_path / "model"
    atomic_write_dir(path, lambda d: (d / "w.bin").write_bytes(b"1"))
    assert (path / "w.bin").read_bytes() == b"1"
    atomic_write_dir(path, lambda d: (d / "v.bin").write_bytes(b"2"))
    assert sorted(p.name for p in path.iterdir()) == ["v.bin"]  # replaced, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no .tmp- or .old- siblings
    assert path.stat().st_mode & 0o777 == 0o777 & ~_umask()  # not mkdtemp's private 0700


def test_dir_write_failure_keeps_the_old_dir_and_no_temporaries(tmp_path):
    path = tmp_path / "model"
    atomic_write_dir(path, lambda d: (d / "w.bin").write_bytes(b"old"))

    def half_then_fail(d: Path):
        (d / "w.bin").write_bytes(b"new")
        raise Boom

    with pytest.raises(Boom):
        atomic_write_dir(path, half_then_fail)
    assert (path / "w.bin").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    with pytest.raises(Boom):
        atomic_write_dir(tmp_path / "fresh", _fail)
    assert not (tmp_path / "fresh").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_dir_write_failed_rename_puts_the_old_dir_back(tmp_path, monkeypatch):
    path = tmp_path / "model"
    atomic_write_dir(path, lambda d: (d / "w.bin").write_bytes(b"old"))
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst) == path and Path(src).name.startswith(".model.tmp-"):  # the new dir's rename
            raise OSError("rename failed")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="rename failed"):
        atomic_write_dir(path, lambda d: (d / "w.bin").write_bytes(b"new"))
    monkeypatch.undo()
    assert (path / "w.bin").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_dir_write_keep_carries_named_files_over(tmp_path):
    path = tmp_path / "run"
    atomic_write_dir(path, lambda d: [(d / n).write_text(n) for n in ("metrics.json", "other.txt")])
    atomic_write_dir(path, lambda d: (d / "model.bin").write_bytes(b"m"), keep=("metrics.json", "missing.json"))
    assert sorted(p.name for p in path.iterdir()) == ["metrics.json", "model.bin"]
    assert (path / "metrics.json").read_text() == "metrics.json"


def test_lm_imports_nothing_else_from_tokengym():
    for source in LM_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                assert not name.startswith("tokengym") or name.startswith("tokengym.lm"), (source.name, name)
            assert not (isinstance(node, ast.ImportFrom) and node.level > 1), (source.name, "relative import out of lm")


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# ---------------------------------------------------------------------------------------------
# replace_entries: several siblings replaced together, whatever step a crash interrupts
# ---------------------------------------------------------------------------------------------

ENTRIES = {"policy": "dir", "reference": "dir", "agent_config.json": "file", "trainer_state.pt": "file"}


class Killed(BaseException):
    """A crash: nothing catches it, so the filesystem is left as a killed process would leave it."""


def write_entries(root: Path, version: str) -> None:
    root.mkdir(exist_ok=True)
    for name, kind in ENTRIES.items():
        if kind == "dir":
            (root / name).mkdir()
            (root / name / "model.safetensors").write_text(f"{name} {version}")
        else:
            (root / name).write_text(f"{name} {version}")


def versions(parent: Path) -> set[str]:
    """The version of each entry present in ``parent`` ('missing' for an absent one)."""
    found = set()
    for name, kind in ENTRIES.items():
        path = parent / name / "model.safetensors" if kind == "dir" else parent / name
        found.add(path.read_text().split()[-1] if path.exists() else "missing")
    return found


def crash_at(monkeypatch, step: int) -> list[str]:
    """Make the ``step``-th filesystem mutation (rename, unlink, rmdir, rmtree, journal write)
    raise :class:`Killed`; returns the log of the mutations that ran."""
    log: list[str] = []

    def counted(name, real):
        def call(*args, **kwargs):
            if len(log) == step:
                raise Killed(name)
            log.append(name)
            return real(*args, **kwargs)
        return call

    import shutil

    for module, name in ((os, "replace"), (os, "unlink"), (os, "rmdir"), (shutil, "rmtree"), (os, "fsync")):
        monkeypatch.setattr(module, name, counted(name, getattr(module, name)))
    return log


def test_replace_entries_swaps_all_entries_and_leaves_no_temporaries(tmp_path):
    parent = tmp_path / "run"
    write_entries(parent, "old")
    (parent / "metrics.jsonl").write_text("kept")
    write_entries(parent / ".final.tmp", "new")
    replace_entries(parent, parent / ".final.tmp")
    assert versions(parent) == {"new"}
    assert sorted(p.name for p in parent.iterdir()) == sorted([*ENTRIES, "metrics.jsonl"])
    assert not finish_replace(parent)  # nothing left to finish


def test_a_crash_at_any_step_leaves_all_old_or_all_new_entries(tmp_path, monkeypatch):
    """Crash at the k-th filesystem mutation, for every k, and again at every step of the recovery
    that follows: a reader that calls finish_replace finds all the old entries (crash before the
    journal was committed) or all the new ones, and no temporaries but the uncommitted staging."""
    outcomes, k = set(), 0
    while True:
        for recovery_crash in (None, 0, 1, 2, 3, 4):
            parent = tmp_path / f"run-{k}-{recovery_crash}"
            write_entries(parent, "old")
            write_entries(parent / ".final.tmp", "new")
            with monkeypatch.context() as patch:
                log = crash_at(patch, k)
                try:
                    replace_entries(parent, parent / ".final.tmp")
                    finished = True
                except Killed:
                    finished = False
            committed = (parent / REPLACE_JOURNAL).exists() or versions(parent) == {"new"}
            if not (parent / REPLACE_JOURNAL).exists():  # without a journal a reader already sees one version
                assert len(versions(parent)) == 1, (k, log, versions(parent))
            if recovery_crash is not None:
                with monkeypatch.context() as patch:
                    crash_at(patch, recovery_crash)
                    try:
                        finish_replace(parent)
                    except Killed:
                        pass
            finish_replace(parent)
            assert versions(parent) == ({"new"} if committed else {"old"}), (k, recovery_crash, log)
            leftovers = sorted(p.name for p in parent.iterdir() if p.name not in ENTRIES)
            assert leftovers == ([] if committed else [".final.tmp"]), (k, leftovers)
            outcomes.add("new" if committed else "old")
        if finished:
            break
        k += 1
    assert outcomes == {"old", "new"} and k >= 10  # the crash really visited every step, both sides


def test_replace_entries_refuses_a_staging_directory_elsewhere(tmp_path):
    write_entries(tmp_path / "elsewhere", "new")
    (tmp_path / "run").mkdir()
    with pytest.raises(ValueError, match="staging must be a child of"):
        replace_entries(tmp_path / "run", tmp_path / "elsewhere")
