"""The one atomic-write helper: a failed write leaves the old content and no temporaries behind; a
successful write replaces; ``keep`` carries files over."""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from tokengym.lm.io import atomic_write_dir, atomic_write_file

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
