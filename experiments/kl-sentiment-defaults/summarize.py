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

# The reward–KL frontier: each β = 0.055 arm's mean ± std over seeds, coloured by agent, the defaults filled.
import statistics as st  # noqa: E402

from tokengym.lm.plotting import pyplot, save_figure  # noqa: E402

COLOURS = {"a2c": "tab:orange", "ppo11": "tab:green", "ppo": "tab:olive", "rf": "tab:blue", "grpo": "tab:red"}
plt = pyplot()
fig, ax = plt.subplots(figsize=(10, 5.2))
for arm, label in ARMS.items():
    runs = [r for r in records if r["arm"] == arm]
    if not runs or "β 0.055" not in label:
        continue
    kl, gain = [r["kl"] for r in runs], [r["score_gain"] for r in runs]
    default = "default" in label
    ax.errorbar(st.mean(kl), st.mean(gain), xerr=st.stdev(kl) if len(kl) > 1 else 0, yerr=st.stdev(gain) if len(gain) > 1 else 0,
                fmt="o" if default else "s", mfc=None if default else "white", ms=8 if default else 6, capsize=3,
                color=COLOURS[arm.split("-")[0]], label=f"{label.replace('**', '').replace(', β 0.055', '')} (n={len(runs)})")
ax.axhline(0.30, color="gray", ls="--", lw=0.8)
ax.axvline(6.0, color="gray", ls="--", lw=0.8)
ax.text(3.6, 0.305, "issue 12 bar: gain ≥ +0.30, KL ≤ 6", fontsize=8, color="gray")
ax.set_xlabel("KL(π_θ‖π_ref) per sequence, 256 fresh samples")
ax.set_ylabel("VADER gain over π_ref, 256 fresh samples")
ax.set_title("Sentiment-v0, β = 0.055, 2,048 episodes (filled: defaults)")
ax.grid(alpha=0.3)
ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
fig.tight_layout()
save_figure(fig, Path(__file__).parent / "frontier.png")
