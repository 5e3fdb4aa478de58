"""``tokengym.lm.fsdp`` in one process (a 1-rank gloo group, so FSDP2 runs without a launcher):
mixed precision computes in bfloat16 and keeps float32 master weights and gradients; ``gathered``
keeps the full weights across forwards and frees them after; the full state dict saves what the
unsharded model saves (tied weights once); the mixed clip equals ``clip_grad_norm_``. The
multi-rank behaviour (equivalence, resume, memory) is in tests/test_distributed.py and
tests/test_sharded_memory.py."""
from __future__ import annotations

import copy
import socket

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from conftest import build_tiny_lm
from tokengym.lm.fsdp import clip_grad_norm, full_state_dict, gathered, shard_model


@pytest.fixture(scope="module", autouse=True)
def one_rank_group():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def is_dtensor(tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def test_bfloat16_computes_in_bfloat16_with_float32_master_weights_and_gradients():
    model = shard_model(build_tiny_lm().train(), param_dtype=torch.bfloat16)
    seen = []
    block = model.transformer.h[0]
    block.mlp.c_fc.register_forward_hook(lambda m, args, out: seen.append((m.weight.dtype, out.dtype)))
    model(input_ids=torch.tensor([[1, 2, 3]])).logits.float().sum().backward()
    assert seen == [(torch.bfloat16, torch.bfloat16)]  # the gathered weight and the compute
    for name, p in model.named_parameters():
        assert is_dtensor(p) and p.dtype == torch.float32, name  # the sharded master weights
        assert is_dtensor(p.grad) and p.grad.dtype == torch.float32, name  # reduced in float32


def test_gathered_keeps_the_full_weights_across_forwards_then_frees_them():
    model = shard_model(build_tiny_lm())
    weight = lambda: model.transformer.h[1].attn.c_attn.weight  # noqa: E731  (the registered parameter)
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        model(input_ids=ids)
        assert is_dtensor(weight())  # a block frees its full weights after its forward
        with gathered(model, None):
            for _ in range(2):
                model(input_ids=ids)
                assert not is_dtensor(weight())  # still gathered after each forward
        assert is_dtensor(weight())  # freed on exit
        model(input_ids=ids)
        assert is_dtensor(weight())  # and FSDP's own resharding is back


def test_the_full_state_dict_saves_exactly_what_the_unsharded_model_saves(tmp_path):
    plain = build_tiny_lm()
    sharded = shard_model(copy.deepcopy(plain))
    plain.save_pretrained(tmp_path / "plain")
    sharded.save_pretrained(tmp_path / "sharded", state_dict=full_state_dict(sharded))
    a, b = load_file(tmp_path / "plain" / "model.safetensors"), load_file(tmp_path / "sharded" / "model.safetensors")
    assert a.keys() == b.keys() and "lm_head.weight" not in b  # the tied LM head is written once, as unsharded
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_clip_over_sharded_and_replicated_gradients_is_clip_grad_norm():
    torch.manual_seed(0)
    plain, head = build_tiny_lm(), torch.nn.Linear(32, 1)
    sharded, sharded_head = shard_model(copy.deepcopy(plain)), copy.deepcopy(head)
    ids = torch.tensor([[1, 2, 3, 4]])
    for lm, value_head in ((plain, head), (sharded, sharded_head)):
        out = lm(input_ids=ids, output_hidden_states=True)
        (out.logits.logsumexp(-1).sum() + value_head(out.hidden_states[-1]).sum()).backward()
    expected = torch.nn.utils.clip_grad_norm_([*plain.parameters(), *head.parameters()], 0.5)
    total = clip_grad_norm([*sharded.parameters(), *sharded_head.parameters()], 0.5)
    assert float(total) == pytest.approx(float(expected), rel=1e-6) and float(expected) > 0.5  # it clipped
    for (name, p), q in zip(plain.named_parameters(), sharded.parameters()):
        assert torch.allclose(q.grad.full_tensor(), p.grad, atol=1e-7), name
    assert torch.allclose(sharded_head.weight.grad, head.weight.grad, atol=1e-7)
