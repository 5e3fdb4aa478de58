"""merge_task_vectors: exact averages of known task vectors, SLERP's midpoint for equal norms, ties
kept, and clear errors."""
import math

import pytest
import torch

from tests.conftest import build_tiny_lm
from tokengym.lm.merge import merge_task_vectors


def _moved(base, deltas):
    """A copy of ``base`` with each named parameter moved by ``deltas[name]`` (default 0)."""
    import copy

    model = copy.deepcopy(base)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(deltas.get(name, torch.zeros_like(p)))
    return model


def test_mean_of_task_vectors_is_exact(one_thread):
    base = build_tiny_lm()
    names = [n for n, _ in base.named_parameters()]
    generator = torch.Generator().manual_seed(0)
    deltas = [{n: torch.randn(p.shape, generator=generator) for n, p in base.named_parameters()} for _ in range(3)]
    merged = merge_task_vectors(base, [_moved(base, d) for d in deltas], scale=2.0)
    for name, p in merged.named_parameters():
        expected = dict(base.named_parameters())[name] + 2.0 * sum(d[name] for d in deltas) / 3
        torch.testing.assert_close(p, expected, rtol=0, atol=1e-6)
    assert merged.transformer.wte.weight is merged.lm_head.weight  # the tie survives the copy
    assert [n for n, _ in merged.named_parameters()] == names


def test_norm_preserving_is_slerp_midpoint_for_equal_norms(one_thread):
    base = build_tiny_lm()
    name = "transformer.h.0.mlp.c_fc.weight"
    shape = dict(base.named_parameters())[name].shape
    first, second = torch.zeros(shape), torch.zeros(shape)
    first.view(-1)[0], second.view(-1)[1] = 3.0, 3.0  # orthogonal, |τ| = 3 each
    merged = merge_task_vectors(base, [_moved(base, {name: first}), _moved(base, {name: second})], norm_preserving=True)
    moved = dict(merged.named_parameters())[name] - dict(base.named_parameters())[name]
    # SLERP at t = ½ between orthogonal vectors of norm 3: (τ1 + τ2)/√2, norm 3
    assert moved.view(-1)[0].item() == pytest.approx(3 / math.sqrt(2), abs=1e-6)
    assert moved.view(-1)[1].item() == pytest.approx(3 / math.sqrt(2), abs=1e-6)
    assert moved.norm().item() == pytest.approx(3.0, abs=1e-6)
    # a tensor no run moved stays at the base (no division by a zero norm)
    other = "transformer.h.1.mlp.c_fc.weight"
    torch.testing.assert_close(dict(merged.named_parameters())[other], dict(base.named_parameters())[other], rtol=0, atol=0)


def test_errors_name_the_problem(one_thread):
    base = build_tiny_lm()
    with pytest.raises(ValueError, match="at least one"):
        merge_task_vectors(base, [])
    with pytest.raises(ValueError, match="scale must be a finite number > 0, got 0"):
        merge_task_vectors(base, [base], scale=0)
    with pytest.raises(ValueError, match=r"models\[0\].*shape"):
        merge_task_vectors(base, [build_tiny_lm(n_embd=16)])
    with pytest.raises(ValueError, match=r"models\[0\] does not have the base's parameters"):
        merge_task_vectors(base, [build_tiny_lm(n_layer=3)])
