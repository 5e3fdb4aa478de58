"""frontier.png: every try of this folder on the VADER-gain / KL plane, against best-of-N (its KL
bound log N − (N−1)/N at the gains measured on 40 prompts × 512 reference samples), the bar-A line (twice best-of-N's KL) and the
bar-B line (gain − 0.055·KL = ½(J* − J_ref)). Usage: python plot.py"""
import json
import math
from pathlib import Path

from tokengym.lm.plotting import pyplot, save_figure
from summarize import BETA, BON, J_REF, J_STAR, bon_kl

HERE = Path(__file__).resolve().parent
plt = pyplot()
fig, ax = plt.subplots(figsize=(7.5, 5.2))
gains = [g / 100 for g in range(1, 70)]
ax.plot([bon_kl(g) for g in gains], gains, color="black", lw=2, label="best-of-N (KL bound), N = 1…64")
ax.plot([2 * bon_kl(g) for g in gains if g >= 0.3], [g for g in gains if g >= 0.3], color="black", ls="--", lw=1,
        label="bar A: twice best-of-N's KL, gain ≥ 0.30")
kls = [k / 10 for k in range(0, 121)]
half = 0.5 * (J_STAR - J_REF)
ax.plot(kls, [half + BETA * k for k in kls], color="tab:gray", ls=":", lw=1.2, label="bar B: gain − 0.055·KL = ½(J* − J_ref)")
ax.plot([math.log(n) - (n - 1) / n for n, _ in BON], [g for _, g in BON], "ko", ms=4)
styles = {"single run": ("tab:blue", "o"), "noise control": ("tab:gray", "x"), "merge": ("tab:red", "D"),
          "merge of 6 runs (over the budget)": ("darkred", "*"), "hand-made tilt": ("tab:green", "^"), "BoN distillation": ("tab:purple", "s"), "EMA / LITI": ("tab:cyan", "v")}
points = {k: [] for k in styles}
for line in (HERE / "runs.jsonl").read_text().splitlines():
    r = json.loads(line)
    kind = "noise control" if r.get("noise") else "BoN distillation" if r["agent"] == "bond-sft" else "single run"
    points[kind].append((r["kl"], r["score_gain"]))
    for key in ("ema", "interp"):
        for v in (r.get(key) or {}).values():
            points["EMA / LITI"].append((v["kl"], v["score_gain"]))
for line in (HERE / "merge.jsonl").read_text().splitlines():
    m = json.loads(line)
    if "alone" in m["label"]:
        continue
    kind = "merge of 6 runs (over the budget)" if "over the budget" in m["label"] else "merge"
    for v in m.values():
        if isinstance(v, dict):
            points[kind].append((v["kl"], v["score_gain"]))
for line in (HERE / "lexical-tilt.jsonl").read_text().splitlines():
    t = json.loads(line)
    points["hand-made tilt"].append((t["kl"], t["score_gain"]))
for kind, (color, marker) in styles.items():
    if points[kind]:
        xs, ys = zip(*points[kind])
        ax.scatter(xs, ys, c=color, marker=marker, s=22, alpha=0.8, label=kind)
ax.set_xlim(0, 12)
ax.set_ylim(-0.05, 0.8)
ax.set_xlabel("KL(π‖π_ref), nats per 16-token continuation (tokengym eval)")
ax.set_ylabel("VADER gain over π_ref")
ax.set_title("Sentiment-v0, β = 0.055: every try of the close-the-gap study")
ax.legend(fontsize=7, loc="lower right")
fig.tight_layout()
save_figure(fig, HERE / "frontier.png", dpi=120)
