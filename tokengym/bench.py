"""``tokengym bench``: benchmark suites and ablations (``suite.py``) or performance runs (``perf.py``)."""
from __future__ import annotations

import argparse

__all__ = ["add_cli"]


def _run(args: argparse.Namespace) -> int:
    if args.perf:
        from tokengym.benchmarks.perf import run_perf

        run_perf(args.out, device=args.device, bf16=args.bf16, quick=args.quick)
        return 0
    from tokengym.benchmarks.suite import run_suite

    run_suite(args.suite, args.out, ablate=args.ablate, device=args.device, seeds=args.seeds)
    return 0


def add_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="run a benchmark suite, a reward ablation, or the performance benchmark"
    )
    parser.add_argument("--suite", default="quick", help="'quick', 'full', or a suite TOML file")
    parser.add_argument(
        "--ablate", action="append", metavar="FIELD=V1,V2,...",
        help="run the suite's first cell across these values (e.g. reward=holistic,fine-grained,kl-shaped)",
    )
    parser.add_argument("--seeds", type=int, default=None, help="override the suite's number of seeds")
    parser.add_argument("--perf", action="store_true", help="run the performance benchmark instead")
    parser.add_argument("--quick", action="store_true", help="perf: tiny sizes (smoke run)")
    parser.add_argument("--bf16", action="store_true", help="perf: run the models in bfloat16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/bench", help="output directory")
    parser.set_defaults(func=_run)
