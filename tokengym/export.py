"""Export a run's policy as one plain model directory (``tokengym export DIR --merge --out OUT``).

A full fine-tuning run's ``DIR/policy/`` already loads with ``AutoModelForCausalLM``; a LoRA run's
is a PEFT adapter directory over the base model in ``DIR/reference/``. :func:`export_merged` writes
both kinds as merged full weights plus the tokenizer and generation config, which
``AutoModelForCausalLM``, ``AutoTokenizer`` and ``pipeline("text-generation")`` load with no peft
and no tokengym. The value head, an RL training artifact, is left out.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from tokengym.lm.io import atomic_write_dir, finish_replace
from tokengym.lm.loading import load_causal_lm

__all__ = ["add_cli", "export_merged"]


def export_merged(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, trust_remote_code: bool = False) -> Path:
    """Write the run's policy, LoRA adapters merged into the base weights, to ``out_dir``.

    ``run_dir`` is a directory written by :meth:`tokengym.agents.Agent.save`. ``out_dir`` must not
    exist or be empty; it is written to a temporary sibling and renamed into place.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if run_dir.is_dir():
        finish_replace(run_dir)  # a final save a crash cut short: complete it first
    policy_dir = run_dir / "policy"
    if not (policy_dir / "config.json").is_file() and not (policy_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{run_dir} holds no saved policy (expected {policy_dir}/config.json or adapter_config.json)")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; export into a new directory")
    if (policy_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        base = load_causal_lm(run_dir / "reference", trust_remote_code=trust_remote_code)
        model = PeftModel.from_pretrained(base, policy_dir).merge_and_unload()
    else:
        model = load_causal_lm(policy_dir, trust_remote_code=trust_remote_code)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        if (policy_dir / "tokenizer_config.json").is_file():
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(policy_dir, local_files_only=True).save_pretrained(tmp)

    return atomic_write_dir(out_dir, write)  # an empty out_dir (checked above) is replaced


def _export(args: argparse.Namespace) -> int:
    from tokengym.lm.errors import UsageError

    if not args.merge:
        raise UsageError("tokengym export: --merge is required (the one export format so far: merged full weights)")
    out = args.out if args.out is not None else Path(args.run_dir) / "merged"
    try:
        path = export_merged(args.run_dir, out, trust_remote_code=args.trust_remote_code)
    except (FileNotFoundError, FileExistsError) as err:
        raise UsageError(f"{args.run_dir}: {err}") from None
    print(f"wrote {path}: the policy's merged weights and its tokenizer (AutoModelForCausalLM and AutoTokenizer load them)")
    return 0


def add_cli(subparsers) -> None:
    """Register ``tokengym export RUN_DIR --merge [--out DIR]``."""
    parser = subparsers.add_parser(
        "export", help="write a run's policy as one plain model directory (LoRA adapters merged)",
        description="Write RUN_DIR's policy, LoRA adapters merged into the base weights, with its tokenizer and "
                    "generation config, to --out: a directory that transformers alone loads (no peft, no tokengym). "
                    "Seconds for small models.",
    )
    parser.add_argument("run_dir", help="a directory written by `tokengym train --out`")
    parser.add_argument("--merge", action="store_true", help="merge LoRA adapters into the base weights")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: RUN_DIR/merged)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code (off by default)")
    parser.set_defaults(func=_export)
