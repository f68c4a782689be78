"""FLOPs of finished operators and a FLOPs lower bound for partial ones (the FLOPs window).

* :func:`operator_flops` is what the window is checked against: the planned FLOPs of
  :mod:`syno.ir.lowering` (``Operator.flops``).
* :func:`staged_flops` ("leaf model"): the data input is contracted with one weight at a time (best
  order per mapping); a stage iterates over every output iterator / reduction that its operands
  depend on; reductions are summed as soon as no later operand needs them (reductions of the input
  alone are pooled first). Exact for einsum-like operators, an over-estimate where a plan could
  iterate over a combined view index (e.g. an Unfold top) instead of its two leaves.
* :func:`stage_lower_bound`: ``max(numel(outputs), max_j numel(committed ∪ linked_j))`` per mapping,
  the building block of :meth:`SynthSpace.flops_lower_bound` (which uses it conservatively, see
  there) -- the original's FLOPs game plays the same role (reference §5.6).
"""

from __future__ import annotations

from itertools import permutations
from typing import Iterable, Sequence

from syno.ir.graph import Operator
from syno.ir.lowering import planned_flops
from syno.ir.primitives import Dim
from syno.ir.sizes import Bindings

from .analysis import leaves

def _numel(dims: Iterable[Dim], b: Bindings) -> list[int]:
    out = [1] * len(b)
    for d in dims:
        for i, v in enumerate(b.ints(d.size)):
            out[i] *= v
    return out


def staged_flops(op: Operator, b: Bindings) -> tuple[int, ...]:
    """Multiply-accumulates of the leaf-model staged plan (see module doc), per mapping."""
    anc_x = frozenset().union(*(leaves(d) for d in op.input)) if op.input else frozenset()
    anc_w = [frozenset().union(*(leaves(d) for d in w)) for w in op.weights]
    outs = frozenset(op.outputs)
    reds = frozenset(op.reductions)
    values = {d: b.ints(d.size) for d in outs | reds}
    n = len(b)

    def numel(s: frozenset, i: int) -> int:
        p = 1
        for d in s:
            p *= values[d][i]
        return p

    if not op.weights:
        return tuple(numel(outs | reds, i) for i in range(n))
    best = [None] * n
    for order in permutations(range(len(anc_w))):
        stages: list[frozenset] = []
        live = anc_x
        needed = frozenset().union(*anc_w)
        pool = frozenset(r for r in live & reds if r not in needed)
        if pool:
            stages.append(live)
            live = live - pool
        summed = pool
        for k, j in enumerate(order):
            loop = live | anc_w[j]
            if k == len(order) - 1:
                loop = loop | outs | (reds - summed)
            stages.append(loop)
            later = frozenset().union(*(anc_w[o] for o in order[k + 1:])) if k + 1 < len(order) else frozenset()
            done = frozenset(r for r in loop & reds if r not in later)
            summed = summed | done
            live = loop - done
        for i in range(n):
            cost = sum(numel(s, i) for s in stages)
            if best[i] is None or cost < best[i]:
                best[i] = cost
    return tuple(best)


def operator_flops(op: Operator, b: Bindings) -> tuple[int, ...]:
    """The planned FLOPs of ``op`` (the plan codegen executes), per mapping of ``b``: the numbers
    of ``op.flops(b)``, without building the plans' steps (most checked operators are rejected)."""
    return planned_flops(op, b)


def stage_lower_bound(linked_leaves: Sequence[Sequence[Dim]], committed: Iterable[Dim],
                      outputs: Sequence[Dim], b: Bindings) -> list[int]:
    """max(numel(outputs), max_j numel(committed ∪ linked_j)), per mapping; ``linked_j`` are the
    leaves of weight ``j`` that the data input or the output also carries."""
    base = frozenset(committed)
    best = _numel(outputs, b)
    for ls in linked_leaves:
        vals = _numel(base.union(ls), b)
        best = [max(x, y) for x, y in zip(best, vals)]
    return best


__all__ = ["operator_flops", "staged_flops", "stage_lower_bound"]
