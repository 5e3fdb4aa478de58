"""The layering: imports go one way, ``lm ← rewards ← envs ← agents ← benchmarks ← tokengym``.

Every ``import`` statement in the package, at module level or inside a function, is read from the
source with ``ast``; one that reaches a higher layer, or a cycle between layers, fails the test.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["lm", "rewards", "envs", "agents", "benchmarks", "tokengym"]
"""Lowest first: a package may import only from its own layer and the ones before it."""
FOLDERS = {"lm": "lm", "rewards": "rewards", "envs": "envs", "agents": "agents", "benchmarks": "benchmarks", "tokengym": "tokengym"}


def layer_of_module(name: str) -> str | None:
    """The layer of an absolute module name inside tokengym (None outside it)."""
    parts = name.split(".")
    if parts[0] != "tokengym":
        return None
    if len(parts) == 1 or parts[1] not in LAYERS[:-1]:
        return "tokengym"  # the package root: re-exports and the CLI
    return parts[1]


def imports_of(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``path`` (relative imports resolved)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((node.lineno, module))
    return out


def package_files():
    for layer, folder in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            package = "tokengym" if layer == "tokengym" else f"tokengym.{layer}"
            yield layer, path, package


def test_every_layer_folder_exists():
    for folder in FOLDERS.values():
        assert (ROOT / folder / "__init__.py").is_file(), folder


def test_no_import_goes_up_a_layer():
    violations = []
    for layer, path, package in package_files():
        for line, module in imports_of(path, package):
            target = layer_of_module(module)
            if target is not None and LAYERS.index(target) > LAYERS.index(layer):
                violations.append(f"{path.relative_to(ROOT)}:{line} ({layer}) imports {module} ({target})")
    assert not violations, "upward imports:\n" + "\n".join(violations)


def test_relative_imports_are_not_used():
    relative = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for _, path, _ in package_files()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level
    ]
    assert not relative, "use absolute imports: " + ", ".join(relative)


def test_lm_is_a_leaf():
    for layer, path, package in package_files():
        if layer != "lm":
            continue
        for line, module in imports_of(path, package):
            assert layer_of_module(module) in (None, "lm"), f"{path.name}:{line} imports {module}"


@pytest.mark.parametrize("layer", LAYERS)
def test_the_checker_catches_an_upward_import(layer, tmp_path):
    """The test can fail: a synthetic module of each layer importing the layer above is flagged."""
    above = LAYERS[min(LAYERS.index(layer) + 1, len(LAYERS) - 1)]
    module = tmp_path / "m.py"
    module.write_text(f"def f():\n    import tokengym.{above}.x\n" if above != "tokengym" else "import tokengym.cli\n")
    package = "tokengym" if layer == "tokengym" else f"tokengym.{layer}"
    targets = [layer_of_module(m) for _, m in imports_of(module, package)]
    assert (LAYERS.index(targets[0]) > LAYERS.index(layer)) == (layer != "tokengym")


def test_public_surface_exports_what_a_user_types_each_with_a_docstring():
    import inspect

    import tokengym
    from tokengym import A2C, GRPO, PPO, REINFORCE, PPOConfig, TokenVectorEnv, make_reward  # noqa: F401
    from tokengym.agents import Agent
    from tokengym.rewards.segmenters import Segmenter, TextSegmenter

    for module in (tokengym, tokengym.lm, tokengym.rewards, tokengym.envs, tokengym.agents):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj):
                assert (obj.__doc__ or "").strip(), f"{module.__name__}.{name} has no docstring"
    for abstract in (Agent, Segmenter, TextSegmenter):
        assert inspect.isabstract(abstract), abstract
        with pytest.raises(TypeError, match="abstract"):
            abstract()  # fails at construction, before any rollout


def test_docstrings_cite_sources_that_exist():
    """DESIGN.md lives outside the repository: code cites docs/ (or seeds and papers) instead."""
    citing = [str(path.relative_to(ROOT)) for _, path, _ in package_files() if "DESIGN.md" in path.read_text()]
    assert not citing, f"cite docs/*.md, not DESIGN.md: {citing}"


def argv_offences(path: Path) -> list[str]:
    """Where ``path`` imports argparse, reads ``sys.argv``, parses arguments or adds a command."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
            if "argparse" in names:
                found.append(f"{path.name}:{node.lineno} imports argparse")
        elif isinstance(node, ast.Attribute) and node.attr in ("argv", "add_parser", "add_subparsers", "parse_args"):
            found.append(f"{path.name}:{node.lineno} uses .{node.attr}")
    return found


def test_only_the_app_layer_parses_argv_or_registers_a_command():
    """The application is the top layer: below ``tokengym/`` no module imports argparse, reads
    ``sys.argv``, parses arguments or adds a (sub)command."""
    offending = [o for layer, path, _ in package_files() if layer != "tokengym" for o in argv_offences(path)]
    assert not offending, "\n".join(offending)


def test_the_argv_checker_can_fail(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import argparse\nimport sys\nx = sys.argv\ndef f(sub):\n    sub.add_parser('x')\n")
    assert argv_offences(module) == ["m.py:1 imports argparse", "m.py:3 uses .argv", "m.py:5 uses .add_parser"]
