"""Lowering: from an :class:`~syno.ir.graph.Operator` to an execution plan over whole tensors.

The loop nest of an operator is ``out[i] = sum_r prod_t T_t[index_t(i, r)]``. A *plan* computes
it with tensor-level steps instead: view primitives (reshape, permute, roll, slice, pad+unfold,
broadcast), pairwise contractions (einsum) and sums. Codegen (:mod:`syno.codegen`) turns the plan
into PyTorch code; :attr:`Plan.flops` is what :meth:`Operator.flops` reports.

Letter classes
--------------
A ``Share`` says that its bottom, its data side and its weight side take the same index value, so
union-find over Shares groups dims into *classes*: one einsum letter each. Every class has

* a *forward producer*: the non-Share primitive whose bottom is the class's top-most data-side
  dim (forward, that primitive creates the class), or none when that dim is an input axis, or
  *broadcast* when it is consumed by an ``Expand`` (the data side does not depend on it);
* a *forward consumer*: the primitive whose top is the class's lowest dim, or none when that dim is
  an output iterator (the class survives to the output) or a reduction (the class is summed).

Forward, a primitive maps its top classes to its bottom classes (``Split``: t -> (l, r) reshape;
``Merge``: (major, minor) -> b, permute + reshape; ``Shift``: roll; ``Stride``: slice ``::s``;
``Unfold``: u -> (main, window), pad + ``Tensor.unfold``). A class is *free* when its data side is
broadcast and no weight holds it (e.g. the ``C_out/g`` part of a grouped conv's output channel).

Search
------
A state is a multiset of tensors (each: a set of classes, and whether it descends from the data
input) plus the set of primitives not applied yet. Actions:

* **forward view** of a primitive whose top classes are all produced: applied to *every* tensor
  holding one of its top classes (each must hold all of them; free tops are broadcast in). Views
  are gathers with a 0/1 mask, so they distribute over the elementwise product of the holders.
  A view that creates a class the tensor already holds takes the diagonal.
* **inverse view** of a bijective reshape (``Split``/``Merge``) on the holders of its bottom
  classes: e.g. reshape a grouped conv's weight ``C_out -> (g, C_out/g)`` so that the group index
  becomes an einsum batch letter instead of broadcasting the input ``C_out/g`` times.
* **contraction** of two tensors: einsum over the union of their classes; every reduction class
  that no other tensor holds (and whose producer has run) is summed inside the einsum.
* **sum** of the summable reduction classes of one tensor.

* **selection** (issue #21): an Unfold ``u -> (m, w)`` applied as a contraction with the
  constant 0/1 tensor ``E[u, m, w] = [u == m + w - K//2]``: ``u`` stays on its holders and is
  summed like a reduction once they all met ``E``. The window can then be folded into a small
  weight (two channel windows become one dense channel mix) instead of being materialized.

Views that never increase numel (Split, Merge without broadcast, Shift, Stride) are applied
eagerly; Unfold and broadcasting Merges (numel-increasing) are search decisions, as are the order
of contractions, selections and sums. A best-first (Dijkstra) search minimizes the cost
``MACs + BYTE_WEIGHT x elements written`` (``cost="macs"``: MACs only): a contraction costs the
numel of the union of its operands' classes, a standalone sum the numel of its input, views cost
no MACs; elements written are the results of unfolds, contractions, sums and selections, except
that a data tensor's conv windows (lazy unfolds) cost nothing while the next contraction is with a
weight-side tensor holding the window (the fast path runs it as a convolution) and their full size
otherwise. Ties go to the smaller peak intermediate numel, then fewer steps. Operators too big for
the exhaustive search (rare; over ``max_states``) fall back to a greedy plan that is still exact.

The winning action sequence is replayed with concrete axis orders into :class:`Plan` steps.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence

from .graph import Operator
from .primitives import (Dim, Expand, IRError, IteratorDim, Merge, Op, ReduceDim, Share, Shift,
                         Split, Stride, TopDim, Unfold)
from .sizes import Bindings, Size

_FWD_KIND = {Split: "split", Merge: "merge", Shift: "shift", Stride: "stride", Unfold: "unfold"}
#: cost of writing one element, in MACs (the "bytes" planner scores MACs + BYTE_WEIGHT x elements
#: written by unfolds, contractions and sums). A MAC in a GEMM is far cheaper than an element
#: written and read back (H100: ~100x; one CPU core: ~10-40x); 16 keeps the MAC count decisive
#: between plans that move similar bytes, while a 441x blow-up loses to any dense alternative.
BYTE_WEIGHT = 16.0
#: Views that never increase numel: applied as soon as they can be (no search branching).
_EAGER = ("split", "merge", "shift", "stride")
#: guards the plan and search-graph caches (plans may be asked for from several threads)
_LOCK = threading.Lock()


class LoweringError(IRError):
    """The operator cannot be lowered under the given mapping."""


# --------------------------------------------------------------------------------------------
# Static analysis of an operator (independent of the mapping)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DimClass:
    id: int
    size: Size
    role: str                 # "output" | "reduce" | "inner"
    index: int                # output index, or -1
    producer: int | None      # forward op index creating the data side; None: input axis / broadcast
    broadcast: bool           # the data side is broadcast (Expand, or produced by a free op)
    weights: tuple[int, ...]  # weight ids (1-based) that hold the class
    in_input: bool
    name: str                 # short label used in plans and generated code comments
    in_const: bool = False    # held by a constant ones tensor (broadcast dim that is unfolded)

    @property
    def free(self) -> bool:
        """Held by no tensor ever: pure broadcast (output axis) or a constant factor (reduction)."""
        return self.broadcast and not self.weights and not self.in_input and not self.in_const


@dataclass(frozen=True)
class FwdOp:
    index: int
    kind: str                  # split | merge | shift | stride | unfold
    tops: tuple[int, ...]      # classes consumed (forward)
    bottoms: tuple[int, ...]   # classes produced (forward)
    param: Size | None         # Stride's stride, Merge's block
    op: Op


@dataclass
class Analysis:
    op: Operator
    classes: tuple[DimClass, ...]
    class_of: dict[Dim, int]
    fops: tuple[FwdOp, ...]
    free_ops: frozenset[int]
    tensors: tuple[tuple[int, ...], ...]       # input, weight 1, ... as class ids in axis order
    outputs: tuple[int, ...]                   # class id of each output iterator
    dynamic: dict[str, tuple[int, int]]        # dynamic variable -> (input axis, class id)
    consts: tuple[int, ...] = ()               # classes of the 1-D ones tensors "c1", "c2", ...

    def producer_of(self, c: int) -> int | None:
        return self.classes[c].producer


def analyze(op: Operator) -> Analysis:
    """Letter classes, forward ops and initial tensors of ``op`` (cached on the operator)."""
    cached = op._analysis.get("lowering")
    if cached is not None:
        return cached
    dims = list(op.all_dims)
    for e in op.expanded:
        if e not in dims:
            dims.append(e)
    parent: dict[Dim, Dim] = {d: d for d in dims}

    def find(d: Dim) -> Dim:
        while parent[d] is not d:
            parent[d] = parent[parent[d]]
            d = parent[d]
        return d

    for o in op.ops:
        if isinstance(o, Share):
            for t in o.tops:
                ra, rb = find(o.bottoms[0]), find(t)
                if ra is not rb:
                    parent[rb] = ra
    groups: dict[Dim, list[Dim]] = {}
    for d in dims:
        groups.setdefault(find(d), []).append(d)
    consumer = op.consumer
    fwd_ops = [o for o in op.ops if type(o) in _FWD_KIND]
    fop_index = {o: i for i, o in enumerate(fwd_ops)}
    input_set = set(op.input)

    # Deterministic class order: output iterators, reductions, then by first appearance.
    order: list[Dim] = []
    seen_roots: set[Dim] = set()
    for d in list(op.outputs) + list(op.reductions) + dims:
        r = find(d)
        if r not in seen_roots:
            seen_roots.add(r)
            order.append(r)
    class_of: dict[Dim, int] = {}
    raw = []
    for cid, root in enumerate(order):
        members = groups[root]
        for m in members:
            class_of[m] = cid
        lowest = [m for m in members if not (isinstance(m, TopDim) and isinstance(m.op, Share))]
        if len(lowest) != 1:
            raise LoweringError(f"malformed share chain around {members!r}")
        low = lowest[0]
        if isinstance(low, IteratorDim):
            role, index = "output", low.index
        elif isinstance(low, ReduceDim):
            role, index = "reduce", -1
        else:
            role, index = "inner", -1
        data = [m for m in members
                if not (isinstance(m, TopDim) and isinstance(m.op, Share) and m.slot == 1)
                and not isinstance(consumer.get(m), Share)]
        if len(data) != 1:
            raise LoweringError(f"class {members!r} has {len(data)} data-side dims")
        dm = data[0]
        c = consumer.get(dm)
        producer, broadcast = None, False
        if c is None:
            if dm not in input_set:
                raise LoweringError(f"dim {dm!r} is neither consumed nor an input axis")
        elif isinstance(c, Expand):
            broadcast = True
        else:
            producer = fop_index[c]
        weights = tuple(sorted({m.op.weight for m in members
                                if isinstance(m, TopDim) and isinstance(m.op, Share) and m.slot == 1}))
        raw.append(dict(id=cid, size=low.size, role=role, index=index, producer=producer,
                        broadcast=broadcast, weights=weights, in_input=dm in input_set))
    fops = []
    for i, o in enumerate(fwd_ops):
        kind = _FWD_KIND[type(o)]
        param = o.params[0] if o.params and isinstance(o.params[0], Size) else None
        fops.append(FwdOp(i, kind, tuple(class_of[t] for t in o.tops),
                          tuple(class_of[b] for b in o.bottoms), param, o))
    # Free ops: all their top classes are free; their bottoms' data side is broadcast. An Unfold
    # of a broadcast dim is not free (its zero padding makes a 0/1 mask): the broadcast dim is
    # then held by a constant ones tensor that gets unfolded like any other.
    free_ops: set[int] = set()
    changed = True
    while changed:
        changed = False
        for f in fops:
            if f.index in free_ops or f.kind == "unfold":
                continue
            if all(raw[t]["broadcast"] and not raw[t]["weights"] and not raw[t]["in_input"] for t in f.tops):
                free_ops.add(f.index)
                for b in f.bottoms:
                    raw[b]["broadcast"] = True
                changed = True
    consts = []
    for f in fops:
        t = raw[f.tops[0]]
        if f.kind == "unfold" and t["broadcast"] and not t["weights"] and not t["in_input"]:
            t["in_const"] = True
            consts.append(t["id"])
    names = _class_names(op, raw, class_of)
    classes = tuple(DimClass(name=names[r["id"]], **r) for r in raw)
    tensors = tuple(tuple(class_of[d] for d in t) for t in op.tensors)
    outputs = tuple(class_of[d] for d in op.outputs)
    an = Analysis(op, classes, class_of, tuple(fops), frozenset(free_ops), tensors, outputs, {},
                  tuple(consts))
    an.dynamic = _dynamic_variables(an)
    op._analysis["lowering"] = an
    return an


def _class_names(op: Operator, raw, class_of) -> list[str]:
    names = [""] * len(raw)
    n_red = 0
    for r in raw:
        if r["role"] == "output":
            names[r["id"]] = f"i{r['index']}"
        elif r["role"] == "reduce":
            names[r["id"]] = f"r{n_red}"
            n_red += 1
    k = 0
    for r in raw:
        if not names[r["id"]]:
            names[r["id"]] = f"d{k}"
            k += 1
    return names


def _dynamic_variables(an: Analysis) -> dict[str, tuple[int, int]]:
    """Primary variables read from the input at run time (e.g. the batch N).

    A variable is dynamic when every class whose size involves it has exactly that size, it is
    an axis of the input, and no view primitive or weight touches those classes (they pass
    straight through the plan, so no reshape needs their value).
    """
    space = an.op.space
    touched = {c for f in an.fops for c in f.tops + f.bottoms}
    params = [f.param for f in an.fops if f.param is not None]
    out = {}
    for v in space.primary:
        vs = space.var(v.name)
        idx = space.index(v.name)
        involved = [c for c in an.classes if c.size.exps[idx] != 0]
        if not involved or any(c.size != vs for c in involved):
            continue
        if any(p.exps[idx] != 0 for p in params):
            continue
        if any(c.id in touched or c.weights for c in involved):
            continue
        axis = next((i for i, c in enumerate(an.tensors[0]) if an.classes[c].size == vs), None)
        if axis is None:
            continue
        out[v.name] = (axis, an.tensors[0][axis])
    return out


# --------------------------------------------------------------------------------------------
# Search
# --------------------------------------------------------------------------------------------
Tensor = tuple  # (frozenset[int] classes, bool data, frozenset[int] lazy windows)
#: no pending (lazily unfolded) windows
_NOLAZY: frozenset = frozenset()


def _key(t: Tensor):
    return (tuple(sorted(t[0])), t[1], tuple(sorted(t[2])))


def _canon(tensors: Iterable[Tensor]) -> tuple[Tensor, ...]:
    return tuple(sorted(tensors, key=_key))


@dataclass(frozen=True)
class Action:
    kind: str                      # fwd | inv | sel | contract | sum
    fop: int = -1
    a: Tensor | None = None
    b: Tensor | None = None
    summed: frozenset = frozenset()
    macs: int = 0


class _Graph:
    """Value-free expansion of the search states of one operator: ``edges[state]`` is
    :meth:`_Searcher._edges` of the state, ``start`` the closed initial state. Successors,
    views and closures do not depend on the class sizes (only their costs do, kept as terms), so
    the searches under the mappings of a multi-layer problem (one ``plan_for`` each) expand each
    state once instead of once per mapping; every search still evaluates its own costs."""

    __slots__ = ("an", "edges", "start")

    def __init__(self, an: Analysis):
        self.an = an  # keeps id(an), the cache key, from being reused while the entry lives
        self.edges: dict = {}
        self.start = None


_GRAPHS: dict[tuple, _Graph] = {}
#: graphs kept: the mappings of one operator are planned one after the other, so a few suffice
_GRAPHS_KEPT = 8


def _graph_key(an: Analysis | None, weights_first: bool, allow_diag: bool, select: bool) -> tuple:
    return (id(an), weights_first, allow_diag, select)


def _graph_of(an: Analysis, weights_first: bool, allow_diag: bool, select: bool) -> _Graph:
    key = _graph_key(an, weights_first, allow_diag, select)
    with _LOCK:
        g = _GRAPHS.get(key)
        if g is None or g.an is not an:
            if len(_GRAPHS) >= _GRAPHS_KEPT:
                del _GRAPHS[next(iter(_GRAPHS))]  # oldest first (insertion order)
            g = _GRAPHS[key] = _Graph(an)
        return g


class _Searcher:
    def __init__(self, an: Analysis, values: Sequence[int], weights_first: bool = False,
                 max_states: int = 20000, allow_diag: bool = True, cost: str = "bytes",
                 select: bool = True, byte_weight: float = BYTE_WEIGHT, peak_limit: int | None = None):
        self.an = an
        self.values = values
        self.weights_first = weights_first
        self.allow_diag = allow_diag
        self.max_states = max_states
        self.output_set = frozenset(c for c in an.outputs if not an.classes[c].free)
        self.is_reduce = [c.role == "reduce" and not c.free for c in an.classes]
        if cost not in ("bytes", "macs"):
            raise ValueError(f"cost must be 'bytes' or 'macs', not {cost!r}")
        # "macs": the min-MAC planner (ties: smaller peak); "bytes": MACs + byte_weight x the
        # elements every non-eager step writes, so a blown-up intermediate costs what it moves
        self.byte_weight = byte_weight if cost == "bytes" else 0.0
        self.select = select
        self.peak_limit = peak_limit
        # forward consumer (an Unfold) of each class: a class taken by a selection matrix stays
        # on its holders after its consumer ran, and is summed like a reduction
        self.sel_consumer = {f.tops[0]: f.index for f in an.fops if f.kind == "unfold"}
        self._numels: dict = {}
        self.graph = _graph_of(an, weights_first, allow_diag, select)

    # -- helpers ---------------------------------------------------------------------------
    def numel(self, classes: Iterable[int]) -> int:
        n = 1
        for c in classes:
            n *= self.values[c]
        return n

    def ev(self, term) -> int:
        """Numel of a cost *term* (a collection of classes, memoized per term). Views, closures
        and successors describe their sizes as terms, not numbers, so the expansion of a state
        holds under every mapping and is shared by the searches of one operator (see
        :class:`_Graph`); each search evaluates the terms with its own class values."""
        n = self._numels.get(term)
        if n is None:
            n = 1
            for c in term:
                n *= self.values[c]
            self._numels[term] = n
        return n

    def peak_of(self, terms) -> int:
        return max(map(self.ev, terms)) if terms else 0

    def produced(self, c: int, pending: frozenset) -> bool:
        p = self.an.classes[c].producer
        return p is None or p not in pending

    def summable(self, c: int, holders: int, pending: frozenset) -> bool:
        if holders != 1 or not self.produced(c, pending):
            return False
        if self.is_reduce[c]:
            return True
        f = self.sel_consumer.get(c)
        return f is not None and f not in pending  # index of a selection matrix (see "sel")

    # -- views -----------------------------------------------------------------------------
    def lazy_ok(self, t: Tensor, f: FwdOp, tensors) -> bool:
        """An Unfold of a data tensor that the fast path runs as a convolution window (nothing
        materialized): the window is a weight-side class (a kernel tap or a kept window) and the
        unfolded axis is not (it is a conv spatial axis, not a diagonal)."""
        if not t[1]:
            return False
        u, m, w = f.tops[0], f.bottoms[0], f.bottoms[1]
        side = [s for s in tensors if not s[1]]
        return (m not in t[0] and any(w in s[0] for s in side)
                and not any(u in s[0] or m in s[0] for s in side))

    @staticmethod
    def on_windows(tensors, f: FwdOp) -> bool:
        """The view reshapes a tensor that still has lazy (conv) windows: it would copy them out
        (a merge of the unfolded axis with its neighbour, before the contraction). Such a view is
        a choice, not an eager step: done after the contraction, it reshapes the conv's result."""
        return any(t[2] and any(c in t[0] for c in f.tops) for t in tensors)

    def view(self, tensors: tuple[Tensor, ...], pending: frozenset, fi: int, inverse: bool):
        """Apply forward op ``fi`` (or its inverse) to all holders; None if not applicable.
        Returns (new tensors, terms of the numels created (peak), increasing?, terms of the
        elements written)."""
        f = self.an.fops[fi]
        src, dst = (f.bottoms, f.tops) if inverse else (f.tops, f.bottoms)
        held = [c for c in src if any(c in t[0] for t in tensors)]
        if inverse:
            if f.kind not in ("split", "merge") or len(held) != len(src):
                return None
            # only useful when a top class is (or will be) held by a tensor outside the holders
            holders = [t for t in tensors if any(c in t[0] for c in src)]
            others = [t for t in tensors if t not in holders]
            if not any(self.an.classes[c].producer in pending or any(c in t[0] for t in others)
                       for c in dst):
                return None
        else:
            if not all(self.produced(c, pending) for c in src):
                return None
            for c in src:
                if c not in held and not self.an.classes[c].free:
                    return None  # produced but held by nobody: cannot happen in valid states
            if not held:
                return None
        out, peak, increasing, written = [], [], False, []
        for t in tensors:
            if not any(c in t[0] for c in held):
                out.append(t)
                continue
            if not all(c in t[0] for c in held):
                return None
            if not self.allow_diag and any(c in t[0] for c in dst if c not in src):
                return None
            new = frozenset((t[0] - set(src)) | set(dst))
            if f.kind == "unfold" and not inverse:
                increasing = True
                if self.lazy_ok(t, f, tensors):
                    peak.append(t[0])  # a strided view; the conv reads windows
                    out.append((new, t[1], t[2] | {f.bottoms[1]}))
                    continue
            if t[2]:
                written.append(t[0])  # pending windows are copied first
            if len(held) < len(src) or f.kind == "unfold":
                increasing = True
                # the tensor broadcast over the tops nobody holds (no tensor holds them, so the
                # term lists each class once)
                extra = tuple(c for c in src if c not in held)
                peak.append(tuple(t[0]) + extra if extra else t[0])
                written.append(new)
            peak.append(new)
            out.append((new, t[1], _NOLAZY))
        return _canon(out), tuple(peak), increasing, tuple(written)

    def _closure(self, tensors, pending):
        """Apply eager (numel non-increasing) forward views to a fixpoint; sizes as terms."""
        actions = []
        peak: tuple = ()
        written: tuple = ()
        progress = True
        while progress:
            progress = False
            for fi in sorted(pending):
                f = self.an.fops[fi]
                if f.kind not in _EAGER or self.on_windows(tensors, f):
                    continue
                r = self.view(tensors, pending, fi, False)
                if r is None or r[2]:
                    continue
                tensors = r[0]
                peak += r[1]
                written += r[3]
                pending = pending - {fi}
                actions.append(Action("fwd", fi))
                progress = True
        return tensors, pending, actions, peak, written

    def closure(self, tensors, pending):
        """:meth:`_closure` with numbers: (tensors, pending, actions, peak, elements written)."""
        tensors, pending, actions, peak, written = self._closure(tensors, pending)
        return tensors, pending, actions, self.peak_of(peak), sum(map(self.ev, written))

    # -- successors ------------------------------------------------------------------------
    def _successors(self, tensors, pending):
        """Yields (action, tensors, pending, MACs term or None, terms of the numels created,
        terms of the elements written); a sum's or contraction's action gets its ``macs``
        from the MACs term (:meth:`successors`, :meth:`_path`)."""
        holders: dict[int, int] = {}
        for t in tensors:
            for c in t[0]:
                holders[c] = holders.get(c, 0) + 1
        # increasing forward views and inverse reshapes
        for fi in sorted(pending):
            f = self.an.fops[fi]
            r = self.view(tensors, pending, fi, False)
            if r is not None and (r[2] or f.kind not in _EAGER or self.on_windows(tensors, f)):
                yield Action("fwd", fi), r[0], pending - {fi}, None, r[1], r[3]
            if f.kind in ("split", "merge"):
                r = self.view(tensors, pending, fi, True)
                if r is not None:
                    yield Action("inv", fi), r[0], pending, None, r[1], r[3]
        # an Unfold as a 0/1 selection tensor E[u, m, w] = [u == m + w - K//2] (zero padding
        # included): contracted like a weight, so the window can be folded into a small weight
        # (e.g. a window over channels becomes a dense channel mix) instead of materialized
        if self.select:
            for fi in sorted(pending):
                f = self.an.fops[fi]
                if f.kind != "unfold" or not self.produced(f.tops[0], pending):
                    continue
                if not any(f.tops[0] in t[0] for t in tensors):
                    continue
                e = (frozenset((f.tops[0],) + f.bottoms), False, _NOLAZY)
                yield Action("sel", fi), _canon(tensors + (e,)), pending - {fi}, None, (e[0],), (e[0],)
        # standalone sums
        for i, t in enumerate(tensors):
            s = frozenset(c for c in t[0] if self.summable(c, holders[c], pending))
            if s:
                new = (t[0] - s, t[1], _NOLAZY)
                rest = tensors[:i] + tensors[i + 1:] + (new,)
                yield (Action("sum", a=t, summed=s), _canon(rest), pending, t[0], (new[0],),
                       (new[0], t[0]) if t[2] else (new[0],))
        # contractions
        n_weight_tensors = sum(1 for t in tensors if not t[1])
        for i, j in itertools.combinations(range(len(tensors)), 2):
            a, b = tensors[i], tensors[j]
            if self.weights_first and n_weight_tensors > 1 and (a[1] or b[1]):
                continue
            union = a[0] | b[0]
            cnt = dict(holders)
            for c in a[0] & b[0]:
                cnt[c] -= 1
            s = frozenset(c for c in union if self.summable(c, cnt[c], pending))
            new = (frozenset(union - s), a[1] or b[1], _NOLAZY)
            rest = tuple(t for k, t in enumerate(tensors) if k not in (i, j)) + (new,)
            if a[1] or (not b[1] and len(a[0]) >= len(b[0])):
                pa, pb = a, b
            else:
                pa, pb = b, a
            written = [new[0]]
            for x, y in ((a, b), (b, a)):
                # lazy windows stay unmaterialized when the other side holds them (a conv)
                if x[2] and (y[1] or not x[2] <= y[0]):
                    written.append(x[0])
            yield (Action("contract", a=pa, b=pb, summed=s), _canon(rest), pending, union,
                   (new[0],), tuple(written))

    def successors(self, tensors, pending):
        """Yields (action, tensors, pending, MACs, largest numel created, elements written)."""
        for action, ts, pend, mt, pt, wt in self._successors(tensors, pending):
            macs = 0 if mt is None else self.ev(mt)
            if macs:
                action = replace(action, macs=macs)
            yield action, ts, pend, macs, self.peak_of(pt), sum(map(self.ev, wt))

    def _edges(self, state):
        """The successors of ``state`` followed by their eager closure, value-free: (action,
        next state, closure actions, MACs term, numel terms, written terms)."""
        out = []
        for action, nts, npend, mt, pt, wt in self._successors(*state):
            nts, npend, more, p2, w2 = self._closure(nts, npend)
            out.append((action, (nts, npend), more, mt, pt + p2, wt + w2))
        return out

    def is_goal(self, tensors, pending) -> bool:
        return not pending and len(tensors) == 1 and tensors[0][0] == self.output_set

    # -- drivers ---------------------------------------------------------------------------
    def initial(self):
        ts = _canon([(frozenset(t), k == 0, _NOLAZY) for k, t in enumerate(self.an.tensors)]
                    + [(frozenset([c]), False, _NOLAZY) for c in self.an.consts])
        pending = frozenset(range(len(self.an.fops))) - self.an.free_ops
        return ts, pending

    def search(self) -> tuple[list[Action], int, int, bool, int]:
        """Returns (actions, macs, peak, exhaustive, elements written). With a ``peak_limit``, a
        plan whose largest intermediate stays under it is preferred to a cheaper one."""
        found = self._dijkstra(None)
        if found is not None and self.peak_limit is not None and found[2] > self.peak_limit:
            within = self._dijkstra(self.peak_limit)
            if within is not None:
                found = within
        if found is not None:
            return found
        ts, pending = self.initial()
        ts, pending, eager, p0, w0 = self.closure(ts, pending)
        acts, macs, peak, written = self.greedy((ts, pending), eager, p0)
        return acts, macs, peak, False, w0 + written

    def _dijkstra(self, limit: int | None):
        """Best-first on (cost, peak, steps); cost = MACs + byte_weight x elements written. Both
        are additive and non-negative, so the first goal popped is optimal. Expansions come from
        the operator's shared :class:`_Graph` (the same edges, in the same order, as expanding
        the state here), evaluated with this search's class values."""
        graph = self.graph
        if graph.start is None:
            graph.start = self._closure(*self.initial())
        ts, pending, eager, pt0, wt0 = graph.start
        p0, w0 = self.peak_of(pt0), sum(map(self.ev, wt0))
        edges_of = graph.edges
        ev, numels = self.ev, self._numels
        counter = itertools.count()
        start = (ts, pending)
        bw = self.byte_weight
        best = {start: (bw * w0, p0)}
        acc = {start: (0, w0)}  # MACs, elements written
        parent: dict = {start: None}
        heap = [(bw * w0, p0, 0, next(counter), start)]
        popped = 0
        while heap:
            cost, peak, nsteps, _, state = heapq.heappop(heap)
            if best.get(state) != (cost, peak):
                continue
            if self.is_goal(*state):
                return list(eager) + self._path(parent, state), acc[state][0], peak, True, acc[state][1]
            popped += 1
            if popped > self.max_states:
                return None
            edges = edges_of.get(state)
            if edges is None:
                edges = edges_of[state] = self._edges(state)
            macs0, wr0 = acc[state]
            for edge in edges:
                _, ns, _, mt, pt, wt = edge
                # (the term memo is read inline: this loop runs for every edge of every pop)
                npeak = peak
                for term in pt:
                    n = numels.get(term)
                    if n is None:
                        n = ev(term)
                    if n > npeak:
                        npeak = n
                if limit is not None and npeak > limit:
                    continue
                if mt is None:
                    macs = 0
                else:
                    macs = numels.get(mt)
                    if macs is None:
                        macs = ev(mt)
                wr = 0
                for term in wt:
                    n = numels.get(term)
                    wr += ev(term) if n is None else n
                cand = (cost + macs + bw * wr, npeak)
                old = best.get(ns)
                if old is None or cand < old:
                    best[ns] = cand
                    acc[ns] = (macs0 + macs, wr0 + wr)
                    parent[ns] = (state, edge)
                    heapq.heappush(heap, (cand[0], cand[1], nsteps + 1, next(counter), ns))
        return None

    def _path(self, parent, state) -> list[Action]:
        out = []
        while parent[state] is not None:
            prev, (action, _, more, mt, _, _) = parent[state]
            if mt is not None:
                macs = self.ev(mt)
                if macs:
                    action = replace(action, macs=macs)
            out = [action] + more + out
            state = prev
        return out

    def greedy(self, start, eager, p0):
        """Always-terminating fallback: cheapest next action (no inverse views, no selections)."""
        actions = list(eager)
        ts, pending = start
        macs, peak, written = 0, p0, 0
        while not self.is_goal(ts, pending):
            options = [s for s in self.successors(ts, pending) if s[0].kind not in ("inv", "sel")]
            if not options:
                raise LoweringError("lowering got stuck (no applicable step)")
            # prefer views, then sums, then the cheapest contraction
            rank = {"fwd": 0, "sum": 1, "contract": 2}
            action, ts, pending, cost, created, wr = min(options, key=lambda s: (rank[s[0].kind], s[3], s[4]))
            ts, pending, more, p2, w2 = self.closure(ts, pending)
            actions += [action] + more
            macs += cost
            written += wr + w2
            peak = max(peak, created, p2)
        return actions, macs, peak, written


# --------------------------------------------------------------------------------------------
# Plan: concrete steps with axis orders
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One plan step over named tensors. ``kind``:

    * ``split`` / ``merge`` / ``shift`` / ``stride`` / ``unfold``: forward view of primitive
      ``fop`` on ``srcs[0]``; ``inv_split`` / ``inv_merge``: inverse reshape;
    * ``diag``: take the diagonal of the two axes holding class ``classes[0]``;
    * ``contract``: einsum of ``srcs[0]``, ``srcs[1]`` summing ``summed``;
    * ``sum``: sum ``srcs[0]`` over ``summed``;
    * ``output``: permute ``srcs[0]`` to the output order, broadcast free output axes, scale;
    * ``select``: a constant 0/1 tensor ``dst[u, m, w] = [u == m + w - K//2]`` standing for Unfold
      ``fop`` (no source): contracting it with the holders of ``u`` is the unfold, zero padding
      included, so the planner may fold the window into a weight instead of materializing it.

    ``numel``: elements of the result; ``writes``: elements the reference (einsum) lowering writes
    for this step (0 for views; for an unfold, the window view its consumer will copy).
    """

    kind: str
    srcs: tuple[str, ...]
    dst: str
    src_axes: tuple[tuple[int, ...], ...]
    dst_axes: tuple[int, ...]
    fop: int = -1
    summed: tuple[int, ...] = ()
    broadcast: tuple[int, ...] = ()
    classes: tuple[int, ...] = ()
    macs: int = 0
    data: bool = False            # the result descends from the data input
    numel: int = 0
    writes: int = 0


@dataclass
class Plan:
    op: Operator
    mapping: dict[str, int]
    analysis: Analysis
    values: tuple[int, ...]               # concrete size of every class
    steps: tuple[Step, ...]
    flops: int                            # MACs (multiply-accumulates) of the steps
    peak: int                             # largest intermediate numel
    exhaustive: bool                      # found by the exhaustive search (else greedy)
    weights_first: bool = False
    allow_diag: bool = True
    scale: int = 1                        # product of free reduction sizes
    _mac_classes: tuple[tuple[int, ...], ...] = field(default=(), repr=False)
    cost_model: str = "bytes"             # "bytes": MACs + BYTE_WEIGHT x elements written; "macs"
    select: bool = True                   # Unfolds may become selection tensors ("select" steps)
    cost: float = 0.0                     # the planner's score of this plan
    peak_limit: int | None = None         # the planner's peak_limit option (elements)
    written: int = 0                      # elements written as the cost model counts them (fast path:
                                          # conv windows are read in place, not copied)

    @property
    def elements_written(self) -> int:
        """Elements written by unfolds (the window copy their consumer makes), contractions and sums."""
        return sum(s.writes for s in self.steps)

    @property
    def largest_step(self) -> int:
        """Index of the step with the largest result (the one that blows up, if any)."""
        return max(range(len(self.steps)), key=lambda i: self.steps[i].numel)

    @property
    def variant_options(self) -> dict:
        """Keyword arguments of :func:`plan_for` that give this plan back."""
        return dict(weights_first=self.weights_first, allow_diag=self.allow_diag,
                    cost=self.cost_model, select=self.select)

    def peak_bytes(self, implementation: str = "einsum", itemsize: int = 4) -> int:
        """Peak live bytes of a no-grad forward (inputs, weights and every intermediate) of this
        plan's generated code, found by running it on meta tensors (nothing is allocated)."""
        from syno.codegen.cost import plan_peak_bytes  # codegen depends on ir, not back
        return plan_peak_bytes(self, implementation, itemsize)

    @property
    def classes(self) -> tuple[DimClass, ...]:
        return self.analysis.classes

    @property
    def input_names(self) -> tuple[str, ...]:
        return ("x",) + tuple(f"w{j}" for j in range(1, len(self.op.weights) + 1))

    def size(self, c: int) -> int:
        return self.values[c]

    def macs_polynomial(self) -> dict[tuple[int, ...], int]:
        """MACs as a polynomial in the dynamic variables: {exponents (in ``dynamic`` order): coefficient}."""
        dyn = list(self.analysis.dynamic)
        dyn_cls = {cid: k for k, (_, cid) in enumerate(self.analysis.dynamic.values())}
        poly: dict[tuple[int, ...], int] = {}
        for cls in self._mac_classes:
            exps = [0] * len(dyn)
            coef = 1
            for c in cls:
                if c in dyn_cls:
                    exps[dyn_cls[c]] += 1
                else:
                    coef *= self.values[c]
            key = tuple(exps)
            poly[key] = poly.get(key, 0) + coef
        return poly

    def macs_for(self, **dynamic: int) -> int:
        """MACs with the dynamic variables (e.g. ``N``) set to other values."""
        names = list(self.analysis.dynamic)
        total = 0
        for exps, coef in self.macs_polynomial().items():
            term = coef
            for name, e in zip(names, exps):
                term *= dynamic.get(name, self.mapping[name]) ** e
            total += term
        return total

    def describe(self) -> str:
        cl = self.classes

        def ax(axes):
            return "[" + ", ".join(f"{cl[c].name}:{self.values[c]}" for c in axes) + "]"

        lines = [f"plan for {self.op.name or self.op.hash} {self.mapping}: {self.flops} MACs, "
                 f"{self.written} elements written, peak numel {self.peak}"
                 f"{'' if self.exhaustive else ' (greedy)'}"]
        for s in self.steps:
            srcs = ", ".join(f"{n}{ax(a)}" for n, a in zip(s.srcs, s.src_axes))
            extra = ""
            if s.summed:
                extra = " sum " + ",".join(cl[c].name for c in s.summed)
            if s.macs:
                extra += f"  ({s.macs} MACs)"
            lines.append(f"  {s.dst}{ax(s.dst_axes)} = {s.kind}({srcs}){extra}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Plan({self.op.name or self.op.hash}, {self.mapping}, flops={self.flops}, steps={len(self.steps)})"


def _replay(an: Analysis, values, actions: Sequence[Action], output_order: Sequence[int]) -> tuple[list[Step], list]:
    live: dict[str, list] = {}     # name -> [axes list, data]
    steps: list[Step] = []
    mac_classes: list[tuple[int, ...]] = []
    names = itertools.count()
    for k, axes in enumerate(an.tensors):
        live["x" if k == 0 else f"w{k}"] = [list(axes), k == 0]
    for k, c in enumerate(an.consts, start=1):
        live[f"c{k}"] = [[c], False]

    def fresh() -> str:
        return f"t{next(names)}"

    def find(ref: Tensor, exclude: str = "") -> str:
        for n, (axes, data) in live.items():
            if n != exclude and frozenset(axes) == ref[0] and data == ref[1] and len(set(axes)) == len(axes):
                return n
        raise LoweringError(f"replay: no live tensor {sorted(ref[0])}")

    def dedup(name: str):
        """Take diagonals until every class appears once."""
        while True:
            axes, data = live[name]
            dup = next((c for c in axes if axes.count(c) > 1), None)
            if dup is None:
                return name
            i = axes.index(dup)
            j = axes.index(dup, i + 1)
            new_axes = [c for k, c in enumerate(axes) if k not in (i, j)] + [dup]
            dst = fresh()
            steps.append(Step("diag", (name,), dst, (tuple(axes),), tuple(new_axes), classes=(dup,),
                              data=data))
            del live[name]
            live[dst] = [new_axes, data]
            name = dst

    for n in list(live):
        dedup(n)

    n_sel = itertools.count(1)
    for ai, act in enumerate(actions):
        if act.kind == "sel":
            f = an.fops[act.fop]
            dst = f"e{next(n_sel)}"
            axes = (f.tops[0],) + tuple(f.bottoms)
            steps.append(Step("select", (), dst, (), axes, fop=act.fop))
            live[dst] = [list(axes), False]
            continue
        if act.kind in ("fwd", "inv"):
            f = an.fops[act.fop]
            inverse = act.kind == "inv"
            src = f.bottoms if inverse else f.tops
            targets = [n for n, (axes, _) in live.items() if any(c in axes for c in src)]
            for n in targets:
                axes, data = live[n]
                new = list(axes)
                bc: tuple[int, ...] = ()
                if not inverse and f.kind in ("split",):
                    i = new.index(f.tops[0])
                    new[i:i + 1] = list(f.bottoms)
                    kind = "split"
                elif not inverse and f.kind == "merge":
                    major, minor = f.tops
                    bc = tuple(c for c in (major, minor) if c not in axes)
                    if major in new:
                        i = new.index(major)
                        new = [c for c in new if c != minor]
                        new[new.index(major)] = f.bottoms[0]
                    else:
                        new[new.index(minor)] = f.bottoms[0]
                    kind = "merge"
                elif not inverse and f.kind in ("shift", "stride"):
                    new[new.index(f.tops[0])] = f.bottoms[0]
                    kind = f.kind
                elif not inverse and f.kind == "unfold":
                    i = new.index(f.tops[0])
                    new[i] = f.bottoms[0]
                    new.append(f.bottoms[1])
                    kind = "unfold"
                elif inverse and f.kind == "split":
                    l, r = f.bottoms
                    new = [c for c in new if c != r]
                    new[new.index(l)] = f.tops[0]
                    kind = "inv_split"
                elif inverse and f.kind == "merge":
                    i = new.index(f.bottoms[0])
                    new[i:i + 1] = list(f.tops)
                    kind = "inv_merge"
                else:
                    raise LoweringError(f"cannot replay {act}")
                dst = fresh()
                steps.append(Step(kind, (n,), dst, (tuple(axes),), tuple(new), fop=act.fop,
                                  broadcast=bc, data=data))
                del live[n]
                live[dst] = [new, data]
                dedup(dst)
        elif act.kind == "sum":
            n = find(act.a)
            axes, data = live[n]
            new = [c for c in axes if c not in act.summed]
            dst = fresh()
            summed = tuple(c for c in axes if c in act.summed)
            steps.append(Step("sum", (n,), dst, (tuple(axes),), tuple(new), summed=summed,
                              macs=act.macs, data=data))
            mac_classes.append(tuple(axes))
            del live[n]
            live[dst] = [new, data]
        elif act.kind == "contract":
            na = find(act.a)
            nb = find(act.b, exclude=na)
            (aa, da), (ab, db) = live[na], live[nb]
            union = list(aa) + [c for c in ab if c not in aa]
            kept = [c for c in union if c not in act.summed]
            if ai == len(actions) - 1:
                order = [c for c in output_order if c in kept]
                kept = order + [c for c in kept if c not in order]
            dst = fresh()
            summed = tuple(c for c in union if c in act.summed)
            steps.append(Step("contract", (na, nb), dst, (tuple(aa), tuple(ab)), tuple(kept),
                              summed=summed, macs=act.macs, data=da or db))
            mac_classes.append(tuple(union))
            del live[na], live[nb]
            live[dst] = [kept, da or db]
        else:
            raise LoweringError(f"unknown action {act.kind}")
    if len(live) != 1:
        raise LoweringError(f"replay ended with {len(live)} tensors")
    (name, (axes, data)), = live.items()
    bc = tuple(c for c in output_order if an.classes[c].free)
    steps.append(Step("output", (name,), "y", (tuple(axes),), tuple(output_order), broadcast=bc,
                      data=data))
    return steps, mac_classes


def _with_sizes(steps: Sequence[Step], values) -> list[Step]:
    """Fill ``numel`` and ``writes`` (what the reference lowering writes) of every step."""
    out = []
    for s in steps:
        n = math.prod(values[c] for c in s.dst_axes)
        writes = n if s.kind in ("unfold", "contract", "sum", "select") else 0
        out.append(replace(s, numel=n, writes=writes))
    return out


_CACHE: dict[tuple, Plan] = {}


def class_values(op: Operator, mapping: Mapping[str, int] | Bindings) -> tuple[int, ...]:
    b = mapping if isinstance(mapping, Bindings) else op.space.bind(dict(mapping))
    return _class_values_at(analyze(op), b, 0)


def _class_values_at(an: Analysis, b: Bindings, i: int) -> tuple[int, ...]:
    """:func:`class_values` under mapping ``i`` of ``b``."""
    out = []
    for c in an.classes:
        v = b.values(c.size)[i]
        # (Fractions are normalized: an integer has denominator 1 and is its numerator; reading
        # it off skips the Fraction comparisons, ~6% of the synth FLOPs check in a profile)
        if v.denominator != 1 or v.numerator < 1:
            raise LoweringError(f"size {c.size} of class {c.name} is {v} under {b.mapping(i)}: "
                                "not a positive integer")
        out.append(v.numerator)
    for f in an.fops:
        if f.param is not None:
            v = b.values(f.param)[i]
            if v.denominator != 1:
                raise LoweringError(f"{f.kind} parameter {f.param} is {v}: not an integer")
    return tuple(out)


def _bound_key(op: Operator, mapping: Mapping[str, int], *opts) -> tuple[Bindings, tuple]:
    """The bindings of one mapping and the cache key of its plan under the options ``opts``."""
    b = op.space.bind(dict(mapping))
    # op.hash ignores the order of weight axes; plans (and parameter shapes) depend on it
    layout = tuple(tuple(d.digest for d in t) for t in op.tensors)
    return b, (op.hash, layout, tuple(sorted(b.mapping(0).items()))) + opts


#: planned MACs of the default options by plan key (see :func:`planned_flops`)
_MACS: dict[tuple, int] = {}


def planned_flops(op: Operator, bindings: Bindings) -> tuple[int, ...]:
    """``plan_for(op, mapping).flops`` (default options) for every mapping of ``bindings``: what
    :meth:`Operator.flops` returns, without building the plans' steps.

    The synthesizer checks the FLOPs window of every operator it completes and keeps few of
    them; the MACs are the search's (:meth:`_Searcher.search`, the number a plan's ``flops``
    is set to), so replaying the winning actions into steps is skipped. Plans already built are
    reused; the search is the same (same graph, options and values), so are the numbers."""
    opts = (False, True, 20000, "bytes", True, None)  # plan_for's defaults, in its key's order
    # the caller's bindings (a synthesis space's, which memoizes sizes across operators) give
    # the same exact values as binding each mapping anew, as plan_for does
    shared = bindings.space is op.space
    if shared:
        layout = tuple(tuple(d.digest for d in t) for t in op.tensors)
    out = []
    for i in range(len(bindings)):
        if shared:
            b, key, at = bindings, (op.hash, layout, tuple(sorted(bindings.mapping(i).items()))) + opts, i
        else:
            (b, key), at = _bound_key(op, bindings.mapping(i), *opts), 0
        with _LOCK:
            hit = _CACHE.get(key)
            macs = hit.flops if hit is not None else _MACS.get(key)
        if macs is None:
            an = analyze(op)
            macs = _Searcher(an, _class_values_at(an, b, at)).search()[1]
            with _LOCK:
                if len(_MACS) > 65536:
                    _MACS.clear()
                _MACS[key] = macs
        out.append(macs)
    # all mappings done: let the graph die young rather than age in the cache (long-lived
    # garbage is what makes the collector's full passes frequent and slow)
    with _LOCK:
        _GRAPHS.pop(_graph_key(op._analysis.get("lowering"), False, True, True), None)
    return tuple(out)


def plan_for(op: Operator, mapping: Mapping[str, int], *, weights_first: bool = False,
             allow_diag: bool = True, max_states: int = 20000, cost: str = "bytes",
             select: bool = True, peak_limit: int | None = None) -> Plan:
    """The cheapest plan of ``op`` under ``mapping`` (cached).

    ``cost="bytes"`` (default) scores MACs + :data:`BYTE_WEIGHT` x elements written, so a plan
    that materializes a blown-up window loses to one that folds it into a weight; ``cost="macs"``
    with ``select=False`` is the min-MAC planner of before (ties: smaller peak). ``select``:
    Unfolds may become 0/1 selection tensors contracted like weights. ``peak_limit`` (elements):
    prefer a plan whose largest intermediate stays under it, when one exists.

    Variants used by the autotuner as candidates: ``weights_first`` contracts all weights
    together before touching the data (e.g. folds a factorized operator back into one dense conv
    weight); ``allow_diag=False`` forbids views that create a class the tensor already holds
    (diagonals), unless the operator cannot be lowered otherwise.
    """
    b, key = _bound_key(op, mapping, weights_first, allow_diag, max_states, cost, select, peak_limit)
    full = b.mapping(0)
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    an = analyze(op)
    values = class_values(op, b)
    searcher = _Searcher(an, values, weights_first=weights_first, max_states=max_states,
                         allow_diag=allow_diag, cost=cost, select=select, peak_limit=peak_limit)
    try:
        actions, macs, peak, exhaustive, written = searcher.search()
    except LoweringError:
        if allow_diag:
            raise
        return plan_for(op, mapping, weights_first=weights_first, max_states=max_states,
                        cost=cost, select=select, peak_limit=peak_limit)
    steps, mac_classes = _replay(an, values, actions, an.outputs)
    steps = _with_sizes(steps, values)
    scale = 1
    for c in an.classes:
        if c.role == "reduce" and c.free:
            scale *= values[c.id]
    plan = Plan(op, full, an, values, tuple(steps), macs, peak, exhaustive, weights_first,
                allow_diag, scale, tuple(mac_classes), cost, select)
    plan.written = written
    plan.peak_limit = peak_limit
    plan.cost = macs + searcher.byte_weight * written
    assert plan.flops == sum(s.macs for s in plan.steps)
    with _LOCK:
        if len(_CACHE) > 4096:
            _CACHE.clear()
        _CACHE[key] = plan
    return plan


__all__ = ["Plan", "Step", "Analysis", "DimClass", "FwdOp", "LoweringError", "analyze", "plan_for",
           "planned_flops",
           "class_values", "BYTE_WEIGHT"]
