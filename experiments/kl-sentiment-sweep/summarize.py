"""Summarise the sweep's runs (written by sweep.py under /tmp/sweep) as summary.md and runs.json."""
import json, statistics as st, sys
from pathlib import Path

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/sweep")
ARMS = {
    "reinforce-t5": "REINFORCE, RLOO G=4, lr 3e-4, adaptive β 0.1 → 5 nats",
    "reinforce-lr1e3": "REINFORCE, RLOO G=4, lr 1e-3, adaptive β 0.1 → 4",
    "reinforce-lr5e4": "REINFORCE, RLOO G=4, lr 5e-4, adaptive β 0.1 → 4",
    "reinforce-b03": "REINFORCE, RLOO G=4, lr 5e-4, adaptive β 0.3 → 4",
    "a2c-t5": "A2C, lr 1e-4, adaptive β 0.1 → 5",
    "a2c-lr3e4": "A2C, lr 3e-4, adaptive β 0.1 → 4",
    "a2c-fix01": "A2C, lr 3e-4, fixed β 0.1",
    "a2c-fix007": "A2C, lr 3e-4, fixed β 0.07",
    "a2c-fix006": "A2C, lr 3e-4, fixed β 0.06",
    "a2c-fix005": "A2C, lr 3e-4, fixed β 0.05",
    "ppo-lr3e4": "PPO 4×4, lr 3e-4, adaptive β 0.1 → 4",
    "ppo-1x1": "PPO 1 epoch × 1 minibatch, lr 3e-4, adaptive β 0.1 → 4",
    "ppo-fix01": "PPO 1×1, lr 3e-4, fixed β 0.1",
    "ppo-fix007": "PPO 1×1, lr 3e-4, fixed β 0.07",
    "ppo-fix006": "PPO 1×1, lr 3e-4, fixed β 0.06",
    "ppo-fix005": "PPO 1×1, lr 3e-4, fixed β 0.05",
}
runs, lines = {}, ["| arm | seeds | per seed: VADER gain @ KL (last 5) | gain, mean ± std | KL, mean ± std | highest KL |", "|---|---|---|---|---|---|"]
for arm, what in ARMS.items():
    cells = []
    for seed in (0, 1, 2):
        path = ROOT / f"{arm}-s{seed}" / "metrics.jsonl"
        if not (ROOT / f"{arm}-s{seed}" / "policy").is_dir():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        first = sum(r["reward/vader"] for r in rows[:3]) / 3
        last = sum(r["reward/vader"] for r in rows[-5:]) / 5
        kl = sum(r["kl_ref"] for r in rows[-5:]) / 5
        cells.append({"seed": seed, "vader_first": first, "vader_last": last, "gain": last - first, "kl": kl,
                      "kl_max": max(r["kl_ref"] for r in rows)})
    if not cells:
        continue
    runs[arm] = {"settings": what, "seeds": cells}
    gains, kls = [c["gain"] for c in cells], [c["kl"] for c in cells]
    sd = lambda xs: f" ± {st.stdev(xs):.2f}" if len(xs) > 1 else ""  # noqa: E731
    per_seed = ", ".join("s%d %+.2f @ %.1f" % (c["seed"], c["gain"], c["kl"]) for c in cells)
    lines.append(f"| {what} | {len(cells)} | {per_seed} | "
                 f"{st.mean(gains):+.2f}{sd(gains)} | {st.mean(kls):.1f}{sd(kls)} | {max(c['kl_max'] for c in cells):.1f} |")
here = Path(__file__).parent
(here / "runs.json").write_text(json.dumps(runs, indent=1))
(here / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
