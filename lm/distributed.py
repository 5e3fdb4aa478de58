"""Data-parallel helpers over ``torch.distributed``: which rank this process is, and the few
collectives a data-parallel run needs.

Every function works without a process group (one process: rank 0 of 1) and then does no
communication, so single-process code calls them unconditionally. ``torchrun`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`process_group`
reads them and joins the group (gloo on CPU, NCCL on CUDA).

The semantics they serve (``docs/architecture.md``, "Data parallel"): each rank holds one shard of
a global batch; batch statistics are taken over the global batch with :func:`sum_across_ranks`;
gradients are summed with :func:`sum_gradients` once per optimizer step (under FSDP,
:mod:`tokengym.lm.fsdp`, only the replicated ones: FSDP reduce-scatters the sharded gradients in
the backward); decisions that change control flow (skip a step, stop an epoch, end a rollout) are
agreed with :func:`all_ranks`, so no rank waits in a collective that another rank skipped.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterable, Iterator, NoReturn

import torch
import torch.distributed as dist

__all__ = [
    "all_ranks", "broadcast_object", "broadcast_parameters", "exit_process", "is_distributed", "max_across_ranks",
    "mean_across_ranks", "process_group", "sum_across_ranks", "sum_gradients", "world",
]


def is_distributed() -> bool:
    """Is a process group with more than one rank running?"""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> tuple[int, int]:
    """``(rank, world_size)``: ``(0, 1)`` without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


@contextlib.contextmanager
def process_group(device: str) -> Iterator[str]:
    """Join the process group ``torchrun`` describes in the environment for the duration of the
    block, if it describes more than one process and none is running yet; yields the device this
    rank should use.

    ``device`` ``"cuda"`` becomes ``"cuda:LOCAL_RANK"`` (one GPU per process) and the group uses
    NCCL; any other device uses gloo. Without ``WORLD_SIZE > 1``, or inside a group the caller
    started, nothing happens and ``device`` is yielded unchanged.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or (dist.is_available() and dist.is_initialized()):
        yield device
        return
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; run a single process")
    kind = torch.device(device).type
    if kind == "cuda":
        if torch.device(device).index is None:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend="nccl" if kind == "cuda" else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """End the process with ``code``. A ``torchrun`` worker (``WORLD_SIZE > 1``) flushes its output
    and leaves without the interpreter's finalization: after a gloo collective, torch 2.13 can
    destroy a still-joinable C++ thread there (``terminate called without an active exception``,
    SIGABRT; about one launch in four of two CPU ranks that import transformers), and torchrun
    would report a finished run as a failed rank. Call it once the process group is destroyed and
    every file is closed; a single process exits normally."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def sum_across_ranks(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed elementwise over all ranks (float64, on ``values``' device); the input is
    not modified. One collective; the identity with one rank."""
    total = values.detach().to(torch.float64).clone()
    if is_distributed():
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def mean_across_ranks(values: torch.Tensor) -> torch.Tensor:
    """``values`` averaged elementwise over all ranks (float64)."""
    return sum_across_ranks(values) / world()[1]


def all_ranks(flag: bool | torch.Tensor, device: str | torch.device = "cpu") -> bool:
    """True on every rank iff ``flag`` is true on every rank (one collective; ``bool(flag)`` alone
    with one rank)."""
    if not is_distributed():
        return bool(flag)
    value = torch.as_tensor(flag, dtype=torch.int32, device=device).reshape(1).clone()
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def sum_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Replace each gradient by its sum over ranks, in one flat bucket per dtype (a missing
    gradient counts as zero, so ranks that did no backward still take part).

    The buckets are reduced in the order of their dtypes' names: every rank must issue the same
    collectives in the same order, and a set of dtypes iterates in an order that differs between
    interpreters (dtypes hash by address), which paired one rank's bfloat16 bucket with another's
    float32 bucket."""
    if not is_distributed():
        return
    params = [p for p in parameters if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for dtype in sorted({p.grad.dtype for p in params}, key=str):
        grads = [p.grad for p in params if p.grad.dtype == dtype]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


@torch.no_grad()
def broadcast_parameters(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (they start identical, as in DDP)."""
    if not is_distributed():
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def max_across_ranks(count: int, device: str | torch.device = "cpu") -> int:
    """The largest of every rank's ``count`` (one collective; ``count`` alone with one rank)."""
    if not is_distributed():
        return count
    value = torch.tensor([count], dtype=torch.int64, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value.item())


def broadcast_object(value=None):
    """Rank 0's ``value`` (any picklable object) on every rank; ``value`` itself with one rank."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
