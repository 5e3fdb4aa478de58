"""FSDP's figures: per-rank memory and the rollout's cost with and without gathered weights.

Training iterations of REINFORCE with a KL-shaped reward (so the rollout steps π_ref as well as
the policy) on GPT-2 small's shape, run twice: as one unsharded process with the whole batch, and
under ``torchrun`` as N sharded ranks of B/N each (``--fsdp``'s path, ``Agent(sharding=...)``).

    TOKENGYM_SHARDED='{"out": "one.json"}' python -m tokengym.benchmarks.sharded
    TOKENGYM_SHARDED='{"out": "two.json"}' python -m torch.distributed.run --standalone --nproc-per-node 2 \
        -m tokengym.benchmarks.sharded

(the measurement's keywords come as JSON in the environment: the command line belongs to the
``tokengym`` application, and ``tokengym bench --perf`` is how a user runs this).

Each writes (rank 0) what every rank holds after the last iteration, counted from the tensors
themselves (a sharded tensor counts its local shard only): the policy's parameters, gradients
and optimizer state, and π_ref's parameters; the last iteration's peak memory in each phase
(peak RSS on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA; the first iteration allocates
Adam's state), and the memory in use before the model was built; and,
sharded, the rollout's seconds with the full weights gathered once against an all-gather per
block and token (both sides alternate, ``repeats`` rounds). ``tokengym bench --perf`` runs both
launches (:func:`measure_sharded`) and reports the ratios.
"""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from tokengym.benchmarks.memory import peak_rss_bytes, reset_peak_rss

__all__ = ["measure", "measure_sharded"]

ENV_ARGS = "TOKENGYM_SHARDED"
"""The environment variable that carries a launch's keywords, as JSON."""


def _reset_peak(device: torch.device) -> None:
    """Restart the peak: CUDA's allocator statistics, or the kernel's RSS high-water mark after
    glibc gives the freed heap back (the full weights each rank built before sharding were
    freed, but small freed blocks stay in the heap, and so in the RSS, until trimmed)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError):  # not glibc: the RSS keeps them
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    reset_peak_rss()


def _peak(device: torch.device) -> int:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss_bytes()


def _current(device: torch.device) -> int:
    """Memory in use now: CUDA's allocated bytes, or this process's RSS."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024  # kB
    return peak_rss_bytes()


def measure(model_name: str, *, quick: bool, device: str, batch: int, prompt_tokens: int, new_tokens: int,
            iterations: int, repeats: int) -> dict[str, Any]:
    """``iterations`` iterations on this process's rank (every rank of a torchrun launch calls it);
    returns the record with every rank's bytes."""
    import torch.distributed as dist

    from tokengym.agents.reinforce import REINFORCE
    from tokengym.agents.sharding import Sharding
    from tokengym.agents.policy import Policy
    from tokengym.benchmarks.perf_harness import ZeroReward, _vocab, build_model, make_env, random_prompts
    from tokengym.lm import distributed
    from tokengym.lm.fsdp import local_bytes
    from tokengym.rewards.kl import KLShaped

    with distributed.process_group(device) as device:
        rank, world_size = distributed.world()
        if batch % world_size:
            raise ValueError(f"batch {batch} must be a multiple of the {world_size} ranks")
        device = torch.device(device)
        baseline = _current(device)  # torch, transformers and tokengym imported; no model yet
        model = build_model(model_name, quick=quick, device=str(device), bf16=False).requires_grad_(True)
        env = make_env(model, random_prompts(batch // world_size, prompt_tokens, _vocab(model)), new_tokens, str(device),
                       reward=KLShaped(ZeroReward(), beta=0.05))
        policy = Policy.from_pretrained(model, device=device, dtype=None)
        sharding = Sharding(rollout="gathered") if world_size > 1 else None
        agent = REINFORCE(env, REINFORCE.config_class(seed=0, check_done_every=new_tokens, baseline="moving-average"),
                          policy=policy,
                          sharding=sharding)
        del model
        for _ in range(iterations):  # the peaks are the last iteration's (the first allocates Adam's state)
            peaks = {}
            _reset_peak(device)
            start = time.perf_counter()
            rollout = agent.collect()
            peaks["rollout"] = _peak(device)
            _reset_peak(device)
            agent.policy.train()
            agent.update(rollout)
            agent.policy.eval()
            peaks["update"] = _peak(device)
            seconds = time.perf_counter() - start
        optimizer_state = [t for state in agent.optimizer.state.values() for t in state.values()
                           if isinstance(t, torch.Tensor)]
        held = {
            "parameters": local_bytes(agent.policy.parameters()),
            "gradients": local_bytes(p.grad for p in agent.policy.parameters()),
            "optimizer": local_bytes(optimizer_state),
            "reference": local_bytes(agent.reference.model.parameters()),
        }
        rollout_seconds, rollout_peaks = {}, {}
        if world_size > 1 and repeats:
            rollout_seconds, rollout_peaks = {"gathered": [], "sharded": []}, {"gathered": 0, "sharded": 0}
            for round_ in range(repeats + 1):  # the first round warms up both sides
                for mode in ("gathered", "sharded") if round_ % 2 else ("sharded", "gathered"):
                    agent.gather_rollout = mode == "gathered"
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    _reset_peak(device)
                    start = time.perf_counter()
                    agent.collect()
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    rollout_peaks[mode] = max(rollout_peaks[mode], _peak(device))
                    if round_:
                        rollout_seconds[mode].append(time.perf_counter() - start)
        every_rank = [None] * world_size
        record = {"rank": rank, "held_bytes": held, "peak_bytes": peaks, "baseline_bytes": baseline,
                  "rollout_peak_bytes": rollout_peaks}
        if world_size > 1:
            dist.all_gather_object(every_rank, record)
        else:
            every_rank = [record]
    out = {
        "model": model_name, "quick": quick, "device": str(device), "world_size": world_size, "batch": batch,
        "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "iterations": iterations, "iteration_seconds": seconds,
        "measure": "cuda_max_allocated" if device.type == "cuda" else "peak_rss",
        "ranks": every_rank,
        "training_state_bytes": max(sum(r["held_bytes"][k] for k in ("parameters", "gradients", "optimizer"))
                                    for r in every_rank),
    }
    if rollout_seconds:
        gathered, sharded = (statistics.median(rollout_seconds[m]) for m in ("gathered", "sharded"))
        out["rollout_seconds"] = rollout_seconds
        out["rollout_gathered_seconds"], out["rollout_sharded_seconds"] = gathered, sharded
        out["allgather_seconds_per_token"] = (sharded - gathered) / new_tokens
    return out


def _launch(ranks: int, args: dict[str, Any], out: Path) -> dict[str, Any]:
    module = ["-m", "tokengym.benchmarks.sharded"]
    command = [sys.executable, *module] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", *module]
    # glibc serves blocks under its (adaptive, up to 32 MB) mmap threshold from heaps that keep
    # freed memory in the RSS; with a fixed 64 KiB threshold every tensor of note is its own
    # mapping, returned on free, so the RSS follows the live tensors on both sides alike
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", ENV_ARGS: json.dumps({**args, "out": str(out)})}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"the {ranks}-process FSDP measurement failed:\n{done.stderr[-4000:]}")
    return json.loads(out.read_text())


def measure_sharded(out_dir: Path, model_name: str, *, quick: bool, device: str, batch: int, prompt_tokens: int,
                    new_tokens: int, repeats: int, iterations: int = 2, ranks: int = 2) -> dict[str, Any]:
    """One unsharded process and ``ranks`` sharded ones (each launch a fresh process); the ratios."""
    if torch.device(device).type == "cuda" and torch.cuda.device_count() < ranks:
        return {"skipped": f"needs {ranks} GPUs (one per rank); this machine has {torch.cuda.device_count()}"}
    args = dict(model=model_name, quick=quick, device=device, batch=batch, prompt_tokens=prompt_tokens,
                new_tokens=new_tokens, iterations=iterations, repeats=repeats)
    threads = torch.get_num_threads()  # the parent's, split between the ranks
    one = _launch(1, {**args, "repeats": 0, "threads": threads}, Path(out_dir) / "fsdp-one.json")
    sharded = _launch(ranks, {**args, "threads": max(1, threads // ranks)}, Path(out_dir) / "fsdp-sharded.json")
    (whole,) = one["ranks"]

    def ratio(phase: str, above_baseline: bool) -> float:
        held = lambda r: r["peak_bytes"][phase] - (r["baseline_bytes"] if above_baseline else 0)  # noqa: E731
        return max(held(r) for r in sharded["ranks"]) / held(whole)

    return {
        "one": one, "sharded": sharded, "ranks": ranks,
        "training_state_ratio": sharded["training_state_bytes"] / one["training_state_bytes"],
        "peak_memory_ratio": {phase: ratio(phase, False) for phase in ("rollout", "update")},
        "peak_memory_ratio_above_baseline": {phase: ratio(phase, True) for phase in ("rollout", "update")},
        "allgather_seconds_per_token": sharded.get("allgather_seconds_per_token"),
        "gathered_rollout_speedup": sharded["rollout_sharded_seconds"] / sharded["rollout_gathered_seconds"]
        if "rollout_sharded_seconds" in sharded else None,
    }


def main() -> int:
    """One launch of :func:`measure`, its keywords (and ``out``, the JSON file rank 0 writes) from
    the JSON in ``TOKENGYM_SHARDED``; ``threads`` sets torch's threads per rank."""
    args = {"model": "gpt2-small-random", "quick": False, "device": "cpu", "batch": 4, "prompt_tokens": 8,
            "new_tokens": 8, "iterations": 2, "repeats": 3, "threads": 1, **json.loads(os.environ[ENV_ARGS])}
    out, threads = Path(args.pop("out")), args.pop("threads")
    torch.set_num_threads(threads)
    model = args.pop("model")
    result = measure(model, **args)
    if int(os.environ.get("RANK", "0")) == 0:
        out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    from tokengym.lm.distributed import exit_process

    exit_process(main())
