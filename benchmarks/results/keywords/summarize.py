"""Keywords-v0: final keyword-inclusion reward per seed against the untrained policy.

    python benchmarks/results/keywords/summarize.py > benchmarks/results/keywords/summary.md

Reads ``untrained.json`` (from ``untrained.py``) and ``runs/<agent>-<seed>/metrics.jsonl`` (from
``tokengym train``). Final = mean of the last 5 iterations (80 episodes); its standard error is the
std of those 5 iteration means / √5. ``z`` is (final − untrained) / √(SE_final² + SE_untrained²).
"""
import json
import math
import statistics
from pathlib import Path

here = Path(__file__).parent
untrained = json.loads((here / "untrained.json").read_text())
print(f"Untrained policy: {untrained['mean']:.4f} ± {untrained['stderr']:.4f} (SE) over {untrained['episodes']} episodes, "
      f"hit rate {untrained['hit_rate']:.3f}.\n")
print("| agent | seed | first iteration | final (last 5 iterations) | SE | z vs untrained | KL to ref (last 5) |")
print("|---|---|---|---|---|---|---|")
groups: dict[str, list] = {}
for run in sorted((here / "runs").iterdir()):
    agent, seed = run.name.rsplit("-", 1)
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = history[-5:]
    rewards = [h["reward/keyword_inclusion"] for h in last]
    final, se = statistics.mean(rewards), statistics.stdev(rewards) / math.sqrt(len(rewards))
    kl = statistics.mean(h["kl_ref"] for h in last)
    z = (final - untrained["mean"]) / math.hypot(se, untrained["stderr"])
    groups.setdefault(agent, []).append((final, kl, z))
    print(f"| {agent} | {seed} | {history[0]['reward/keyword_inclusion']:.3f} | {final:.3f} | {se:.3f} | {z:.1f} | {kl:.1f} |")
print("\n| agent | seeds | final reward, mean ± std | KL to ref, mean ± std | smallest z |")
print("|---|---|---|---|---|")
for agent, rows in groups.items():
    finals, kls, zs = zip(*rows)
    sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
    print(f"| {agent} | {len(rows)} | {statistics.mean(finals):.3f} ± {sd(finals):.3f} | {statistics.mean(kls):.1f} ± {sd(kls):.1f} | {min(zs):.1f} |")
