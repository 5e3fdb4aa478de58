"""The timing harness behind ``tokengym bench --perf`` (:mod:`tokengym.benchmarks.perf`): the
sizes of a run, the models and envs it builds, the two rollouts it compares (the Gym loop and raw
``model.generate``), side-by-side timing (:func:`interleaved`: the two sides alternate, repeat after
repeat, and swap which goes first, so background load hits both alike; :func:`paired_ratio`
compares their medians), KV-cache sizes, and the audit of host reads in a rollout
(:func:`count_host_reads`).
"""
from __future__ import annotations

import statistics
import time
import traceback
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import gymnasium as gym
import torch

__all__ = [
    "Sizes", "FULL", "QUICK", "ZeroReward", "build_model", "make_env", "random_prompts", "env_rollout",
    "generate_rollout", "interleaved", "paired_ratio", "cache_bytes", "kv_min_bytes_per_token", "HOST_READS",
    "count_host_reads",
]


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is."""

    prompt_tokens: int
    """P, prompt length of every rollout (equal lengths: no padding on either side)."""
    new_tokens: int
    """T, tokens generated per rollout."""
    repeats: int
    """Least timed rounds per comparison (after one warm-up of each side); medians are reported."""
    seconds: float
    """More rounds (up to 5× ``repeats``) run while a comparison has taken less than this."""
    contexts: tuple[int, ...]
    """Contexts of the cost-growth curve (tokens attended by the step)."""
    growth_steps: int
    """Cached steps timed per context and repeat."""
    uncached_steps: int
    """Full forwards timed per context and repeat."""
    update_batch: int
    """Batch of the update-throughput and memory runs (divisible by GRPO's group of 4)."""
    update_new_tokens: int
    """T of the update-throughput and memory runs."""
    kl_batch: int
    """Batch of the KL-shaped cost comparison."""
    train_iterations: int
    """PPO iterations of the peak-RSS training run."""
    fsdp_batch: int
    """Whole batch of the FSDP runs (one process of it, and 2 sharded ranks of half each)."""
    fsdp_new_tokens: int
    """T of the FSDP runs: the sharded rollout all-gathers every block once per token."""


FULL = Sizes(
    prompt_tokens=16, new_tokens=32, repeats=5, seconds=20.0, contexts=(32, 128, 512, 1024), growth_steps=16,
    uncached_steps=2, update_batch=16, update_new_tokens=16, kl_batch=16, train_iterations=3,
    fsdp_batch=4, fsdp_new_tokens=16,
)


QUICK = Sizes(
    prompt_tokens=4, new_tokens=6, repeats=2, seconds=0.0, contexts=(8, 16, 32, 64), growth_steps=4,
    uncached_steps=1, update_batch=4, update_new_tokens=4, kl_batch=4, train_iterations=1,
    fsdp_batch=2, fsdp_new_tokens=4,
)


class ZeroReward:
    """A device-side reward of 0 on every step: the env's cost without any scoring work."""

    def reset(self, episodes) -> None:
        pass

    def __call__(self, step) -> torch.Tensor:
        return torch.zeros(step.actions.shape[0], device=step.actions.device)  # (B,)


def build_model(name: str, *, quick: bool, device: str, bf16: bool) -> torch.nn.Module:
    """The benchmark's model ``name`` in eval mode, no gradients, EOS-free ``generate``."""
    if name == "embedded":
        from tokengym.lm.loading import load_causal_lm

        model = load_causal_lm("embedded")
    elif name == "gpt2-small-random":
        from transformers import GPT2Config, GPT2LMHeadModel

        shape = dict(n_layer=2, n_embd=64, n_head=2) if quick else dict(n_layer=12, n_embd=768, n_head=12)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=1024, **shape))
    else:
        raise ValueError(f"unknown perf model {name!r}; expected 'embedded' or 'gpt2-small-random'")
    model = model.to(device, torch.bfloat16 if bf16 else torch.float32).eval().requires_grad_(False)
    model.generation_config.eos_token_id = None  # generate() then runs exactly max_new_tokens steps
    return model


def make_env(model: torch.nn.Module, prompts: list[list[int]], new_tokens: int, device: str, reward=None):
    """The fast-path batched env: token-id prompts, no stop token, no action check, no copies."""
    return gym.make_vec(
        "tokengym/Custom-v0", num_envs=len(prompts), device=device, model=model, prompts=prompts,
        reward=reward if reward is not None else ZeroReward(), max_new_tokens=new_tokens,
        stop_token_ids=[], check_actions=False, copy_observations=False,
    ).unwrapped


def random_prompts(batch: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """``batch`` random prompts of ``length`` token ids (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=generator).tolist()


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _vocab(model: torch.nn.Module) -> int:
    from tokengym.lm.loading import vocab_width

    return vocab_width(model)


@torch.no_grad()
def env_rollout(env, policy, generator: torch.Generator, phases: dict[str, float] | None = None):
    """One batch of episodes through reset/step, as ``Agent.collect`` plays it (without the
    reference re-scoring). With ``phases``, adds the seconds spent in each part (synchronising
    the device around each: use it for a breakdown, not for the headline timing)."""
    device = str(env.device)

    def lap(name: str, start: float) -> float:
        if phases is None:
            return start
        _sync(device)
        now = time.perf_counter()
        phases[name] = phases.get(name, 0.0) + now - start
        return now

    clock = time.perf_counter()
    obs, _ = env.reset(seed=0)
    P, T, B = env.prompt_width, env.max_new_tokens, env.num_envs
    clock = lap("env_reset", clock)
    policy.begin(obs["input_ids"][:, :P], obs["attention_mask"][:, :P].bool())
    logprobs = torch.zeros(B, T, device=env.device)  # (B, T)
    rewards = torch.zeros(B, T, device=env.device)  # (B, T)
    clock = lap("prefill", clock)
    for t in range(T):
        step = policy.act(generator)
        clock = lap("sampling", clock)
        obs, reward, _, _, _ = env.step(step.actions, logprobs=step.logprobs)
        logprobs[:, t] = step.logprobs
        rewards[:, t] = reward
        clock = lap("env_step", clock)
        if t + 1 < T:
            policy.advance(step.actions)
            clock = lap("forward", clock)
    _sync(device)
    return obs, logprobs, rewards


@torch.no_grad()
def generate_rollout(model, prompt_ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """``model.generate`` with the KV cache, sampling exactly as ``Policy.act`` does by default."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens,
        eos_token_id=None, pad_token_id=0, use_cache=True,
    )
    out = model.generate(input_ids=prompt_ids, attention_mask=torch.ones_like(prompt_ids), generation_config=config)
    _sync(str(prompt_ids.device))
    if out.shape[1] != prompt_ids.shape[1] + new_tokens:
        raise RuntimeError(f"generate() made {out.shape[1] - prompt_ids.shape[1]} tokens, expected {new_tokens}")
    return out


def interleaved(sides: dict[str, Callable[[], Any]], sizes: Sizes) -> dict[str, list[float]]:
    """Seconds per call of each side: one warm-up each, then rounds in which every side runs once
    (the order flips every round), so drifting load hits every side alike. At least
    ``sizes.repeats`` rounds; more, up to five times that, until ``sizes.seconds`` have passed."""
    for run in sides.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    names, start = list(sides), time.perf_counter()
    for r in range(5 * sizes.repeats):
        if r >= sizes.repeats and time.perf_counter() - start >= sizes.seconds:
            break
        for name in names if r % 2 == 0 else names[::-1]:
            clock = time.perf_counter()
            sides[name]()
            seconds[name].append(time.perf_counter() - clock)
    return seconds


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of the ratio of two sides timed in the same round (load cancels)."""
    return statistics.median(n / d for n, d in zip(numerator, denominator))


def cache_bytes(cache) -> tuple[int, int]:
    """(bytes, cached positions) of a transformers KV cache (``DynamicCache``)."""
    if hasattr(cache, "layers"):
        tensors = [t for layer in cache.layers for t in (layer.keys, layer.values) if t is not None]
    else:  # transformers < 4.56 kept per-layer lists
        tensors = list(cache.key_cache) + list(cache.value_cache)
    return sum(t.numel() * t.element_size() for t in tensors), int(cache.get_seq_length())


def kv_min_bytes_per_token(model: torch.nn.Module) -> int:
    """2 · n_layer · n_embd · bytes per element: K and V of every layer, nothing else."""
    config = model.config.get_text_config()
    element = next(model.parameters()).element_size()
    return 2 * config.num_hidden_layers * config.hidden_size * element


HOST_READS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__int__", "__float__", "__index__")
"""Tensor methods that bring a value to the host (a device→host sync on CUDA)."""


@contextmanager
def count_host_reads(fail: bool = False) -> Iterator[Counter]:
    """Count (or, with ``fail``, forbid) calls of :data:`HOST_READS` on any tensor inside the block.

    A CPU stand-in for ``torch.cuda.set_sync_debug_mode("error")``: it patches the Python methods,
    so it sees ``if tensor``, ``.item()``, ``.tolist()`` and the like wherever they are called
    from (transformers included), not reads hidden inside C++ ops. Keys: ``(method, "file:line")``
    of the caller."""
    counts: Counter = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def patched(name: str):
        original = originals[name]

        def read(self, *args, **kwargs):
            caller = traceback.extract_stack(limit=2)[0]
            site = f"{Path(caller.filename).name}:{caller.lineno}"
            if fail:
                raise AssertionError(f"host read Tensor.{name} at {site}")
            counts[(name, site)] += 1
            return original(self, *args, **kwargs)

        return read

    try:
        for name in HOST_READS:
            setattr(torch.Tensor, name, patched(name))
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
