"""``tokengym bench``: a benchmark suite or a reward ablation (``benchmarks/suite.py``), a paper
reproduction (``benchmarks/reproduce.py``), the performance benchmark (``benchmarks/perf.py``), or
the comparison with TRL's GRPOTrainer (``benchmarks/trl_comparison.py``)."""
from __future__ import annotations

import argparse

__all__ = ["add_cli"]

DESCRIPTION = """\
Run a benchmark and write its results (JSON, a results.md table, plots) into --out.

  tokengym bench                              the quick suite: the six agents on Sentiment-v0, 1,024 episodes,
                                              one seed (about 3 min on 2 CPU cores)
  tokengym bench --suite kl-sentiment         the six agents' defaults, 3 seeds, on the reward-KL frontier
                                              (about 1 h; 35 min as three processes with --seed-list S)
  tokengym bench --suite full                 the algorithm table: every agent on every env, 3 seeds (about 1.5 h)
  tokengym bench --suite FILE.toml            your own suite (the schema: BENCHMARKS.md, "Suite files")
  tokengym bench --ablate reward=holistic,kl-shaped
                                              the suite's first cell once per value, with a reward-KL frontier
  tokengym bench --reproduce NAME             a reproduction: calibration (about 2 min), collapse (under 1 min),
                                              fine-grained (about 15 min), algorithms (the full suite)
  tokengym bench --perf [--quick]             throughput, memory and cost growth (--quick: about 30 s)
  tokengym bench --trl-comparison             tokengym's GRPO against TRL's GRPOTrainer (needs tokengym[trl])

Finished cells are skipped on a rerun into the same --out."""


def _run(args: argparse.Namespace) -> int:
    if args.perf:
        from tokengym.benchmarks.perf import run_perf

        run_perf(args.out, device=args.device, bf16=args.bf16, quick=args.quick)
    elif args.reproduce:
        from tokengym.benchmarks.reproduce import reproduce

        print((reproduce(args.reproduce, args.out if args.out_given else None) / "summary.md").read_text())
    elif args.trl_comparison:
        import json

        from tokengym.benchmarks.trl_comparison import run_comparison

        seeds = tuple(args.seeds_list) if args.seeds_list else (0, 1, 2)
        summary = run_comparison(args.out, episodes=args.episodes or 1024, seeds=seeds)
        print(json.dumps({k: v for k, v in summary.items() if k != "settings"}, indent=1))
    else:
        from tokengym.benchmarks.suite import run_suite

        run_suite(args.suite, args.out, ablate=args.ablate, device=args.device, seeds=args.seeds_list or args.seeds)
    return 0


def add_cli(subparsers) -> None:
    from tokengym.benchmarks.reproduce import REPRODUCTIONS

    parser = subparsers.add_parser(
        "bench", help="run a benchmark suite, an ablation, a reproduction or the performance benchmark",
        description=DESCRIPTION,
    )
    parser.add_argument("--suite", default="quick", metavar="NAME_OR_FILE",
                        help="'quick', 'kl-sentiment', 'full', or a suite TOML file (default: quick)")
    parser.add_argument("--ablate", action="append", metavar="FIELD=V1,V2,...",
                        help="run the suite's first cell across these values, e.g. reward=holistic,kl-shaped (repeatable)")
    parser.add_argument("--seeds", type=int, default=None, metavar="N", help="run seeds 0..N-1 instead of the suite's")
    parser.add_argument("--seed-list", dest="seeds_list", type=int, nargs="+", default=None, metavar="SEED",
                        help="run exactly these seeds (suites and --trl-comparison)")
    parser.add_argument("--reproduce", choices=sorted(REPRODUCTIONS), default=None,
                        help="run a reproduction written up in BENCHMARKS.md")
    parser.add_argument("--perf", action="store_true", help="run the performance benchmark")
    parser.add_argument("--quick", action="store_true", help="with --perf: tiny sizes (a smoke run, about 1 min)")
    parser.add_argument("--bf16", action="store_true", help="with --perf: run the models in bfloat16")
    parser.add_argument("--trl-comparison", action="store_true", help="compare with TRL's GRPOTrainer, interleaved")
    parser.add_argument("--episodes", type=int, default=None, metavar="N",
                        help="with --trl-comparison: episodes per side and seed (default: 1024)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 (default: cpu)")
    parser.add_argument("--out", default=None, help="output directory (default: runs/bench; "
                        "--reproduce: benchmarks/results/NAME)")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from tokengym.lm.loading import hub_progress_bars

    args.out_given = args.out is not None
    if args.out is None:
        args.out = "runs/bench"
    with hub_progress_bars(enabled=False):  # transformers' loading bars, once per cell, would break the suite's bar
        return _run(args)
