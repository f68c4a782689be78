"""Plan -> kernel stages: every contraction (or sum) of a plan becomes one *stage*
``out[O] = sum_K  A[addr_A(O, K)] * B[addr_B(O, K)]`` whose operands are addressed views of
materialised buffers (the inputs, weights, ones tensors and earlier stages' results).

The plan's view steps (Split, Merge, Shift, Stride, Unfold, diagonals, inverse reshapes) never run
as separate passes: each is a substitution in the index expression of every axis of the buffer it
reads, so a stage's loads do the index arithmetic (``(i + 1) % n`` for Shift, ``m + w - K//2``
with a zero-padding mask for Unfold, ``b // blk`` / ``b % blk`` for Merge, ...). Index expressions
are Python/Triton text over class variables ``c<id>`` (one per letter class of the plan).

Backward stages come from the same description: the gradient of a stage w.r.t. operand A is the
stage ``dA[classes of A] = sum_rest G[out] * B[...]`` whose *output* is addressed through A's view
(scattered with atomic adds where the view is not injective, e.g. overlapping Unfold windows).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from syno.ir.lowering import LoweringError, Plan

_VAR = re.compile(r"\bc(\d+)\b")


def substitute(expr: str, mapping: dict[int, str]) -> str:
    """Replace class variables ``c<id>`` by ``mapping[id]`` (simultaneously)."""
    return _VAR.sub(lambda m: mapping.get(int(m.group(1)), m.group(0)), expr)


def mentions(expr: str) -> set[int]:
    return {int(v) for v in _VAR.findall(expr)}


@dataclass(frozen=True)
class Access:
    """A view of buffer ``leaf``: element ``leaf[index[0], index[1], ...]`` for each value of the
    view's ``classes``; ``masks`` are validity conditions (zero outside)."""

    leaf: str
    index: tuple[str, ...]           # one expression per leaf axis
    classes: tuple[int, ...]         # classes of the view, in axis order (may repeat before a diag)
    masks: tuple[str, ...] = ()
    injective: bool = True           # distinct view elements address distinct leaf elements
    bijective: bool = True           # ... and every leaf element is addressed exactly once

    def view(self, mapping: dict[int, str], classes, masks=(), injective=True, bijective=True) -> "Access":
        return Access(self.leaf, tuple(substitute(e, mapping) for e in self.index), tuple(classes),
                      tuple(substitute(m, mapping) for m in self.masks) + tuple(masks),
                      self.injective and injective, self.bijective and bijective)

    @property
    def used(self) -> set[int]:
        out: set[int] = set()
        for e in self.index + self.masks:
            out |= mentions(e)
        return out


def identity(leaf: str, axes) -> Access:
    return Access(leaf, tuple(f"c{c}" for c in axes), tuple(axes))


@dataclass
class Stage:
    """``dst[out] (+)= scale * sum_{summed} prod(operands)`` with ``dst`` addressed by ``store``."""

    name: str
    operands: tuple[Access, ...]      # 1 or 2
    out: tuple[int, ...]              # classes of the result tile
    summed: tuple[int, ...]
    store: Access                     # where out[...] goes (identity for forward stages)
    scale: float = 1.0
    atomic: bool = False              # scatter-add (non-injective store view)
    kind: str = "contract"            # contract | sum | output | grad

    @property
    def classes(self) -> set[int]:
        return set(self.out) | set(self.summed)


@dataclass
class Program:
    """The stages of one plan, with the buffers they read and write."""

    plan: Plan
    stages: list[Stage]
    leaves: dict[str, tuple[int, ...]]     # buffer -> classes in logical axis order
    inputs: tuple[str, ...]                # x, w1, ... (plan.input_names)
    #: constant buffers: ones tensors (name -> class) and selection tensors (name -> (u, m, w))
    consts: dict[str, int | tuple[int, int, int]] = field(default_factory=dict)
    layouts: dict[str, tuple[int, ...]] = field(default_factory=dict)  # intermediate -> physical order

    def size(self, c: int) -> int:
        return self.plan.values[c]

    @property
    def intermediates(self) -> list[str]:
        return [s.store.leaf for s in self.stages if s.store.leaf != "y"]


def _view_map(plan: Plan, step) -> tuple[dict[int, str], tuple[str, ...], bool, bool]:
    """(substitution of source classes in terms of destination classes, new masks, injective,
    bijective) for one view step."""
    v = plan.values
    f = plan.analysis.fops[step.fop] if step.fop >= 0 else None
    k = step.kind
    if k == "split":
        (t,), (l, r) = f.tops, f.bottoms
        return {t: f"(c{l} * {v[r]} + c{r})"}, (), True, True
    if k == "merge":
        (major, minor), (b,) = f.tops, f.bottoms
        blk = v[minor]
        bc = bool(step.broadcast)
        return {major: f"(c{b} // {blk})", minor: f"(c{b} % {blk})"}, (), not bc, not bc
    if k == "shift":
        (t,), (b,) = f.tops, f.bottoms
        return {t: f"((c{b} + 1) % {v[b]})"}, (), True, True
    if k == "stride":
        (t,), (b,) = f.tops, f.bottoms
        s = v[t] // v[b]
        return {t: f"(c{b} * {s})"}, (), True, s == 1
    if k == "unfold":
        (t,), (m, w) = f.tops, f.bottoms
        e = f"(c{m} + c{w} - {v[w] // 2})"
        return {t: e}, (f"({e} >= 0)", f"({e} < {v[t]})"), v[w] == 1, False
    if k == "inv_split":
        (t,), (l, r) = f.tops, f.bottoms
        return {l: f"(c{t} // {v[r]})", r: f"(c{t} % {v[r]})"}, (), True, True
    if k == "inv_merge":
        (major, minor), (b,) = f.tops, f.bottoms
        return {b: f"(c{major} * {v[minor]} + c{minor})"}, (), True, True
    if k == "diag":
        return {}, (), True, False
    raise LoweringError(f"triton backend: unsupported plan step {k!r}")


def build_program(plan: Plan) -> Program:
    """Stages of ``plan``: one per contraction/sum, plus an output copy when views or broadcast
    output axes follow the last one. The last stage writes ``y`` directly and applies the scale."""
    an = plan.analysis
    views: dict[str, Access] = {}
    leaves: dict[str, tuple[int, ...]] = {}
    consts: dict[str, int | tuple[int, int, int]] = {}
    for name, axes in zip(plan.input_names, an.tensors):
        views[name] = identity(name, axes)
        leaves[name] = tuple(axes)
    for k, c in enumerate(an.consts, start=1):
        views[f"c{k}"] = identity(f"c{k}", (c,))
        leaves[f"c{k}"] = (c,)
        consts[f"c{k}"] = c
    stages: list[Stage] = []
    for step in plan.steps:
        if step.kind in ("contract", "sum"):
            ops = tuple(views.pop(s) for s in step.srcs)
            st = Stage(step.dst, ops, tuple(step.dst_axes), tuple(step.summed),
                       identity(step.dst, step.dst_axes), kind=step.kind)
            stages.append(st)
            leaves[step.dst] = tuple(step.dst_axes)
            views[step.dst] = identity(step.dst, step.dst_axes)
        elif step.kind == "select":
            # an Unfold as a 0/1 selection tensor e[u, m, w] = [u == m + w - K//2] (built once)
            views[step.dst] = identity(step.dst, step.dst_axes)
            leaves[step.dst] = tuple(step.dst_axes)
            consts[step.dst] = tuple(step.dst_axes)
        elif step.kind == "output":
            src = views.pop(step.srcs[0])
            out = tuple(step.dst_axes)
            direct = (stages and src == identity(stages[-1].store.leaf, out)
                      and not step.broadcast and src.leaf == stages[-1].name)
            if direct:
                last = stages[-1]
                leaves.pop(last.store.leaf)
                last.store = identity("y", out)
                last.name = "y"
            else:
                stages.append(Stage("y", (src,), out, (), identity("y", out), kind="output"))
            stages[-1].scale = float(plan.scale)
            leaves["y"] = out
        else:
            src = views.pop(step.srcs[0])
            mapping, masks, inj, bij = _view_map(plan, step)
            views[step.dst] = src.view(mapping, step.dst_axes, masks, inj, bij)
    prog = Program(plan, stages, leaves, tuple(plan.input_names), consts)
    prog.layouts = {n: _layout(prog, n) for n in prog.intermediates}
    return prog


def _layout(prog: Program, leaf: str) -> tuple[int, ...]:
    """Physical axis order of an intermediate: axes that the consuming stage indexes only with
    its summed classes go innermost (so a K-block of that stage reads contiguous memory, like the
    channels of an NHWC implicit GEMM); the others keep their order, outermost."""
    axes = prog.leaves[leaf]
    producer = next((st for st in prog.stages if st.store.leaf == leaf), None)
    for st in prog.stages:
        for a in st.operands:
            if a.leaf == leaf:
                outer = [k for k, e in enumerate(a.index) if mentions(e) - set(st.summed) or not mentions(e)]
                inner = [k for k in range(len(axes)) if k not in outer]
                if producer is not None:
                    inner = _taps_first(producer, outer, inner)
                return tuple(outer + inner)
    return tuple(range(len(axes)))


def _taps_first(producer: Stage, outer: list[int], inner: list[int]) -> list[int]:
    """``inner`` (axes of the producer's result) with those the producer reads next to an outer
    (pixel) class, like the kw of x[.., w + kw - 1] in Operator 1's first stage, slowest: the
    producer's grouped kernel then stores each such tap's columns as one contiguous run (j-wide
    runs at stride 3j otherwise; measured 648 us vs 53 us at C=64 on the H100)."""
    outer_cls = set().union(*(mentions(producer.store.index[k]) for k in outer))
    exprs = [e for op in producer.operands for e in op.index + op.masks]

    def tap_like(k: int) -> bool:
        cls = mentions(producer.store.index[k])
        return any(cls & mentions(e) and outer_cls & mentions(e) for e in exprs)

    return sorted(inner, key=lambda k: not tap_like(k))


def backward_stages(prog: Program) -> list[Stage]:
    """Gradient stages in execution order. Gradient buffers are named ``g_<leaf>``; the incoming
    gradient is ``g_y``. A stage's gradient w.r.t. an operand reads ``g_<dst>`` and the other
    operand, sums over every class the operand does not hold and stores through the operand's
    view (scatter-add when the view is not injective)."""
    out: list[Stage] = []
    for st in reversed(prog.stages):
        g = Access("g_" + st.store.leaf, st.store.index, st.out, st.store.masks)
        for k, a in enumerate(st.operands):
            if a.leaf in prog.consts:
                continue
            others = tuple(b for j, b in enumerate(st.operands) if j != k)
            ocls = tuple(dict.fromkeys(a.classes))
            summed = tuple(c for c in dict.fromkeys(st.out + tuple(c for b in others for c in b.classes))
                           if c not in ocls)
            store = Access("g_" + a.leaf, a.index, ocls, a.masks, a.injective, a.bijective)
            out.append(Stage("g_" + a.leaf, (g,) + others, ocls, summed, store, st.scale,
                             atomic=not a.injective, kind="grad"))
    return out


__all__ = ["Access", "Stage", "Program", "build_program", "backward_stages", "substitute", "mentions"]
