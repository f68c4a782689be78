"""Test helper: random valid operators built with :class:`syno.ir.builder.Builder` (for testing codegen).

Independent of the synthesizer (``syno.synth``): it does not follow the search's canonical form,
so it also produces shapes the search never would (broadcast outputs, shifts of shares, weights
holding a dim and its unfold window, ...). Every operator it returns is valid IR with integral
sizes under :data:`MAPPING` and a small loop nest, so the reference evaluator can check it.

``random_operator(choose)`` takes ``choose(n) -> int in [0, n)``; :func:`from_random` drives it
with :class:`random.Random`, :func:`operators` is a Hypothesis strategy (shrinks well: every
decision is one drawn integer).
"""

from __future__ import annotations

import math
import random
from typing import Callable

from syno.ir.builder import Builder
from syno.ir.graph import Operator
from syno.ir.primitives import Dim, IRError, IteratorDim, ReduceDim
from syno.ir.sizes import SizeError, SizeSpace

PRIMARY = ("N: 0", "C: 3", "H: 2")
COEFFICIENT = ("k=3: 2", "s=2: 2", "g=2: 2")
MAPPING = {"N": 2, "C": 4, "H": 6}
OUTPUTS = ("[N, C, H]", "[N, C, H, H]", "[N, H, C]", "[N, C]", "[C, H]", "[N, H]")
REDUCE_SIZES = ("k", "C", "s", "g", "H", "C/g")
MERGE_BLOCKS = ("k", "s", "g", "C/g", "H/s", "C", "H")
MAX_LOOP_NEST = 60_000
MAX_TENSOR = 4_000


def space() -> SizeSpace:
    return SizeSpace.from_specs(PRIMARY, COEFFICIENT)


class Reject(Exception):
    """The drawn decisions do not give a usable operator."""


def random_operator(choose: Callable[[int], int], max_steps: int = 9) -> Operator:
    sp = space()
    b = Builder(sp, OUTPUTS[choose(len(OUTPUTS))], name="random")
    bind = sp.bind(MAPPING)

    def val(d: Dim) -> int:
        v = bind.values(d.size)[0]
        if v.denominator != 1:
            raise Reject(f"size {d.size} not integral")
        return int(v)

    frontier: list[Dim] = []
    for it in b.outputs:
        if it.size == sp.var("N") and choose(4) != 0:
            continue  # usually keep the batch axis as a plain pass-through
        frontier.append(it)
    passthrough = [it for it in b.outputs if it not in frontier]
    weights: list[list[Dim]] = []
    reductions: list[ReduceDim] = []
    n_steps = 1 + choose(max_steps)
    for _ in range(n_steps):
        kind = choose(9)
        try:
            if kind == 0 or (kind == 1 and not frontier):
                r = b.reduce(REDUCE_SIZES[choose(len(REDUCE_SIZES))])
                val(r)
                reductions.append(r)
                frontier.append(r)
            elif not frontier:
                continue
            elif kind in (1, 2):  # share with a (new or existing) weight
                i = choose(len(frontier))
                j = choose(len(weights) + 1) + 1 if len(weights) < 3 else choose(3) + 1
                data, w = b.share(frontier[i], j)
                if j > len(weights):
                    weights.append([])
                weights[j - 1].append(w)
                if choose(3) == 0:
                    b.expand(data)
                    frontier.pop(i)
                else:
                    frontier[i] = data
            elif kind == 3:
                i = choose(len(frontier))
                major, minor = b.merge(frontier[i], MERGE_BLOCKS[choose(len(MERGE_BLOCKS))])
                val(major), val(minor)
                frontier[i:i + 1] = [major, minor]
            elif kind == 4 and len(frontier) >= 2:
                i = choose(len(frontier))
                j = choose(len(frontier) - 1)
                j = j + 1 if j >= i else j
                top = b.split(frontier[i], frontier[j])
                val(top)
                for k in sorted((i, j), reverse=True):
                    frontier.pop(k)
                frontier.append(top)
            elif kind == 5:  # unfold, with a window dim of size k or s (a new reduction if needed)
                windows = [k for k, d in enumerate(frontier) if d.size in (sp.var("k"), sp.var("s"))]
                if not windows or choose(2):
                    r = b.reduce(("k", "s")[choose(2)])
                    reductions.append(r)
                    if choose(2):
                        j = choose(len(weights) + 1) + 1 if len(weights) < 3 else choose(3) + 1
                        data, w = b.share(r, j)
                        if j > len(weights):
                            weights.append([])
                        weights[j - 1].append(w)
                        r = data
                    frontier.append(r)
                    windows = [len(frontier) - 1]
                w = windows[choose(len(windows))]
                mains = [k for k in range(len(frontier)) if k != w]
                if not mains:
                    continue
                m = mains[choose(len(mains))]
                top = b.unfold(frontier[m], frontier[w])
                for k in sorted((m, w), reverse=True):
                    frontier.pop(k)
                frontier.append(top)
            elif kind == 6:
                i = choose(len(frontier))
                frontier[i] = b.shift(frontier[i])
            elif kind == 7:
                i = choose(len(frontier))
                frontier[i] = b.stride(frontier[i], "s")
                val(frontier[i])
            elif kind == 8:
                i = choose(len(frontier))
                if isinstance(frontier[i], IteratorDim) and choose(2):
                    continue
                b.expand(frontier.pop(i))
        except (IRError, SizeError) as exc:
            raise Reject(str(exc)) from None
    order = list(range(len(frontier)))
    for k in range(len(order) - 1, 0, -1):  # Fisher-Yates with the chooser
        j = choose(k + 1)
        order[k], order[j] = order[j], order[k]
    inputs = passthrough + [frontier[k] for k in order]
    if not inputs:
        raise Reject("no input axes")
    try:
        op = b.build(inputs, weights)
    except (IRError, SizeError) as exc:
        raise Reject(str(exc)) from None
    sizes = {d: val(d) for d in op.all_dims}
    nest = math.prod(sizes[d] for d in op.outputs) * math.prod(sizes[r] for r in op.reductions)
    if nest > MAX_LOOP_NEST:
        raise Reject("loop nest too large")
    for t in op.tensors:
        if math.prod(sizes[d] for d in t) > MAX_TENSOR:
            raise Reject("tensor too large")
    return op


def from_random(rng: random.Random, attempts: int = 1000) -> Operator:
    for _ in range(attempts):
        try:
            return random_operator(lambda n: rng.randrange(n))
        except Reject:
            continue
    raise RuntimeError("no valid random operator found")


def operators(max_steps: int = 9):
    """Hypothesis strategy of random valid operators (all evaluated under :data:`MAPPING`)."""
    from hypothesis import assume, strategies as st

    @st.composite
    def _ops(draw):
        try:
            return random_operator(lambda n: draw(st.integers(0, n - 1)) if n > 1 else 0, max_steps)
        except Reject:
            assume(False)

    return _ops()


__all__ = ["random_operator", "from_random", "operators", "MAPPING", "space", "Reject"]
