"""Each primitive's forward semantics, checked through the reference evaluator against torch ops."""

import torch
import torch.nn.functional as F
import pytest

from syno.ir.builder import Builder
from syno.ir.evaluate import reference_forward
from syno.ir.primitives import IRError, IteratorDim, Merge, ReduceDim, Share, Shift, Split, Unfold
from syno.ir.sizes import SizeSpace


@pytest.fixture()
def space():
    return SizeSpace.from_specs(["A", "B", "C"], ["k=3", "s=2"])


def run(op, mapping, *tensors):
    return reference_forward(op, mapping, [t.double() for t in tensors])


def test_interning(space):
    a = IteratorDim(0, space.size("A"))
    assert IteratorDim(0, space.size("A")) is a
    assert Shift(a) is Shift(a) and Shift(a).tops[0] is Shift(a).tops[0]
    r0, r1 = ReduceDim(space.size("A"), 0), ReduceDim(space.size("A"), 1)
    assert r0 is not r1 and r0.digest != r1.digest
    assert Share(a, 1).tops[0].digest == Share(a, 1).tops[0].digest
    assert Share(a, 1).tops[0] is not Share(a, 1).tops[1]


def test_invalid_primitives(space):
    a = IteratorDim(0, space.size("A"))
    with pytest.raises(IRError):
        Split(a, a)
    with pytest.raises(IRError):
        Merge(a, space.size("A"))  # trivial major part
    with pytest.raises(IRError):
        Share(a, 0)


def test_merge_is_flatten(space):
    # out[i] = x[i // B, i % B]: Merge(i, B) -> (major A, minor B)
    b = Builder(space, "[A*B]")
    (i,) = b.outputs
    major, minor = b.merge(i, "B")
    op = b.build([major, minor])
    x = torch.randn(3, 4)
    assert torch.equal(run(op, {"A": 3, "B": 4, "C": 1}, x), x.double().reshape(12))


def test_split_is_reshape(space):
    b = Builder(space, "[A, B]")
    i, j = b.outputs
    op = b.build([b.split(i, j)])
    x = torch.randn(12)
    assert torch.equal(run(op, {"A": 3, "B": 4, "C": 1}, x), x.double().reshape(3, 4))


def test_shift_is_roll(space):
    b = Builder(space, "[A]")
    (i,) = b.outputs
    op = b.build([b.shift(i)])
    x = torch.randn(5)
    assert torch.equal(run(op, {"A": 5, "B": 1, "C": 1}, x), torch.roll(x.double(), -1))


def test_stride_takes_every_sth(space):
    b = Builder(space, "[A]")
    (i,) = b.outputs
    op = b.build([b.stride(i, "s")])
    x = torch.randn(10)
    assert torch.equal(run(op, {"A": 5, "B": 1, "C": 1}, x), x.double()[::2])


def test_unfold_same_padding_window_sum(space):
    # out[i] = sum_r x[i + r - k//2] (zero outside): a box filter with same padding
    b = Builder(space, "[A]")
    (i,) = b.outputs
    r = b.reduce("k")
    op = b.build([b.unfold(i, r)])
    x = torch.randn(7)
    want = F.conv1d(x.double().view(1, 1, 7), torch.ones(1, 1, 3, dtype=torch.double), padding=1).view(7)
    assert torch.allclose(run(op, {"A": 7, "B": 1, "C": 1}, x), want)


def test_share_contraction_is_matmul(space):
    b = Builder(space, "[A, C]")
    i, k = b.outputs
    j = b.reduce("B")
    jx, jw = b.share(j, 1)
    kx, kw = b.share(k, 1)
    b.expand(kx)
    op = b.build([i, jx], [[jw, kw]])
    x, w = torch.randn(3, 4), torch.randn(4, 5)
    assert torch.allclose(run(op, {"A": 3, "B": 4, "C": 5}, x, w), x.double() @ w.double())


def test_expand_broadcasts(space):
    b = Builder(space, "[A, B]")
    i, j = b.outputs
    b.expand(j)
    op = b.build([i])
    x = torch.randn(3)
    assert torch.equal(run(op, {"A": 3, "B": 4, "C": 1}, x), x.double()[:, None].expand(3, 4))
