"""Dimensions and primitives of the operator IR.

An operator is a DAG whose *edges are dimensions* (loop iterators with a symbolic size) and whose
*vertices are primitives*. Naming follows the bottom-up (output -> input) view used by synthesis:

* bottom leaves are output :class:`IteratorDim` s and :class:`ReduceDim` s (summed loops);
* a primitive consumes its *bottom* dims and produces *top* dims, nearer the input tensors;
* the top-most dims are the axes of the data input and of the weight tensors.

Forward index semantics (top index from bottom indices), with ``n`` the bottom size:

=========  ===================  =======================================  =========================
primitive  bottoms -> tops      top index                                forward meaning
=========  ===================  =======================================  =========================
Shift      b -> t               t = (b + 1) mod n                        cyclic roll by one
Stride     b -> t (size s*n)    t = b * s                                take every s-th element
Split      l, r -> t (|l|*|r|)  t = l * |r| + r                          reshape t into (l, r)
Unfold     m, w -> t (|m|)      t = m + w - |w| // 2, zero outside       sliding window, "same" pad
Merge      b -> major, minor    major = b // blk, minor = b mod blk      flatten (major, minor)
Share      b -> data, weight    data = weight = b                        elementwise product
Expand     b -> (none)          --                                       broadcast along b
=========  ===================  =======================================  =========================

Dims and ops are interned: building the same op on the same bottoms returns the same object, so
identity is structural equality. :attr:`Dim.digest` is a stable content hash (same across runs and
processes), unlike Python's salted ``hash``.
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Any, Callable, Sequence

from .sizes import Size, SizeError

_DIMS: "weakref.WeakValueDictionary[tuple, Dim]" = weakref.WeakValueDictionary()
_OPS: "weakref.WeakValueDictionary[tuple, Op]" = weakref.WeakValueDictionary()


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class IRError(ValueError):
    """A structurally invalid primitive or operator graph."""


class Dim:
    """A dimension: an edge of the operator DAG. Create through the constructors below."""

    __slots__ = ("size", "key", "_hash", "_digest", "height", "__weakref__")
    kind = "dim"

    size: Size
    key: tuple
    height: int

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other

    @property
    def digest(self) -> str:
        if self._digest is None:
            self._digest = _digest(self.describe_key())
        return self._digest

    def describe_key(self) -> str:
        raise NotImplementedError

    def __lt__(self, other: Dim) -> bool:
        return (self.height, self.digest) < (other.height, other.digest)


def _intern_dim(cls, key: tuple, init: Callable[[Dim], None]) -> Dim:
    dim = _DIMS.get(key)
    if dim is None:
        dim = object.__new__(cls)
        dim.key = key
        dim._hash = hash(key)
        dim._digest = None
        init(dim)
        _DIMS[key] = dim
    return dim


class IteratorDim(Dim):
    """Output axis ``index`` of the operator (an outer loop ``i_<index>``)."""

    __slots__ = ("index", "unordered")
    kind = "iterator"

    def __new__(cls, index: int, size: Size, unordered: bool = False):
        def init(d):
            d.index, d.size, d.unordered, d.height = index, size, unordered, 0
        return _intern_dim(cls, ("I", index, size, unordered), init)

    def describe_key(self) -> str:
        return f"I{self.index}:{self.size}:{int(self.unordered)}"

    def __repr__(self) -> str:
        return f"i_{self.index}<{self.size}>"


class ReduceDim(Dim):
    """A summed loop of domain ``size``; ``multiplicity`` tells apart reductions of equal domain."""

    __slots__ = ("multiplicity",)
    kind = "reduce"

    def __new__(cls, size: Size, multiplicity: int = 0):
        def init(d):
            d.size, d.multiplicity, d.height = size, multiplicity, 1
        return _intern_dim(cls, ("R", size, multiplicity), init)

    def describe_key(self) -> str:
        return f"R{self.multiplicity}:{self.size}"

    def __repr__(self) -> str:
        return f"r<{self.size}#{self.multiplicity}>"


class TopDim(Dim):
    """Top dim number ``slot`` produced by primitive ``op``."""

    __slots__ = ("op", "slot")
    kind = "top"

    def __new__(cls, op: Op, slot: int, size: Size):
        def init(d):
            d.op, d.slot, d.size = op, slot, size
            d.height = 1 + max(b.height for b in op.bottoms)
        return _intern_dim(cls, ("T", op, slot), init)

    def describe_key(self) -> str:
        return f"{self.op.describe_key()}.{self.slot}"

    def __repr__(self) -> str:
        return f"{self.op.name}{'' if len(self.op.tops) < 2 else '.' + str(self.slot)}<{self.size}>"


class Op:
    """A primitive: consumes ``bottoms`` (output side), produces ``tops`` (input side)."""

    __slots__ = ("bottoms", "params", "tops", "_hash", "__weakref__")
    name = "Op"
    n_bottoms = 1

    bottoms: tuple[Dim, ...]
    params: tuple
    tops: tuple[TopDim, ...]

    def __new__(cls, *bottoms_and_params):
        bottoms = tuple(bottoms_and_params[: cls.n_bottoms])
        params = tuple(bottoms_and_params[cls.n_bottoms:])
        for b in bottoms:
            if not isinstance(b, Dim):
                raise IRError(f"{cls.name}: operand {b!r} is not a dimension")
        key = (cls.name, bottoms, params)
        op = _OPS.get(key)
        if op is None:
            op = object.__new__(cls)
            op.bottoms, op.params, op._hash = bottoms, params, hash(key)
            sizes = op.check_and_top_sizes()
            op.tops = tuple(TopDim(op, i, s) for i, s in enumerate(sizes))
            _OPS[key] = op
        return op

    def __init__(self, *args):
        pass

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other

    def check_and_top_sizes(self) -> list[Size]:
        raise NotImplementedError

    def describe_key(self) -> str:
        params = ",".join(str(p) for p in self.params)
        return f"{self.name}[{params}](" + ",".join(b.digest for b in self.bottoms) + ")"

    # Forward index semantics: works on ints, numpy arrays and torch tensors alike.
    def top_indices(self, bottoms: Sequence[Any], sizes: Callable[[Size], int]) -> tuple[list[Any], Any]:
        """Top index values from bottom index values; second item is a validity mask or None."""
        raise NotImplementedError

    def top_exprs(self, bottoms: Sequence[str]) -> list[str]:
        """Top index expressions (C-like text) from bottom expressions."""
        raise NotImplementedError

    def __repr__(self) -> str:
        extra = "".join(f", {p}" for p in self.params)
        return f"{self.name}({', '.join(map(repr, self.bottoms))}{extra})"


class Shift(Op):
    name = "Shift"

    def check_and_top_sizes(self):
        return [self.bottoms[0].size]

    def top_indices(self, b, sizes):
        return [(b[0] + 1) % sizes(self.bottoms[0].size)], None

    def top_exprs(self, b):
        return [f"({b[0]} + 1) % ({self.bottoms[0].size})"]


class Stride(Op):
    name = "Stride"

    @property
    def stride(self) -> Size:
        return self.params[0]

    def check_and_top_sizes(self):
        if len(self.params) != 1 or not isinstance(self.params[0], Size):
            raise IRError("Stride needs one stride size")
        if not self.stride.is_coefficient():
            raise IRError(f"Stride: stride {self.stride} must be a coefficient size such as 's'")
        return [self.stride * self.bottoms[0].size]

    def top_indices(self, b, sizes):
        return [b[0] * sizes(self.stride)], None

    def top_exprs(self, b):
        return [f"{b[0]} * {self.stride}"]


class Split(Op):
    name = "Split"
    n_bottoms = 2

    def check_and_top_sizes(self):
        lhs, rhs = self.bottoms
        if lhs is rhs:
            raise IRError("Split: operands must be distinct dimensions")
        return [lhs.size * rhs.size]

    def top_indices(self, b, sizes):
        return [b[0] * sizes(self.bottoms[1].size) + b[1]], None

    def top_exprs(self, b):
        return [f"{b[0]} * {self.bottoms[1].size} + {b[1]}"]


class Unfold(Op):
    name = "Unfold"
    n_bottoms = 2

    @property
    def window(self) -> Size:
        return self.bottoms[1].size

    def check_and_top_sizes(self):
        main, window = self.bottoms
        if main is window:
            raise IRError("Unfold: operands must be distinct dimensions")
        return [main.size]

    def top_indices(self, b, sizes):
        n = sizes(self.bottoms[0].size)
        k = sizes(self.window)
        top = b[0] + b[1] - k // 2
        return [top], (top >= 0) & (top < n)

    def top_exprs(self, b):
        return [f"restrict(({b[0]} + {b[1]}) - ({self.window}) / 2, 0, {self.bottoms[0].size})"]


class Merge(Op):
    name = "Merge"

    @property
    def block(self) -> Size:
        return self.params[0]

    def check_and_top_sizes(self):
        if len(self.params) != 1 or not isinstance(self.params[0], Size):
            raise IRError("Merge needs one block size")
        major = self.bottoms[0].size / self.block
        if major.is_one() or self.block.is_one():
            raise IRError(f"Merge: block {self.block} of {self.bottoms[0].size} leaves a trivial part")
        if not major.is_legal() or not self.block.is_legal():
            raise IRError(f"Merge: {self.bottoms[0].size} / {self.block} is not a legal size")
        return [major, self.block]

    def top_indices(self, b, sizes):
        blk = sizes(self.block)
        return [b[0] // blk, b[0] % blk], None

    def top_exprs(self, b):
        return [f"{b[0]} / ({self.block})", f"{b[0]} % ({self.block})"]


class Share(Op):
    """Ties data dim ``tops[0]`` to weight dim ``tops[1]`` of weight tensor ``weight`` (1-based)."""

    name = "Share"

    @property
    def weight(self) -> int:
        return self.params[0]

    def check_and_top_sizes(self):
        if len(self.params) != 1 or not isinstance(self.params[0], int) or self.params[0] < 1:
            raise IRError("Share needs a weight id >= 1")
        s = self.bottoms[0].size
        return [s, s]

    def top_indices(self, b, sizes):
        return [b[0], b[0]], None

    def top_exprs(self, b):
        return [b[0], b[0]]


class Expand(Op):
    """Broadcast: the bottom dim exists in the loop nest but in no tensor."""

    name = "Expand"

    def check_and_top_sizes(self):
        return []

    def top_indices(self, b, sizes):
        return [], None

    def top_exprs(self, b):
        return []


PRIMITIVES: dict[str, type[Op]] = {c.name: c for c in (Shift, Stride, Split, Unfold, Merge, Share, Expand)}


def op_from_name(name: str) -> type[Op]:
    try:
        return PRIMITIVES[name]
    except KeyError:
        raise IRError(f"unknown primitive {name!r}; known: {', '.join(PRIMITIVES)}") from None


__all__ = ["Dim", "IteratorDim", "ReduceDim", "TopDim", "Op", "Shift", "Stride", "Split", "Unfold",
           "Merge", "Share", "Expand", "PRIMITIVES", "IRError", "SizeError", "op_from_name"]
