"""Where does a trained policy's KL(π_θ‖π_ref) go? For 256 samples of π_θ (the eval's prompts and
seed), the exact per-state KL Σ_v π_θ(v|s)·log(π_θ(v|s)/π_ref(v|s)) is split by the class of the
token v: a VADER lexicon word (positive or negative valence), '!' or other. Also reports the
probability mass each class gains. Usage: python kl_anatomy.py RUN_DIR [RUN_DIR ...]"""
import json
import sys

import gymnasium as gym
import torch

import tokengym.envs  # noqa: F401
from tokengym.agents.policy import Policy
from tokengym.benchmarks.evaluate import EVAL_SEED
from tokengym.lm.scoring import forward_responses

torch.set_num_threads(1)


def token_classes(tokenizer, V):
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    lexicon = SentimentIntensityAnalyzer().lexicon
    cls = torch.zeros(V, dtype=torch.long)  # 0 other, 1 positive word, 2 negative word, 3 '!'
    for v in range(V):
        text = tokenizer.decode([v]).strip().lower()
        if "!" in text:
            cls[v] = 3
        elif text in lexicon:
            cls[v] = 1 if lexicon[text] > 0 else 2
    return cls


@torch.no_grad()
def anatomy(run_dir):
    env = gym.make_vec("tokengym/Sentiment-v0", num_envs=64, min_new_tokens=16).unwrapped
    policy = Policy.from_pretrained(f"{run_dir}/policy", device=env.device)
    policy.sampling = env.sampling
    ref = env.reference
    cls = token_classes(env.tokenizer, policy.vocab_size)
    names = ["other", "positive word", "negative word", "!"]
    kl_by = torch.zeros(4, dtype=torch.float64)
    mass_by = torch.zeros(4, 2, dtype=torch.float64)  # (class, [π_θ, π_ref])
    states = 0
    gen = torch.Generator().manual_seed(EVAL_SEED)
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
        lp = torch.log_softmax(forward_responses(policy.model, ids, mask, P)[0].float(), -1)  # (B, T, V)
        with ref.context():
            lr = torch.log_softmax(forward_responses(ref.model, ids, mask, P)[0].float(), -1)
        valid = mask[:, P:]  # (B, T)
        contrib = lp.exp() * (lp - lr)  # (B, T, V)
        for c in range(4):
            sel = cls == c
            kl_by[c] += contrib[..., sel].sum(-1)[valid].sum().double()
            mass_by[c, 0] += lp.exp()[..., sel].sum(-1)[valid].sum().double()
            mass_by[c, 1] += lr.exp()[..., sel].sum(-1)[valid].sum().double()
        states += int(valid.sum())
    episodes = 256
    out = {"run": run_dir, "kl_per_sequence": float(kl_by.sum() / episodes),
           "kl_per_sequence_by_class": {n: round(float(kl_by[i] / episodes), 3) for i, n in enumerate(names)},
           "mass_per_state_by_class": {n: [round(float(mass_by[i, 0] / states), 4), round(float(mass_by[i, 1] / states), 4)]
                                       for i, n in enumerate(names)},
           "class_sizes": {n: int((cls == i).sum()) for i, n in enumerate(names)}}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    results = [anatomy(d) for d in sys.argv[1:]]
    with open("kl-anatomy.jsonl", "a") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
