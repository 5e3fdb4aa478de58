"""Every judged Sentiment-v0 run of issue 12 on one reward-KL plane (``gain-vs-kl.png``).

Each point is one run judged by ``tokengym eval`` (VADER gain over π_ref against KL(π_θ‖π_ref), 256 fresh
16-token samples): the 2,048-episode runs of ``runs.json``, ``efficiency.json`` and
``heldout-seeds.json``, and the 4,096-episode runs at a lower lr of ``longer-budget.json``. The shaded
corner is the issue's bar (gain ≥ +0.30 at ≤ 6 nats); the dashed lines are 0.06 and 0.09 per nat.
Usage: ``python budget_plot.py`` in this directory.
"""
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def points(path: str) -> list[tuple[float, float]]:
    return [(run["kl"], run["score_gain"]) for run in json.load(open(path))]


def main() -> None:
    short = points("runs.json") + points("efficiency.json") + points("heldout-seeds.json")
    longer = json.load(open("longer-budget.json"))
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.axhspan(0.30, 0.7, xmin=0, xmax=6 / 12, color="tab:green", alpha=0.12, label="the bar: ≥ +0.30 at ≤ 6 nats")
    for slope, style in ((0.06, "--"), (0.09, ":")):
        ax.plot([0, 12], [0, 12 * slope], style, color="grey", lw=1)
        x = min(11.5, 0.66 / slope)  # where the line leaves the plot
        ax.annotate(f"{slope} per nat", (x, x * slope), fontsize=8, color="grey", ha="right", va="bottom")
    ax.scatter(*zip(*short), s=14, color="tab:grey", alpha=0.6,
               label=f"2,048 episodes, every setting tried ({len(short)} runs)")
    markers = {"a2c": "o", "ppo": "s", "grpo": "^", "reinforce": "D"}
    for arm in dict.fromkeys(r["arm"] for r in longer):  # in file order
        runs = [r for r in longer if r["arm"] == arm]
        first = runs[0]
        groups = f", G = {first['group_size']}" if first["group_size"] else ""
        ax.scatter([r["kl"] for r in runs], [r["score_gain"] for r in runs], s=36, marker=markers[first["agent"]],
                   label=f"4,096 episodes: {first['agent']}, lr {first['lr']:g}{groups} ({len(runs)} seeds)")
    ax.set(xlim=(0, 12), ylim=(-0.05, 0.7), xlabel="KL(π_θ‖π_ref), nats per sequence (fresh samples)",
           ylabel="VADER gain over π_ref", title="Sentiment-v0, KL-shaped reward at β = 0.055")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig("gain-vs-kl.png", dpi=120)


if __name__ == "__main__":
    main()
