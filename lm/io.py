"""Atomic writes: a file or a whole directory appears complete under its name, or not at all.

Both write into a temporary sibling (same directory, so the final ``os.replace`` is a rename on one
filesystem), fsync what they wrote and the parent directory, and rename into place. On any failure
the temporary sibling is removed, whatever was at ``path`` before is left as it was, and the error
propagates. Temporaries are created private by ``tempfile``; the result gets the modes an ordinary
``open`` / ``mkdir`` would give it under the process umask.

:func:`replace_entries` replaces several entries of one directory together (a run's final
``policy/`` and ``reference/``) through a journal that :func:`finish_replace` completes after a
crash; it assumes one writer at a time.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

__all__ = ["atomic_write_file", "atomic_write_dir", "write_json", "read_jsonl", "finish_replace", "replace_entries"]

REPLACE_JOURNAL = ".replace-journal.json"
"""In a directory whose entries :func:`replace_entries` is replacing: what moves where. Its presence
means the new entries are committed; :func:`finish_replace` completes the moves."""
_ASIDE_PREFIX = ".replace-old-"


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


def replace_entries(parent: str | os.PathLike, staging: str | os.PathLike) -> Path:
    """Move every entry of the directory ``staging`` into ``parent``, replacing the entries of the
    same names, as one transaction: after a crash at any point, the next :func:`finish_replace` on
    ``parent`` leaves either all the old entries or all the new ones. ``staging`` must be a
    complete, synced child of ``parent`` (what :func:`atomic_write_dir` writes), so that every move
    is a rename on one filesystem. Returns ``parent``.

    Several renames cannot be one atomic step, so a journal makes them one: it is written
    atomically once the new entries are complete (the commit point), then each old entry is moved
    aside and its new one renamed in, then the journal is removed and the old entries deleted. A
    crash before the journal exists leaves the old entries untouched; after it, the moves are
    replayed to the end. Until then a reader may see a mix, so readers call :func:`finish_replace`
    first (this function does too)."""
    parent, staging = Path(parent), Path(staging)
    if staging.parent.resolve() != parent.resolve():
        raise ValueError(f"replace_entries: staging must be a child of {parent}, got {staging}")
    finish_replace(parent)
    names = sorted(entry.name for entry in staging.iterdir())
    aside = Path(tempfile.mkdtemp(prefix=_ASIDE_PREFIX, dir=parent))
    journal = {"staging": staging.name, "aside": aside.name, "entries": names}
    atomic_write_file(parent / REPLACE_JOURNAL, json.dumps(journal))  # the commit point
    _replay(parent, journal)
    return parent


def finish_replace(parent: str | os.PathLike) -> bool:
    """Complete a :func:`replace_entries` on ``parent`` that a crash interrupted (the new entries
    were committed: replay the moves), and delete what an earlier one left aside. Idempotent, and
    safe to interrupt in turn. Returns whether there was anything to do."""
    parent = Path(parent)
    journal_path = parent / REPLACE_JOURNAL
    done = False
    if journal_path.is_file():
        _replay(parent, json.loads(journal_path.read_text()))
        done = True
    if not parent.is_dir():
        return done
    for leftover in parent.glob(_ASIDE_PREFIX + "*"):
        shutil.rmtree(leftover)  # old entries of a finished replacement, or an uncommitted one's empty aside
        done = True
    for leftover in parent.glob(f".{REPLACE_JOURNAL}.*.tmp"):
        leftover.unlink()  # a journal whose atomic write was cut: nothing was committed
        done = True
    return done


def _replay(parent: Path, journal: dict) -> None:
    """The committed moves of ``journal``, each skipped if it is already done, then the cleanup."""
    staging, aside = parent / journal["staging"], parent / journal["aside"]
    for name in journal["entries"]:
        if (staging / name).exists() or (staging / name).is_symlink():  # not yet moved in
            if (parent / name).exists() or (parent / name).is_symlink():
                aside.mkdir(exist_ok=True)
                os.replace(parent / name, aside / name)
            os.replace(staging / name, parent / name)
    if staging.exists():
        staging.rmdir()  # empty now
    _fsync_dir(parent)
    (parent / REPLACE_JOURNAL).unlink()
    _fsync_dir(parent)
    if aside.exists():
        shutil.rmtree(aside)


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

