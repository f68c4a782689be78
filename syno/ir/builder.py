"""Write operators by hand, bottom-up, mirroring the loop nest.

Start from the output axes, add reductions, apply primitives towards the input, then declare which
dims form the input tensor and each weight::

    b = Builder(space, "[N, C_out, H, W]")
    n, co, h, w = b.outputs
    ci, kh, kw = b.reduce("C_in"), b.reduce("k"), b.reduce("k")
    co_x, co_w = b.share(co, 1); b.expand(co_x)          # outer product: input has no C_out
    ci_x, ci_w = b.share(ci, 1)
    kh_x, kh_w = b.share(kh, 1); kw_x, kw_w = b.share(kw, 1)
    op = b.build(input=[n, ci_x, b.unfold(h, kh_x), b.unfold(w, kw_x)],
                 weights=[[co_w, ci_w, kh_w, kw_w]])
"""

from __future__ import annotations

from typing import Sequence

from .graph import Operator
from .primitives import Dim, IteratorDim, Merge, ReduceDim, Share, Shift, Split, Stride, Unfold
from .sizes import Size, SizeSpace


class Builder:
    def __init__(self, space: SizeSpace, output_shape: str, name: str = ""):
        self.space = space
        shape = space.shape(output_shape)
        self.outputs: tuple[IteratorDim, ...] = tuple(
            IteratorDim(i, s, u) for i, (s, u) in enumerate(zip(shape.sizes, shape.unordered)))
        self.name = name
        self._reduce_count: dict[Size, int] = {}
        self._expanded: list[Dim] = []

    def size(self, s: str | Size) -> Size:
        return self.space.size(s)

    def reduce(self, size: str | Size) -> ReduceDim:
        s = self.size(size)
        m = self._reduce_count.get(s, 0)
        self._reduce_count[s] = m + 1
        return ReduceDim(s, m)

    def share(self, dim: Dim, weight: int) -> tuple[Dim, Dim]:
        """Returns (data side, weight side)."""
        op = Share(dim, weight)
        return op.tops[0], op.tops[1]

    def expand(self, dim: Dim) -> None:
        self._expanded.append(dim)

    def merge(self, dim: Dim, block: str | Size) -> tuple[Dim, Dim]:
        """Returns (major, minor): forward, ``dim = major * block + minor``."""
        op = Merge(dim, self.size(block))
        return op.tops[0], op.tops[1]

    def split(self, major: Dim, minor: Dim) -> Dim:
        return Split(major, minor).tops[0]

    def shift(self, dim: Dim) -> Dim:
        return Shift(dim).tops[0]

    def stride(self, dim: Dim, stride: str | Size) -> Dim:
        return Stride(dim, self.size(stride)).tops[0]

    def unfold(self, main: Dim, window: Dim) -> Dim:
        return Unfold(main, window).tops[0]

    def build(self, input: Sequence[Dim], weights: Sequence[Sequence[Dim]] = ()) -> Operator:
        return Operator(self.space, self.outputs, tuple(input), tuple(tuple(w) for w in weights),
                        tuple(self._expanded), self.name)
