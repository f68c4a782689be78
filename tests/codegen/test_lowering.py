"""Plans: MAC counts, structure, caching, FLOPs that really run."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from syno.ir import library
from syno.ir.lowering import analyze, plan_for
from syno.codegen.torch import build_module

M = {"N": 8, "C_in": 64, "C_out": 64, "H": 14}


def test_conv2d_flops_equal_conv_macs():
    op = library.conv2d()
    p = plan_for(op, M)
    n, c, h, k = 8, 64, 14, 3
    assert p.flops == n * c * h * h * c * k * k
    assert op.flops(op.bind(M)) == (p.flops,)
    assert p.exhaustive


@pytest.mark.parametrize("name,expected", [
    ("grouped_conv2d", 8 * 64 * 14 * 14 * (64 // 32) * 9),
    ("depthwise_conv2d", 8 * 64 * 14 * 14 * 9),
    ("pointwise_conv2d", 8 * 64 * 14 * 14 * 64),
])
def test_classic_layers_flops(name, expected):
    assert plan_for(library.HAND_BUILT[name](), M).flops == expected


def test_linear_flops():
    m = {"N": 4, "seq_len": 16, "H_in": 32, "H_out": 48}
    assert plan_for(library.linear(), m).flops == 4 * 16 * 32 * 48


def test_operator1_plan_beats_naive_and_halves_conv():
    op = library.operator1()
    p = plan_for(op, M)
    naive = op.naive_flops(op.bind(M))[0]
    conv = plan_for(library.conv2d(), M).flops
    assert p.flops < naive / 3
    assert 0.49 < p.flops / conv < 0.52
    # stage structure: a small contraction with weight 2 over C_in/g, then the big one with weight 1
    contractions = [s for s in p.steps if s.kind == "contract"]
    assert len(contractions) == 2
    assert "w2" in contractions[0].srcs or any(s.kind == "split" and s.srcs == ("w2",) for s in p.steps)
    assert contractions[0].macs < contractions[1].macs / 50


def test_operator1_nodiag_plan_unfolds_w_first():
    """The brief's plan: unfold W, contract with weight 2 over C_in/g, unfold H, contract weight 1."""
    p = plan_for(library.operator1(), M, allow_diag=False)
    kinds = [s.kind for s in p.steps if s.kind in ("unfold", "contract", "diag")]
    assert kinds == ["unfold", "contract", "unfold", "contract"]
    unfold_first = next(s for s in p.steps if s.kind == "unfold")
    an = p.analysis
    # the first unfold is the one whose window is shared with weight 2 (kw)
    f = an.fops[unfold_first.fop]
    assert 2 in an.classes[f.bottoms[1]].weights
    assert p.flops == plan_for(library.operator1(), M).flops


def test_weights_first_plan_is_dense_conv():
    p = plan_for(library.operator1(), M, weights_first=True)
    first = next(s for s in p.steps if s.kind == "contract")
    assert not first.data  # weights contracted together first
    assert p.flops > plan_for(library.conv2d(), M).flops


def test_plan_cache_and_mac_polynomial():
    op = library.stacked_conv()
    p = plan_for(op, M)
    assert plan_for(op, dict(M)) is p
    assert p.flops == sum(s.macs for s in p.steps)
    assert p.macs_for(N=8) == p.flops
    # MACs are linear in the batch for these operators
    assert p.macs_for(N=16) == 2 * p.flops
    mod = build_module(op, M)
    x = torch.zeros(3, 64, 14, 14)
    assert mod.count_macs(x, None) == p.macs_for(N=3)


def test_dynamic_batch_detected():
    for name in ("conv2d", "operator1", "stacked_conv", "grouped_conv2d"):
        an = analyze(library.HAND_BUILT[name]())
        assert set(an.dynamic) == {"N"}
    assert set(analyze(library.linear()).dynamic) == {"N", "seq_len"}


@pytest.mark.parametrize("name", ["conv2d", "operator1", "stacked_conv", "pointwise_conv2d"])
def test_plan_macs_are_what_runs(name):
    """Count the matmul FLOPs torch really executes for the einsum path: 2 x plan MACs."""
    m = {"N": 2, "C_in": 64, "C_out": 64, "H": 8}
    mod = build_module(library.HAND_BUILT[name](), m, implementation="einsum")
    x = torch.randn(2, 64, 8, 8)
    with FlopCounterMode(display=False) as fc:
        mod(x)
    assert fc.get_total_flops() == 2 * mod.plan.flops


def test_plan_describe_mentions_every_step():
    p = plan_for(library.operator1(), M)
    text = p.describe()
    assert text.count("\n") == len(p.steps)
    assert "MACs" in text
