"""Summarise the fixed-β sweep judged by `tokengym eval` (issue 12): for each arm and seed, the VADER
gain of 256 fresh 16-token samples over π_ref's, the sampled KL(π_θ‖π_ref) per sequence and the
distinct-2 ratio; then mean ± std over seeds. Usage: python summarize.py RUNS_DIR [RUNS_DIR ...] > summary.md
(each RUNS_DIR holds ARM-sS/ run directories, each with eval.json and metrics.jsonl)."""
import json, statistics, sys
from pathlib import Path

ARMS = {  # run-directory prefix -> label
    "a2c-b055": "A2C, lr 3e-4, β 0.055 (**default**)",
    "ppo11-b055": "PPO 1 epoch × 1 minibatch, lr 3e-4, β 0.055 (**default**)",
    "ppo11-b055-lr25": "PPO 1 × 1, lr 2.5e-4, β 0.055",
    "rf-loo-b055-lr25": "REINFORCE RLOO G=4 per step, lr 2.5e-4, β 0.055 (**default**)",
    "rf-loo-b055-lr2": "REINFORCE RLOO G=4 per step, lr 2e-4, β 0.055",
    "rf-loo-b05": "REINFORCE RLOO G=4 per step, lr 3e-4, β 0.05",
    "grpo-b055-lr25": "GRPO G=4, KL in the reward only, lr 2.5e-4, β 0.055 (**default**)",
    "grpo-b055-lr2": "GRPO G=4, KL in the reward only, lr 2e-4, β 0.055",
    "grpo-kr-b05": "GRPO G=4, KL in the reward only, lr 3e-4, β 0.05",
    "rf-g8-lr3": "REINFORCE RLOO G=8 per step, lr 3e-4, β 0.055",
    "rf-g8-lr2": "REINFORCE RLOO G=8 per step, lr 2e-4, β 0.055",
    "rf-g8-lr225": "REINFORCE RLOO G=8 per step, lr 2.25e-4, β 0.055",
    "grpo-g8": "GRPO G=8, KL in the reward only, lr 2.5e-4, β 0.055",
    "grpo-g8-lr2": "GRPO G=8, KL in the reward only, lr 2e-4, β 0.055",
    "grpo-drgrpo": "GRPO G=4 unscaled advantages (Dr. GRPO), lr 2.5e-4, β 0.055",
    "ppo-nowhiten": "PPO 1 × 1 without advantage whitening, lr 3e-4, β 0.055",
    "a2c-lr2-b05": "A2C, lr 2e-4, β 0.05",
    "ppo11-lr2-b05": "PPO 1 × 1, lr 2e-4, β 0.05",
}
roots, records = [Path(a) for a in sys.argv[1:]], []
print("| arm (fixed β) | seeds | per seed: gain @ KL (distinct-2 ratio) | VADER gain | KL nats | distinct-2 ratio | highest training KL |")
print("|---|---|---|---|---|---|---|")
for arm, label in ARMS.items():
    runs = sorted((d for root in roots for d in root.glob(f"{arm}-s[0-9]") if (d / "eval.json").exists()), key=lambda d: d.name)
    if not runs:
        continue
    ev = [json.loads((d / "eval.json").read_text()) for d in runs]
    kl_max = [max(json.loads(l)["kl_ref"] for l in (d / "metrics.jsonl").read_text().splitlines()) for d in runs]
    ms = lambda xs, d=2: f"{statistics.mean(xs):+.{d}f} ± {statistics.stdev(xs):.{d}f}" if len(xs) > 1 else f"{xs[0]:+.{d}f}"
    per = ", ".join(f"{d.name[-2:]} {e['score_gain']:+.2f} @ {e['kl']:.1f} ({e['distinct_2_ratio']:.2f})" for d, e in zip(runs, ev))
    print(f"| {label} | {len(runs)} | {per} | {ms([e['score_gain'] for e in ev])} | {ms([e['kl'] for e in ev]).lstrip('+')} "
          f"| {ms([e['distinct_2_ratio'] for e in ev]).lstrip('+')} | {max(kl_max):.1f} |")
    records += [{"arm": arm, "seed": int(d.name[-1]), **{k: e[k] for k in ("score_gain", "kl", "distinct_2_ratio")},
                 "reference_score": e["reference"]["score"], "score": e["policy"]["score"], "max_training_kl": m,
                 "samples": e["policy"]["samples"]} for d, e, m in zip(runs, ev, kl_max)]
(Path(__file__).parent / "runs.json").write_text(json.dumps(records, indent=1) + "\n")

# The reward–KL frontier: each arm's mean ± std over seeds (gain against KL), arms of one agent joined.
from tokengym.benchmarks import plots  # noqa: E402

def short(label: str) -> str:
    """'PPO 1 × 1, lr 2.5e-4, β 0.055 (**default**)' -> 'lr 2.5e-4 β .055 default'."""
    parts = [p for p in label.replace(" (**default**)", "").split(", ") if p.startswith(("lr", "β"))]
    return " ".join(parts).replace("β 0.", "β .") + (" default" if "default" in label else "")


AGENT = {"a2c": "a2c", "ppo11": "ppo", "ppo": "ppo", "rf": "reinforce", "grpo": "grpo"}
plot_records = [{"env": "tokengym/Sentiment-v0", "agent": AGENT[r["arm"].split("-")[0]], "config": short(ARMS[r["arm"]]),
                 "seed": r["seed"], "final_eval": {"kl": r["kl"], "score_gain": r["score_gain"]}}
                for r in records if "β 0.055" in ARMS[r["arm"]]]  # the default β's arms
plots.plot_frontier(plot_records, Path(__file__).parent / "frontier.png", x="final_eval/kl", y="final_eval/score_gain",
                    xlabel="KL(π_θ‖π_ref) per sequence, 256 fresh samples", ylabel="VADER gain over π_ref, 256 fresh samples")
