"""Cached structural properties of dimensions used by the canonicalization rules and the bounds.

Dims are interned and immutable, so every property is a pure function of the dim and is memoized in
module-level dictionaries (per process). Vocabulary (reference §4): "d is an X input" means d is the
top dim of an X op; ShareL/ShareR are the data/weight tops of a Share; MergeL/MergeR the
major/minor tops of a Merge.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Mapping

from syno.ir.primitives import (Dim, IteratorDim, Merge, Op, ReduceDim, Share, Split, Stride, TopDim,
                                Unfold)

_LEAVES: dict[Dim, frozenset] = {}
_TAGS: dict[Dim, frozenset] = {}
_DD: dict[Dim, bool] = {}
_SCOPE: dict[Dim, object] = {}
_SIG: dict[Dim, str] = {}
_CTYPE: dict[Dim, tuple[str, int]] = {}


def _h(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def kind(d: Dim) -> str:
    """'iterator', 'reduce', or the producing op with side: 'Shift', 'Stride', 'Split', 'Unfold',
    'MergeL', 'MergeR', 'ShareL', 'ShareR'."""
    if isinstance(d, IteratorDim):
        return "iterator"
    if isinstance(d, ReduceDim):
        return "reduce"
    op = d.op
    if isinstance(op, Merge):
        return "MergeL" if d.slot == 0 else "MergeR"
    if isinstance(op, Share):
        return "ShareL" if d.slot == 0 else "ShareR"
    return op.name


def is_share_l(d: Dim) -> bool:
    return isinstance(d, TopDim) and isinstance(d.op, Share) and d.slot == 0


def is_share_r(d: Dim) -> bool:
    return isinstance(d, TopDim) and isinstance(d.op, Share) and d.slot == 1


def top_of(d: Dim, cls: type[Op]) -> bool:
    return isinstance(d, TopDim) and isinstance(d.op, cls)


def leaves(d: Dim) -> frozenset:
    """Output iterators and reductions below ``d``."""
    out = _LEAVES.get(d)
    if out is None:
        if isinstance(d, TopDim):
            acc: set = set()
            for b in d.op.bottoms:
                acc |= leaves(b)
            out = frozenset(acc)
        else:
            out = frozenset((d,))
        _LEAVES[d] = out
    return out


def weights_below(d: Dim) -> frozenset:
    """Weight ids of the Shares below ``d`` (the original's "tags")."""
    out = _TAGS.get(d)
    if out is None:
        if isinstance(d, TopDim):
            acc: set = set()
            for b in d.op.bottoms:
                acc |= weights_below(b)
            if isinstance(d.op, Share):
                acc.add(d.op.weight)
            out = frozenset(acc)
        else:
            out = frozenset()
        _TAGS[d] = out
    return out


def data_discarding(d: Dim) -> bool:
    """Not every index of ``d`` is read: set by Stride, absorbed only on an Unfold's window side."""
    out = _DD.get(d)
    if out is None:
        if not isinstance(d, TopDim):
            out = False
        elif isinstance(d.op, Stride):
            out = True
        elif isinstance(d.op, Unfold):
            out = data_discarding(d.op.bottoms[0])
        else:
            out = any(data_discarding(b) for b in d.op.bottoms)
        _DD[d] = out
    return out


def ends_up_reduce(d: Dim) -> bool:
    ls = leaves(d)
    return bool(ls) and all(isinstance(x, ReduceDim) for x in ls)


def unordered_scope(d: Dim):
    """The dim unorderedness stems from (an unordered output iterator, or a reduction), else None.

    Repeat-like ops and both Merge halves keep the scope; a Split/Unfold top keeps it only if both
    operands share it; a Stride breaks it (data is discarded) as does anything below a Share's
    weight side."""
    if d in _SCOPE:
        return _SCOPE[d]
    if isinstance(d, IteratorDim):
        out = d if d.unordered else None
    elif isinstance(d, ReduceDim):
        out = d
    else:
        op = d.op
        if isinstance(op, (Split, Unfold)):
            a, b = (unordered_scope(x) for x in op.bottoms)
            out = a if a is not None and a is b else None
        elif isinstance(op, Stride):
            out = None
        else:
            out = unordered_scope(op.bottoms[0])
    _SCOPE[d] = out
    return out


def is_unordered(d: Dim) -> bool:
    return unordered_scope(d) is not None


def contraction_type(d: Dim) -> tuple[str, int]:
    """(type, number of Shares passed): walking down through ShareL chains, a bottom that is an
    output iterator or a Merge top is 'merge' (outer product possible), a reduction reached through
    at least one Share is 'weights_sharing' (low-rank style, outer product possible), else 'normal'."""
    out = _CTYPE.get(d)
    if out is None:
        x, n = d, 0
        while is_share_l(x):
            x, n = x.op.bottoms[0], n + 1
        if isinstance(x, IteratorDim) or top_of(x, Merge):
            out = ("merge", n)
        elif isinstance(x, ReduceDim) and n >= 1:
            out = ("weights_sharing", n)
        else:
            out = ("normal", n)
        _CTYPE[d] = out
    return out


def shape_sig(d: Dim) -> str:
    """Structural digest with reduction multiplicities erased: invariant under relabelling equal
    reductions (used where a rule must not depend on labels, e.g. the contraction order K4)."""
    out = _SIG.get(d)
    if out is None:
        if isinstance(d, ReduceDim):
            out = _h(f"R:{d.size}")
        elif isinstance(d, IteratorDim):
            out = d.digest
        else:
            op = d.op
            params = ",".join(str(p) for p in op.params)
            out = _h(f"{op.name}[{params}](" + ",".join(shape_sig(b) for b in op.bottoms) + f").{d.slot}")
        _SIG[d] = out
    return out


def order_key(d: Dim) -> tuple:
    """Label-invariant global order used for tie-breaks (the original's (height, hash))."""
    return (d.height, shape_sig(d))


# ----------------------------------------------------------------------------------- reshapes
def split_atoms(d: Dim) -> list[Dim]:
    """Pieces reached by descending through nested Split tops only, left to right."""
    if top_of(d, Split):
        return split_atoms(d.op.bottoms[0]) + split_atoms(d.op.bottoms[1])
    return [d]


def boundary(d: Dim, side: int) -> Dim:
    """Leftmost (side 0) / rightmost (side 1) piece of ``d`` through nested Splits."""
    while top_of(d, Split):
        d = d.op.bottoms[side]
    return d


def merge_root(d: Dim) -> Dim | None:
    """For a Merge top, the bottom of the outermost Merge of its merge chain (through Merge tops)."""
    if not top_of(d, Merge):
        return None
    x = d
    while top_of(x, Merge):
        x = x.op.bottoms[0]
    return x


def merge_neighbours(d: Dim) -> list[Dim]:
    """Pieces adjacent to Merge top ``d`` in its merge tree (siblings and, for nested right merges,
    the piece left of the parent)."""
    if not top_of(d, Merge):
        return []
    op = d.op
    out = [op.tops[1 - d.slot]]
    parent = op.bottoms[0]
    if d.slot == 0 and top_of(parent, Merge) and parent.slot == 1:
        out.append(parent.op.tops[0])  # major of a nested merge touches the parent's major
    return out


# ----------------------------------------------------------------------------------- relabel
def rebuild(d: Dim, mapping: Mapping[Dim, Dim], memo: dict[Dim, Dim]) -> Dim:
    """``d`` with leaf dims substituted by ``mapping`` (ops re-interned)."""
    got = memo.get(d)
    if got is not None:
        return got
    if not isinstance(d, TopDim):
        out = mapping.get(d, d)
    else:
        op = d.op
        bottoms = [rebuild(b, mapping, memo) for b in op.bottoms]
        if all(nb is b for nb, b in zip(bottoms, op.bottoms)):
            out = d
        else:
            out = type(op)(*bottoms, *op.params).tops[d.slot]
    memo[d] = out
    return out


def reduce_groups(reductions: Iterable[ReduceDim]) -> list[list[ReduceDim]]:
    """Groups (size >= 2) of reductions with equal domains, ordered by multiplicity."""
    if not isinstance(reductions, (list, tuple)):
        reductions = list(reductions)
    if len({r.size for r in reductions}) == len(reductions):
        return []  # all domains distinct (the common case: no dict of lists to build)
    by: dict = {}
    for r in reductions:
        by.setdefault(r.size, []).append(r)
    return [sorted(g, key=lambda r: r.multiplicity) for g in by.values() if len(g) >= 2]


__all__ = ["kind", "is_share_l", "is_share_r", "top_of", "leaves", "weights_below", "data_discarding",
           "ends_up_reduce", "unordered_scope", "is_unordered", "contraction_type", "shape_sig",
           "order_key", "split_atoms", "boundary", "merge_root", "merge_neighbours", "rebuild",
           "reduce_groups"]
