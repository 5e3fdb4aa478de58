import json, sys
for l in open(sys.argv[1] if len(sys.argv) > 1 else "runs.jsonl"):
    r = json.loads(l)
    extra = ""
    for k in ("ema", "interp"):
        if r.get(k):
            extra += f" {k}:" + " ".join(f"{d}→{v['score_gain']:+.3f}@{v['kl']:.2f}({v['score_gain']/max(v['kl'],1e-3)**.5:.3f})" for d, v in r[k].items())
    print(f"{r['arm']:36s} s{r['seed']} {r['episodes']:5d} {r['score_gain']:+.3f} @ {r['kl']:5.2f} d2 {r['distinct_2_ratio']:.2f} c {r['gain_per_sqrt_kl']:.3f} J-Jr {r['J_minus_Jref']:+.3f} {r['train_seconds']:.0f}s{extra}")
