"""The ``tokengym`` command line: each subcommand lives with the package that implements it."""
from __future__ import annotations

import argparse
import importlib
import sys

# Modules that register their subcommands with `add_cli(subparsers)`.
_SUBCOMMAND_MODULES = [
    "tokengym.benchmarks.pretrain",
    "tokengym.rewards.reward_model",
    "tokengym.agents.train",
    "tokengym.benchmarks.cli",
]


def _list_envs(args: argparse.Namespace) -> int:
    from tokengym.envs import registered_envs

    rows = sorted(registered_envs().items())
    width = max(len(env_id) for env_id, _ in rows)
    print(f"{'id':<{width}}  {'model':<12} {'T':>3}  {'reward':<12} description")
    for env_id, task in rows:
        model = task.model if isinstance(task.model, str) else type(task.model).__name__
        print(f"{env_id:<{width}}  {model:<12} {task.max_new_tokens:>3}  {task.reward:<12} {task.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokengym", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    envs = subparsers.add_parser("envs", help="list the registered envs")
    envs.set_defaults(func=_list_envs)
    for module_name in _SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
