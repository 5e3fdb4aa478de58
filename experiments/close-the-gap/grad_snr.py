"""Per-tensor gradient signal-to-noise at θ_ref: A2C's loss on Sentiment-v0 (README job settings),
K batches of 32 at the same weights, VADER vs a pure-noise reward. For each parameter tensor:
|mean gradient|² (signal, bias-corrected) and the per-batch variance trace (noise), plus the RMS of
Adam's normaliser. Writes grad-snr.json. Usage: OMP_NUM_THREADS=1 python grad_snr.py [K]"""
import json
import sys

import gymnasium as gym
import numpy as np
import torch

import tokengym.envs  # noqa: F401
from tokengym.agents import A2C, A2CConfig
from tokengym.agents.policy import Policy
from tokengym.rewards.holistic import Holistic
from tokengym.rewards.kl import KLShaped

torch.set_num_threads(1)
K = int(sys.argv[1]) if len(sys.argv) > 1 else 16


def grads(noise: bool):
    rng = np.random.default_rng(0)
    kwargs = {"reward": "kl-shaped"}
    if noise:
        kwargs["reward"] = KLShaped(Holistic(lambda prompts, completions: rng.normal(0, 0.268, len(completions)).tolist(), name="noise"))
    env = gym.make_vec("tokengym/Sentiment-v0", num_envs=32, min_new_tokens=16, **kwargs)
    torch.manual_seed(0)
    policy = Policy.from_pretrained(env.unwrapped.model, device=env.unwrapped.device, value_head=True)
    agent = A2C(env, A2CConfig(seed=0, lr=1.5e-4, value_coef=0.0), policy=policy)
    agent.optimizer.step = lambda *a, **k: None  # measure at θ_ref: no step
    out = []
    for _ in range(K):
        rollout = agent.collect()
        agent.policy.train()
        agent.update(rollout)
        agent.policy.eval()
        # gradients survive: minibatch_step leaves them after the (disabled) step; clipping already applied
        out.append({n: p.grad.detach().clone() for n, p in agent.policy.model.named_parameters() if p.grad is not None})
    return out


def group(name):
    if "wte" in name: return "wte (tied emb/head)"
    if "wpe" in name: return "wpe"
    if "ln" in name: return "layernorms"
    block = name.split(".")[2]
    kind = "attn" if "attn" in name else "mlp"
    return f"h.{block}.{kind}"


result = {}
for arm in ("vader",):
    gs = grads(arm == "noise")
    stats = {}
    for n in gs[0]:
        stack = torch.stack([g[n].flatten() for g in gs])  # (K, numel)
        mean = stack.mean(0)
        var = stack.var(0)  # per-batch noise
        signal = (mean.pow(2) - var / K).sum().item()  # unbiased |E g|²
        noise = var.sum().item()
        rms = stack.pow(2).mean(0).sqrt()
        g = group(n)
        s = stats.setdefault(g, {"signal": 0.0, "noise": 0.0, "numel": 0, "frac_tiny": 0.0})
        s["signal"] += signal
        s["noise"] += noise
        s["numel"] += mean.numel()
        s["frac_tiny"] += (rms < 1e-8).sum().item()
    tot = {k: sum(v[k] for v in stats.values()) for k in ("signal", "noise", "numel")}
    result[arm] = {"by_group": stats, "total": tot,
                   "grad_norm_mean": float(np.mean([torch.sqrt(sum(g[n].pow(2).sum() for n in g)).item() for g in gs]))}
    print(arm, "grad norm", result[arm]["grad_norm_mean"], "signal", tot["signal"], "noise/batch", tot["noise"])
    for k, v in stats.items():
        print(f"  {k:22s} numel {v['numel']:8d} signal {v['signal']:.3e} noise {v['noise']:.3e} snr {v['signal']/v['noise']:.3f} tiny {v['frac_tiny']/v['numel']:.2f}")
json.dump(result, open("grad-snr.json", "w"), indent=1)
