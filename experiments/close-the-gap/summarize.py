"""Tables of every try for summary.md: runs.jsonl (trained runs), merge.jsonl (merged runs) and
lexical-tilt.jsonl (hand-made tilts), each with the KL overspend (KL ÷ best-of-N's KL for the same
gain) and the fraction of J* − J_ref captured. Usage: python summarize.py > tables.md"""
import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent
BETA, J_STAR, J_REF = 0.055, 0.55, 0.0322  # J*: the importance-sampling estimate (40 prompts × 512 π_ref samples); J_ref: π_ref's VADER (eval)
BON = [(1, 0.0), (4, 0.30), (8, 0.42), (16, 0.54), (64, 0.69)]  # (N, VADER gain of best-of-N), measured on 40 prompts × 512 π_ref samples


def bon_kl(gain):
    """KL bound log N − (N−1)/N of best-of-N at the N whose gain is ``gain`` (log N interpolated)."""
    if gain <= 0:
        return 0.0
    for (n0, g0), (n1, g1) in zip(BON, BON[1:]):
        if gain <= g1 or n1 == BON[-1][0]:
            logn = math.log(n0) + (gain - g0) / (g1 - g0) * (math.log(n1) - math.log(n0))
            n = math.exp(logn)
            return logn - (n - 1) / n
    raise AssertionError


def row(label, seed, episodes, gain, kl, d2, seconds=None):
    overspend = kl / bon_kl(gain) if gain > 0 else float("nan")
    fraction = (gain - BETA * kl) / (J_STAR - J_REF)
    bar_a = "✓" if gain >= 0.30 and overspend <= 2 else ""
    bar_b = "✓" if fraction >= 0.5 else ""
    t = "" if seconds is None else f"{seconds:.0f}"
    return (f"| {label} | {seed} | {episodes} | {gain:+.3f} | {kl:.2f} | {d2:.2f} | {gain / max(kl, 1e-9) ** .5:.3f} | "
            f"{overspend:.1f} {bar_a} | {gain - BETA * kl:+.3f} ({fraction:.2f}) {bar_b} | {t} |")


def main():
    print("| try | seed | episodes | VADER gain | KL nats | distinct-2 | gain/√KL | KL ÷ BoN's (A: ≤ 2) | J − J_ref (share of J* − J_ref; B: ≥ 0.5) | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for line in (HERE / "runs.jsonl").read_text().splitlines():
        r = json.loads(line)
        print(row(r["arm"] + (f" ({r['note']})" if r.get("note") else ""), r["seed"], r["episodes"], r["score_gain"], r["kl"],
                  r["distinct_2_ratio"], r["train_seconds"]))
        for kind in ("ema", "interp"):
            for key, v in (r.get(kind) or {}).items():
                label = f"↳ {r['arm']}, EMA of weights {key}" if kind == "ema" else f"↳ {r['arm']}, θ_ref + {key}·τ (LITI)"
                print(row(label, r["seed"], r["episodes"], v["score_gain"], v["kl"], v["distinct_2_ratio"]))
    if (HERE / "merge.jsonl").exists():
        for line in (HERE / "merge.jsonl").read_text().splitlines():
            m = json.loads(line)
            for key, v in m.items():
                if isinstance(v, dict):
                    print(row(f"merge {m['label']}: {key} (cos {m['cosines_of_task_vectors']})", "-", "-", v["score_gain"], v["kl"],
                              v["distinct_2_ratio"]))
    if (HERE / "lexical-tilt.jsonl").exists():
        for line in (HERE / "lexical-tilt.jsonl").read_text().splitlines():
            t = json.loads(line)
            kind = "history-aware" if t.get("history_aware") else "every state"
            print(row(f"hand-made lexical tilt k = {t['k']} ({kind}), no training", "-", 0, t["score_gain"], t["kl"], t["distinct_2_ratio"]))


if __name__ == "__main__":
    main()
