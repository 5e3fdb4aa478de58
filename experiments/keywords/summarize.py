"""Keywords-v0: REINFORCE and GRPO against the untrained policy, each run judged by `tokengym eval`.

    python experiments/keywords/summarize.py RUNS_DIR > experiments/keywords/summary.md

RUNS_DIR holds ``<agent>-<seed>/`` run directories, each with the ``eval.json`` that `tokengym eval`
wrote: 256 fresh samples of π_θ and of π_ref (the untrained policy) on the same prompts and random
numbers. z = gain / standard error of the gain (two independent means over 256 episodes each), the
quantity ``tests/test_learning.py`` bounds below by 4.
"""
import json
import math
import statistics
import sys
from pathlib import Path

runs_dir = Path(sys.argv[1])
print("| agent | seed | untrained → trained | gain | SE | z | KL(π_θ‖π_ref) nats | distinct-2 ratio |")
print("|---|---|---|---|---|---|---|---|")
groups: dict[str, list] = {}
records = []
for run in sorted(runs_dir.iterdir()):
    agent, seed = run.name.rsplit("-", 1)
    report = json.loads((run / "eval.json").read_text())
    policy, reference, n = report["policy"], report["reference"], report["episodes"]
    se = math.sqrt((policy["score_std"] ** 2 + reference["score_std"] ** 2) / n)
    z = report["score_gain"] / se
    groups.setdefault(agent, []).append((report["score_gain"], report["kl"], z))
    records.append({"agent": agent, "seed": int(seed), "reference_score": reference["score"], "score": policy["score"],
                    "score_gain": report["score_gain"], "se": se, "z": z, "kl": report["kl"],
                    "distinct_2_ratio": report["distinct_2_ratio"]})
    print(f"| {agent} | {seed} | {reference['score']:.3f} → {policy['score']:.3f} | {report['score_gain']:+.3f} | {se:.3f} | "
          f"{z:.1f} | {report['kl']:.1f} | {report['distinct_2_ratio']:.2f} |")
print()
print("| agent | seeds | gain, mean ± std | KL, mean ± std | smallest z |")
print("|---|---|---|---|---|")
for agent, rows in groups.items():
    gains, kls, zs = zip(*rows)
    print(f"| {agent} | {len(rows)} | {statistics.mean(gains):+.3f} ± {statistics.stdev(gains):.3f} | "
          f"{statistics.mean(kls):.1f} ± {statistics.stdev(kls):.1f} | {min(zs):.1f} |")
print()
print("Commands (OMP_NUM_THREADS=1, seeds S = 0, 1, 2; the agents' defaults otherwise: groups of 4, REINFORCE with the "
      "per-step leave-one-out baseline):")
print()
for agent in groups:
    print(f"    tokengym train --env tokengym/Keywords-v0 --agent {agent} --episodes 960 --batch-size 16 --lr 5e-4 "
          f"--seed S --out RUNS_DIR/{agent}-S --quiet && tokengym eval --run RUNS_DIR/{agent}-S")
(Path(__file__).parent / "runs.json").write_text(json.dumps(records, indent=1) + "\n")
