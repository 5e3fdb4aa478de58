"""Per-token probability mass of a trained policy against π_ref on the policy's own states (256
eval samples): the lexicon tokens with the largest mass ratios, and the spread of the ratios.
Usage: python word_ratios.py RUN_DIR"""
import json
import sys

import gymnasium as gym
import torch

import tokengym.envs  # noqa: F401
from tokengym.agents.policy import Policy
from tokengym.benchmarks.evaluate import EVAL_SEED
from tokengym.lm.scoring import forward_responses

torch.set_num_threads(1)
env = gym.make_vec("tokengym/Sentiment-v0", num_envs=64, min_new_tokens=16).unwrapped
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

lexicon = SentimentIntensityAnalyzer().lexicon
tok = env.tokenizer
policy = Policy.from_pretrained(f"{sys.argv[1]}/policy", device="cpu")
policy.sampling = env.sampling
V = policy.vocab_size
valence = torch.tensor([lexicon.get(tok.decode([v]).strip().lower(), 0.0) for v in range(V)])
mass_p, mass_r = torch.zeros(V, dtype=torch.float64), torch.zeros(V, dtype=torch.float64)
gen = torch.Generator().manual_seed(EVAL_SEED)
with torch.no_grad():
    for batch in range(4):
        obs, _ = env.reset(seed=EVAL_SEED if batch == 0 else None)
        P, T = env.prompt_width, env.max_new_tokens
        policy.begin(obs["input_ids"][:, :P], obs["attention_mask"][:, :P].bool())
        for t in range(T):
            step = policy.act(gen)
            obs, *_ = env.step(step.actions, logprobs=step.logprobs)
            if t + 1 < T:
                policy.advance(step.actions)
        ids, mask = obs["input_ids"], obs["attention_mask"].bool()
        valid = mask[:, P:]
        lp = torch.softmax(forward_responses(policy.model, ids, mask, P)[0].float(), -1)[valid]
        lr = torch.softmax(forward_responses(env.reference.model, ids, mask, P)[0].float(), -1)[valid]
        mass_p += lp.sum(0).double()
        mass_r += lr.sum(0).double()
ratio = mass_p / mass_r
out = {}
for name, sel in (("positive", valence > 0), ("negative", valence < 0), ("other", valence == 0)):
    idx = sel.nonzero().flatten()
    r = ratio[idx]
    share = mass_p[idx] / mass_p[idx].sum()
    top = idx[torch.argsort(mass_p[idx] - mass_r[idx], descending=True)[:8]]
    out[name] = {"mass_ratio": round(float(mass_p[idx].sum() / mass_r[idx].sum()), 3),
                 "mass_weighted_log_ratio": round(float((share * r.log()).sum()), 3),
                 "largest_gains": [(tok.decode([int(v)]), round(float(ratio[v]), 2), round(float(mass_r[v] / mass_r.sum() * 16), 4)) for v in top]}
out["run"] = sys.argv[1]
print(json.dumps(out, indent=1))
json.dump(out, open("word-ratios.json", "w"), indent=1, ensure_ascii=False)
