"""Best-of-N from π_ref on the eval's prompts: VADER gain and lexicon-token counts per sequence of the
selected samples, against π_ref's samples and a trained policy's (python bon_anatomy.py [RUN_DIR])."""
import json
import sys

import gymnasium as gym
import torch

import tokengym.envs  # noqa: F401
from tokengym.agents.policy import Policy
from tokengym.benchmarks.evaluate import EVAL_SEED

torch.set_num_threads(1)
N, PROMPTS = 8, 64
env = gym.make_vec("tokengym/Sentiment-v0", num_envs=N * 8, min_new_tokens=16).unwrapped
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

lexicon = SentimentIntensityAnalyzer().lexicon
tok = env.tokenizer
V = env.reference.model.get_output_embeddings().weight.shape[0]
valence = torch.tensor([lexicon.get(tok.decode([v]).strip().lower(), 0.0) for v in range(V)])


@torch.no_grad()
def sample(model, group):
    policy = Policy(model, sampling=env.sampling)
    gen = torch.Generator().manual_seed(EVAL_SEED)
    scores, pos, neg = [], [], []
    for batch in range(PROMPTS // 8):
        obs, _ = env.reset(seed=EVAL_SEED if batch == 0 else None, options={"group_size": group} if group > 1 else None)
        P, T = env.prompt_width, env.max_new_tokens
        policy.begin(obs["input_ids"][:, :P], obs["attention_mask"][:, :P].bool())
        for t in range(T):
            step = policy.act(gen)
            obs, _, _, _, info = env.step(step.actions, logprobs=step.logprobs)
            if t + 1 < T:
                policy.advance(step.actions)
        ids = obs["input_ids"][:, P:]
        scores.append(info["reward_components"]["vader"])
        pos.append((valence[ids] > 0).sum(-1).float())
        neg.append((valence[ids] < 0).sum(-1).float())
    return torch.cat(scores), torch.cat(pos), torch.cat(neg)


s, p, n = sample(env.reference.model, N)
best = s.view(-1, N).argmax(1) + torch.arange(0, len(s), N)
out = {"ref": {"vader": s.mean().item(), "positive_tokens": p.mean().item(), "negative_tokens": n.mean().item()},
       f"best_of_{N}": {"vader": s[best].mean().item(), "positive_tokens": p[best].mean().item(), "negative_tokens": n[best].mean().item()}}
for d in sys.argv[1:]:
    s, p, n = sample(Policy.from_pretrained(f"{d}/policy", device="cpu").model, 1)
    out[d] = {"vader": s.mean().item(), "positive_tokens": p.mean().item(), "negative_tokens": n.mean().item()}
print(json.dumps(out, indent=1))
json.dump(out, open("bon-anatomy.json", "w"), indent=1)
