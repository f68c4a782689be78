"""Find the path of a given operator in a synthesis space (expressiveness checks, seeding search).

:func:`path_of` runs a guided depth-first descent: from each node it only follows moves whose child
is a sub-graph of the target operator (up to the relabelling of equal-domain reductions), and it
accepts the Finalize edge whose operator equals the target's :func:`~syno.synth.canon.canonical_form`.
Only few moves are consistent with a target, so the descent is fast; it fails with a message naming
the deepest consistent node and the remaining target primitives when a rule, a limit or a bound
excludes the operator.
"""

from __future__ import annotations

from itertools import permutations, product

from syno.ir.graph import Operator
from syno.ir.primitives import Expand

from . import analysis as A
from .canon import canonical_form
from .protocol import Path
from .space import Node, SynthSpace
from .state import State


def _injections(node_reds: dict, target_reds: dict):
    """All maps of the node's reductions into the target's (per domain, injective)."""
    per_size = []
    for size, rs in node_reds.items():
        ts = target_reds.get(size, [])
        if len(ts) < len(rs):
            return
        per_size.append([list(zip(rs, perm)) for perm in permutations(ts, len(rs))])
    for combo in product(*per_size):
        yield {r: t for pairs in combo for r, t in pairs if r is not t}


def path_of(space: SynthSpace, op: Operator, *, max_nodes: int = 50000) -> Path:
    """The path from the root to the final node equal (canonically) to ``op``; ``ValueError`` if
    ``op`` is not in the space."""
    fixed = space.problem.fixed_inputs
    target = canonical_form(op, fixed)
    tdims = set(target.all_dims)
    texp = set(target.expanded)
    tweights = {d for w in target.weights for d in w}
    t_reds: dict = {}
    for r in target.reductions:
        t_reds.setdefault(r.size, []).append(r)
    for rs in t_reds.values():
        rs.sort(key=lambda r: r.multiplicity)

    def consistent(s: State) -> bool:
        reds: dict = {}
        for r in s.reductions:
            reds.setdefault(r.size, []).append(r)
        for mapping in _injections(reds, t_reds):
            memo: dict = {}
            if all(A.rebuild(d, mapping, memo) in tdims for d in s.current) \
                    and all(A.rebuild(d, mapping, memo) in tweights for d in s.weights) \
                    and all(A.rebuild(d, mapping, memo) in texp for d in s.expanded):
                return True
        return False

    visited: set[str] = set()
    deepest: list = [space.root()]
    pruned: list[str] = []
    budget = [max_nodes]

    def dfs(node: Node) -> Path | None:
        if node.key in visited:
            return None
        visited.add(node.key)
        budget[0] -= 1
        if budget[0] < 0:
            return None
        if node.depth > deepest[0].depth:
            deepest[0] = node
        moves = node.moves()
        for m in moves.get("Finalize", ()):
            fop = m.payload[1]
            if fop.hash == target.hash or canonical_form(fop, fixed).hash == target.hash:
                child = node.child(m.next)
                if child is not None:
                    return (m.next,)
        for t, ms in moves.items():
            if t == "Finalize":
                continue
            for m in ms:
                s2 = space.apply(node.state, m)
                if not consistent(s2):
                    continue
                child = node.child(m.next)
                if child is None:
                    pruned.append(f"{m.type} at depth {node.depth} (child pruned by a bound: "
                                  f"distance {space.shape_distance(s2)}, remaining {space.remaining(s2)})")
                    continue
                sub = dfs(child)
                if sub is not None:
                    return (m.next,) + sub
        return None

    got = dfs(space.root())
    if got is None:
        d = deepest[0]
        have = set()
        if d.state is not None:
            for x in list(d.state.current) + list(d.state.weights) + list(d.state.expanded):
                stack = [x]
                while stack:
                    y = stack.pop()
                    if hasattr(y, "op"):
                        have.add(y.op.name)
                        stack.extend(y.op.bottoms)
        missing = [o for o in target.ops if not isinstance(o, Expand)]
        raise ValueError(
            f"operator {op.name or op.hash} is not reachable in this space: deepest consistent node at depth "
            f"{d.depth} (of {len([o for o in missing])} target primitives + reductions); "
            f"pruned children: {pruned[:5]}; frontier there: {list(d.state.current) if d.state else d}")
    return got


def replay(space: SynthSpace, path: Path) -> Node:
    return space.node_from_path(path)


__all__ = ["path_of", "replay"]
