"""``tokengym rm train``: train a reward model on preference pairs (``tokengym.rewards.reward_model``)."""
from __future__ import annotations

import json
from typing import Any

from tokengym.rewards.reward_model import load_pairs_jsonl, sentiment_sentence, synthetic_pairs, train_reward_model
from tokengym.rewards.scorers import VaderSentiment
from tokengym.rewards.utilities import UTILITY_NAMES

__all__ = ["add_cli"]

def add_cli(subparsers: Any) -> None:
    """Register ``rm train`` on an ``argparse`` sub-parsers object (sets ``func``)."""
    rm = subparsers.add_parser("rm", help="reward models")
    rm_sub = rm.add_subparsers(dest="rm_command", required=True)
    train = rm_sub.add_parser("train", help="train a reward model on preference pairs")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--pairs", metavar="FILE.jsonl", help="preference pairs: prompt/chosen/rejected per line")
    source.add_argument("--synthetic", metavar="N", type=int,
                        help="N synthetic pairs: template sentences ranked by VADER sentiment")
    train.add_argument("--base", default="embedded", help="causal LM to start from (default: embedded)")
    train.add_argument("--out", required=True, metavar="DIR", help="where to save the reward model")
    train.add_argument("--utility", default="log-sigmoid", help=f"one of {', '.join(UTILITY_NAMES)}")
    train.add_argument("--epochs", type=int, default=1)
    train.add_argument("--lr", type=float, default=5e-5)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--margin", type=float, default=0.0)
    train.add_argument("--center-coef", type=float, default=0.0)
    train.add_argument("--val-fraction", type=float, default=0.1)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="cpu")
    train.set_defaults(func=_cli_train)


def _cli_train(args: Any) -> int:
    if args.pairs:
        pairs = load_pairs_jsonl(args.pairs)
    else:
        pairs = synthetic_pairs(sentiment_sentence, VaderSentiment(), args.synthetic, min_gap=0.5, seed=args.seed)
    metrics = train_reward_model(
        pairs, args.base, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, utility=args.utility,
        margin=args.margin, center_coef=args.center_coef, val_fraction=args.val_fraction, seed=args.seed,
        out_dir=args.out, device=args.device,
    )
    metrics.pop("model")
    print(json.dumps(metrics, indent=2))
    return 0
