"""The synth FLOPs window's numbers (``lowering.planned_flops``, shared search graph, no replay) are
``plan_for``'s, which a search from scratch gives too (issue #17)."""

from __future__ import annotations

import syno.ir.lowering as L
from syno.synth.options import SynthOptions
from syno.synth.sampler import sample_operators
from syno.synth.space import SynthSpace


def test_planned_flops_equal_plan_for_on_resnet18_samples():
    space = SynthSpace(SynthOptions.resnet18())
    b = space.bindings
    ops = [op for _, op in sample_operators("resnet18", 8, seed=0)]
    assert len(b) > 1 and ops
    for op in ops:
        own = op.space.bind([b.mapping(i) for i in range(len(b))])
        assert own.space is op.space and b.space is not op.space
        L._CACHE.clear()
        L._MACS.clear()
        got = L.planned_flops(op, own)  # bindings of the operator's space: read directly
        L._MACS.clear()
        assert got == L.planned_flops(op, b)  # another space's: each mapping bound anew
        want = []
        for i in range(len(b)):
            L._GRAPHS.clear()  # a search that expands every state itself
            plan = L.plan_for(op, b.mapping(i))
            want.append(plan.flops)
        assert got == tuple(want) == op.flops(b)


def test_shared_graph_gives_the_same_plans():
    ops = [op for _, op in sample_operators("resnet18", 4, seed=1)]
    b = SynthSpace(SynthOptions.resnet18()).bindings
    for op in ops:
        shared, fresh = [], []
        for cache in (shared, fresh):
            L._CACHE.clear()
            for i in range(len(b)):
                if cache is fresh:
                    L._GRAPHS.clear()
                for kw in ({}, {"weights_first": True}, {"cost": "macs", "select": False}):
                    p = L.plan_for(op, b.mapping(i), **kw)
                    cache.append((p.flops, p.peak, p.cost, p.written, p.steps))
        assert shared == fresh
