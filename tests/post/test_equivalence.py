import pytest
import torch

from syno.ir.evaluate import reference_forward
from syno.ir.library import HAND_BUILT, conv2d, operator1, pointwise_conv2d, stacked_conv
from syno.post.equivalence import (ProbeConfig, _assign, compare, interface_key, operator_function,
                                   probe_mapping)

from .helpers import conv_scaled

FAST = ProbeConfig()


@pytest.mark.parametrize("name", sorted(HAND_BUILT))
def test_einsum_evaluator_matches_reference(name):
    op = HAND_BUILT[name]()
    m = probe_mapping([op])
    fn = operator_function(op, m, torch.Generator().manual_seed(1))
    x = torch.randn(fn.input_shape)
    with torch.no_grad():
        y = fn(x)
        ref = reference_forward(op, m, [x, *fn.weights])
    assert y.shape == ref.shape
    assert torch.allclose(y, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_probe_mapping_is_valid_and_non_degenerate():
    ops = [operator1(), conv2d(), stacked_conv()]
    m = probe_mapping(ops)
    assert m["N"] == 2 and m["H"] >= 8
    # g=32 gets a small stand-in that collides with no other coefficient (3, 7, 2) or product of two
    assert m["g"] == 5
    # every size is a positive integer, group width C_in/g and rank C_out/(g s) are >= 2, and
    # the rank stays below the group width (otherwise Operator 1 degenerates to a dense conv)
    g, s = m["g"], 2
    assert m["C_in"] == m["C_out"] and m["C_out"] % (g * s) == 0
    assert m["C_in"] // g > m["C_out"] // (g * s) >= 2
    full = probe_mapping(ops, max_coefficient=None)
    assert "g" not in full and full["C_in"] % 64 == 0
    for op in ops:
        op.bind(m)  # no SizeError
    base = probe_mapping([conv2d()], base={"C_in": 16, "C_out": 24, "H": 10})
    assert base["C_in"] == 16 and base["C_out"] == 24 and base["H"] == 10


def test_hash_and_interface_short_circuit():
    a = compare(operator1(), operator1())
    assert a.same and a.reason == "hash"
    b = compare(conv2d(), pointwise_conv2d())  # same interface, different receptive field
    assert interface_key(conv2d()) == interface_key(pointwise_conv2d())
    assert not b.same


def test_redundant_reparameterization_is_a_duplicate():
    a, b = conv2d(), conv_scaled()
    assert a.hash != b.hash
    v = compare(a, b, FAST)
    assert v.same and v.reason == "fit"
    assert v.a_fits_b.residual < FAST.tol and v.b_fits_a.residual < FAST.tol


def test_subset_family_is_not_a_duplicate():
    # a dense conv reproduces Operator 1 (a rank-restricted 3x3 conv), but not the other way round
    v = compare(operator1(), conv2d(), FAST)
    assert not v.same
    assert v.b_fits_a.residual < FAST.tol
    assert v.a_fits_b.residual > 0.2


def test_different_operators_are_distinct():
    v = compare(operator1(), stacked_conv(), FAST)
    assert not v.same and v.reason == "no-fit"


def test_channel_assignment_recovers_a_permutation():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(2, 6, 3, 3, generator=g)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    scale = torch.tensor([1.0, -2.0, 0.5, 3.0, 1.5, -1.0]).view(1, -1, 1, 1)
    student = torch.empty_like(t)
    student[:, perm] = t * scale          # student channel perm[i] = scaled teacher channel i
    p = _assign(student, t, axis=1)
    assert torch.equal(p, perm)
    assert torch.allclose(student.index_select(1, p) / scale, t)


def test_einsum_evaluator_counts_an_expanded_reduction():
    from syno.ir.builder import Builder
    from syno.ir.library import CONV_OUTPUT, conv_space

    b = Builder(conv_space(), CONV_OUTPUT, name="pointwise_times_k")
    n, co, h, w = b.outputs
    ci, extra = b.reduce("C_in"), b.reduce("k_1")
    co_x, co_w = b.share(co, 1)
    b.expand(co_x)
    ci_x, ci_w = b.share(ci, 1)
    b.expand(extra)  # summed over, read by no tensor: a factor k_1
    op = b.build([n, ci_x, h, w], [[co_w, ci_w]])
    m = probe_mapping([op])
    fn = operator_function(op, m, torch.Generator().manual_seed(0))
    x = torch.randn(fn.input_shape)
    with torch.no_grad():
        assert torch.allclose(fn(x), reference_forward(op, m, [x, *fn.weights]), rtol=1e-4, atol=1e-4)
