"""Expressiveness: the library's conv2d, grouped conv, Operator 1 and stacked conv are nodes of the
resnet18 space; their canonical paths replay to their canonical forms.

Two of them lie outside the preset's FLOPs window by design (conv2d costs 1.0x the reference conv,
grouped conv 1/32 of it; the window is 0.15-0.9), so they are replayed in the same space with the
window off. The stacked conv uses 6 reductions (k_1 three times) and its reductions multiply to
4.4x the input at H=7; the paper preset allows 5 reductions, k_1 twice and a multiplier of 4, so it
is replayed with exactly those three limits raised."""

import pytest
import torch

from syno.ir import library as L
from syno.ir.evaluate import reference_forward
from syno.synth.canon import canonical_form, rewrite_weight_reshapes
from syno.synth.options import CONV_COEFFICIENT, SynthOptions
from syno.synth.pathfind import path_of
from syno.synth.protocol import path_from_str, path_to_str
from syno.synth.space import SynthSpace

RELAXED_STACKED = dict(max_reductions=6, max_size_multiplier=4.5,
                       coefficient_specs=tuple("k_1=3: 3" if s.startswith("k_1") else s for s in CONV_COEFFICIENT))

CASES = [
    ("conv2d", {}, False),
    ("grouped_conv2d", {}, False),
    ("operator1", {}, True),
    ("stacked_conv", RELAXED_STACKED, True),
]


@pytest.mark.parametrize("name, relax, strict_window", CASES)
def test_library_operator_is_reachable(name, relax, strict_window):
    opts = SynthOptions.resnet18(**relax)
    space = SynthSpace(opts, enforce_flops=strict_window)
    op = L.HAND_BUILT[name](space.size_space)
    path = path_of(space, op)
    text = path_to_str(path)
    # replay in a fresh space (no shared state with the search that found the path)
    final = SynthSpace(opts, enforce_flops=strict_window).node_from_path(path_from_str(text))
    assert final.is_final
    got = final.operator()
    want = canonical_form(op, space.problem.fixed_inputs)
    assert got.hash == want.hash
    if name in ("conv2d", "operator1", "stacked_conv"):
        # no weight reshape involved: equal to the library operator up to the labels of equal reductions
        assert rewrite_weight_reshapes(op).hash == op.hash
    assert [n.type for n in path][-1] == "Finalize"


def test_window_excludes_conv2d_and_grouped_conv_by_design():
    space = SynthSpace(SynthOptions.resnet18())
    for name in ("conv2d", "grouped_conv2d"):
        with pytest.raises(ValueError, match="not reachable"):
            path_of(space, L.HAND_BUILT[name](space.size_space))


def test_grouped_conv_canonical_form_computes_the_same_function():
    """The canonical grouped conv cuts C_out before sharing it (rule M1) and shares the fused
    (group, C_in/g) axis (rule S3): weight [C_out/g, C_in, k, k] instead of [C_out, C_in/g, k, k]."""
    op = L.grouped_conv2d()
    can = canonical_form(op, [0])
    m = {"N": 2, "C_in": 8, "C_out": 12, "H": 5, "g": 4, "k_1": 3}
    g, ci, co, k = 4, 8, 12, 3
    torch.manual_seed(0)
    x = torch.randn(2, ci, 5, 5, dtype=torch.float64)
    w = torch.randn(co, ci // g, k, k, dtype=torch.float64)
    ref = reference_forward(op, m, [x, w])
    assert torch.allclose(ref, torch.nn.functional.conv2d(x, w, padding=1, groups=g))
    # W_can[j, grp * (C_in/g) + c, kh, kw] = W[grp * (C_out/g) + j, c, kh, kw]
    # W_can[j, grp * (C_in/g) + c, kh, kw] = W[grp * (C_out/g) + j, c, kh, kw]
    w_can = torch.empty(co // g, ci, k, k, dtype=torch.float64)
    for grp in range(g):
        for j in range(co // g):
            w_can[j, grp * (ci // g):(grp + 1) * (ci // g)] = w[grp * (co // g) + j]
    # the canonical weight's axes are ordered by digest: permute ours into that order; the two
    # k axes may come in either order (kh/kw are interchangeable labels)
    names = [str(d.size) for d in can.weights[0]]
    assert sorted(names) == sorted(["g^-1*C_out", "C_in", "k_1", "k_1"])
    k_axes = [i for i, n in enumerate(names) if n == "k_1"]
    base = [0 if n == "g^-1*C_out" else 1 if n == "C_in" else None for n in names]
    outs = []
    for kh, kw in ((2, 3), (3, 2)):
        p = list(base)
        p[k_axes[0]], p[k_axes[1]] = kh, kw
        outs.append(reference_forward(can, m, [x, w_can.permute(*p).contiguous()]))
    assert any(torch.allclose(o, ref) for o in outs)
