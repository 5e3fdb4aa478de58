"""The TRL comparison driver imports TRL lazily and says so in one line when it is missing."""
from __future__ import annotations

import sys

import pytest


def test_missing_trl_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "trl", None)  # makes `import trl` raise ImportError
    from tokengym.benchmarks import trl_comparison

    with pytest.raises(SystemExit) as excinfo:
        trl_comparison.main(["--episodes", "32", "--seeds", "0", "--out", "unused"])
    message = str(excinfo.value)
    assert "pip install trl" in message and "\n" not in message


def test_importing_the_driver_does_not_import_trl(monkeypatch):
    monkeypatch.setitem(sys.modules, "trl", None)
    monkeypatch.delitem(sys.modules, "tokengym.benchmarks.trl_comparison", raising=False)
    import tokengym.benchmarks.trl_comparison  # noqa: F401
