"""Peak resident memory of this process: the one reader the suite and the performance runs share."""
from __future__ import annotations

import resource
import sys
from pathlib import Path

__all__ = ["peak_rss_bytes", "reset_peak_rss"]


def reset_peak_rss() -> str:
    """Reset the kernel's RSS high-water mark (Linux); returns the scope the next peak covers:
    ``"cell"`` after a reset, ``"process"`` where none is possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return "cell"
    except OSError:
        return "process"


def peak_rss_bytes() -> int:
    """This process's peak RSS. Linux: ``VmHWM`` (``ru_maxrss`` keeps the parent's RSS at fork
    across ``execve``, and ignores :func:`reset_peak_rss`); elsewhere ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux
