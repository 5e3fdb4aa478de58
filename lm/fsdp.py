"""Fully sharded data parallel for causal LMs, with PyTorch FSDP2 (``torch.distributed.fsdp.fully_shard``).

A sharded model's parameters are ``DTensor``s split along dim 0 over the ranks; FSDP all-gathers a
unit's full parameters before its forward (and again before its backward) and frees them after,
and reduce-scatters its gradients in the backward, so each rank keeps 1/N of the parameters,
gradients and optimizer state (``docs/architecture.md``, "Data parallel").

* :func:`shard_model`: one FSDP unit per transformer block (the classes the model lists in
  ``_no_split_modules``, as accelerate's FSDP wrap policy does) and one for the root (embeddings,
  final norm, LM head); gradients are *summed* over ranks (FSDP2 averages by default).
* :func:`gathered`: hold every unit's full parameters for the duration of a block (the rollout):
  one all-gather per unit instead of one per unit per forward.
* :func:`full_state_dict`: the whole state dict on rank 0, on the CPU (every rank takes part).
* :func:`clip_grad_norm`: ``clip_grad_norm_`` over sharded and replicated parameters together;
  :func:`replicated`: the parameters that are not sharded (their gradients are summed by hand).
* :func:`local_bytes`: the bytes a rank holds of some tensors, counting only its local shards.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterable, Iterator

import torch

__all__ = [
    "shard_model", "fsdp_units", "is_sharded", "gathered", "full_state_dict", "clip_grad_norm", "replicated",
    "local_bytes",
]


def _dtensor_type():
    from torch.distributed.tensor import DTensor

    return DTensor


def is_sharded(module: torch.nn.Module | None) -> bool:
    """Has :func:`shard_model` (or any ``fully_shard``) been applied to ``module``?"""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def fsdp_units(module: torch.nn.Module) -> list:
    """The FSDP units in ``module`` (itself included), blocks first, the root last."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in module.modules() if isinstance(m, FSDPModule)]
    return units[1:] + units[:1] if units and units[0] is module else units


def shard_model(model: torch.nn.Module, param_dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Apply FSDP2 to ``model`` in place: each transformer block, then the root. Every rank must
    hold the same full weights when it is called (they are cut into the shards).

    ``param_dtype`` (``torch.bfloat16``): FSDP's mixed precision, ``MixedPrecisionPolicy(param_dtype,
    reduce_dtype=float32)``: the gathered parameters and the compute are in ``param_dtype``, the
    gradients are reduced in float32 and the sharded master weights (what the optimizer steps)
    stay float32. Gradients are summed over ranks (``set_gradient_divide_factor(1)``; FSDP2's
    default divides by the number of ranks): callers weight each rank's loss by its share of the
    global batch, as the unsharded data-parallel path does.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # FSDP2 warns whenever a wrapped model returns a view (transformers' outputs do), because an
    # in-place op on it would skip the backward's all-gather; every use of an LM's outputs here is
    # out of place (and the equivalence tests compare the gradients with an unsharded run's).
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor", category=UserWarning)
    block_classes = set(getattr(model, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in block_classes]
    if not blocks:
        raise ValueError(
            f"{type(model).__name__} names no transformer block class in _no_split_modules "
            f"({sorted(block_classes)}): FSDP needs one unit per block to shard it"
        )
    mixed = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    for block in blocks:
        fully_shard(block, mp_policy=mixed)
    fully_shard(model, mp_policy=mixed)
    for unit in fsdp_units(model):
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no pre-multiplied sum)
    return model


@contextlib.contextmanager
def gathered(*models: torch.nn.Module | None) -> Iterator[None]:
    """Inside the block, every FSDP unit of ``models`` (None and unsharded models are skipped)
    holds its full parameters: one all-gather per unit on entry, none per forward, freed on exit.

    The standard remedy for generation under FSDP: the rollout's one-token forwards would
    otherwise all-gather every block once per token. It needs the full parameters (in FSDP's
    ``param_dtype``) in memory at once. Every rank must enter it (the all-gathers are collectives).
    """
    roots = [m for m in models if is_sharded(m)]
    units = [unit for root in roots for unit in fsdp_units(root)]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
    handles = [unit.unshard(async_op=True) for unit in units]
    for handle in handles:
        handle.wait()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            # FSDP's own choice: blocks free their parameters after forward, the root keeps them
            unit.set_reshard_after_forward(not any(unit is root for root in roots), recurse=False)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s full state dict, gathered to rank 0 on the CPU (the other ranks get ``{}``);
    every rank must call it. No rank but 0 ever holds the whole model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    first: dict[int, str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        # tied weights (GPT-2's lm_head and wte) arrive as two copies: make them one tensor again, so
        # save_pretrained recognises the tie and writes it once, as it does for the unsharded model
        if first.setdefault(id(parameter), name) != name and name in state:
            state[name] = state[first[id(parameter)]]
    return state


def clip_grad_norm(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` for a mix of sharded (``DTensor``) and replicated
    parameters: the norm is over every full gradient (one all-reduce for the sharded part), and
    each group is scaled by the same factor. Without sharded parameters it *is*
    ``clip_grad_norm_``. Returns the total norm (a plain tensor)."""
    from torch.nn.utils import clip_grads_with_norm_, get_total_norm

    DTensor = _dtensor_type()
    params = [p for p in parameters if p.grad is not None]
    sharded = [p for p in params if isinstance(p, DTensor)]
    if not sharded:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    replicated = [p for p in params if not isinstance(p, DTensor)]
    norms = [get_total_norm([p.grad for p in sharded]).full_tensor()]
    if replicated:
        norms.append(get_total_norm([p.grad for p in replicated]))
    total = torch.linalg.vector_norm(torch.stack(norms))
    for group in (sharded, replicated):
        if group:
            clip_grads_with_norm_(group, max_norm, total)
    return total


def replicated(parameters: Iterable[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    """The parameters that are not sharded (every one of an unsharded model)."""
    DTensor = _dtensor_type()
    return [p for p in parameters if not isinstance(p, DTensor)]


def local_bytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes this rank holds of ``tensors``: a ``DTensor`` counts its local shard only; each
    tensor once (tied weights share one)."""
    DTensor = _dtensor_type()
    seen, total = set(), 0
    for tensor in tensors:
        if tensor is None or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
        total += local.numel() * local.element_size()
    return total
