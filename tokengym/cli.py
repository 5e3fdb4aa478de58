"""The ``tokengym`` command line: each subcommand lives with the package that implements it.

Bad flags, values, names and files end in one line on stderr and exit status 2, never a
traceback: argparse's own errors and :class:`~tokengym.lm.errors.UsageError` are both caught here.
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys

from tokengym.lm.errors import ScorerError, UsageError

DESCRIPTION = (
    "tokengym: reinforcement learning on language models as Gymnasium token-level MDPs. "
    "List the envs with 'tokengym envs', train an agent with 'tokengym train', "
    "judge a trained run on fresh samples with 'tokengym eval', run benchmark suites with 'tokengym bench'. "
    "'tokengym COMMAND --help' explains each command."
)

# Modules that register their subcommands with `add_cli(subparsers)`.
_SUBCOMMAND_MODULES = [
    "tokengym.reward_model",
    "tokengym.train",
    "tokengym.export",
    "tokengym.bench",
    "tokengym.evaluate",
]

_INVALID = re.compile(r"argument (?P<flag>[^:]+): invalid (?P<kind>\w+) value: (?P<value>.*)")
_CHOICE = re.compile(r"argument (?P<flag>[^:]+): invalid choice: (?P<value>.*?) \(choose from (?P<choices>.*)\)")


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is a :class:`UsageError` (one line) rather than usage + exit."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        match = _INVALID.fullmatch(message)
        if match:  # "argument --episodes: invalid int value: 'x'" -> "--episodes x: expected an integer"
            kind = {"int": "an integer", "float": "a number"}.get(match["kind"], match["kind"])
            message = f"{match['flag'].split('/')[0]} {match['value'].strip(chr(39))}: expected {kind}"
        match = _CHOICE.fullmatch(message)
        if match:  # "argument --agent: invalid choice: 'x' (choose from ...)"
            choices = match["choices"].replace("'", "")
            message = f"{match['flag'].split('/')[0]} {match['value'].strip(chr(39))}: expected one of {choices}"
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _list_envs(args: argparse.Namespace) -> int:
    from tokengym.envs import registered_envs

    rows = sorted(registered_envs().items())
    width = max(len(env_id) for env_id, _ in rows)
    print(f"{'id':<{width}}  {'model':<12} {'T':>3}  {'reward':<12} description")
    for env_id, task in rows:
        model = task.model if isinstance(task.model, str) else type(task.model).__name__
        description = task.description
        if task.name == "custom":
            model, description = "(required)", (
                f"{description} Requires the env arguments model=, prompts= and reward=: "
                f"gymnasium.make_vec('{env_id}', model=..., prompts=[...], reward=...)."
            )
        print(f"{env_id:<{width}}  {model:<12} {task.max_new_tokens:>3}  {task.reward:<12} {description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tokengym", description=DESCRIPTION)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    envs = subparsers.add_parser("envs", help="list the registered envs")
    envs.set_defaults(func=_list_envs)
    for module_name in _SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from tokengym.agents.base import NonFiniteUpdateError

    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except (UsageError, ScorerError) as exc:
        print(f"tokengym: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except NonFiniteUpdateError as exc:  # a diagnostic of the run, not of the command line
        print(f"tokengym: stopped: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
