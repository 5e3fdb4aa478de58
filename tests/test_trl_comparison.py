"""The TRL comparison driver imports TRL lazily and says so in one line when it is missing."""
from __future__ import annotations

import sys


def test_missing_trl_is_one_clear_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "trl", None)  # makes `import trl` raise ImportError
    from tokengym.cli import main

    assert main(["bench", "--trl-comparison", "--episodes", "32", "--seeds", "0", "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "pip install 'tokengym[trl]'" in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_importing_the_driver_does_not_import_trl(monkeypatch):
    monkeypatch.setitem(sys.modules, "trl", None)
    monkeypatch.delitem(sys.modules, "tokengym.benchmarks.trl_comparison", raising=False)
    import tokengym.benchmarks.trl_comparison  # noqa: F401
