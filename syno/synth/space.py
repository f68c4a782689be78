"""The guided-synthesis space: lazy, cached, canonical enumeration of operators (bottom-up).

Nodes are partial operators (:class:`~syno.synth.state.State`). The root holds the output
iterators (fixed I/O dims bypass the search). Children apply the inverse of one primitive to the
frontier -- Reduce (only before any other op, domains in non-decreasing order), Expand, Shift,
Stride, Split, Unfold, Merge -- or a Contraction (the Shares of one new weight, each optionally with
an Expand = outer product), or Finalize (the frontier becomes the input tensor in input-shape order,
fixed dims re-inserted; weights grouped by id). Every op costs one depth unit.

Every candidate op is filtered by the canonicalization rules (reference §4, listed per rule id in
:mod:`syno.synth.rules` comments and ``docs/synthesis.md``); every new child is kept only if the
input shape is still reachable within the remaining depth (:mod:`syno.synth.distance`) and the FLOPs
lower bound fits the window (:mod:`syno.synth.flops`). Children are computed on first request and
nodes are deduplicated by canonical key, so transpositions of independent ops meet.

Edges are ``Next(type, key)`` with ``key`` a 16-hex digest of the applied op on the parent's
canonical state, so path strings replay in any process (:meth:`SynthSpace.node_from_path`).
"""

from __future__ import annotations

import hashlib
import random
from fractions import Fraction
from itertools import product
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from syno.ir.graph import Operator
from syno.ir.primitives import Dim, IteratorDim, Merge, ReduceDim, Share, Shift, Split, Stride, Unfold
from syno.ir.sizes import Size

from . import analysis as A
from .distance import INF, CurSig, shape_lower_bound
from .flops import operator_flops, stage_lower_bound
from .options import SynthOptions
from .protocol import NEXT_TYPES, Next, Path, path_from_str, path_to_str
from .state import (C_CONTRACTION, C_EXPAND, C_MERGE, C_REDUCE, C_SHARE, C_SHIFT, C_SPLIT, C_STRIDE,
                    C_UNFOLD, State, canonical_state)

TYPE_INDEX = {t: i for i, t in enumerate(NEXT_TYPES)}


def _h(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class Move(NamedTuple):
    type: str
    key: str
    payload: tuple

    @property
    def next(self) -> Next:
        return Next(self.type, self.key)


class Node:
    """A node of the synthesis DAG (implements :class:`syno.synth.protocol.SynthNode`)."""

    __slots__ = ("space", "state", "_key", "_path", "_depth", "_operator", "_moves", "_aliases", "_live",
                 "_children", "dead", "final_info")

    def __init__(self, space: SynthSpace, state: State | None, key: str, path: Path, depth: int,
                 operator: Operator | None = None, final_info: dict | None = None):
        self.space = space
        self.state = state
        self._key = key
        self._path = path
        self._depth = depth
        self._operator = operator
        self._moves: dict[str, list[Move]] | None = None
        self._aliases: dict[tuple[str, str], Move] = {}
        self._live: dict[str, list[Move]] | None = None
        self._children: dict[tuple[str, str], Node | None] = {}
        self.dead = False
        self.final_info = final_info or {}

    # -- protocol -------------------------------------------------------------------------------
    @property
    def key(self) -> str:
        return self._key

    @property
    def path(self) -> Path:
        """One path reaching this node (the first discovered; every path to it replays to it)."""
        return self._path

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def is_final(self) -> bool:
        return self._operator is not None

    def is_dead_end(self) -> bool:
        return self.dead

    def operator(self) -> Operator:
        if self._operator is None:
            raise ValueError("not a final node")
        return self._operator

    def children(self) -> list[tuple[Next, Node]]:
        """Live children sorted by (type, key). Two ops that give the same canonical child (e.g.
        the same Unfold with either of two equal reduction windows) appear once, under the first
        key; the other key still replays to that child."""
        out = []
        for moves in self.moves().values():
            for m in moves:
                child = self._materialize(m)
                if child is not None:
                    out.append((m.next, child))
        if not out and not self.is_final:
            self.dead = True
        out.sort(key=lambda nc: (TYPE_INDEX[nc[0].type], nc[0].key))
        seen: set[str] = set()
        unique = []
        for nxt, child in out:
            if child.key not in seen:
                seen.add(child.key)
                unique.append((nxt, child))
        return unique

    # -- extras -----------------------------------------------------------------------------------
    def moves(self) -> dict[str, list[Move]]:
        """Candidate ops by type (rules applied, children not yet built or bounded)."""
        if self._moves is None:
            if self.is_final:
                self._moves = {}
            else:
                self._moves, self._aliases = self.space._moves(self.state)
        return self._moves

    def aliases(self) -> dict[tuple[str, str], Move]:
        """Moves left out of :meth:`moves` because a relabelling of equal reductions maps them onto
        a listed move with a smaller key (same canonical child): (type, alias key) -> the listed
        move. Alias keys still replay (to the listed move's child, whose path uses the listed key),
        so paths written before aliases were collapsed stay valid."""
        self.moves()
        return self._aliases

    def _find(self, nxt: Next) -> Move | None:
        for m in self.moves().get(nxt.type, ()):
            if m.key == nxt.key:
                return m
        return self._aliases.get((nxt.type, nxt.key))

    def child(self, nxt: Next) -> Node | None:
        """The child along ``nxt`` (an alias key included), or None if no such edge (or it leads
        to a dead end)."""
        m = self._find(nxt)
        return None if m is None else self._materialize(m)

    def canonical_next(self, nxt: Next) -> Next:
        """The listed edge that ``nxt`` stands for (``nxt`` itself unless it is an alias)."""
        m = self._find(nxt)
        return nxt if m is None else m.next

    def has_edge(self, nxt: Next) -> bool:
        return self._find(nxt) is not None

    def _materialize(self, m: Move) -> Node | None:
        k = (m.type, m.key)
        if k in self._children:
            node = self._children[k]
            return None if node is None or node.dead else node
        node = self.space._child(self, m)
        self._children[k] = node
        return None if node is None or node.dead else node

    def random_child(self, rng: random.Random, by_type: bool = True,
                     type_weight=None) -> tuple[Next, Node] | None:
        """A random live child: a random op type (uniform, or weighted by ``type_weight(depth,
        type)``), then a uniform op of that type (``by_type``; the original's ``steps=2``), or
        uniform over all children."""
        if self._live is None:
            self._live = {t: list(ms) for t, ms in self.moves().items() if ms}
        live = self._live
        while live:
            if by_type:
                types = sorted(live, key=TYPE_INDEX.__getitem__)
                if type_weight is None:
                    t = rng.choice(types)
                else:
                    t = rng.choices(types, [type_weight(self._depth, x) for x in types])[0]
                ms = live[t]
                i = rng.randrange(len(ms))
            else:
                total = sum(len(v) for v in live.values())
                j = rng.randrange(total)
                for t in sorted(live, key=TYPE_INDEX.__getitem__):
                    if j < len(live[t]):
                        break
                    j -= len(live[t])
                ms, i = live[t], j
            m = ms[i]
            child = self._materialize(m)
            if child is not None:
                return m.next, child
            ms[i] = ms[-1]
            ms.pop()
            if not ms:
                del live[t]
        if not self.is_final:
            self.dead = True
        return None

    def __repr__(self) -> str:
        if self.is_final:
            return f"Node(final {self._operator!r})"
        return f"Node(depth={self._depth}, key={self._key}, frontier={list(self.state.current)})"


class SynthSpace:
    """Lazy canonical synthesis space for one :class:`SynthOptions` (implements ``SynthSpace``).

    ``enforce_flops=False`` turns off the FLOPs window (pruning and the final check); everything
    else is unchanged. Used to replay operators that are deliberately outside a preset's window."""

    def __init__(self, options: SynthOptions, *, enforce_flops: bool = True, use_distance: bool = True,
                 adaptive: bool = True):
        self.options = options
        self.problem = options.problem()
        self.size_space = self.problem.space
        self.bindings = self.problem.bindings
        self.enforce_flops = enforce_flops
        self.use_distance = use_distance
        self.adaptive = adaptive
        self._type_stats: dict[tuple[int, str], tuple[int, int]] = {}
        o = options
        p = self.problem
        self.outputs: tuple[IteratorDim, ...] = tuple(
            IteratorDim(j, s, u) for j, (s, u) in enumerate(zip(p.output_shape.sizes, p.output_shape.unordered)))
        self.fixed_by_input = {i: self.outputs[j] for i, j in p.fixed}
        self.fixed_dims = frozenset(self.fixed_by_input.values())
        self.max_occ = tuple(v.max_occurrences for v in self.size_space.variables)
        self.n_primary = self.size_space.n_primary
        self.flops_lo, self.flops_hi = (p.flops_window if enforce_flops else (0.0, float("inf")))
        if not o.enable_flops_pruning:
            self._prune_hi = float("inf")
        else:
            self._prune_hi = self.flops_hi
        self.desired_exps = tuple(s.exps for s in p.desired)
        self._var_lower = [min(self.bindings.values(self.size_space.var(v.name)))
                           for v in self.size_space.variables]
        self._nodes: dict[str, Node] = {}
        self._dead: set[str] = set()
        self._size_ok: dict[Size, bool] = {}
        self._surplus_ok: dict[tuple, bool] = {}
        self._red_sizes: dict[tuple, list[Size]] = {}
        self._red_base: list[Size] | None = None
        self._red_memo: dict[str, bool] = {}
        self._blocks: dict[tuple, list[Size]] = {}
        self._dist_cache: dict[tuple, int] = {}
        self._upper: dict[Size, Fraction] = {}
        self._lower: dict[Size, Fraction] = {}
        self._winok: dict[tuple, bool] = {}
        self._cposs: dict[str, bool] = {}
        self._outer: dict[tuple, Size] = {}
        self._cposs_dims: dict[tuple, dict[Dim, tuple[bool, bool, bool]]] = {}
        self._sig_cache: dict[tuple, dict[Dim, CurSig]] = {}
        self._winfac: dict[Size, float] = {}
        self._tiny: dict[Size, bool] = {}
        self._needs: dict[tuple, tuple] = {}
        self._final_checks: dict[str, tuple[bool, dict]] = {}
        self._group_memo: dict = {}
        self.stats = {"states": 0, "dead_shape": 0, "dead_flops": 0, "dead_pool": 0, "finals": 0,
                      "final_rejected": 0}
        self._prim_separable, self._prim_elim_free = self._primary_escapes()
        root_current = [d for d in self.outputs if d not in self.fixed_dims]
        state = State(root_current, (), (), (), (0,) * 9, (0,) * len(self.max_occ), 0)
        self._root = Node(self, state, state.key, (), 0)
        self._nodes[state.key] = self._root

    # ------------------------------------------------------------------------------ protocol
    def root(self) -> Node:
        return self._root

    def node_from_path(self, path: Path | str) -> Node:
        if isinstance(path, str):
            path = path_from_str(path)
        node = self._root
        for k, nxt in enumerate(path):
            child = node.child(nxt)
            if child is None:
                why = "leads to a dead end" if node.has_edge(nxt) else "does not exist"
                raise ValueError(f"path element {k} ({nxt}) {why} at depth {node.depth}")
            node = child
        return node

    def random_final(self, node: Node, rng: random.Random, max_tries: int = 64) -> Node | None:
        found = self.random_walk(node, rng, max_tries)
        return None if found is None else found[1]

    def _type_weight(self, depth: int, t: str) -> float:
        s, n = self._type_stats.get((depth, t), (0, 0))
        return (s + 1.0) / (n + 2.0)

    def _learn(self, node: Node, edges: Sequence[Next], success: bool) -> None:
        depth = node.depth
        for nxt in edges:
            s, n = self._type_stats.get((depth, nxt.type), (0, 0))
            self._type_stats[(depth, nxt.type)] = (s + (1 if success else 0), n + 1)
            depth += 1

    def random_walk(self, node: Node, rng: random.Random, max_tries: int = 64,
                    by_type: bool = True, adaptive: bool | None = None) -> tuple[Path, Node] | None:
        """Random descent from ``node`` to a final node, backtracking out of dead ends (at most
        ``max_tries`` backtracks). Returns (path from the root, final node) or None.

        ``adaptive`` (default: the space's ``adaptive`` flag) weights op types at each depth by how
        often they led to a final node in earlier walks of this space (Laplace-smoothed), which
        steers walks away from op types that mostly dead-end; it changes the sampling distribution,
        not the set of reachable operators."""
        adaptive = self.adaptive if adaptive is None else adaptive
        tw = self._type_weight if adaptive else None
        stack: list[Node] = [node]
        edges: list[Next] = []
        backtracks = 0
        while stack:
            cur = stack[-1]
            if cur.is_final:
                if adaptive:
                    self._learn(node, edges, True)
                return tuple(node.path) + tuple(edges), cur
            got = cur.random_child(rng, by_type, tw)
            if got is None:
                stack.pop()
                if edges:
                    if adaptive:
                        self._learn(node, edges, False)
                    edges.pop()
                backtracks += 1
                if backtracks > max_tries:
                    return None
                continue
            nxt, child = got
            stack.append(child)
            edges.append(nxt)
        return None

    # ------------------------------------------------------------------------------ sizes
    def size_ok(self, s: Size) -> bool:
        """Legal to sample and valid (reference §1.4): not 1, no illegal coefficient, lower >= 1,
        within the variable-usage limits, integral under every mapping if exact division."""
        ok = self._size_ok.get(s)
        if ok is None:
            o = self.options
            nvars, powers = s.usage()
            ok = (not s.is_one() and s.is_legal() and nvars <= o.max_variables_in_size
                  and powers <= o.max_variable_powers_in_size)
            if ok:
                vals = self.bindings.values(s)
                ok = min(vals) >= 1 and (not o.exact_division or all(v.denominator == 1 for v in vals))
            self._size_ok[s] = ok
        return ok

    def _q_ok(self, exps: tuple[int, ...]) -> bool:
        ok = self._surplus_ok.get(exps)
        if ok is None:
            s = self.size_space.size_of(exps)
            vals = self.bindings.values(s)
            ok = s.is_legal() and min(vals) >= 1 and (
                not self.options.exact_division or all(v.denominator == 1 for v in vals))
            self._surplus_ok[exps] = ok
        return ok

    def allowance(self, usage: Sequence[int]) -> tuple[int, ...]:
        return tuple(m - u for m, u in zip(self.max_occ, usage))

    def _enum_base(self) -> list[Size]:
        """Allowance.enumerateSizes (reference §1.5) at full allowance, sorted by exponent vector."""
        if self._red_base is None:
            E = self.options.max_enumerations_per_var
            ranges = []
            for i, a in enumerate(self.max_occ):
                if i < self.n_primary:
                    ranges.append(range(0, max(0, min(a, E - 1)) + 1))
                else:
                    lo, hi = max(E // 2 - E + 1, -a), min(E // 2, a)
                    ranges.append(range(lo, hi + 1) if lo <= hi else range(0, 1))
            base = []
            for exps in product(*ranges):
                sz = self.size_space.size_of(exps)
                if self.size_ok(sz):
                    base.append(sz)
            base.sort(key=lambda x: x.exps)
            self._red_base = base
            self._red_exps = [x.exps for x in base]
            self._red_abs = np.array([[abs(e) for e in x.exps] for x in base], dtype=np.int64).reshape(
                len(base), len(self.max_occ))
            self._red_vals = np.array([[float(v) for v in self.bindings.values(x)] for x in base],
                                      dtype=np.float64).reshape(len(base), len(self.bindings))
        return self._red_base

    def _enum_sizes(self, allow: tuple[int, ...]) -> list[Size]:
        """Allowance.enumerateSizes: sizes whose |exponents| fit the allowance (reference §1.5)."""
        got = self._red_sizes.get(allow)
        if got is None:
            base = self._enum_base()
            mask = np.all(self._red_abs <= np.array(allow, dtype=np.int64), axis=1)
            got = [x for x, ok in zip(base, mask) if ok]
            self._red_sizes[allow] = got
        return got

    def _merge_blocks(self, size: Size, allow: tuple[int, ...]) -> list[Size]:
        """Allowance.enumerateDivisors (reference §1.5): blocks b with b and size/b both valid."""
        key = (size, allow)
        got = self._blocks.get(key)
        if got is None:
            E = self.options.max_enumerations_per_var
            ranges = []
            for i, (p, a) in enumerate(zip(size.exps, allow)):
                lo = p // 2 - (E - 1) // 2
                hi = lo + E - 1
                if i < self.n_primary:
                    if lo < 0:
                        hi, lo = hi - lo, 0
                    ranges.append(range(lo, min(hi, p) + 1))
                else:
                    # moving a factor farther from 0 than the size has it costs allowance
                    ranges.append([b for b in range(lo, hi + 1) if max(abs(b) - abs(p), 0) <= max(a, 0)])
            got = []
            for exps in product(*ranges):
                b = self.size_space.size_of(exps)
                if self.size_ok(b) and self.size_ok(size / b):
                    got.append(b)
            got.sort(key=lambda s: s.exps)
            self._blocks[key] = got
        return got

    def upper(self, s: Size) -> Fraction:
        v = self._upper.get(s)
        if v is None:
            v = self._upper[s] = self.bindings.upper(s)
        return v

    def lower(self, s: Size) -> Fraction:
        v = self._lower.get(s)
        if v is None:
            v = self._lower[s] = self.bindings.lower(s)
        return v

    # ------------------------------------------------------------------------------ helpers
    def remaining(self, state: State) -> int:
        return self.options.depth - state.depth

    def cap_left(self, state: State, slot: int, name: str) -> int:
        return self.options.cap(name) - state.counts[slot]

    def expands_enabled(self) -> bool:
        return self.options.max_expansion_repeat_multiplier > 1

    def can_contract(self, state: State) -> bool:
        """Limits allow another contraction now (K5, share cap, depth)."""
        o = self.options
        return (state.n_weights < o.max_tensors - 1 and self.remaining(state) >= 1
                and o.cap("shares") - state.counts[C_SHARE] >= 2)

    def contraction_possible(self, state: State) -> bool:
        """Could any future contraction still be formed? It needs two Shares (K1) whose primary
        occurrences fit the allowance, one of them an outer product: current dims that fit, plus
        pieces cut by the Merges still allowed (a Merge piece may be an outer product)."""
        key = state.key
        got = self._cposs.get(key)
        if got is None:
            got = self._contraction_possible(state)
            self._cposs[key] = got
        return got

    def _contraction_possible(self, state: State) -> bool:
        o = self.options
        if not self.can_contract(state):
            return False
        allow = self.allowance(state.usage)
        coef = o.count_coefficients_in_weights_as_allowance_usage
        outer = self.outer_numel(state)
        merges = self.cap_left(state, C_MERGE, "merges")
        fit = outer_ok = 0
        gains = 0
        ctx = (allow, outer, merges > 0)
        per_dim = self._cposs_dims.get(ctx)
        if per_dim is None:
            per_dim = self._cposs_dims[ctx] = {}
        for d in state.current:
            got = per_dim.get(d)
            if got is None:  # (fits the allowance, can be an outer product now, a Merge may cut a piece that fits)
                got = (False, False, False)
                if not (A.data_discarding(d) or d.height + 1 > o.max_chain_length):
                    f = self.fits(allow, d.size, coef)
                    got = (f, f and self.outer_ok(state, d, allow, outer),
                           merges > 0 and d.height + 2 <= o.max_chain_length
                           and A.kind(d) not in ("ShareL", "Split", "MergeL", "reduce")
                           and any(self.fits(allow, b, coef) or self.fits(allow, d.size / b, coef)
                                   for b in self._merge_blocks(d.size, allow)))
                per_dim[d] = got
            fit += got[0]
            outer_ok += got[1]
            gains += got[2]
        pieces = fit + min(gains, merges)
        return pieces >= 2 and (outer_ok > 0 or (merges > 0 and gains > 0))

    def is_new(self, state: State, d: Dim) -> bool:
        """C3: after a contraction, a dim is "new" if it lies above the latest weight's Shares."""
        return state.n_weights == 0 or state.n_weights in A.weights_below(d)

    def fits(self, allow: Sequence[int], size: Size, coefficients: bool) -> bool:
        for i, (e, a) in enumerate(zip(size.exps, allow)):
            if (i < self.n_primary or coefficients) and abs(e) > a:
                return False
        return True

    def outer_numel(self, state: State) -> Size:
        s = self._outer.get(state.expanded)
        if s is None:
            s = self.size_space.one
            for d in state.expanded:
                if A.is_share_l(d):
                    s = s * d.size
            self._outer[state.expanded] = s
        return s

    def repeat_numel(self, state: State) -> Size:
        s = self.size_space.one
        for d in state.expanded:
            if not A.is_share_l(d):
                s = s * d.size
        return s

    def outer_ok(self, state: State, d: Dim, allow, outer: Size) -> bool:
        """Can ``d`` become an outer product (Share + Expand) in a contraction now?"""
        o = self.options
        if A.data_discarding(d) or d.height + 1 > o.max_chain_length:
            return False
        if not self.fits(allow, d.size, o.count_coefficients_in_weights_as_allowance_usage):
            return False
        t, _ = A.contraction_type(d)
        if t == "merge":
            return self.upper(outer * d.size) <= o.max_expansion_merge_multiplier
        if t == "weights_sharing":
            u = self.upper(d.size)
            return o.min_weight_share_dim <= u <= o.max_weight_share_dim
        return False

    # ------------------------------------------------------------------------------ bounds
    def may_vanish(self, state: State, d: Dim, allow, outer, can_c: bool) -> bool:
        """Could ``d`` still become an outer product (Share + Expand) of a future contraction?"""
        if not can_c:
            return False
        if self.outer_ok(state, d, allow, outer):
            return True
        o = self.options
        # a reduction may first be shared plainly, then become an outer product of a later weight
        if isinstance(d, ReduceDim) and state.n_weights + 2 <= o.max_tensors - 1 \
                and d.height + 2 <= o.max_chain_length:
            u = self.upper(d.size)
            if o.min_weight_share_dim <= u <= o.max_weight_share_dim:
                coef = o.count_coefficients_in_weights_as_allowance_usage
                return all(2 * abs(e) <= a for i, (e, a) in enumerate(zip(d.size.exps, allow))
                           if i < self.n_primary or coef)
        return False

    def _carve(self, state: State, d: Dim, caps: dict, can_c: bool, allow) -> tuple[bool, int, int]:
        """How a Merge could cut a block off ``d`` (or what it becomes): (any block now, ops before a
        block <= max_shift_rhs can be cut (Shift top, M3), ops before a block smaller than a
        window / stride can be cut (Unfold / Stride top, M4-M5)). Detours follow M1/M2, H1, T1/T2, U1/U2
        and C3; an unreachable cut is INF."""
        o = self.options
        if caps["merges"] <= 0 or d.height + 1 > o.max_chain_length:
            return False, INF, INF
        k = A.kind(d)
        new = self.is_new(state, d)
        room = o.max_chain_length - d.height - 1  # ops that may precede the Merge on this chain
        big = k in ("iterator", "MergeR") and new and bool(self._merge_blocks(d.size, allow))
        if big:
            return True, 0, 0
        shares_ok = can_c and self.fits(allow, d.size, o.count_coefficients_in_weights_as_allowance_usage)
        # -- tiny blocks: through a Shift top
        if k == "Shift" and new:
            tiny = 0
        elif room >= 1 and new and caps["shifts"] > 0 and k not in ("reduce", "ShareL", "Shift") \
                and not A.is_unordered(d) and not (k == "Split" and self.upper(d.op.bottoms[1].size) > o.max_shift_rhs):
            tiny = 1
        elif room >= 2 and caps["splits"] > 0 and caps["shifts"] > 0 and self._tiny_partner(state, d):
            tiny = 2  # Split with a tiny dim as the block, then Shift (H3), then Merge
        elif room >= 2 and caps["splits"] > 0 and caps["shifts"] > 0 and caps["merges"] >= 2 and any(
                x is not d and A.kind(x) in ("iterator", "MergeR") and self.is_new(state, x)
                for x in state.current):
            tiny = 3  # ... after cutting a tiny partner off some dim (C3: a new one)
        else:
            tiny = INF
        # -- small blocks: through an Unfold or Stride top
        # (a Stride top is data-discarding, and so are both halves of a Merge of it: such pieces can
        # only end as windows, so Strides never help to keep a cut dim's material)
        unfold_main = (caps["unfolds"] > 0 and not A.ends_up_reduce(d)
                       and not (k == "Split" and o.disallow_unfold_l_above_split)
                       and not (k == "Shift" and o.disallow_unfold_l_above_shift))
        if k == "Unfold" and new:
            small = 0
        elif room >= 1 and unfold_main:
            small = 1
        elif room >= 2 and caps["unfolds"] > 0 and (
                (caps["splits"] > 0 and not o.disallow_unfold_l_above_split)
                or (shares_ok and not A.ends_up_reduce(d))):
            small = 2
        elif room >= 3 and caps["splits"] > 0 and shares_ok and caps["unfolds"] > 0:
            small = 3
        else:
            small = INF
        return False, tiny, small

    def _tiny_partner(self, state: State, d: Dim) -> bool:
        rhs = self.options.max_shift_rhs
        return any(x is not d and self.upper(x.size) <= rhs for x in state.current)

    def _whole(self, d: Dim, caps: dict) -> tuple[bool, bool]:
        """(as an Unfold window, possibly after joining others; by an Expand): could ``d`` be
        eliminated whole?"""
        o = self.options
        if d.height >= o.max_chain_length:
            return False, False
        window = False
        if caps["unfolds"] > 0 and self.upper(d.size) <= o.max_unfold_kernel_size:
            if not o.odd_unfold_kernels or all(v.denominator == 1 and v.numerator % 2 == 1
                                               for v in self.bindings.values(d.size)):
                window = True
        k = A.kind(d)
        expand = caps["expands"] > 0 and (k == "MergeR" or (k == "MergeL" and o.allow_tile))
        return window, expand

    def _window_ok(self, main: tuple[int, ...], win: tuple[int, ...]) -> bool:
        """U4 for an Unfold whose main comes from the dim ``main`` (a Merge piece of it is smaller;
        a Stride may enlarge it): lower(main / window) >= min_unfold_ratio."""
        key = (main, win)
        got = self._winok.get(key)
        if got is None:
            o = self.options
            ratio = self.lower(self.size_space.size_of(tuple(a - b for a, b in zip(main, win))))
            if o.max_strides != 0:
                ratio *= o.max_strided_dim_size
            if not o.disallow_unfold_l_above_split:
                ratio = float("inf")  # mains may be products of several dims
            got = ratio >= o.min_unfold_ratio
            self._winok[key] = got
        return got

    def shape_distance(self, state: State, limit: int | None = None) -> int:
        """Lower bound on primitives to reach the input shape if it is at most ``limit`` (default:
        the remaining depth; the search stops at the first witness), else INF."""
        o = self.options
        can_c = self.contraction_possible(state)
        allow = self.allowance(state.usage)
        outer = self.outer_numel(state)
        caps = {"merges": self.cap_left(state, C_MERGE, "merges"),
                "shifts": self.cap_left(state, C_SHIFT, "shifts"),
                "strides": self.cap_left(state, C_STRIDE, "strides"),
                "unfolds": self.cap_left(state, C_UNFOLD, "unfolds"),
                "splits": self.cap_left(state, C_SPLIT, "splits"),
                "expands": self.cap_left(state, C_EXPAND, "expands") if self.expands_enabled() else 0}
        sigs = []
        # a dim's signature depends on the state through this context only (_carve also looks for
        # a tiny partner and a new iterator / MergeR among the other current dims: their counts)
        n_tiny = sum(1 for x in state.current if self._is_tiny(x.size))
        n_open = sum(1 for x in state.current if A.kind(x) in ("iterator", "MergeR") and self.is_new(state, x))
        ctx = (state.n_weights, tuple(caps.values()), allow, can_c, outer, n_tiny, n_open)
        per_dim = self._sig_cache.get(ctx)
        if per_dim is None:
            per_dim = self._sig_cache[ctx] = {}
        for d in state.current:
            sig = per_dim.get(d)
            if sig is None:
                big, tiny, small = self._carve(state, d, caps, can_c, allow)
                window, expand = self._whole(d, caps)
                whole = window or expand
                prim = d.size.exps[:self.n_primary]
                vanish = self.may_vanish(state, d, allow, outer, can_c)
                rigid = (any(prim) and not big and not whole and not vanish
                         and ((tiny >= INF and small >= INF)
                              or not any(self._prim_separable[k] for k, e in enumerate(prim) if e)))
                cuts = frozenset()
                if big:
                    blocks = self._merge_blocks(d.size, allow)
                    cuts = frozenset([b.exps for b in blocks] + [(d.size / b).exps for b in blocks])
                sig = CurSig(d.size.exps, d.height >= o.max_chain_length, A.data_discarding(d),
                             vanish, big, tiny, small, whole, expand, rigid, A.ends_up_reduce(d), cuts)
                per_dim[d] = sig
            sigs.append(sig)
        sigs = tuple(sorted(sigs))
        needs, must_share = self.share_needs(state, can_c, allow)
        prim_allow = tuple(allow[:self.n_primary])
        key = (sigs, caps["merges"], min(caps["splits"] + caps["unfolds"] + caps["expands"], 64),
               min(caps["strides"], 8), state.n_weights == 0 or must_share, can_c, prim_allow, needs,
               self.remaining(state), min(caps["shifts"], 8))
        # the largest block an Unfold / Stride top may give away (M4, M5): below the largest window
        # that can still be formed from the current odd small dims, or a stride
        win = 1.0
        for d in state.current:
            win *= self._window_factor(d.size)
        small_limit = min(win, float(o.max_unfold_kernel_size)) if caps["unfolds"] > 0 else 0.0
        key = key[:-2] + key[-1:] + (small_limit,)  # without the remaining depth
        if limit is None:
            limit = self.remaining(state)
        lo_hi = self._dist_cache.get(key)  # (proved lower bound, witnessed value)
        if lo_hi is not None:
            if lo_hi[1] <= limit:
                return lo_hi[1]
            if lo_hi[0] > limit:
                return INF
        got = None
        if got is None:
            got = shape_lower_bound(sigs, self.desired_exps, self.n_primary, self._q_ok,
                                    small_ok=lambda q, a, b, lim=small_limit: self._small_ok(q, a, b, lim),
                                    merges_left=key[1], joins_left=key[2], strides_left=key[3],
                                    shifts_left=caps["shifts"],
                                    need_contraction=key[4], can_contract=can_c,
                                    allowance=prim_allow, share_needs=needs, limit=limit,
                                    window_ok=self._window_ok, elim_free=self._prim_elim_free,
                                    group_memo=self._group_memo, memo_context=small_limit)
            lo, hi = lo_hi if lo_hi is not None else (0, INF)
            if got <= limit:
                hi = min(hi, got)
            else:
                lo = max(lo, limit + 1)
            self._dist_cache[key] = (lo, hi)
        return got

    def _is_tiny(self, size: Size) -> bool:
        """Could a dim of this size be the block of a Shift (upper <= max_shift_rhs, M3)?"""
        got = self._tiny.get(size)
        if got is None:
            got = self._tiny[size] = self.upper(size) <= self.options.max_shift_rhs
        return got

    def _window_factor(self, size: Size) -> float:
        """upper(size) if a dim of that size can be an Unfold window (small, odd if required), else 1."""
        got = self._winfac.get(size)
        if got is None:
            o = self.options
            u = float(self.upper(size))
            got = u if u <= o.max_unfold_kernel_size and (not o.odd_unfold_kernels or all(
                v.denominator == 1 and v.numerator % 2 == 1 for v in self.bindings.values(size))) else 1.0
            self._winfac[size] = got
        return got

    def _primary_escapes(self) -> tuple[tuple[bool, ...], tuple[bool, ...]]:
        """Per primary variable: (can a factor of it be cut off a dim or eliminated without a
        Share: through a Shift block (M3), a window (U3/U4), or a Stride block (M4, T2); can it
        vanish without an outer-product Share: in a window or an Expand)."""
        o = self.options
        sep, free = [], []
        for k in range(self.n_primary):
            v = self.size_space.var(self.size_space.variables[k].name)
            lo, hi = float(self.lower(v)), float(self.upper(v))
            odd = all(x.denominator == 1 and x.numerator % 2 == 1 for x in self.bindings.values(v))
            window = hi <= o.max_unfold_kernel_size and (odd or not o.odd_unfold_kernels)
            stride = o.max_strides != 0 and lo * lo < o.max_strided_dim_size
            expand = self.expands_enabled() and o.max_expands != 0 and hi <= o.max_expansion_repeat_multiplier
            sep.append(lo <= o.max_shift_rhs or window or stride)
            free.append(window or expand)
        return tuple(sep), tuple(free)

    def share_needs(self, state: State, can_c: bool, allow) -> tuple[tuple[tuple[int, ...], ...], bool]:
        """Primary occurrences that reductions not yet under a Share must still consume, and
        whether some reduction must still get under a Share (so a contraction is still needed).

        Every reduction ends below a Share or is pooled (P1: pooled domains multiply to at most
        max_pooling_factor). A reduction whose primary variables no window, Shift block or Stride
        block can take (``_primary_escapes``: too large, or even under an odd-kernel rule) can only
        get below a Share whose size contains them, consuming their occurrences. Returns the Pareto-minimal
        alternatives (one per admissible pooled subset; empty = impossible) and the flag."""
        covered = set()
        for w in state.weights:
            covered |= A.leaves(w)
        free = tuple(r for r in state.reductions if r not in covered)
        key = (free, can_c, tuple(allow[:self.n_primary]))
        got = self._needs.get(key)
        if got is None:
            got = self._needs[key] = self._share_needs(free, can_c, allow)
        return got

    def _share_needs(self, free: Sequence[ReduceDim], can_c: bool, allow) -> tuple[tuple[tuple[int, ...], ...], bool]:
        o = self.options
        pool_all = self.size_space.one
        for r in free:
            pool_all = pool_all * r.size
        must_share = not pool_all.is_one() and self.upper(pool_all) > o.max_pooling_factor
        strict = []
        for r in free:
            prim = r.size.exps[:self.n_primary]
            if any(prim) and not any(self._prim_separable[k] for k, e in enumerate(prim) if e):
                strict.append(r)
        if not strict:
            return ((0,) * self.n_primary,), must_share
        out = set()
        n = len(strict)
        for mask in range(1 << n):
            pooled = self.size_space.one
            need = [0] * self.n_primary
            for i, r in enumerate(strict):
                if mask >> i & 1:
                    pooled = pooled * r.size
                else:
                    for k, e in enumerate(r.size.exps[:self.n_primary]):
                        need[k] += abs(e)
            if not pooled.is_one() and self.upper(pooled) > o.max_pooling_factor:
                continue
            if any(need) and not can_c:
                continue
            if all(a <= b for a, b in zip(need, allow[:self.n_primary])):
                out.add(tuple(need))
        pareto = [v for v in out if not any(w != v and all(x <= y for x, y in zip(w, v)) for w in out)]
        return tuple(sorted(pareto)), must_share

    def _small_ok(self, q: tuple[int, ...], n_tiny: int, n_small: int, small_limit: float) -> bool:
        """Does ``q`` fit into ``n_tiny`` blocks cut off Shift tops (<= max_shift_rhs, M3) and
        ``n_small`` blocks cut off Unfold / Stride tops (< window / stride, M4-M5)?"""
        cap = float(self.options.max_shift_rhs) ** n_tiny * small_limit ** n_small
        return float(self.lower(self.size_space.size_of(q))) <= cap

    def pooling_ok(self, state: State, reductions: Sequence[ReduceDim] | None = None) -> bool:
        """P1: reductions with no Share above them (pooling) multiply to at most max_pooling_factor."""
        covered = set()
        for w in state.weights:
            covered |= A.leaves(w)
        pool = self.size_space.one
        for r in (state.reductions if reductions is None else reductions):
            if r not in covered:
                pool = pool * r.size
        return pool.is_one() or self.upper(pool) <= self.options.max_pooling_factor

    def flops_lower_bound(self, state: State) -> float:
        """A lower bound on the planned FLOPs of any completion, valid for the cost model of
        :mod:`syno.ir.lowering`: the step that produces the output iterates over it, except for
        broadcast (repeated) pieces, which all repeats together shrink at most by
        max_expansion_repeat_multiplier (E3); and every weight is read by some contraction.

        Deliberately conservative: sharper leaf-level bounds (the original's FLOPs game) are not
        valid for plans that multiply weights together first or iterate over view indices, and
        measured, they barely changed sampling (docs/synthesis.md)."""
        repeat = self.options.max_expansion_repeat_multiplier if self.expands_enabled() else 1
        per = [v / repeat for v in stage_lower_bound([], (), self.outputs, self.bindings)]
        for w in state.weight_groups():
            numel = self.size_space.one
            for d in w:
                numel = numel * d.size
            vals = self.bindings.values(numel)
            per = [max(a, float(v)) for a, v in zip(per, vals)]
        return self.problem.total(per)

    def viable(self, state: State) -> bool:
        """Keep a new node? Reduction-phase nodes (only reductions so far) are kept if finishing the
        reductions here or after adding more of them passes the bounds (the original's "OR of the
        Reduce children and the embedded normal stage"); other nodes must pass the bounds."""
        if state.in_reduction_phase and state.counts[C_REDUCE] > 0:
            return self._reduction_viable(state)
        return self._normal_viable(state)

    def _reduction_viable(self, state: State) -> bool:
        got = self._red_memo.get(state.key)
        if got is None:
            got = self._normal_viable(state)
            if not got and state.counts[C_REDUCE] < self.options.max_reductions and self.remaining(state) >= 2 \
                    and self._reductions_extensible(state):
                from .rules import reduce_sizes
                got = any(self._reduction_viable(self.apply(state, Move("Reduce", "", (size,))))
                          for size in reduce_sizes(self, state))
            self._red_memo[state.key] = got
        return got

    def _reductions_extensible(self, state: State) -> bool:
        """False if no extension of this reduction-phase state by more reductions can pass the shape
        bound: when even with a contraction the reductions cannot all get under Shares or be pooled
        (``share_needs`` empty), adding reductions only makes it worse (more reductions to place, less
        allowance, larger pooled products), so the whole lattice above is dead without visiting it."""
        if not self.use_distance:
            return True
        needs, _ = self.share_needs(state, True, self.allowance(state.usage))
        return bool(needs)

    def _normal_viable(self, state: State) -> bool:
        if not self.contraction_possible(state):
            if state.n_weights == 0:
                self.stats["dead_shape"] += 1
                return False
            if not self.pooling_ok(state):
                self.stats["dead_pool"] += 1
                return False
        if self.use_distance and self.shape_distance(state) > self.remaining(state):
            self.stats["dead_shape"] += 1
            return False
        if self.enforce_flops and self._prune_hi < float("inf") and state.n_weights > 0:
            if self.flops_lower_bound(state) > self._prune_hi:
                self.stats["dead_flops"] += 1
                return False
        if self.enforce_flops and self.options.enable_flops_pruning and self.flops_lo > 0:
            if self.flops_upper_bound(state) < self.flops_lo:
                self.stats["dead_flops"] += 1
                return False
        return True

    def flops_upper_bound(self, state: State) -> float:
        """No more reductions come after the reduction phase, so every stage of any completion
        iterates over at most all outputs and reductions: FLOPs <= (weights + a pooling stage) x
        numel(outputs x reductions), with the weights that can still be added."""
        numel = self.size_space.one
        for d in self.outputs:
            numel = numel * d.size
        for r in state.reductions:
            numel = numel * r.size
        vals = [float(v) for v in self.bindings.values(numel)]
        # each pairwise contraction of a plan costs at most that, and the standalone sums at most
        # that once more in total
        weights = self.options.max_tensors - 1 if self.contraction_possible(state) else state.n_weights
        return (max(weights, 1) + 1) * self.problem.total(vals)

    # ------------------------------------------------------------------------------ children
    def _child(self, parent: Node, m: Move) -> Node | None:
        if m.type == "Finalize":
            assignment, op = m.payload
            key = _h(parent.state.key + "|F|" + ",".join(d.digest for d in assignment))
            node = self._nodes.get(key)
            if node is None:
                # the windows are checked here, when the edge is first taken, not when the moves are
                # listed: a walk that leaves the state by another edge never plans its FLOPs
                good, info = self._final_check_of(parent.state, op)
                if not good:
                    return None
                node = Node(self, parent.state, key, parent.path + (m.next,), parent.depth + 1, op, info)
                self._nodes[key] = node
                self.stats["finals"] += 1
            return node
        state = self.apply(parent.state, m)
        node = self._nodes.get(state.key)
        if node is not None:
            return node
        if state.key in self._dead:
            return None
        self.stats["states"] += 1
        if not self.viable(state):
            self._dead.add(state.key)
            return None
        node = Node(self, state, state.key, parent.path + (m.next,), state.depth)
        self._nodes[state.key] = node
        return node

    def apply(self, s: State, m: Move) -> State:
        """The canonical state after applying move ``m`` to state ``s``."""
        cur = list(s.current)
        weights, expanded, reds = list(s.weights), list(s.expanded), list(s.reductions)
        usage = list(s.usage)
        n_weights = s.n_weights
        t, p = m.type, m.payload
        if t == "Reduce":
            size = p[0]
            mult = sum(1 for r in reds if r.size == size)
            r = ReduceDim(size, mult)
            cur.append(r)
            reds.append(r)
            usage = [u + abs(e) for u, e in zip(usage, size.exps)]
            counts = s.bumped(C_REDUCE)
        elif t == "Expand":
            (d,) = p
            cur.remove(d)
            expanded.append(d)
            counts = s.bumped(C_EXPAND)
        elif t in ("Shift", "Stride", "Merge"):
            d = p[0]
            op = {"Shift": Shift, "Stride": Stride, "Merge": Merge}[t](d, *p[1:])
            cur.remove(d)
            cur.extend(op.tops)
            if t == "Stride":
                usage = [u + abs(e) for u, e in zip(usage, p[1].exps)]
            counts = s.bumped({"Shift": C_SHIFT, "Stride": C_STRIDE, "Merge": C_MERGE}[t])
        elif t in ("Split", "Unfold"):
            a, b = p
            op = (Split if t == "Split" else Unfold)(a, b)
            cur.remove(a)
            cur.remove(b)
            cur.append(op.tops[0])
            counts = s.bumped(C_SPLIT if t == "Split" else C_UNFOLD)
        elif t == "Contraction":
            n_weights += 1
            coef = self.options.count_coefficients_in_weights_as_allowance_usage
            for d, outer in p:
                sh = Share(d, n_weights)
                cur.remove(d)
                weights.append(sh.tops[1])
                (expanded if outer else cur).append(sh.tops[0])
                usage = [u + (abs(e) if (i < self.n_primary or coef) else 0)
                         for i, (u, e) in enumerate(zip(usage, d.size.exps))]
            c = list(s.counts)
            c[C_CONTRACTION] += 1
            c[C_SHARE] += len(p)
            counts = tuple(c)
        else:  # pragma: no cover
            raise ValueError(f"cannot apply {t}")
        return canonical_state(cur, weights, expanded, reds, counts, usage, n_weights)

    # ------------------------------------------------------------------------------ moves
    def _moves(self, s: State) -> tuple[dict[str, list[Move]], dict[tuple[str, str], Move]]:
        """Candidate moves by type, and the aliases collapsed out of them (see
        :func:`_collapse_symmetric`)."""
        out: dict[str, list[Move]] = {}
        if self.remaining(s) > 0:
            from . import rules
            for t, gen in (("Reduce", rules.reduce_moves), ("Expand", rules.expand_moves),
                           ("Shift", rules.shift_moves), ("Stride", rules.stride_moves),
                           ("Split", rules.split_moves), ("Unfold", rules.unfold_moves),
                           ("Merge", rules.merge_moves), ("Contraction", rules.contraction_moves)):
                ms = gen(self, s)
                if ms:
                    out[t] = _dedup(ms)
        from .rules import finalize_moves
        fin = finalize_moves(self, s)
        if fin:
            out["Finalize"] = _dedup(fin)
        return _collapse_symmetric(s, out)

    # ------------------------------------------------------------------------------ finals
    def build_operator(self, s: State, assignment: Sequence[Dim]) -> Operator:
        it = iter(assignment)
        n_in = len(self.problem.input_shape)
        inputs = [self.fixed_by_input[k] if k in self.fixed_by_input else next(it) for k in range(n_in)]
        weights = [sorted(g, key=lambda d: d.digest) for g in s.weight_groups()]
        return Operator(self.size_space, self.outputs, tuple(inputs), tuple(tuple(w) for w in weights),
                        tuple(s.expanded))

    def _final_check_of(self, state: State, op: Operator) -> tuple[bool, dict]:
        """:meth:`final_check` once per state: the Finalize candidates of one state only permute
        equal-size dims among input axes (same sizes, params and planned FLOPs), so the first one's
        check (a FLOPs plan: tens of ms on resnet18) stands for all (checked on sampled finals:
        tests/synth/test_sampler.py)."""
        got = self._final_checks.get(state.key)
        if got is None:
            got = self._final_checks[state.key] = self.final_check(op)
            if not got[0]:
                self.stats["final_rejected"] += 1
        return got[0], dict(got[1])

    def final_check(self, op: Operator) -> tuple[bool, dict]:
        """FLOPs and parameter windows of a finished operator; returns (ok, info)."""
        o = self.options
        p = self.problem
        if not o.exact_division and not all(self.bindings.is_integral(d.size) for d in op.all_dims):
            return False, {"error": "a size is not an integer under some mapping"}  # no padding here
        params = op.params(self.bindings)
        total_params = p.total(params)
        info = {"params": total_params}
        if total_params < o.min_weight_params or (o.max_weight_params is not None and total_params > o.max_weight_params):
            return False, info
        flops = p.total(operator_flops(op, self.bindings))
        info["flops"] = flops
        if self.enforce_flops and not (self.flops_lo <= flops <= self.flops_hi):
            return False, info
        return True, info

    # ------------------------------------------------------------------------------ stats
    def __len__(self) -> int:
        return len(self._nodes)


def _dedup(moves: list[Move]) -> list[Move]:
    seen: dict[str, Move] = {}
    for m in moves:
        if m.key in seen:
            raise AssertionError(f"Next key collision in {m.type}: {m.key}")  # 64-bit digests
        seen[m.key] = m
    return sorted(seen.values(), key=lambda m: m.key)


def _map_payload(t: str, payload: tuple, mapping: dict, memo: dict) -> tuple:
    if t == "Contraction":
        return tuple(sorted(((A.rebuild(d, mapping, memo), outer) for d, outer in payload),
                            key=lambda x: x[0].digest))
    return tuple(A.rebuild(x, mapping, memo) if isinstance(x, Dim) else x for x in payload)


def _collapse_symmetric(s: State, out: dict[str, list[Move]]):
    """Keep one move per orbit under the state's automorphisms (relabellings of equal reductions
    that fix the frontier): ``m`` and ``pi(m)`` give the same canonical child, so listing both
    would give one child two edge keys, and a walk could take the key that :meth:`Node.children`
    does not list. The smallest key of each orbit stays; the others become aliases."""
    aliases: dict[tuple[str, str], Move] = {}
    auto = s.automorphisms()
    if not auto:
        return out, aliases
    for t, ms in out.items():
        if t in ("Reduce", "Finalize"):  # a Reduce payload is a size; finals are keyed by assignment
            continue
        index = {m.payload: m for m in ms}
        keep = []
        for m in ms:  # sorted by key: the first of an orbit represents it
            if (t, m.key) in aliases:
                continue
            keep.append(m)
            for mapping in auto:
                other = index.get(_map_payload(t, m.payload, mapping, {}))
                if other is not None and other is not m:
                    aliases[(t, other.key)] = m
        out[t] = keep
    return out, aliases


def iterate_finals(space: SynthSpace, node: Node | None = None, limit: int | None = None) -> Iterator[Node]:
    """Exhaustive DFS over the DAG below ``node`` (each node visited once); yields final nodes."""
    seen: set[str] = set()
    stack = [node or space.root()]
    count = 0
    while stack:
        n = stack.pop()
        if n.key in seen:
            continue
        seen.add(n.key)
        if n.is_final:
            yield n
            count += 1
            if limit is not None and count >= limit:
                return
            continue
        for _, c in reversed(n.children()):
            if c.key not in seen:
                stack.append(c)


__all__ = ["SynthSpace", "Node", "Move", "iterate_finals", "path_to_str", "path_from_str"]
