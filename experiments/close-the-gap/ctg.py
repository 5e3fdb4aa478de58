"""Drive one Sentiment-v0 run for the close-the-gap study and judge it like `tokengym eval --run DIR`.

Each run trains through ``tokengym.agents.train.run`` (the code path of ``tokengym train``) with the
README job's settings (KL-shaped reward at the default β, 16-token continuations, batches of 32)
unless a flag changes them, then is judged by ``benchmarks.evaluate.evaluate_run`` (256 fresh
episodes, seed 20261122), and one JSON line is appended to ``runs.jsonl`` beside this script.

Experimental hooks that are not (yet) library switches are applied to the built agent here:

* ``--noise``: VADER replaced by N(0, 0.268²) per episode (π_ref's VADER std): the drift control;
* ``--interp η,η,…``: also judge the weights ``θ_ref + η(θ − θ_ref)`` (WARP's LITI, Ramé et al. 2024).

Usage: ``OMP_NUM_THREADS=1 python ctg.py --arm NAME --agent a2c --lr 1.5e-4 --episodes 4096 --seed 0``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs.jsonl"
BETA = 0.055
SIGMA_REF = 0.268  # π_ref's VADER std over 256 episodes (noise_drift.py)


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--arm", required=True)
    p.add_argument("--agent", default="a2c")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--episodes", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--group-size", type=int, default=None)
    p.add_argument("--beta", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--noise", action="store_true")
    p.add_argument("--interp", default="")
    p.add_argument("--freeze", default=None, help="regex of parameter names to freeze")
    p.add_argument("--optimizer", default=None, help="sgd:LR:MOMENTUM or adam:EPS (replaces the agent's Adam)")
    p.add_argument("--ema", default="", help="comma-separated EMA decays of the weights, each judged at the end")
    p.add_argument("--dpg", type=float, default=None, help="GRPO's advantages replaced by softmax(R/τ) − 1/G within each group (DPG)")
    p.add_argument("--exact-kl", action="store_true", help="the sampled k1 penalty replaced by the exact per-state KL: "
                   "its value as the per-step reward, its gradient as a loss term (Rao-Blackwellised)")
    p.add_argument("--logit-bias", default=None, help="LR or LR:full: a trainable per-token bias on the logits at this lr "
                   "(':full' keeps the LM training at the agent's lr, else the LM is frozen)")
    p.add_argument("--trust-kl", type=float, default=None, help="C: add C·Σ_t KL(π_old(·|s_t)‖π_θ(·|s_t)) (full "
                   "vocabulary, π_old = the policy at the start of the update) to the loss: a mirror-descent trust region")
    p.add_argument("--npg-power", type=float, default=None, help="α: A2C's per-token advantages × π_old(a_t)^−α "
                   "(normalised to mean 1 over the batch's tokens): α = 0 is the vanilla softmax gradient, α = 1 the "
                   "logit-space natural gradient (Kakade 2001) in expectation")
    p.add_argument("--head-only", type=float, default=None, help="LR: untie the LM head from the input embedding "
                   "(a copy, so π_θ = π_ref at the start) and train only it at LR: log(π_θ/π_ref) is then linear in "
                   "π_ref's last hidden state")
    p.add_argument("--note", default="")
    p.add_argument("--keep", action="store_true", help="keep the run directory")
    return p.parse_args()


class SNRAdam(torch.optim.Optimizer):
    """Adam whose per-coordinate step is further scaled by (|m̂|/√v̂)^power: a coordinate whose
    gradient is pure noise has |m̂|/√v̂ ≈ √((1−β1)/(1+β1)), a consistent one ≈ 1 (a Wiener-style
    shrinkage of low signal-to-noise coordinates)."""

    def __init__(self, params, lr, beta1=0.9, beta2=0.999, eps=1e-8, power=1.0):
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, power=power))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["t"], state["m"], state["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                state["t"] += 1
                t, m, v = state["t"], state["m"], state["v"]
                m.mul_(group["beta1"]).add_(p.grad, alpha=1 - group["beta1"])
                v.mul_(group["beta2"]).addcmul_(p.grad, p.grad, value=1 - group["beta2"])
                m_hat = m / (1 - group["beta1"] ** t)
                denom = (v / (1 - group["beta2"] ** t)).sqrt().add_(group["eps"])
                ratio = m_hat / denom
                p.add_(ratio * ratio.abs().clamp(max=1).pow(group["power"]), alpha=-group["lr"])


def install_head_only(learner, lr, built):
    """Untie the LM head (a trainable copy of the embedding) and freeze everything else but the value head."""
    model = learner.policy.model
    head = model.get_output_embeddings()
    head.weight = torch.nn.Parameter(head.weight.detach().clone())
    model.config.tie_word_embeddings = False
    for name, p in model.named_parameters():
        p.requires_grad_(p is head.weight)
    built["logit_bias"] = head.weight  # judged in memory: the saved policy would re-tie the head
    learner.optimizer = torch.optim.Adam([{"params": [head.weight], "lr": lr},
                                          {"params": list(learner.policy.value_parameters()), "lr": learner.config.lr}])


def install_logit_bias(learner, spec, built):
    """A trainable bias b (V,) added to every logit (a unigram tilt π ∝ π_θ·exp(b)), initialised at 0."""
    lr, *mode = spec.split(":")
    model = learner.policy.model
    head = model.get_output_embeddings()
    bias = torch.nn.Parameter(torch.zeros(head.weight.shape[0], device=head.weight.device))
    head.register_forward_hook(lambda module, inputs, output: output + bias)
    built["logit_bias"] = bias
    groups = [{"params": [bias], "lr": float(lr)}]
    if "full" in mode:
        groups.append({"params": list(learner.policy.parameters()), "lr": learner.config.lr})
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        groups.append({"params": list(learner.policy.value_parameters()), "lr": learner.config.lr})
    learner.optimizer = torch.optim.Adam(groups)
    clip = learner._clip_and_step

    def clip_and_step():  # the clip covers the bias too
        params = [bias] + [p for p in learner.policy.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, learner.config.max_grad_norm)
        if not torch.isfinite(grad_norm):
            learner.optimizer.zero_grad(set_to_none=True)
            return False
        learner.optimizer.step()
        return True

    learner._clip_and_step = clip_and_step


def install_npg_power(learner, alpha):
    """Scale A2C's advantages by π_old(a_t)^−α, normalised to mean 1 over valid tokens."""
    from tokengym.agents import a2c as a2c_module

    gae, update, stash = a2c_module.gae, learner.update, {}

    def weighted_gae(rewards, values, mask, gamma, lam):
        advantages, returns = gae(rewards, values, mask, gamma, lam)
        weight = torch.exp(-alpha * stash["rollout"].logprobs) * mask  # (B, T)
        weight = weight / (weight.sum() / mask.sum())
        return advantages * weight, returns

    def new_update(rollout):
        stash["rollout"] = rollout
        return update(rollout)

    a2c_module.gae = weighted_gae
    learner.update = new_update


def install_trust_kl(learner, coef):
    """C·Σ_t KL(π_old(·|s_t)‖π_θ(·|s_t)) over the update's states (exact, all tokens) added to the loss."""
    from tokengym.lm.scoring import forward_responses

    policy = learner.policy
    update, original_step = learner.update, learner.minibatch_step
    cache = {}

    def full_logprobs(input_ids, attention_mask, P):
        with policy.autocast():
            logits, _ = forward_responses(policy.model, input_ids, attention_mask, P)
        return torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)

    def new_update(rollout):
        with torch.no_grad():
            cache["old"] = full_logprobs(rollout.input_ids, rollout.attention_mask, rollout.prompt_width)
        cache["rollout"] = rollout
        return update(rollout)

    def new_minibatch_step(rows, loss_of, global_rows=None):
        def loss_with_trust(chunk):
            loss, stats = loss_of(chunk)
            r = cache["rollout"]
            new = full_logprobs(r.input_ids[chunk], r.attention_mask[chunk], r.prompt_width)  # (b, T, V)
            old = cache["old"][chunk]
            kl = (old.exp() * (old - new)).sum(-1)  # (b, T)
            term = (kl * r.mask[chunk]).sum(-1).mean()
            return loss + coef * term, {**stats, "trust_kl": term.detach()}
        return original_step(rows, loss_with_trust, global_rows)

    learner.update, learner.minibatch_step = new_update, new_minibatch_step


def install_ema(learner, decays, built):
    """Keep an EMA of the LM's weights per decay, updated after every iteration (Polyak averaging)."""
    params = dict(learner.policy.model.named_parameters())
    built["ema"] = {d: {n: p.detach().clone() for n, p in params.items()} for d in decays}
    step = learner.train_iteration

    def train_iteration():
        stats = step()
        with torch.no_grad():
            for d, ema in built["ema"].items():
                for n, p in params.items():
                    ema[n].mul_(d).add_(p.detach(), alpha=1 - d)
        return stats

    learner.train_iteration = train_iteration


def install_exact_kl(learner, beta):
    """Replace the sampled per-step k1 penalty −β·log ρ(a_t) by −β·KL(π_θ(·|s_t)‖π_ref(·|s_t)) (its
    expectation over a_t: the same expected return, less variance) and add β·Σ_t KL(s_t) to the loss
    so that its per-state gradient is exact; together they are the gradient of the sequence KL."""
    from tokengym.lm.scoring import forward_responses

    policy, reference = learner.policy, learner.env.reference
    score = policy.score
    update = learner.update
    original_step = learner.minibatch_step
    cache = {}

    def ref_logprobs_all(input_ids, attention_mask, P):
        with torch.no_grad(), reference.context():
            logits, _ = forward_responses(reference.model, input_ids, attention_mask, P)
        return torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)

    def scored_with_kl(input_ids, attention_mask, P):
        from tokengym.lm.scoring import gather_logprobs
        with policy.autocast():
            logits, hidden = forward_responses(policy.model, input_ids, attention_mask, P,
                                               output_hidden_states=policy.value_head is not None)
        lp = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
        ref = ref_logprobs_all(input_ids, attention_mask, P)
        kl = (lp.exp() * (lp - ref)).sum(-1)  # (B, T) exact per-state KL
        cache["kl"] = kl
        return lp, hidden, kl

    def new_score(input_ids, attention_mask, P):
        out = score(input_ids, attention_mask, P)
        _, _, kl = scored_with_kl(input_ids, attention_mask, P)  # second forward: simple, not fast
        cache["kl"] = kl
        return out

    def new_update(rollout):
        with torch.no_grad():
            _, _, kl = scored_with_kl(rollout.input_ids, rollout.attention_mask, rollout.prompt_width)
        mask = rollout.mask
        k1 = (rollout.logprobs - rollout.ref_logprobs) * mask  # (B, T)
        rollout.rewards = rollout.rewards + beta * k1 - beta * kl * mask
        cache["mask_full"] = mask
        return update(rollout)

    def new_minibatch_step(rows, loss_of, global_rows=None):
        def loss_with_kl(chunk):
            loss, stats = loss_of(chunk)
            mask = cache["mask_full"][chunk]
            term = (cache["kl"] * mask).sum(-1).mean()
            return loss + beta * term, {**stats, "exact_kl": term.detach()}
        return original_step(rows, loss_with_kl, global_rows)

    policy.score = new_score
    learner.update = new_update
    learner.minibatch_step = new_minibatch_step


def main():
    torch.set_num_threads(1)
    args = parse()
    import tokengym.envs  # noqa: F401
    from tokengym.agents import train as train_module
    from tokengym.agents.settings import resolve_settings, validate
    from tokengym.benchmarks.evaluate import evaluate, evaluate_run

    out = Path(os.environ.get("CTG_OUT", "/tmp/ctg")) / f"{args.arm}-s{args.seed}"
    if out.exists():
        shutil.rmtree(out)
    given = {"env": "tokengym/Sentiment-v0", "agent": args.agent, "episodes": args.episodes, "reward": "kl-shaped",
             "min_new_tokens": 16, "batch_size": args.batch_size, "seed": args.seed, "set": args.set}
    for key in ("lr", "group_size", "beta"):
        if getattr(args, key) is not None:
            given[key] = getattr(args, key)
    s, run_dir, resuming = resolve_settings(given, None, str(out))
    plan = validate(s, run_dir, resuming, frozenset(given))
    if args.noise:
        from tokengym.rewards.holistic import Holistic
        from tokengym.rewards.kl import KLShaped

        rng = np.random.default_rng(args.seed)
        noise = Holistic(lambda prompts, completions: rng.normal(0, SIGMA_REF, len(completions)).tolist(), name="noise")
        plan.env_kwargs["reward"] = KLShaped(noise, beta=s["beta"] if s["beta"] is not None else BETA)
        plan.env_kwargs.pop("reward_kwargs", None)
    built = {}
    original_build = train_module._build

    def build(settings, plan_):
        envs, learner = original_build(settings, plan_)
        built["learner"] = learner
        if args.freeze:
            import re
            for name, parameter in learner.policy.model.named_parameters():
                if re.search(args.freeze, name):
                    parameter.requires_grad_(False)
        if args.optimizer:
            kind, *values = args.optimizer.split(":")
            params = [p for p in learner.policy.parameters() if p.requires_grad]
            if kind == "sgd":
                learner.optimizer = torch.optim.SGD(params, lr=float(values[0]), momentum=float(values[1]))
            elif kind == "snradam":
                learner.optimizer = SNRAdam(params, lr=learner.config.lr, beta1=float(values[0]), power=float(values[1]))
            elif kind == "adam":
                learner.optimizer = torch.optim.Adam(params, lr=learner.config.lr, eps=float(values[0]))
            else:
                raise SystemExit(f"unknown optimizer {args.optimizer}")
        built["init"] = {k: v.detach().clone() for k, v in learner.policy.model.state_dict().items()}
        if args.head_only is not None:
            install_head_only(learner, args.head_only, built)
        if args.logit_bias:
            install_logit_bias(learner, args.logit_bias, built)
        if args.exact_kl:
            install_exact_kl(learner, s["beta"] if s["beta"] is not None else BETA)
        if args.npg_power is not None:
            install_npg_power(learner, args.npg_power)
        if args.trust_kl is not None:
            install_trust_kl(learner, args.trust_kl)
        if args.ema:
            install_ema(learner, [float(x) for x in args.ema.split(",")], built)
        return envs, learner

    train_module._build = build
    if args.dpg is not None:
        from tokengym.agents import grpo as grpo_module

        def dpg_advantages(scores, group_size, adv_eps, scale_rewards):  # (B,) → (B,)
            weights = torch.softmax(scores.view(-1, group_size) / args.dpg, dim=1)  # (B/G, G) self-normalised p/π_θ
            return (weights - 1.0 / group_size).flatten()

        grpo_module.group_advantages = dpg_advantages
    start = time.perf_counter()
    history = train_module.run(s, plan, run_dir, resuming, progress=False)
    train_seconds = time.perf_counter() - start
    if "logit_bias" in built:
        import gymnasium as gym
        env_kwargs = {k: v for k, v in plan.env_kwargs.items() if k not in ("reward", "reward_kwargs")}
        report = evaluate(gym.make_vec(s["env"], num_envs=64, **env_kwargs), built["learner"].policy.model)
    else:
        report = evaluate_run(run_dir)
    wall = time.perf_counter() - start
    record = {
        "arm": args.arm, "agent": args.agent, "seed": args.seed, "episodes": args.episodes, "batch_size": args.batch_size,
        "lr": built["learner"].config.lr, "group_size": built["learner"].config.group_size, "beta": s["beta"],
        "set": args.set, "noise": args.noise, "ema_decays": args.ema, "dpg": args.dpg, "exact_kl": args.exact_kl, "logit_bias": args.logit_bias, "trust_kl": args.trust_kl, "npg_power": args.npg_power, "head_only": args.head_only, "freeze": args.freeze, "optimizer": args.optimizer, "note": args.note,
        "score_gain": round(report["score_gain"], 4), "kl": round(report["kl"], 3),
        "distinct_2_ratio": round(report["distinct_2_ratio"], 3),
        "reward_policy": round(report["policy"]["score"], 4), "reward_ref": round(report["reference"]["score"], 4),
        "J": round(report["policy"]["score"] - BETA * report["kl"], 4),
        "J_minus_Jref": round(report["score_gain"] - BETA * report["kl"], 4),
        "gain_per_sqrt_kl": round(report["score_gain"] / max(report["kl"], 1e-6) ** 0.5, 4),
        "max_training_kl": round(max(h["kl_ref"] for h in history), 3),
        "final_training_kl": round(float(np.mean([h["kl_ref"] for h in history[-8:]])), 3),
        "training_kl_every_8": [round(h["kl_ref"], 2) for h in history[7::8]],
        "training_vader_every_8": [round(h.get("reward/vader", float("nan")), 3) for h in history[7::8]],
        "train_seconds": round(train_seconds, 1), "wall_seconds": round(wall, 1),
        "samples": report["policy"]["samples"][:2],
    }
    if args.ema:
        import gymnasium as gym
        learner = built["learner"]
        env_kwargs = {k: v for k, v in plan.env_kwargs.items() if k not in ("reward", "reward_kwargs")}
        envs_eval = gym.make_vec(s["env"], num_envs=64, **env_kwargs)
        trained = {k: v.detach().clone() for k, v in learner.policy.model.state_dict().items()}
        record["ema"] = {}
        for d, ema in built["ema"].items():
            with torch.no_grad():  # through the parameters: the tied LM head follows wte
                for n, p in learner.policy.model.named_parameters():
                    p.copy_(ema[n])
            r = evaluate(envs_eval, learner.policy.model)
            record["ema"][str(d)] = {"score_gain": round(r["score_gain"], 4), "kl": round(r["kl"], 3),
                                     "distinct_2_ratio": round(r["distinct_2_ratio"], 3)}
        learner.policy.model.load_state_dict(trained)
    if args.interp:
        learner = built["learner"]
        trained = {k: v.detach().clone() for k, v in learner.policy.model.state_dict().items()}
        envs_eval = None
        record["interp"] = {}
        import gymnasium as gym
        env_kwargs = {k: v for k, v in plan.env_kwargs.items() if k not in ("reward", "reward_kwargs")}
        envs_eval = gym.make_vec(s["env"], num_envs=64, **env_kwargs)
        for eta in [float(x) for x in args.interp.split(",")]:
            mixed = {k: built["init"][k] + eta * (trained[k] - built["init"][k]) if trained[k].is_floating_point() else trained[k]
                     for k in trained}
            learner.policy.model.load_state_dict(mixed)
            r = evaluate(envs_eval, learner.policy.model)
            record["interp"][str(eta)] = {"score_gain": round(r["score_gain"], 4), "kl": round(r["kl"], 3),
                                          "distinct_2_ratio": round(r["distinct_2_ratio"], 3)}
        learner.policy.model.load_state_dict(trained)
    with RUNS.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "samples"}), flush=True)
    if not args.keep:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
