"""Monte Carlo tree search over a synthesis space (Syno's search algorithm, re-designed).

Tree shape (as in the original): every canonical search node is one :class:`TreeNode` keyed by
``SynthNode.key`` -- paths that reach the same partial operator (transpositions) share it -- and
has one :class:`Mid` child per primitive *type*; a mid's children are the edges (``Next`` keys of
that type) to other tree nodes. Statistics live on tree nodes, mids and edges.

One rollout:

1. **Selection** from the root with UCB1-tuned, ``mean + C * sqrt(ln N / n * min(1/4, var +
   sqrt(2 ln N / n))) - vl_weight * virtual_loss``; an edge's ``n`` is its own visit count, its mean
   and variance are the (shared) child node's, so transpositions pool their value estimates.
2. **Progressive widening**: a node (or mid) exposes ``floor(T ** b)`` live children, ``T`` its
   visits plus virtual loss; the next child to reveal is chosen by RAVE: ``0.7 * ((1-beta) * LRAVE +
   beta * GRAVE) + 0.3 * U(0,1)`` with ``beta = c_l / (c_l + n_LRAVE)``. GRAVE is global, keyed by
   primitive type and by arc (``Next``); LRAVE is per node (by type) and per mid (by arc).
3. **Expansion**: stop at the first in-tree child with no visit (fewest virtual losses first).
4. **Simulation**: ``space.random_final`` from there (for a mid: from a random child of that type);
   finals that failed or were filtered are skipped; the simulated part is not added to the tree.
5. A new final is **proposed**: virtual loss is added along the receipt (the rollout's tree
   elements) so parallel proposals spread out. A final that already has a reward is back-propagated
   at once; one that is in flight collects the extra receipt.

``report`` back-propagates the reward (in ``[0, 1]``) along every receipt, updates GRAVE for every
arc of the final, and credits LRAVE along *all orderings* of the final's primitives (the lattice of
paths with the same multiset of ``Next`` s, explored up to ``lattice_limit`` nodes). A failed kernel
(reward ``None``) marks the final dead; nothing negative is back-propagated. Death and exhaustion
propagate lazily upwards during selection.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from typing import Any, Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field

from syno.synth.protocol import NEXT_TYPES, Next, Path, SearchSpace, SynthNode, path_from_str, path_to_str

from .base import EvalResult, FinalFilter, RewardConfig, SearchAlgorithm, as_path

__all__ = ["MCTS", "MCTSConfig", "TreeNode", "Mid", "Edge", "Meter"]

FORMAT = "syno.search.mcts/1"


class MCTSConfig(BaseModel):
    """Constants of the search (defaults: the original's, except ``exploration``; docs/search.md)."""

    model_config = ConfigDict(extra="forbid")

    exploration: float = Field(0.5, ge=0.0, description="UCB1-tuned constant C (original: 4*sqrt(2))")
    virtual_loss: float = Field(0.3, ge=0.0, description="UCB penalty per in-flight rollout through a child")
    widening_exponent: float = Field(0.8, gt=0.0, le=1.0, description="progressive widening b: floor(T**b) children")
    rave_cl: float = Field(3.0, gt=0.0, description="RAVE beta = c_l / (c_l + n_LRAVE)")
    rave_random_ratio: float = Field(0.3, ge=0.0, le=1.0, description="weight of U(0,1) in reveal scores")
    use_rave: bool = Field(True, description="order reveals by RAVE (off: random order)")
    backprop_known: bool = Field(False, description="a walk that ends at an already evaluated final back-propagates "
                                 "its reward again (the original); off: it back-propagates 0 (nothing new was found), "
                                 "so nearly exhausted subtrees are not re-credited with the same kernels")
    max_weight: float = Field(0.0, ge=0.0, le=1.0, description="exploitation term = (1 - w) mean + w max of the "
                              "rewards below a child (single-player MCTS for finding the best; 0: the mean)")
    normalize: bool = Field(True, description="min-max normalize values by the rewards seen so far in UCB and "
                            "RAVE scores (scale-free exploration; off: raw rewards as the original)")
    max_iterations: int = Field(3000, ge=1, description="rollouts per propose() call at most")
    max_propose_seconds: float = Field(60.0, gt=0, description="wall time per propose() call at most")
    simulation_tries: int = Field(5, ge=1, description="random walks per rollout before it counts as failed")
    walk_tries: int = Field(16, ge=1, description="max_tries (backtracks) passed to space.random_final; 16 as the "
                            "sampler: walks that fail fail long, and on resnet18 64 cost 1.5-3x the CPU per "
                            "proposal (docs/synthesis.md, issue #17 fifth pass)")
    lattice_limit: int = Field(512, ge=0, description="nodes explored to credit all orderings (0: actual path only)")
    lattice_seconds: float = Field(5.0, gt=0, description="wall time spent on crediting orderings per result at most")
    suppress_visits: int = Field(30, ge=1, description="children with more visits and ~zero variance are suppressed")
    seed: int = 0


class Meter:
    """Running count, sum, sum of squares and maximum."""

    __slots__ = ("n", "s", "ss", "mx")

    def __init__(self, n: int = 0, s: float = 0.0, ss: float = 0.0, mx: float | None = None):
        self.n, self.s, self.ss = int(n), float(s), float(ss)
        self.mx = (self.s / self.n if self.n else 0.0) if mx is None else float(mx)

    def add(self, r: float) -> None:
        self.mx = r if self.n == 0 else max(self.mx, r)
        self.n += 1
        self.s += r
        self.ss += r * r

    @property
    def mean(self) -> float:
        return self.s / self.n if self.n else 0.0

    @property
    def var(self) -> float:
        if not self.n:
            return 0.0
        m = self.s / self.n
        return max(0.0, self.ss / self.n - m * m)

    def to_list(self) -> list:
        return [self.n, self.s, self.ss, self.mx]

    @classmethod
    def from_list(cls, x: Iterable) -> Meter:
        return cls(*x)

    def __repr__(self) -> str:
        return f"Meter(n={self.n}, mean={self.mean:.4f}, max={self.mx:.4f})"


class Edge:
    __slots__ = ("next", "child_key", "stats", "vl", "in_tree")

    def __init__(self, nxt: Next, child_key: str):
        self.next = nxt
        self.child_key = child_key
        self.stats = Meter()
        self.vl = 0
        self.in_tree = False


class Mid:
    """The per-type level between a tree node and its children."""

    __slots__ = ("owner", "type", "stats", "vl", "in_tree", "edges", "lrave", "dead", "exhausted", "sim_fail")

    def __init__(self, owner: str, typ: str):
        self.owner = owner
        self.type = typ
        self.stats = Meter()
        self.vl = 0
        self.in_tree = False
        self.edges: dict[str, Edge] = {}
        self.lrave: dict[str, Meter] = {}
        self.dead = False
        self.exhausted = False
        self.sim_fail = False


class TreeNode:
    """One canonical search node (shared by all paths that reach it)."""

    __slots__ = ("key", "path", "is_final", "stats", "vl", "in_tree", "mids", "lrave", "reward", "evaluated",
                 "failed", "filtered", "dead", "exhausted", "sim_fail", "synth")

    def __init__(self, key: str, path: Path, is_final: bool, synth: SynthNode | None = None):
        self.key = key
        self.path = path
        self.is_final = is_final
        self.stats = Meter()
        self.vl = 0
        self.in_tree = False
        self.mids: dict[str, Mid] | None = None  # None until the children were enumerated
        self.lrave: dict[str, Meter] = {}
        self.reward: float | None = None
        self.evaluated = False
        self.failed = False
        self.filtered = False
        self.dead = False
        self.exhausted = False
        self.sim_fail = False
        self.synth = synth

    def __repr__(self) -> str:
        return f"TreeNode({self.key!r}, n={self.stats.n}, mean={self.stats.mean:.3f})"


class _Pending:
    __slots__ = ("path", "receipts")

    def __init__(self, path: Path, receipts: list[list]):
        self.path = path
        self.receipts = receipts


def _rave_value(m: Meter | None, lo: float = 0.0, scale: float = 1.0) -> float | None:
    if m is None or m.n == 0:
        return None
    return (m.mean - lo) / scale + math.sqrt(m.var) / scale - 1.0 / m.n


class MCTS(SearchAlgorithm):
    """MCTS over ``space``; see the module docstring.

    ``reward`` maps an :class:`EvalResult` to ``[0, 1]`` or None; ``final_filter`` (e.g. the
    FLOPs-ratio filter) rejects finals before they are proposed.
    """

    name = "mcts"

    def __init__(self, space: SearchSpace, config: MCTSConfig | None = None, reward: RewardConfig | None = None,
                 final_filter: FinalFilter | None = None):
        self.space = space
        self.config = config or MCTSConfig()
        self.reward_fn = reward or RewardConfig(power=1.0)
        self.final_filter = final_filter
        self.rng = random.Random(self.config.seed)
        self.nodes: dict[str, TreeNode] = {}
        self.grave_type: dict[str, Meter] = {}
        self.grave_arc: dict[str, Meter] = {}
        self._pending: dict[str, _Pending] = {}
        self.counters: Counter = Counter()
        self._attached: set[str] = set()  # nodes whose synth children are attached in this process
        self._path_cache: dict[Path, SynthNode] = {}
        self.r_lo: float | None = None  # range of the rewards seen (for normalization)
        self.r_hi: float | None = None
        root_synth = space.root()
        self.root = self._node_for(root_synth)
        self.root.in_tree = True

    # ------------------------------------------------------------------------------------------
    # node store
    def _node_for(self, synth: SynthNode) -> TreeNode:
        tn = self.nodes.get(synth.key)
        if tn is None:
            tn = TreeNode(synth.key, tuple(synth.path), synth.is_final, synth)
            self.nodes[synth.key] = tn
        elif tn.synth is None and tuple(synth.path) == tn.path:
            tn.synth = synth  # only the node's own path, so proposals do not depend on cache history
        return tn

    def _synth(self, tn: TreeNode) -> SynthNode | None:
        """The space's node for ``tn`` (replayed from its path); None if the space now knows it is a
        dead end (a fresh process may refuse to replay into one), which marks ``tn`` dead."""
        if tn.synth is None:
            try:
                tn.synth = self.space.node_from_path(tn.path)
            except ValueError:
                tn.dead = True
                self.counters["dead_on_replay"] += 1
                return None
        return tn.synth

    def _expand(self, tn: TreeNode) -> dict[str, Mid]:
        """Enumerate the children of ``tn`` (once); returns its mids."""
        if tn.key in self._attached:
            return tn.mids
        synth = self._synth(tn)
        mids = tn.mids if tn.mids is not None else {}
        for nxt, child in (synth.children() if synth is not None else ()):
            child_tn = self._node_for(child)
            mid = mids.get(nxt.type)
            if mid is None:
                mid = mids[nxt.type] = Mid(tn.key, nxt.type)
            if nxt.key not in mid.edges:
                mid.edges[nxt.key] = Edge(nxt, child_tn.key)
        if tn.mids is None:
            tn.mids = dict(sorted(mids.items(), key=lambda kv: NEXT_TYPES.index(kv[0])))
        if not tn.mids and not tn.is_final:
            tn.dead = True
        self._attached.add(tn.key)
        return tn.mids

    def _node_of_path(self, path: Path) -> TreeNode:
        """The tree node reached by ``path`` (replayed through the tree where possible)."""
        tn = self.root
        for i, nxt in enumerate(path):
            if tn.key not in self._attached and tn.synth is None:
                # replay the given prefix (valid, since the path is) rather than the node's stored one
                tn.synth = self.space.node_from_path(path[:i])
            mids = self._expand(tn)
            mid = mids.get(nxt.type)
            edge = mid.edges.get(nxt.key) if mid is not None else None
            if edge is None and tn.synth is not None and hasattr(tn.synth, "canonical_next"):
                # a key that replays but is not listed: an alias (an equal-reduction relabelling of
                # a listed edge) in a path written before the space collapsed them (issue #19)
                alias_of = tn.synth.canonical_next(nxt)
                edge = mid.edges.get(alias_of.key) if mid is not None and alias_of != nxt else None
            if edge is None:
                raise ValueError(f"path element {nxt} does not exist below node {tn.key!r}")
            tn = self.nodes[edge.child_key]
        return tn

    # ------------------------------------------------------------------------------------------
    # liveness
    def _node_dead(self, tn: TreeNode) -> bool:
        if tn.dead:
            return True
        if tn.is_final:
            if tn.failed or tn.filtered:
                tn.dead = True
            return tn.dead
        if tn.mids is not None and all(self._mid_dead(m) for m in tn.mids.values()):
            tn.dead = True
        elif tn.mids is None and tn.synth is not None and tn.synth.is_dead_end():
            tn.dead = True
        return tn.dead

    def _mid_dead(self, mid: Mid) -> bool:
        if not mid.dead and all(self.nodes[e.child_key].dead for e in mid.edges.values()):
            mid.dead = True
        return mid.dead

    def _node_exhausted(self, tn: TreeNode) -> bool:
        """No unevaluated, unfiltered final remains below ``tn`` (among all children)."""
        if tn.exhausted:
            return True
        if tn.is_final:
            tn.exhausted = tn.evaluated or tn.filtered
        elif tn.mids is not None:
            tn.exhausted = all(self._mid_exhausted(m) for m in tn.mids.values())
        return tn.exhausted

    def _mid_exhausted(self, mid: Mid) -> bool:
        if not mid.exhausted:
            mid.exhausted = all(self.nodes[e.child_key].dead or self.nodes[e.child_key].exhausted
                                for e in mid.edges.values())
        return mid.exhausted

    def _child_live(self, tn: TreeNode) -> bool:
        return not (self._node_dead(tn) or tn.exhausted or tn.sim_fail)

    # ------------------------------------------------------------------------------------------
    # progressive widening
    def _widen_node(self, tn: TreeNode) -> None:
        mids = list(tn.mids.values())
        want = max(1, int((tn.stats.n + tn.vl) ** self.config.widening_exponent))
        live = sum(1 for m in mids if m.in_tree and not self._mid_dead(m))
        if live >= want:
            return
        cands = [m for m in mids if not m.in_tree and not self._mid_dead(m)]
        scores = self._rave_scores([(tn.lrave.get(m.type), self.grave_type.get(m.type)) for m in cands])
        for _, m in sorted(zip(scores, range(len(cands))), reverse=True)[:want - live]:
            cands[m].in_tree = True

    def _widen_mid(self, mid: Mid) -> None:
        edges = list(mid.edges.values())
        want = max(1, int((mid.stats.n + mid.vl) ** self.config.widening_exponent))
        live = sum(1 for e in edges if e.in_tree and not self.nodes[e.child_key].dead)
        if live >= want:
            return
        cands = [e for e in edges if not e.in_tree and not self._node_dead(self.nodes[e.child_key])]
        scores = self._rave_scores([(mid.lrave.get(e.next.key), self.grave_arc.get(str(e.next))) for e in cands])
        for _, i in sorted(zip(scores, range(len(cands))), reverse=True)[:want - live]:
            cands[i].in_tree = True

    def _reveal_one(self, elem: TreeNode | Mid) -> bool:
        """Reveal one more live child beyond the widening limit; False if none is left."""
        if isinstance(elem, TreeNode):
            cands = [m for m in elem.mids.values() if not m.in_tree and not self._mid_dead(m)]
        else:
            cands = [e for e in elem.edges.values() if not e.in_tree and not self._node_dead(self.nodes[e.child_key])]
        if not cands:
            return False
        self.rng.choice(cands).in_tree = True
        return True

    def _rave_scores(self, pairs: list[tuple[Meter | None, Meter | None]]) -> list[float]:
        cfg = self.config
        if not pairs:
            return []
        if not cfg.use_rave:
            return [self.rng.random() for _ in pairs]
        lo, scale = self._norm()
        loc = [_rave_value(lm, lo, scale) for lm, _ in pairs]
        glo = [_rave_value(gm, lo, scale) for _, gm in pairs]

        def fill(vals):
            known = [v for v in vals if v is not None]
            default = sum(known) / len(known) if known else 0.0
            return [default if v is None else v for v in vals]

        loc, glo = fill(loc), fill(glo)
        out = []
        for (lm, _), lv, gv in zip(pairs, loc, glo):
            beta = 1.0 if lm is None or lm.n == 0 else cfg.rave_cl / (cfg.rave_cl + lm.n)
            v = (1 - beta) * lv + beta * gv
            out.append(v * (1 - cfg.rave_random_ratio) + cfg.rave_random_ratio * self.rng.random())
        return out

    # ------------------------------------------------------------------------------------------
    # selection
    def _norm(self) -> tuple[float, float]:
        """(offset, scale) mapping the rewards seen so far onto [0, 1] (identity when off or too few)."""
        if not self.config.normalize or self.r_lo is None or self.r_hi - self.r_lo < 1e-9:
            return 0.0, 1.0
        return self.r_lo, self.r_hi - self.r_lo

    def _ucb(self, n: int, vl: int, mean: float, var: float, parent_n: int, mx: float | None = None) -> float:
        cfg = self.config
        if n == 0:
            return 1e9 - cfg.virtual_loss * vl
        if cfg.max_weight and mx is not None:
            mean = (1 - cfg.max_weight) * mean + cfg.max_weight * mx
        lo, scale = self._norm()
        mean, var = (mean - lo) / scale, var / (scale * scale)
        if n > cfg.suppress_visits and var <= 1e-6:
            return -1e9
        log_n = math.log(max(parent_n, 1))
        bonus = math.sqrt(log_n / n * min(0.25, var + math.sqrt(2 * log_n / n)))
        return mean + cfg.exploration * bonus - cfg.virtual_loss * vl

    def _pick(self, items: list, keyf) -> Any:
        self.rng.shuffle(items)
        return max(items, key=keyf)

    def _rollout(self) -> Path | None:
        """One rollout; returns the path of a newly proposed final, or None."""
        self.counters["rollouts"] += 1
        tn = self.root
        receipt: list = [tn]
        while True:
            if tn.is_final:
                return self._arrive(tn, receipt)
            if self._node_dead(tn) or self._node_exhausted(tn):
                return None
            mids = self._expand(tn)
            if self._node_dead(tn):
                return None
            self._widen_node(tn)
            live = [m for m in mids.values() if m.in_tree and not self._mid_dead(m)
                    and not self._mid_exhausted(m) and not m.sim_fail]
            if not live:
                if not self._reveal_one(tn):
                    self._node_dead(tn)
                    self._node_exhausted(tn)
                    if not (tn.dead or tn.exhausted):  # only sim-failed mids left: give them another chance
                        for m in mids.values():
                            m.sim_fail = False
                return None
            fresh = [m for m in live if m.stats.n == 0]
            if fresh:
                low = min(m.vl for m in fresh)
                mid = self.rng.choice([m for m in fresh if m.vl == low])
                receipt.append(mid)
                return self._simulate(receipt, mid=mid)
            mid = self._pick(live, lambda m: self._ucb(m.stats.n, m.vl, m.stats.mean, m.stats.var, tn.stats.n,
                                                       m.stats.mx))
            receipt.append(mid)
            self._widen_mid(mid)
            edges = [e for e in mid.edges.values() if e.in_tree and self._child_live(self.nodes[e.child_key])]
            if not edges:
                if not self._reveal_one(mid):
                    self._mid_dead(mid)
                    self._mid_exhausted(mid)
                    if not (mid.dead or mid.exhausted):
                        for e in mid.edges.values():
                            self.nodes[e.child_key].sim_fail = False
                return None
            fresh_e = [e for e in edges if e.stats.n == 0]
            if fresh_e:
                low = min(e.vl for e in fresh_e)
                edge = self.rng.choice([e for e in fresh_e if e.vl == low])
                child = self.nodes[edge.child_key]
                child.in_tree = True
                receipt += [edge, child]
                if child.is_final:
                    return self._arrive(child, receipt)
                return self._simulate(receipt, node=child)

            def edge_score(e: Edge) -> float:
                c = self.nodes[e.child_key]
                st = c.stats if c.stats.n else e.stats
                return self._ucb(e.stats.n, e.vl, st.mean, st.var, mid.stats.n, st.mx)

            edge = self._pick(edges, edge_score)
            tn = self.nodes[edge.child_key]
            tn.in_tree = True
            receipt += [edge, tn]

    def _simulate(self, receipt: list, node: TreeNode | None = None, mid: Mid | None = None) -> Path | None:
        cfg = self.config
        for _ in range(cfg.simulation_tries):
            if mid is not None:
                edges = [e for e in mid.edges.values() if not self._node_dead(self.nodes[e.child_key])]
                if not edges:
                    mid.dead = True
                    return None
                edges_pick = self.rng.choice(edges)
                start = self.nodes[edges_pick.child_key]
            else:
                start = node
            # walk from the node the rollout's own path reaches, so the proposed path depends only on
            # the tree statistics and the RNG (not on which transposition created the tree node)
            start_path = _receipt_path(receipt) + ((edges_pick.next,) if mid is not None else ())
            synth = self._synth_at(start_path, start)
            if start.is_final:
                final_synth = synth
            else:
                if synth is None or synth.is_dead_end():
                    start.dead = True
                    if node is not None:
                        return None
                    continue
                final_synth = self.space.random_final(synth, self.rng, cfg.walk_tries)
            self.counters["walks"] += 1
            if final_synth is None:
                continue
            final = self._node_for(final_synth)
            if final.failed or final.filtered:
                continue
            if not final.evaluated and final.key not in self._pending and not self._accept(final):
                continue
            return self._arrive(final, receipt, tuple(final_synth.path))
        self.counters["simulation_failures"] += 1
        (mid if mid is not None else node).sim_fail = True
        return None

    def _accept(self, final: TreeNode) -> bool:
        if self.final_filter is None:
            return True
        synth = self._synth(final)
        reason = "its path no longer replays" if synth is None else self.final_filter(synth)
        if reason is None:
            return True
        final.filtered = final.dead = final.exhausted = True
        self.counters["filtered"] += 1
        return False

    def _synth_at(self, path: Path, tn: TreeNode) -> SynthNode | None:
        """The space's node at ``path`` (which reaches ``tn``); a small cache avoids replays."""
        if tn.synth is not None and tuple(tn.synth.path) == path:
            return tn.synth
        got = self._path_cache.get(path)
        if got is None:
            try:
                got = self.space.node_from_path(path)
            except ValueError:
                tn.dead = True
                return None
            if len(self._path_cache) >= 4096:
                self._path_cache.pop(next(iter(self._path_cache)))
            self._path_cache[path] = got
        return got

    def _arrive(self, final: TreeNode, receipt: list, path: Path | None = None) -> Path | None:
        """A rollout reached ``final`` (in the tree or by simulation)."""
        if final.evaluated:
            if final.reward is not None:
                self.counters["known_hits"] += 1
                self._backprop(receipt, final.reward if self.config.backprop_known else self._floor(), release=False)
            final.exhausted = True
            return None
        if final.filtered or final.failed:
            return None
        if not (final.key in self._pending or self._accept(final)):
            return None
        for elem in receipt:
            elem.vl += 1
        pend = self._pending.get(final.key)
        if pend is not None:
            self.counters["pending_hits"] += 1
            pend.receipts.append(receipt)
            return None
        path = path if path is not None else _receipt_path(receipt)
        self._pending[final.key] = _Pending(path, [receipt])
        self.counters["proposed"] += 1
        return path

    # ------------------------------------------------------------------------------------------
    # updates
    def _backprop(self, receipt: list, reward: float, release: bool) -> None:
        for elem in receipt:
            if release:
                elem.vl = max(0, elem.vl - 1)
            elem.stats.add(reward)
            if isinstance(elem, (TreeNode, Mid)):
                elem.sim_fail = False

    def _release(self, receipt: list) -> None:
        for elem in receipt:
            elem.vl = max(0, elem.vl - 1)

    def _replay_receipt(self, path: Path) -> list:
        """Receipt for a path that was not proposed: the tree prefix up to the first unvisited element."""
        tn = self.root
        receipt: list = [tn]
        for nxt in path:
            mid = self._expand(tn)[nxt.type]
            mid.in_tree = True
            receipt.append(mid)
            if mid.stats.n == 0:
                break
            edge = mid.edges[nxt.key]
            edge.in_tree = True
            tn = self.nodes[edge.child_key]
            tn.in_tree = True
            receipt += [edge, tn]
            if edge.stats.n == 0:
                break
        return receipt

    def _credit_orderings(self, final: TreeNode, reward: float) -> None:
        """LRAVE: credit (node, type) and (mid, arc) on every ordering of ``final``'s primitives."""
        path = self._canonical_path(final.path)
        credited: set[tuple[str, Next]] = set()
        tn = self.root
        for nxt in path:  # the actual path first, always
            mid = self._expand(tn)[nxt.type]
            tn.lrave.setdefault(nxt.type, Meter()).add(reward)
            mid.lrave.setdefault(nxt.key, Meter()).add(reward)
            credited.add((tn.key, nxt))
            tn = self.nodes[mid.edges[nxt.key].child_key]
        limit = self.config.lattice_limit
        if limit <= 0:
            return
        remaining = Counter(path)
        memo: dict[str, bool] = {}
        budget = [limit]
        deadline = time.monotonic() + self.config.lattice_seconds

        def visit(node: TreeNode, left: int) -> bool:
            hit = memo.get(node.key)
            if hit is not None:
                return hit
            if node.is_final:
                memo[node.key] = ok = node.key == final.key
                return ok
            if budget[0] <= 0 or time.monotonic() > deadline:
                return False
            budget[0] -= 1
            ok = False
            for m in self._expand(node).values():
                for e in m.edges.values():
                    nxt = e.next
                    if remaining[nxt] <= 0 or (nxt.type == "Finalize" and left != 1):
                        continue
                    remaining[nxt] -= 1
                    sub = visit(self.nodes[e.child_key], left - 1)
                    remaining[nxt] += 1
                    if sub:
                        ok = True
                        if (node.key, nxt) not in credited:
                            credited.add((node.key, nxt))
                            node.lrave.setdefault(nxt.type, Meter()).add(reward)
                            m.lrave.setdefault(nxt.key, Meter()).add(reward)
                            self.counters["lattice_credits"] += 1
            memo[node.key] = ok
            return ok

        visit(self.root, len(path))

    # ------------------------------------------------------------------------------------------
    # SearchAlgorithm
    def propose(self, k: int = 1) -> list[Path]:
        out: list[Path] = []
        deadline = time.monotonic() + self.config.max_propose_seconds
        for _ in range(self.config.max_iterations):
            if len(out) >= k or self.exhausted or (out and time.monotonic() > deadline):
                break
            if time.monotonic() > deadline:
                self.counters["propose_timeouts"] += 1
                break
            p = self._rollout()
            if p is not None:
                out.append(p)
        return out

    def _canonical_path(self, path: Path) -> Path:
        """``path`` with alias keys (equal-reduction relabellings of listed edges, found in paths
        written before the space collapsed them; issue #19) replaced by the listed edges."""
        node = self.space.root()
        if not hasattr(node, "canonical_next"):
            return path
        out = []
        for nxt in path:
            out.append(node.canonical_next(nxt))
            node = node.child(nxt)
            if node is None:
                return path  # not replayable: _node_of_path names the culprit
        return tuple(out)

    def report(self, path: Path | str, result: EvalResult) -> float | None:
        path = self._canonical_path(as_path(path))
        final = self._node_of_path(path)
        if not final.is_final:
            raise ValueError(f"path {path_to_str(path)!r} does not reach a final node")
        pend = self._pending.pop(final.key, None)
        if final.evaluated:  # duplicate report: keep the first result
            if pend is not None:
                for r in pend.receipts:
                    if final.reward is None:
                        self._release(r)
                    else:
                        self._backprop(r, final.reward, release=True)
            return final.reward
        receipts = pend.receipts if pend is not None else [self._replay_receipt(path)]
        if pend is None:
            self.counters["replayed"] += 1
        reward = self.reward_fn(result)
        final.evaluated = final.exhausted = True
        self.counters["evaluated"] += 1
        if reward is None:
            final.failed = final.dead = True
            self.counters["failed"] += 1
            for r in receipts:
                if pend is not None:
                    self._release(r)
            return None
        final.reward = reward
        self._see(reward)
        for r in receipts:
            self._backprop(r, reward, release=pend is not None)
        if not any(final in r for r in receipts):
            final.stats.add(reward)
        for nxt in path:
            self.grave_type.setdefault(nxt.type, Meter()).add(reward)
            self.grave_arc.setdefault(str(nxt), Meter()).add(reward)
        self._credit_orderings(final, reward)
        return reward

    def _floor(self) -> float:
        """The value of a rollout that found nothing new: the lowest reward seen (0 before any)."""
        return self.r_lo if self.r_lo is not None else 0.0

    def _see(self, reward: float) -> None:
        self.r_lo = reward if self.r_lo is None else min(self.r_lo, reward)
        self.r_hi = reward if self.r_hi is None else max(self.r_hi, reward)

    def forget(self, path: Path | str) -> None:
        final = self._node_of_path(as_path(path))
        pend = self._pending.pop(final.key, None)
        if pend is not None:
            for r in pend.receipts:
                self._release(r)

    def revise(self, path: Path | str, result: EvalResult) -> float | None:
        """A kernel's result was revised (promoted to a longer training rung, syno.search.fidelity): its
        old reward is replaced by the new one in the statistics of its tree path and in GRAVE (visit
        counts unchanged; LRAVE keeps the first credit). Returns the reward now used."""
        final = self._node_of_path(as_path(path))
        new, old = self.reward_fn(result), final.reward
        if not final.evaluated or old is None or new is None:
            return old
        receipt = self._replay_receipt(final.path)
        meters = [e.stats for e in receipt] + ([] if final in receipt else [final.stats])
        meters += [self.grave_type[n.type] for n in final.path if n.type in self.grave_type]
        meters += [self.grave_arc[str(n)] for n in final.path if str(n) in self.grave_arc]
        for m in meters:
            if m.n:
                m.s += new - old
                m.ss = max(0.0, m.ss + new * new - old * old)
                m.mx = max(m.mx, new)
        final.reward = new
        self._see(new)
        self.counters["revised"] += 1
        return new

    def is_evaluated(self, path: Path | str) -> bool:
        return self._node_of_path(as_path(path)).evaluated

    @property
    def exhausted(self) -> bool:
        return self._node_dead(self.root) or self._node_exhausted(self.root)

    @property
    def pending(self) -> list[Path]:
        return [p.path for p in self._pending.values()]

    def best(self) -> tuple[Path, float] | None:
        done = [n for n in self.nodes.values() if n.is_final and n.reward is not None]
        if not done:
            return None
        b = max(done, key=lambda n: n.reward)
        return b.path, b.reward

    def stats(self) -> dict[str, Any]:
        return {"tree_nodes": len(self.nodes), "in_tree": sum(n.in_tree for n in self.nodes.values()),
                "pending": len(self._pending), **dict(self.counters)}

    # ------------------------------------------------------------------------------------------
    # serialization
    def _ref(self, elem) -> list:
        if isinstance(elem, TreeNode):
            return ["N", elem.key]
        if isinstance(elem, Mid):
            return ["M", elem.owner, elem.type]
        return ["E", self._edge_owner[id(elem)], elem.next.type, elem.next.key]

    def state_dict(self) -> dict[str, Any]:
        self._edge_owner = {id(e): n.key for n in self.nodes.values() if n.mids
                            for m in n.mids.values() for e in m.edges.values()}
        nodes = []
        for n in self.nodes.values():
            d: dict[str, Any] = {"k": n.key, "p": path_to_str(n.path), "f": n.is_final, "s": n.stats.to_list(),
                                 "t": n.in_tree, "flags": [n.evaluated, n.failed, n.filtered, n.dead, n.exhausted,
                                                           n.sim_fail], "r": n.reward}
            if n.lrave:
                d["lr"] = {t: m.to_list() for t, m in n.lrave.items()}
            if n.mids is not None:
                d["m"] = {t: {"s": m.stats.to_list(), "t": m.in_tree, "flags": [m.dead, m.exhausted, m.sim_fail],
                              "lr": {k: v.to_list() for k, v in m.lrave.items()},
                              "e": [[e.next.key, e.child_key, e.stats.to_list(), e.in_tree]
                                    for e in m.edges.values()]}
                          for t, m in n.mids.items()}
            nodes.append(d)
        state = {
            "format": FORMAT,
            "config": self.config.model_dump(),
            "root": self.root.key,
            "nodes": nodes,
            "grave_type": {k: m.to_list() for k, m in self.grave_type.items()},
            "grave_arc": {k: m.to_list() for k, m in self.grave_arc.items()},
            "pending": [{"final": key, "path": path_to_str(p.path), "receipts": [[self._ref(e) for e in r]
                                                                                   for r in p.receipts]}
                        for key, p in self._pending.items()],
            "counters": dict(self.counters),
            "rng": _rng_to_json(self.rng),
        }
        del self._edge_owner
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("format") != FORMAT:
            raise ValueError(f"not an MCTS state (format {state.get('format')!r}, expected {FORMAT!r})")
        root_key = self.space.root().key
        if state["root"] != root_key:
            raise ValueError("the MCTS state belongs to a different synthesis space (root key differs)")
        self.config = MCTSConfig(**state["config"])
        nodes: dict[str, TreeNode] = {}
        for d in state["nodes"]:
            n = TreeNode(d["k"], path_from_str(d["p"]), bool(d["f"]))
            n.stats = Meter.from_list(d["s"])
            n.in_tree = bool(d["t"])
            n.evaluated, n.failed, n.filtered, n.dead, n.exhausted, n.sim_fail = map(bool, d["flags"])
            n.reward = d["r"]
            n.lrave = {t: Meter.from_list(v) for t, v in d.get("lr", {}).items()}
            if "m" in d:
                n.mids = {}
                for t, md in d["m"].items():
                    m = Mid(n.key, t)
                    m.stats = Meter.from_list(md["s"])
                    m.in_tree = bool(md["t"])
                    m.dead, m.exhausted, m.sim_fail = map(bool, md["flags"])
                    m.lrave = {k: Meter.from_list(v) for k, v in md["lr"].items()}
                    for key, child, st, in_tree in md["e"]:
                        e = Edge(Next(t, key), child)
                        e.stats = Meter.from_list(st)
                        e.in_tree = bool(in_tree)
                        m.edges[key] = e
                    n.mids[t] = m
            nodes[n.key] = n
        self.nodes = nodes
        self._attached = set()
        self.root = nodes[state["root"]]
        self.grave_type = {k: Meter.from_list(v) for k, v in state["grave_type"].items()}
        self.grave_arc = {k: Meter.from_list(v) for k, v in state["grave_arc"].items()}
        self.counters = Counter(state.get("counters", {}))
        self._pending = {}
        for p in state["pending"]:
            receipts = [[self._deref(ref) for ref in r] for r in p["receipts"]]
            for r in receipts:
                for elem in r:
                    elem.vl += 1  # virtual loss is exactly the number of in-flight receipts through an element
            self._pending[p["final"]] = _Pending(path_from_str(p["path"]), receipts)
        self.rng = _rng_from_json(state["rng"])
        self.r_lo = self.r_hi = None
        for n in self.nodes.values():
            if n.is_final and n.reward is not None:
                self._see(n.reward)

    def _deref(self, ref: list):
        kind, key = ref[0], ref[1]
        node = self.nodes[key]
        if kind == "N":
            return node
        mid = node.mids[ref[2]]
        if kind == "M":
            return mid
        return mid.edges[ref[3]]


def _receipt_path(receipt: list) -> Path:
    return tuple(e.next for e in receipt if isinstance(e, Edge))


def _rng_to_json(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_from_json(data: list) -> random.Random:
    rng = random.Random()
    version, internal, gauss = data
    rng.setstate((version, tuple(internal), gauss))
    return rng
