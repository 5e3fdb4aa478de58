"""How much of VADER a Bradley-Terry preference draw carries on Sentiment-v0: pairs of π_ref samples
of one prompt, P(y1 > y2) = σ(r1 − r2)."""
import gymnasium as gym, torch, json
import tokengym  # noqa: F401
from tokengym.benchmarks.targets import sample_for_targets
env = gym.make_vec("tokengym/Sentiment-v0", num_envs=64, min_new_tokens=16, reward="holistic")
s = sample_for_targets(env, n_prompts=40, n_per_prompt=64, seed=7)
r = sum(s.components.values())  # (40, 64) VADER
r1, r2 = r[:, 0::2], r[:, 1::2]
d = r1 - r2
p = torch.sigmoid(d)
out = {"reward_std_within_prompt": float(r.std(dim=1).mean()), "mean_abs_diff": float(d.abs().mean()),
       "mean_abs_p_minus_half": float((p - 0.5).abs().mean()),
       "label_agrees_with_sign": float((0.5 + (p - 0.5).abs()).mean()),
       "ties": float((d == 0).double().mean())}
print(json.dumps(out, indent=1))
