"""Performance runs: the Gym loop against raw generation, cost growth with context, update
throughput, memory, the cost of KL shaping, an audit of host reads in the rollout loop, and FSDP's
per-rank memory and rollout cost (``benchmarks/sharded.py``, 2 ranks).

    from tokengym.benchmarks.perf import run_perf
    run_perf("benchmarks/results/perf-cpu")          # tokengym bench --perf --out ...

Every comparison is measured side by side in one process: the two sides alternate, repeat after
repeat (and swap which goes first), so background load hits both alike; ratios compare medians.
The figures and how to read them are in ``docs/performance.md``.

Models: ``"embedded"`` (the shipped default) and ``"gpt2-small-random"`` (GPT-2 small's shape,
12 layers, 768 wide, 50257 tokens, 1024 positions, randomly initialised: no download). With
``quick=True`` the GPT-2 shape shrinks to 2 layers × 64 and every size is tiny, for CI.

The measurements only: the timing harness is :mod:`tokengym.benchmarks.perf_harness`, the figures
``plots.py``, FSDP's launches ``sharded.py``.
"""
from __future__ import annotations

import copy
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch

from tokengym.benchmarks import plots
from tokengym.benchmarks.memory import peak_rss_bytes
from tokengym.benchmarks.perf_harness import (
    FULL, QUICK, Sizes, ZeroReward, _sync, _vocab, build_model, cache_bytes, count_host_reads, env_rollout,
    generate_rollout, interleaved, kv_min_bytes_per_token, make_env, paired_ratio, random_prompts,
)

__all__ = ["run_perf", "count_host_reads", "ZeroReward", "Sizes", "FULL", "QUICK"]


GOALS = {"rollout_ratio": 0.95, "cost_growth": 1.5, "kl_shaped_ratio": 2.1, "host_reads_per_step": 0}
"""Targets: rollout tokens/s ≥ 0.95× generate; cached step at the largest context ≤ 1.5× the
smallest; a KL-shaped rollout ≤ 2.1× a reward-free one; no host read per step on the fast path."""


# --------------------------------------------------------------------------------------------
# Models, env, reward
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# The two rollouts being compared
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# 1. Rollout ratio (and the KV-cache size it leaves behind)
# --------------------------------------------------------------------------------------------


def measure_rollout(model, batch: int, sizes: Sizes, device: str) -> dict[str, Any]:
    from tokengym.agents.policy import Policy

    env = make_env(model, random_prompts(batch, sizes.prompt_tokens, _vocab(model)), sizes.new_tokens, device)
    policy = Policy(model)
    generator = torch.Generator(device=device).manual_seed(0)
    obs, _ = env.reset(seed=0)
    prompt_ids = obs["input_ids"][:, : env.prompt_width].clone()  # (B, P) the prompts env_rollout plays
    seconds = interleaved(
        {
            "env": lambda: env_rollout(env, policy, generator),
            "generate": lambda: generate_rollout(model, prompt_ids, sizes.new_tokens),
        },
        sizes,
    )
    phases: dict[str, float] = {}
    env_rollout(env, policy, generator, phases)
    kv_bytes, positions = cache_bytes(policy._lm.cache)
    tokens = batch * sizes.new_tokens
    env_s, gen_s = statistics.median(seconds["env"]), statistics.median(seconds["generate"])
    return {
        "batch": batch,
        "tokens": tokens,
        "env_seconds": seconds["env"],
        "generate_seconds": seconds["generate"],
        "env_tokens_per_s": tokens / env_s,
        "generate_tokens_per_s": tokens / gen_s,
        "ratio": paired_ratio(seconds["generate"], seconds["env"]),
        "ratio_of_medians": gen_s / env_s,
        "breakdown_seconds": phases,
        "kv_cache": {
            "bytes": kv_bytes,
            "positions": positions,
            "bytes_per_token": kv_bytes / (batch * positions),
            "min_bytes_per_token": kv_min_bytes_per_token(model),
        },
    }


# --------------------------------------------------------------------------------------------
# 2. Cost growth with context
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def measure_cost_growth(model, sizes: Sizes, device: str) -> dict[str, Any]:
    """Seconds per generated token at each context, batch 1: ``CachedLM.step`` (the cache
    holds the context) against one full forward over the whole context (no cache). Contexts
    beyond the model's positions are left out."""
    from tokengym.lm.cached_lm import CachedLM
    from tokengym.lm.loading import max_positions

    limit = max_positions(model.config) or max(sizes.contexts)
    contexts = [c for c in sizes.contexts if c <= limit]
    cached: dict[int, list[float]] = {c: [] for c in contexts}
    uncached: dict[int, list[float]] = {c: [] for c in contexts}
    ids = torch.tensor(random_prompts(1, max(contexts), _vocab(model), seed=1), device=device)  # (1, C)

    def cached_steps(context: int, record: bool) -> None:
        lm = CachedLM(model)
        start = context - sizes.growth_steps  # the last timed step attends to `context` tokens
        lm.prefill(ids[:, :start], torch.ones_like(ids[:, :start], dtype=torch.bool))
        for i in range(start, context):
            _sync(device)
            clock = time.perf_counter()
            lm.step(ids[:, i])
            _sync(device)
            if record:
                cached[context].append(time.perf_counter() - clock)

    def full_forwards(context: int, record: bool) -> None:
        for _ in range(sizes.uncached_steps):
            _sync(device)
            clock = time.perf_counter()
            model(input_ids=ids[:, :context], use_cache=False, logits_to_keep=1)
            _sync(device)
            if record:
                uncached[context].append(time.perf_counter() - clock)

    for context in contexts:  # warm-up
        cached_steps(context, record=False)
    for r in range(sizes.repeats):
        for context in contexts if r % 2 == 0 else contexts[::-1]:
            cached_steps(context, record=True)
            full_forwards(context, record=True)
    cached_s = [statistics.median(cached[c]) for c in contexts]
    uncached_s = [statistics.median(uncached[c]) for c in contexts]
    return {
        "batch": 1,
        "contexts": contexts,
        "cached_seconds_per_token": cached_s,
        "uncached_seconds_per_token": uncached_s,
        "cached_growth": cached_s[-1] / cached_s[0],
        "uncached_growth": uncached_s[-1] / uncached_s[0],
        "cached_seconds": {str(c): v for c, v in cached.items()},
        "uncached_seconds": {str(c): v for c, v in uncached.items()},
    }


# --------------------------------------------------------------------------------------------
# 3. Update throughput, rollout storage
# --------------------------------------------------------------------------------------------


def _agent(agent_class, model, sizes: Sizes, device: str, bf16: bool):
    from tokengym.agents.policy import Policy

    model = copy.deepcopy(model).requires_grad_(True)  # each agent trains its own weights
    env = make_env(model, random_prompts(sizes.update_batch, sizes.prompt_tokens, _vocab(model)),
                   sizes.update_new_tokens, device)
    policy = Policy.from_pretrained(
        model, device=device, value_head=agent_class.needs_values, dtype=torch.bfloat16 if bf16 else torch.float32
    )
    groups = {"group_size": 4} if agent_class.config_class().uses_groups else {}  # the batch may be smaller than 16
    config = agent_class.config_class(seed=0, check_done_every=sizes.update_new_tokens, **groups)
    return agent_class(env, config, policy=policy)


def measure_updates(model, sizes: Sizes, device: str, bf16: bool) -> dict[str, Any]:
    """Seconds of one ``update(rollout)`` (forward, backward, optimizer steps) for PPO and GRPO
    at their default configs; the rollout is collected once and reused."""
    from tokengym.agents.grpo import GRPO
    from tokengym.agents.ppo import PPO

    agents = {"ppo": _agent(PPO, model, sizes, device, bf16), "grpo": _agent(GRPO, model, sizes, device, bf16)}
    rollouts = {name: agent.collect() for name, agent in agents.items()}

    def update(name: str) -> Callable[[], None]:
        def run() -> None:
            agent = agents[name]
            agent.policy.train()
            agent.update(rollouts[name])
            agent.policy.eval()
            _sync(device)
        return run

    seconds = interleaved({name: update(name) for name in agents}, sizes)
    out: dict[str, Any] = {"batch": sizes.update_batch, "new_tokens": sizes.update_new_tokens}
    for name, agent in agents.items():
        tokens = int(rollouts[name].mask.sum())
        passes = getattr(agent.config, "n_epochs", 1)  # each epoch scores every token once
        median = statistics.median(seconds[name])
        out[name] = {
            "seconds": seconds[name],
            "tokens": tokens,
            "tokens_per_s": tokens / median,
            "passes": passes,
            "token_passes_per_s": tokens * passes / median,
            "config": asdict(agent.config),
        }
    out["rollout_storage"] = rollout_storage(rollouts["ppo"])
    return out


def rollout_storage(rollout) -> dict[str, Any]:
    """Bytes of a ``Rollout``'s tensors per generated token (B·T slots)."""
    fields = {name: value for name, value in vars(rollout).items() if isinstance(value, torch.Tensor)}
    per_field = {name: t.numel() * t.element_size() for name, t in fields.items()}
    slots = rollout.mask.numel()
    return {"bytes": sum(per_field.values()), "slots": slots, "bytes_per_token": sum(per_field.values()) / slots,
            "per_field_bytes": per_field}


# --------------------------------------------------------------------------------------------
# 4. Peak RSS of a short training run (in a child process: its own peak, not this one's)
# --------------------------------------------------------------------------------------------


def training_memory(
    model_name: str, quick: bool, device: str, bf16: bool, iterations: int, threads: int
) -> dict[str, Any]:
    """Run in a fresh process: PPO on ``model_name`` for ``iterations`` iterations; peak RSS."""
    from tokengym.agents.ppo import PPO

    torch.set_num_threads(threads)  # the parent's, which may have been set in code
    sizes = QUICK if quick else FULL
    model = build_model(model_name, quick=quick, device=device, bf16=bf16)
    agent = _agent(PPO, model, sizes, device, bf16)
    before = peak_rss_bytes()
    start = time.perf_counter()
    agent.learn(total_episodes=iterations * sizes.update_batch)
    out = {
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_rss_before_training_bytes": before,
        "seconds": time.perf_counter() - start,
        "iterations": iterations,
        "batch": sizes.update_batch,
        "new_tokens": sizes.update_new_tokens,
    }
    if torch.device(device).type == "cuda":
        out["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated()
    return out


def measure_training_memory(model_name: str, quick: bool, device: str, bf16: bool, iterations: int) -> dict[str, Any]:
    args = json.dumps(dict(model_name=model_name, quick=quick, device=device, bf16=bf16, iterations=iterations,
                           threads=torch.get_num_threads()))
    code = (
        "import json, sys; from tokengym.benchmarks.perf import training_memory; "
        "print(json.dumps(training_memory(**json.loads(sys.argv[1]))))"
    )
    done = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the training-memory child failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def lora_vs_full_memory(
    model_name: str, lora_rank: int | None, quick: bool, device: str, bf16: bool, iterations: int, threads: int
) -> dict[str, Any]:
    """Run in a fresh process: REINFORCE with a KL-shaped reward on ``model_name``, fully
    fine-tuned (``lora_rank=None``: the Adam state covers every weight and π_ref is a frozen copy)
    or with LoRA adapters of that rank (π_ref is the same base with adapters off); peak memory
    over the whole process and above the process before the model was built."""
    from tokengym.agents.policy import Policy
    from tokengym.agents.reinforce import REINFORCE
    from tokengym.lm.lora import LoRAConfig
    from tokengym.rewards.kl import KLShaped

    torch.set_num_threads(threads)
    sizes = QUICK if quick else FULL
    before_model = peak_rss_bytes()
    model = build_model(model_name, quick=quick, device=device, bf16=bf16).requires_grad_(True)
    reward = KLShaped(ZeroReward(), beta=0.05)
    env = make_env(model, random_prompts(sizes.update_batch, sizes.prompt_tokens, _vocab(model)),
                   sizes.update_new_tokens, device, reward=reward)
    lora = LoRAConfig(rank=lora_rank) if lora_rank is not None else None
    policy = Policy.from_pretrained(model, device=device, dtype=None, lora=lora)
    agent = REINFORCE(env, REINFORCE.config_class(seed=0, check_done_every=sizes.update_new_tokens, group_size=4),
                      policy=policy)
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    agent.learn(total_episodes=iterations * sizes.update_batch)
    out = {
        "peak_rss_bytes": peak_rss_bytes(),
        "rss_before_model_bytes": before_model,
        "trainable_parameters": sum(p.numel() for p in agent.policy.parameters() if p.requires_grad),
    }
    if torch.device(device).type == "cuda":
        out["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated()
    return out


def measure_lora_memory(model_name: str, quick: bool, device: str, bf16: bool, iterations: int, rank: int = 8) -> dict[str, Any]:
    """Peak memory of LoRA (``rank``) against full fine-tuning, each in its own child process."""
    cells = {}
    for label, lora_rank in (("full", None), (f"lora{rank}", rank)):
        args = json.dumps(dict(model_name=model_name, lora_rank=lora_rank, quick=quick, device=device, bf16=bf16,
                               iterations=iterations, threads=torch.get_num_threads()))
        code = ("import json, sys; from tokengym.benchmarks.perf import lora_vs_full_memory; "
                "print(json.dumps(lora_vs_full_memory(**json.loads(sys.argv[1]))))")
        done = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the {label} memory child failed:\n{done.stderr[-4000:]}")
        cells[label] = json.loads(done.stdout.strip().splitlines()[-1])
    full, lora = cells["full"], cells[f"lora{rank}"]
    key = "cuda_max_allocated_bytes" if "cuda_max_allocated_bytes" in full else "peak_rss_bytes"
    above = lambda c: c["peak_rss_bytes"] - c["rss_before_model_bytes"]  # noqa: E731
    return {
        "model": model_name, "rank": rank, "iterations": iterations, **cells,
        "measure": key,
        "ratio": lora[key] / full[key],
        "ratio_above_baseline": above(lora) / above(full),
    }


# --------------------------------------------------------------------------------------------
# 5. KL-shaped rollout against a reward-free one
# --------------------------------------------------------------------------------------------


def measure_kl_shaped(model, sizes: Sizes, device: str) -> dict[str, Any]:
    """A KL-shaped rollout (π_ref stepped through its own cache; π_θ's log-probs passed to
    ``env.step``, so no third forward) against the same rollout with a reward of 0; and against
    the same KL-shaped rollout followed by the teacher-forced π_ref pass that agents made before
    they took ``info["ref_logprobs"]`` from the env (``rescore_saved``: old ÷ new time)."""
    from tokengym.agents.policy import Policy
    from tokengym.rewards.kl import KLShaped

    prompts = random_prompts(sizes.kl_batch, sizes.prompt_tokens, _vocab(model))
    reference = copy.deepcopy(model)
    envs = {
        "plain": make_env(model, prompts, sizes.new_tokens, device),
        "kl_shaped": make_env(model, prompts, sizes.new_tokens, device,
                              reward=KLShaped(ZeroReward(), beta=0.05, ref_model=reference)),
    }
    shaped_env = envs["kl_shaped"]
    policy = Policy(model)
    generator = torch.Generator(device=device).manual_seed(0)

    def rescored() -> None:  # the old second pass: π_ref again, teacher-forced over the whole buffer
        obs, _, _ = env_rollout(shaped_env, policy, generator)
        shaped_env.reference.score(obs["input_ids"], obs["attention_mask"].bool(), shaped_env.prompt_width)
        _sync(device)

    sides = {name: (lambda e=env: env_rollout(e, policy, generator)) for name, env in envs.items()}
    seconds = interleaved({**sides, "kl_shaped_rescored": rescored}, sizes)
    plain, shaped = statistics.median(seconds["plain"]), statistics.median(seconds["kl_shaped"])
    return {"batch": sizes.kl_batch, "plain_seconds": seconds["plain"], "kl_shaped_seconds": seconds["kl_shaped"],
            "rescored_seconds": seconds["kl_shaped_rescored"],
            "ratio": paired_ratio(seconds["kl_shaped"], seconds["plain"]), "ratio_of_medians": shaped / plain,
            "rescore_saved": paired_ratio(seconds["kl_shaped_rescored"], seconds["kl_shaped"])}


# --------------------------------------------------------------------------------------------
# 6. Host reads in the step loop
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def _steps(env, policy, generator) -> None:
    """The step loop of :func:`env_rollout` after reset and prefill."""
    for t in range(env.max_new_tokens):
        step = policy.act(generator)
        env.step(step.actions, logprobs=step.logprobs)
        if t + 1 < env.max_new_tokens:
            policy.advance(step.actions)


def audit_host_reads(model, device: str) -> dict[str, Any]:
    """Host reads per step: the fast path, with a KL-shaped reward, and with padded prompts."""
    from tokengym.agents.policy import Policy
    from tokengym.rewards.kl import KLShaped

    vocab, new_tokens = _vocab(model), 4
    equal = random_prompts(2, 4, vocab)
    padded = [equal[0], equal[1][:2]]
    cases = {
        "fast_path": (equal, None),
        "kl_shaped": (equal, KLShaped(ZeroReward(), beta=0.05, ref_model=copy.deepcopy(model))),
        "padded_prompts": (padded, None),
    }
    out = {}
    for name, (prompts, reward) in cases.items():
        env = make_env(model, prompts, new_tokens, device, reward=reward)
        policy = Policy(model)
        obs, _ = env.reset(seed=0)
        P = env.prompt_width
        policy.begin(obs["input_ids"][:, :P], obs["attention_mask"][:, :P].bool())
        with count_host_reads() as counts:
            _steps(env, policy, torch.Generator(device=device).manual_seed(0))
        out[name] = {
            "per_step": sum(counts.values()) / new_tokens,
            "sites": {f"{method} {site}": n for (method, site), n in counts.items()},
        }
    return out


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def run_perf(
    out_dir,
    *,
    device: str = "cpu",
    bf16: bool = False,
    quick: bool = False,
    models: tuple[str, ...] = ("embedded", "gpt2-small-random"),
    batches: tuple[int, ...] = (1, 16, 64),
    progress: bool = True,
) -> dict[str, Any]:
    """Measure everything, write ``out_dir/perf.json`` and two PNG plots; returns the results.

    The update-throughput, memory and host-read runs use ``models[0]``; the cost-growth curve uses
    ``"gpt2-small-random"`` (1024 positions) if it is among ``models``, else ``models[0]``; so do
    the FSDP runs (two launches of fresh processes: one unsharded, 2 sharded ranks).
    """
    from tqdm.auto import tqdm
    import transformers

    if not models or not batches:
        raise ValueError("run_perf needs at least one model and one batch size")
    sizes = QUICK if quick else FULL
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    growth_model = "gpt2-small-random" if "gpt2-small-random" in models else models[0]
    bar = tqdm(total=len(models) * (len(batches) + 1) + 6, disable=not progress, unit="run", dynamic_ncols=True)

    def task(label: str):
        bar.set_description(label)
        return bar

    results: dict[str, Any] = {
        "meta": {
            "device": device, "dtype": "bfloat16" if bf16 else "float32", "quick": quick, "models": list(models),
            "batches": list(batches), "sizes": asdict(sizes), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "torch_threads": torch.get_num_threads(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "goals": GOALS,
        "rollout": {}, "kl_shaped": {}, "memory": {"kv_cache": {}},
    }
    built = {}
    for name in models:
        task(f"build {name}")
        built[name] = build_model(name, quick=quick, device=device, bf16=bf16)
        results["rollout"][name] = {}
        for batch in batches:
            task(f"rollout {name} B={batch}")
            cell = measure_rollout(built[name], batch, sizes, device)
            results["rollout"][name][str(batch)] = cell
            results["memory"]["kv_cache"].setdefault(name, {})[str(batch)] = cell["kv_cache"]
            bar.update()
        task(f"kl-shaped {name}")
        results["kl_shaped"][name] = measure_kl_shaped(built[name], sizes, device)
        bar.update()

    task(f"cost growth {growth_model}")
    results["cost_growth"] = {"model": growth_model, **measure_cost_growth(built[growth_model], sizes, device)}
    bar.update()
    task(f"updates {models[0]}")
    updates = measure_updates(built[models[0]], sizes, device, bf16)
    results["memory"]["rollout_storage"] = updates.pop("rollout_storage")
    results["update"] = {"model": models[0], **updates}
    bar.update()
    task(f"training memory {models[0]}")
    results["memory"]["training"] = {
        "model": models[0],
        **measure_training_memory(models[0], quick, device, bf16, sizes.train_iterations),
    }
    bar.update()
    lora_model = "gpt2-small-random" if "gpt2-small-random" in models else models[0]
    task(f"LoRA vs full memory {lora_model}")
    results["memory"]["lora_vs_full"] = measure_lora_memory(lora_model, quick, device, bf16, sizes.train_iterations)
    bar.update()
    task(f"host reads {models[0]}")
    results["host_reads"] = audit_host_reads(built[models[0]], device)
    bar.update()
    task(f"FSDP memory and rollout {lora_model}")
    from tokengym.benchmarks.sharded import measure_sharded

    results["fsdp"] = {"model": lora_model, **measure_sharded(
        out_dir, lora_model, quick=quick, device=device, batch=sizes.fsdp_batch, prompt_tokens=sizes.prompt_tokens,
        new_tokens=sizes.fsdp_new_tokens, repeats=sizes.repeats)}
    bar.update()
    bar.close()

    results["summary"] = summarize(results)
    (out_dir / "perf.json").write_text(json.dumps(results, indent=1))
    plots.plot_rollout(results["rollout"], out_dir / "rollout.png", goal=GOALS["rollout_ratio"])
    plots.plot_cost_growth(results["cost_growth"], growth_model, out_dir / "cost_growth.png")
    return results


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The headline figures against :data:`GOALS`."""
    ratios = {f"{m}/B={b}": c["ratio"] for m, cells in results["rollout"].items() for b, c in cells.items()}
    kl = {m: c["ratio"] for m, c in results["kl_shaped"].items()}
    kv = {m: c[max(c, key=int)]["bytes_per_token"] / c[max(c, key=int)]["min_bytes_per_token"]
          for m, c in results["memory"]["kv_cache"].items()}
    fast_reads = results["host_reads"]["fast_path"]["per_step"]
    growth = results["cost_growth"]["cached_growth"]
    return {
        "rollout_ratio": ratios,
        "rollout_ratio_min": min(ratios.values()),
        "rollout_goal_met": min(ratios.values()) >= GOALS["rollout_ratio"],
        "cost_growth": growth,
        "cost_growth_goal_met": growth <= GOALS["cost_growth"],
        "kl_shaped_ratio": kl,
        "kl_shaped_goal_met": max(kl.values()) <= GOALS["kl_shaped_ratio"],
        "rescore_saved": {m: c["rescore_saved"] for m, c in results["kl_shaped"].items()},
        "ppo_update_tokens_per_s": results["update"]["ppo"]["tokens_per_s"],
        "grpo_update_tokens_per_s": results["update"]["grpo"]["tokens_per_s"],
        "peak_rss_bytes": results["memory"]["training"]["peak_rss_bytes"],
        "lora_over_full_peak_memory": results["memory"]["lora_vs_full"]["ratio"],
        "kv_cache_over_minimum": kv,
        "rollout_storage_bytes_per_token": results["memory"]["rollout_storage"]["bytes_per_token"],
        "host_reads_per_step_fast_path": fast_reads,
        "host_reads_goal_met": fast_reads <= GOALS["host_reads_per_step"],
        **({} if "skipped" in results["fsdp"] else {
            "fsdp_training_state_ratio": results["fsdp"]["training_state_ratio"],
            "fsdp_peak_memory_ratio": results["fsdp"]["peak_memory_ratio"],
            "fsdp_peak_memory_ratio_above_baseline": results["fsdp"]["peak_memory_ratio_above_baseline"],
            "fsdp_allgather_seconds_per_token": results["fsdp"]["allgather_seconds_per_token"],
            "fsdp_gathered_rollout_speedup": results["fsdp"]["gathered_rollout_speedup"],
        }),
    }

