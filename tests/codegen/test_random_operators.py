"""Random operators (Builder-based generator, and the synthesizer's sampler when present)."""

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from .random_ops import MAPPING, from_random, operators
from syno.codegen.torch import build_module
from syno.ir.evaluate import reference_forward
from syno.ir.lowering import plan_for


def check(op, mapping, variants=("einsum:min", "fast:min"), tol=1e-9):
    mod = build_module(op, mapping).double()
    shapes = [tuple(mod.plan.values[c] for c in t) for t in mod.plan.analysis.tensors]
    x = torch.randn(shapes[0], dtype=torch.float64, requires_grad=True)
    ws = [w.detach().clone().requires_grad_(True) for w in mod.weights]
    ref = reference_forward(op, mapping, [x] + ws)
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad((ref * g).sum(), [x] + ws, allow_unused=True)
    for v in variants:
        mod.implementation = v
        y = mod._select(x)(x, *ws)
        assert y.shape == ref.shape, v
        scale = 1 + ref.abs().max().item() if ref.numel() else 1
        assert (y - ref).abs().max().item() <= tol * scale if ref.numel() else True, v
        grads = torch.autograd.grad((y * g).sum(), [x] + ws, allow_unused=True)
        for a, b in zip(grads, ref_grads):
            if a is None and b is None:
                continue
            a = torch.zeros_like(b) if a is None else a
            b = torch.zeros_like(a) if b is None else b
            assert (a - b).abs().max().item() <= tol * (1 + b.abs().max().item()), v
    # the plan never costs more than the naive loop nest (plus weight-only work)
    p = mod.plan
    assert p.flops == sum(s.macs for s in p.steps)
    return mod


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(operators())
def test_hypothesis_operators_match_reference(op):
    check(op, MAPPING)


@pytest.mark.parametrize("chunk", range(4))
def test_seeded_operators_all_variants(chunk):
    for seed in range(chunk * 50, chunk * 50 + 50):
        op = from_random(random.Random(seed))
        check(op, MAPPING, variants=("einsum:min", "fast:min", "fast:nodiag", "fast:wfirst", "fastd:min"))


def test_greedy_fallback_is_exact():
    from syno.codegen.torch import SynoModule
    for seed in range(40):
        op = from_random(random.Random(1000 + seed))
        plan = plan_for(op, MAPPING, max_states=0)
        mod = SynoModule(op, MAPPING, plan, implementation="einsum").double()
        x = torch.randn([plan.values[c] for c in plan.analysis.tensors[0]], dtype=torch.float64)
        ref = reference_forward(op, MAPPING, [x] + list(mod.weights))
        assert torch.allclose(mod(x), ref, atol=1e-10)
        # the greedy plan never beats the exhaustive min-MAC planner's MACs
        assert plan.flops >= plan_for(op, MAPPING, cost="macs", select=False).flops


def test_gradcheck_random_operators():
    done = 0
    for seed in range(200):
        op = from_random(random.Random(5000 + seed))
        if not op.weights:
            continue
        mod = build_module(op, MAPPING, implementation="fast:min").double()
        shapes = [tuple(mod.plan.values[c] for c in t) for t in mod.plan.analysis.tensors]
        if sum(torch.Size(s).numel() for s in shapes) > 300:
            continue
        x = torch.randn(shapes[0], dtype=torch.float64, requires_grad=True)
        ws = [w.detach().clone().requires_grad_(True) for w in mod.weights]
        fn = mod._select(x)
        assert torch.autograd.gradcheck(lambda *a: fn(*a), (x, *ws), eps=1e-6, atol=1e-6)
        done += 1
        if done == 8:
            break
    assert done == 8
