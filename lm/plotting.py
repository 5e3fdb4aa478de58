"""The one matplotlib setup: a headless backend, and figures saved atomically.

Every plot in tokengym (``benchmarks/plots.py``, ``tokengym/train.py``) gets pyplot from
:func:`pyplot` and writes through :func:`save_figure`, so a crash mid-save never leaves a truncated
PNG where a previous one was.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tokengym.lm.io import atomic_write_file

__all__ = ["pyplot", "save_figure"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` atomically (the format from the suffix, PNG by default), creating
    the parent directories, and close it. Returns ``path``."""
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    try:
        atomic_write_file(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi))
    finally:
        pyplot().close(fig)
    return path
