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
from typing import Iterator, NamedTuple, Sequence

from syno.ir.graph import Operator
from syno.ir.primitives import Dim, IteratorDim, Merge, ReduceDim, Share, Shift, Split, Stride, Unfold
from syno.ir.sizes import Size

from . import analysis as A
from .distance import CurSig
from .feasibility import FeasibilityMixin
from .flops import operator_flops
from .options import SynthOptions
from .protocol import NEXT_TYPES, Next, Path, path_from_str, path_to_str
from .shape import ShapeBoundMixin
from .sizes import SizeMixin
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
        types = None
        while live:
            if by_type:
                if types is None or len(types) != len(live):  # (re)sorted only when a type runs out
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


class SynthSpace(FeasibilityMixin, ShapeBoundMixin, SizeMixin):
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
        self._sig_cache: dict[tuple, dict[Dim, int]] = {}  # context -> dim -> signature id
        self._winfac: dict[Size, float] = {}
        self._tiny: dict[Size, bool] = {}
        self._needs: dict[tuple, tuple] = {}
        self._final_checks: dict[str, tuple[bool, dict]] = {}
        self._flops_out_lo: list[float] | None = None
        self._flops_lo_memo: dict[tuple, float] = {}
        self._flops_hi_memo: dict[tuple, float] = {}
        self._caps_memo: dict[tuple, dict] = {}
        self._facts: dict[Dim, tuple] = {}
        self._covered: dict[tuple, frozenset] = {}
        self._pool_memo: dict[Size, bool] = {}
        self._canwin: dict[Size, bool] = {}
        self._sig_ids: dict[CurSig, int] = {}  # the shape bound's per-dim signatures, interned
        self._sig_of: list[CurSig] = []
        self._red_index: dict[tuple, object] = {}  # reductions -> indices into _enum_base() (rules.reduce_sizes)
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
