"""Screening sweep for issue 12 (Sentiment-v0, KL-shaped reward, fixed 16-token episodes, 2,048 episodes in
batches of 32): runs `tokengym train` cells two at a time (one thread each) and prints the mean VADER of the
first 3 and last 5 iterations, the KL of the last 5, the highest KL of any iteration and the final β; with
SWEEP_EVAL=1 it also judges each run with `tokengym eval` (VADER gain, KL and distinct-2 ratio on 256 fresh
samples, as in ../kl-sentiment-defaults). β starts at 0.1 unless an arm passes --beta.
Usage: [SWEEP_OUT=DIR] [SWEEP_EVAL=1] python sweep.py '[[name, seed, [extra flags...]], ...]' (default DIR /tmp/sweep)."""
import json, os, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
BASE = ["--env", "tokengym/Sentiment-v0", "--reward", "kl-shaped", "--min-new-tokens", "16", "--episodes", "2048",
        "--batch-size", "32", "--beta", "0.1", "--quiet"]
def cell(name, seed, extra):
    out = f"{os.environ.get('SWEEP_OUT', '/tmp/sweep')}/{name}-s{seed}"
    if not os.path.exists(f"{out}/policy"):
        subprocess.run(["rm", "-rf", out])
        r = subprocess.run([sys.executable, "-m", "tokengym", "train", *BASE, *extra, "--seed", str(seed), "--out", out],
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
        if r.returncode:
            return name, seed, "ERR " + r.stderr[-300:]
    judged = {}
    if os.environ.get("SWEEP_EVAL") == "1":
        if not os.path.exists(f"{out}/eval.json"):
            subprocess.run([sys.executable, "-m", "tokengym", "eval", "--run", out], capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        ev = json.load(open(f"{out}/eval.json"))
        judged = {"eval_gain": round(ev["score_gain"], 3), "eval_kl": round(ev["kl"], 2), "d2": round(ev["distinct_2_ratio"], 2)}
    rows = [json.loads(l) for l in open(f"{out}/metrics.jsonl")]
    last = rows[-5:]
    keys = [k for k in rows[0] if k.startswith("reward/") and "kl" not in k]
    m = lambda k: sum(r[k] for r in last) / len(last)
    return name, seed, {"vader": round(m(keys[0]), 3), "vader_first": round(sum(r[keys[0]] for r in rows[:3]) / 3, 3),
                        "kl": round(m("kl_ref"), 2), "kl_max": round(max(r["kl_ref"] for r in rows), 2), "beta": round(m("beta"), 3), **judged}
cells = json.loads(sys.argv[1])  # [[name, seed, extra], ...]
with ThreadPoolExecutor(2) as pool:
    for name, seed, res in pool.map(lambda c: cell(*c), cells):
        print(name, seed, res, flush=True)
