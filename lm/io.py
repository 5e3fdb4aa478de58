"""Atomic writes: a file or a whole directory appears complete under its name, or not at all.

Both write into a temporary sibling (same directory, so the final ``os.replace`` is a rename on one
filesystem), fsync what they wrote and the parent directory, and rename into place. On any failure
the temporary sibling is removed, whatever was at ``path`` before is left as it was, and the error
propagates. Temporaries are created private by ``tempfile``; the result gets the modes an ordinary
``open`` / ``mkdir`` would give it under the process umask.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

__all__ = ["atomic_write_file", "atomic_write_dir", "write_json", "read_jsonl"]


def _umask() -> int:
    umask = os.umask(0)  # the only portable way to read it
    os.umask(umask)
    return umask


def _fsync_dir(directory: Path) -> None:
    """Persist a directory's entries (a rename is durable only once its directory is synced)."""
    if not hasattr(os, "O_DIRECTORY"):  # Windows cannot open a directory
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(directory))


def atomic_write_file(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], None]) -> Path:
    """Write ``data`` (bytes, text as UTF-8, or a callback that writes to a binary file object) to
    ``path`` atomically; creates the parent directories. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_dir(path: str | os.PathLike, writer: Callable[[Path], None], keep: Iterable[str] = ()) -> Path:
    """Build the directory ``path`` atomically: ``writer(tmp)`` fills a fresh temporary sibling,
    which then replaces ``path``. Files named in ``keep`` that exist in the old ``path`` are copied
    into the temporary first (``writer`` may overwrite them). An existing ``path`` is moved aside
    before the rename (``rename`` cannot replace a non-empty directory), put back if the rename
    fails, and deleted after it succeeds. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        for name in keep:
            if (path / name).is_file():
                shutil.copy2(path / name, tmp / name)
        writer(tmp)
        _fsync_tree(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, aside / path.name)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(aside / path.name, path)
                aside.rmdir()
                raise
            _fsync_dir(path.parent)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, path)
            _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def write_json(path: str | os.PathLike, data, *, indent: int | None = 2) -> Path:
    """``data`` as JSON (``indent=None``: compact), atomically (:func:`atomic_write_file`)."""
    separators = (",", ":") if indent is None else None
    return atomic_write_file(path, json.dumps(data, indent=indent, separators=separators) + "\n")


def read_jsonl(path: str | os.PathLike, what: str = "a JSON object") -> list[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a JSON-lines file.

    A line that is not JSON, or not a JSON object, raises ``ValueError("PATH:LINE: ...")``; the
    caller checks the fields it needs and names the line the same way."""
    out = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{os.fspath(path)}:{number}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{os.fspath(path)}:{number}: expected {what}, got {type(record).__name__}")
            out.append((number, record))
    return out

