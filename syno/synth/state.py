"""Partial operators (search states) and how primitives are applied to them, bottom-up.

A :class:`State` is the frontier of a partial operator: the *current* dims (data side, not yet
consumed), the *weight* dims (weight sides of Shares; never transformed again, rule C1), and the
*expanded* dims. Dims are interned, so the frontier determines the whole DAG below it; the op
counts, the allowance usage and the depth follow from it too, so a state is path-independent.

States are canonical: reductions of equal domain are interchangeable, so every state is stored in
the relabelling (permutation of multiplicities) with the smallest key. Two paths that build the same
partial operator up to such relabelling and up to the order of independent ops meet in one state.
"""

from __future__ import annotations

import hashlib
from itertools import permutations, product
from typing import Sequence

from syno.ir.primitives import Dim, ReduceDim

from .analysis import leaves, rebuild, reduce_groups

# Counter slots. The first eight are op types that cost one depth unit each.
C_REDUCE, C_EXPAND, C_SHIFT, C_STRIDE, C_SPLIT, C_UNFOLD, C_MERGE, C_CONTRACTION, C_SHARE = range(9)
COUNTER_NAMES = ("reductions", "expands", "shifts", "strides", "splits", "unfolds", "merges",
                 "contractions", "shares")


def _h(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def frontier_key(current: Sequence[Dim], weights: Sequence[Dim], expanded: Sequence[Dim]) -> str:
    return _h("c:" + ",".join(sorted(d.digest for d in current))
              + "|w:" + ",".join(sorted(d.digest for d in weights))
              + "|e:" + ",".join(sorted(d.digest for d in expanded)))


class State:
    __slots__ = ("current", "weights", "expanded", "reductions", "counts", "usage", "n_weights", "key",
                 "_auto", "__weakref__")

    def __init__(self, current, weights, expanded, reductions, counts, usage, n_weights, key=None):
        self.current: tuple[Dim, ...] = tuple(sorted(current, key=lambda d: d.digest))
        self.weights: tuple[Dim, ...] = tuple(sorted(weights, key=lambda d: (d.op.weight, d.digest)))
        self.expanded: tuple[Dim, ...] = tuple(sorted(expanded, key=lambda d: d.digest))
        self.reductions: tuple[ReduceDim, ...] = tuple(
            sorted(reductions, key=lambda r: (r.size.exps, r.multiplicity)))
        self.counts: tuple[int, ...] = tuple(counts)
        self.usage: tuple[int, ...] = tuple(usage)
        self.n_weights = n_weights
        if not key:  # frontier_key's text, from the lists sorted above (current and expanded by digest)
            key = _h("c:" + ",".join([d.digest for d in self.current])
                     + "|w:" + ",".join(sorted([d.digest for d in self.weights]))
                     + "|e:" + ",".join([d.digest for d in self.expanded]))
        self.key = key
        self._auto: tuple[dict, ...] | None = None

    @property
    def depth(self) -> int:
        return sum(self.counts[:C_SHARE])

    @property
    def in_reduction_phase(self) -> bool:
        return sum(self.counts[C_EXPAND:C_SHARE]) == 0

    def weight_groups(self) -> list[list[Dim]]:
        groups: list[list[Dim]] = [[] for _ in range(self.n_weights)]
        for w in self.weights:
            groups[w.op.weight - 1].append(w)
        return groups

    def automorphisms(self) -> tuple[dict, ...]:
        """The non-identity relabellings of equal-domain reductions that leave this frontier
        unchanged (e.g. two untouched ``k`` reductions). Under such a relabelling ``pi`` a move ``m``
        and ``pi(m)`` give the same canonical child, so only one of them may be an edge: otherwise a
        walk could take a key that enumeration does not list (issue #19)."""
        if self._auto is None:
            out = []
            for perm in product(*(permutations(g) for g in reduce_groups(self.reductions))):
                mapping = {r: p for g in perm for r, p in zip(sorted(g, key=lambda r: r.multiplicity), g)
                           if r is not p}
                if not mapping:
                    continue
                memo: dict = {}
                key = frontier_key([rebuild(d, mapping, memo) for d in self.current],
                                   [rebuild(d, mapping, memo) for d in self.weights],
                                   [rebuild(d, mapping, memo) for d in self.expanded])
                if key == self.key:
                    out.append(mapping)
            self._auto = tuple(out)
        return self._auto

    def bumped(self, slot: int, by: int = 1) -> tuple[int, ...]:
        c = list(self.counts)
        c[slot] += by
        return tuple(c)

    def __repr__(self) -> str:
        return (f"State(depth={self.depth}, current={list(self.current)}, weights={list(self.weights)}, "
                f"expanded={list(self.expanded)})")


def canonical_state(current: Sequence[Dim], weights: Sequence[Dim], expanded: Sequence[Dim],
                    reductions: Sequence[ReduceDim], counts, usage, n_weights) -> State:
    """The state in its canonical labelling of equal-domain reductions (smallest frontier key)."""
    groups = reduce_groups(reductions)
    cur_set = set(current)
    if not groups or all(r in cur_set for g in groups for r in g):
        return State(current, weights, expanded, reductions, counts, usage, n_weights)
    best = None
    for perm in product(*(permutations(g) for g in groups)):
        mapping = {r: p for g, pg in zip(groups, perm) for r, p in zip(g, pg) if r is not p}
        if not mapping:  # the identity: nothing to rebuild
            cur, wts, exp = list(current), list(weights), list(expanded)
        else:
            # dims that lie over none of the relabelled reductions stay as they are (skip the walk
            # down their DAG)
            moved = frozenset(mapping)
            memo: dict = {}
            cur = [d if leaves(d).isdisjoint(moved) else rebuild(d, mapping, memo) for d in current]
            wts = [d if leaves(d).isdisjoint(moved) else rebuild(d, mapping, memo) for d in weights]
            exp = [d if leaves(d).isdisjoint(moved) else rebuild(d, mapping, memo) for d in expanded]
        key = frontier_key(cur, wts, exp)
        if best is None or key < best[0]:
            best = (key, cur, wts, exp)
    key, cur, wts, exp = best
    return State(cur, wts, exp, reductions, counts, usage, n_weights, key)


def canonical_mapping(current: Sequence[Dim], weights: Sequence[Dim], expanded: Sequence[Dim],
                      reductions: Sequence[ReduceDim]) -> dict:
    """The reduction relabelling (old -> new) that :func:`canonical_state` would apply."""
    groups = reduce_groups(reductions)
    if not groups:
        return {}
    best = None
    for perm in product(*(permutations(g) for g in groups)):
        mapping = {r: p for g, pg in zip(groups, perm) for r, p in zip(g, pg) if r is not p}
        memo: dict = {}
        key = frontier_key([rebuild(d, mapping, memo) for d in current],
                           [rebuild(d, mapping, memo) for d in weights],
                           [rebuild(d, mapping, memo) for d in expanded])
        if best is None or key < best[0]:
            best = (key, mapping)
    return best[1]


__all__ = ["State", "canonical_state", "canonical_mapping", "frontier_key", "COUNTER_NAMES",
           "C_REDUCE", "C_EXPAND", "C_SHIFT", "C_STRIDE", "C_SPLIT", "C_UNFOLD", "C_MERGE",
           "C_CONTRACTION", "C_SHARE"]
