"""An agent's models under FSDP2 (``Agent(env, config, policy=policy, sharding=Sharding())``;
``tokengym train --fsdp``): what is sharded, and how the rollout gets its weights.

* **The policy LM** (and a separate value model): one FSDP unit per transformer block and one for
  the root (:func:`tokengym.lm.fsdp.shard_model`). Its parameters, gradients and Adam's two moments
  are sharded, so a rank holds 1/N of the training state. With ``autocast_dtype=torch.bfloat16``
  (``--dtype bfloat16``) FSDP's ``MixedPrecisionPolicy`` gathers and computes in bfloat16 and
  reduces gradients in float32 into float32 master weights.
* **The value head** (``H + 1`` parameters): replicated, its gradient summed by hand
  (:func:`~tokengym.lm.distributed.sum_gradients`, as unsharded runs do); sharding a few kilobytes
  would only add collectives. The optimizer keeps it in a parameter group of its own (a foreach
  optimizer step cannot mix ``DTensor`` and plain tensors).
* **π_ref**: sharded the same way, frozen (no gradient, no optimizer state). It is as large as the
  policy's weights, and only the rollout runs it (the update reads the log-probs the rollout
  stored), so at the update, where activations and gradients peak, it costs 1/N of its size.
  Kept whole it would cost nothing in communication but its full size on every rank.

**The rollout.** Sampling runs one-token forwards; a sharded model all-gathers every block before
each of them. ``rollout="gathered"`` all-gathers the policy's and π_ref's full weights once per
rollout (:func:`tokengym.lm.fsdp.gathered`) and frees them before the update: the standard remedy,
when the full weights of both fit beside the KV caches. ``"sharded"`` streams them layer by layer
(for models that fit only sharded). ``"auto"`` gathers when the full weights take at most half the
memory free on the device (every rank must agree, so the choice is the most cautious rank's).
``tokengym bench --perf`` measures both (``docs/performance.md``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from tokengym.agents.policy import Policy
from tokengym.lm import distributed
from tokengym.lm.config import check_fields, one_of
from tokengym.lm.fsdp import is_sharded, shard_model
from tokengym.lm.reference import Reference

__all__ = ["Sharding", "ROLLOUT_MODES", "shard_models", "parameter_groups"]

ROLLOUT_MODES = ("auto", "gathered", "sharded")


@dataclass(frozen=True)
class Sharding:
    """FSDP2 for an agent's policy and π_ref (every rank of a ``torchrun`` launch builds the agent)."""

    rollout: str = one_of("auto", ROLLOUT_MODES)
    """The rollout's weights: gathered once per rollout, sharded (an all-gather per block and token), or auto
    (gathered when the full weights take at most half the free memory)."""

    def __post_init__(self):
        check_fields(self)


def shard_models(policy: Policy, reference: Reference, sharding: Sharding) -> bool:
    """Shard ``policy`` (its LM and separate value model) and ``reference`` in place; returns
    whether the rollout gathers the full weights. Every rank must hold the same full weights."""
    if not distributed.is_distributed():
        raise ValueError("sharding needs a torch.distributed process group of 2 or more ranks (launch with torchrun)")
    if policy.is_lora:
        raise ValueError("sharding a LoRA policy is not supported: its trainable state is the small adapters; "
                         "train it unsharded")
    if policy.autocast_dtype == torch.float16:
        raise ValueError("sharding with autocast_dtype=torch.float16 is not supported (its loss scaling would need "
                         "a sharded gradient scaler); use torch.bfloat16")
    shard_model(policy.model, param_dtype=policy.autocast_dtype)
    if policy.value_model is not None:
        shard_model(policy.value_model, param_dtype=policy.autocast_dtype)
    if not is_sharded(reference.model):  # π_ref runs in float32, as it does unsharded
        shard_model(reference.model)
    models = [m for m in (policy.model, policy.value_model, reference.model) if m is not None]
    if sharding.rollout != "auto":
        return sharding.rollout == "gathered"
    full = sum(p.numel() * (policy.autocast_dtype or p.dtype).itemsize for m in models[:-1] for p in m.parameters())
    full += sum(p.numel() * p.dtype.itemsize for p in reference.model.parameters())
    device = policy.device
    fits = _local_ranks(device) * full <= _free_bytes(device) / 2
    return distributed.all_ranks(fits, device)


def parameter_groups(module: torch.nn.Module) -> list[dict]:
    """``module``'s parameters as optimizer groups: the sharded ones, then the replicated ones."""
    from torch.distributed.tensor import DTensor

    params = list(module.parameters())
    groups = [[p for p in params if isinstance(p, DTensor)], [p for p in params if not isinstance(p, DTensor)]]
    return [{"params": group} for group in groups if group]


def _local_ranks(device: torch.device) -> int:
    """Ranks sharing this device's memory: one GPU per rank; the host's RAM is every local rank's."""
    return 1 if device.type == "cuda" else int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):  # not Linux: the physical pages free
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
