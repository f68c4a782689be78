"""Canonical forms of whole operators (the equivalence the synthesis space enumerates up to).

Two operators are *canonically equivalent* when they compute the same function up to

1. relabelling reductions of equal domain (swapping summation variables), and
2. reshaping weights: ``Merge(Share(x, w))`` = Share both halves of ``Merge(x)`` (the weight axis
   split in two, rule M1), and ``Split(Share(a, w), Share(b, w))`` = ``Share(Split(a, b), w)`` (two
   weight axes fused, rule S3).

:func:`canonical_form` rewrites (2) to a fixpoint and then applies the canonical relabelling of (1)
used by the search states, so ``canonical_form(op).hash`` equals the hash of the final node the
space enumerates for ``op`` (when it lies in the space). Weight reshaping changes weight shapes but
not the function family: the weight entries correspond one to one.
"""

from __future__ import annotations

from typing import Iterable

from syno.ir.graph import Operator
from syno.ir.primitives import Dim, Merge, Share, Split, TopDim

from . import analysis as A
from .state import canonical_mapping


def _rewrite_once(op: Operator) -> tuple[Operator, bool]:
    memo: dict[Dim, Dim] = {}
    weight_axes: dict[Dim, list[Dim]] = {}  # old weight-side dim -> replacement axes ([] = dropped)
    changed = [False]

    def nd(d: Dim) -> Dim:
        got = memo.get(d)
        if got is not None:
            return got
        if not isinstance(d, TopDim):
            out = d
        else:
            o = d.op
            if isinstance(o, Merge) and A.is_share_l(o.bottoms[0]):
                # Merge(ShareL(x, w)) -> ShareL of both halves of Merge(x)
                sh = o.bottoms[0].op
                m = Merge(nd(sh.bottoms[0]), o.block)
                shares = [Share(t, sh.weight) for t in m.tops]
                weight_axes[sh.tops[1]] = [s.tops[1] for s in shares]
                changed[0] = True
                out = shares[d.slot].tops[0]
            elif isinstance(o, Split) and all(A.is_share_l(b) for b in o.bottoms) \
                    and o.bottoms[0].op.weight == o.bottoms[1].op.weight:
                # Split(ShareL(a, w), ShareL(b, w)) -> ShareL(Split(a, b), w)
                sa, sb = o.bottoms[0].op, o.bottoms[1].op
                sp = Split(nd(sa.bottoms[0]), nd(sb.bottoms[0]))
                sh = Share(sp.tops[0], sa.weight)
                weight_axes[sa.tops[1]] = [sh.tops[1]]
                weight_axes[sb.tops[1]] = []
                changed[0] = True
                out = sh.tops[0]
            else:
                out = type(o)(*[nd(b) for b in o.bottoms], *o.params).tops[d.slot]
        memo[d] = out
        return out

    inputs = [nd(d) for d in op.input]
    expanded = [nd(d) for d in op.expanded]
    weights = []
    for w in op.weights:
        axes: list[Dim] = []
        for d in w:
            if d in weight_axes:
                axes.extend(weight_axes[d])
            else:
                axes.append(nd(d))
        weights.append(axes)
    new = Operator(op.space, op.outputs, tuple(inputs), tuple(tuple(w) for w in weights),
                   tuple(expanded), op.name)
    return new, changed[0]


def rewrite_weight_reshapes(op: Operator, max_rounds: int = 16) -> Operator:
    """Apply the weight-reshape rewrites (2) until none applies."""
    for _ in range(max_rounds):
        op, changed = _rewrite_once(op)
        if not changed:
            return op
    raise RuntimeError("weight-reshape rewriting did not converge")


def relabel_reductions(op: Operator, fixed_inputs: Iterable[int] = ()) -> Operator:
    """The canonical relabelling of equal-domain reductions (as in search states). ``fixed_inputs``:
    input axes that bypass the search (excluded from the frontier key, like the search does)."""
    fixed = set(fixed_inputs)
    current = [d for k, d in enumerate(op.input) if k not in fixed]
    weights = [d for w in op.weights for d in w]
    mapping = canonical_mapping(current, weights, op.expanded, op.reductions)
    if not mapping:
        return op
    memo: dict = {}
    return Operator(op.space, op.outputs, tuple(A.rebuild(d, mapping, memo) for d in op.input),
                    tuple(tuple(A.rebuild(d, mapping, memo) for d in w) for w in op.weights),
                    tuple(A.rebuild(d, mapping, memo) for d in op.expanded), op.name)


def canonical_form(op: Operator, fixed_inputs: Iterable[int] = ()) -> Operator:
    """Weight reshapes normalised, then reductions canonically relabelled."""
    return relabel_reductions(rewrite_weight_reshapes(op), fixed_inputs)


def canonical_hash(op: Operator, fixed_inputs: Iterable[int] = ()) -> str:
    return canonical_form(op, fixed_inputs).hash


__all__ = ["canonical_form", "canonical_hash", "relabel_reductions", "rewrite_weight_reshapes"]
