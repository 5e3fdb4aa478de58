"""Summarise runs.jsonl: per config, the exact KL(π_θ‖π*) averaged over the last 4 evaluations
(the last 20 iterations) of each seed, then mean ± std over seeds.

    python experiments/calibration-ablation/summarize.py > experiments/calibration-ablation/summary.md
"""
import json
import statistics
from pathlib import Path

runs = [json.loads(line) for line in Path(__file__).with_name("runs.jsonl").read_text().splitlines()]
groups: dict[str, list] = {}
for r in runs:
    groups.setdefault(r["name"], []).append(r)
print("| config | agent | options | iterations × batch | start | KL(π_θ‖π*), last 20 iterations, per seed | mean ± std | worst final/start |")
print("|---|---|---|---|---|---|---|---|")
for name, rs in groups.items():
    tails = [sum(r["kls"][-4:]) / len(r["kls"][-4:]) for r in rs]
    spread = statistics.stdev(tails) if len(tails) > 1 else 0.0
    options = " ".join(f"{k}={v}" for k, v in rs[0]["options"].items())
    print(f"| {name} | {rs[0]['agent']} | {options} | {rs[0]['iterations']} × {rs[0]['batch_size']} | {rs[0]['start']:.3f} | "
          f"{', '.join(f'{t:.3f}' for t in tails)} (seeds {', '.join(str(r['seed']) for r in rs)}) | "
          f"{statistics.mean(tails):.3f} ± {spread:.3f} | {max(r['ratio'] for r in rs):.3f} |")
