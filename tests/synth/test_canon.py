"""Canonicalization: exhaustive enumeration of a tiny space has no duplicate finals, transpositions
meet, reductions come in one order, and every generated move obeys the rules."""

import collections
import random

from syno.ir.library import conv2d
from syno.synth import analysis as A
from syno.synth.canon import canonical_form
from syno.synth.options import SynthOptions
from syno.synth.pathfind import path_of
from syno.synth.protocol import Next
from syno.synth.space import SynthSpace, iterate_finals

from .conftest import weight_permutation_invariant_hash


def test_exhaustive_enumeration_has_no_duplicate_finals(micro):
    space = SynthSpace(micro)
    finals = list(iterate_finals(space))
    ops = [f.operator() for f in finals]
    assert len(ops) > 150
    by_hash = collections.Counter(op.hash for op in ops)
    assert max(by_hash.values()) == 1
    # stronger: no duplicates up to relabelling equal reductions, weight reshapes, weight numbering
    by_canon = collections.Counter(weight_permutation_invariant_hash(op) for op in ops)
    assert max(by_canon.values()) == 1
    assert any(len(op.weights) == 2 for op in ops)
    # finals are canonical already
    assert all(canonical_form(op, [0]).hash == op.hash for op in ops)


def test_reductions_come_in_one_order():
    space = SynthSpace(SynthOptions.resnet18(), enforce_flops=False)
    root = space.root()
    by_size = {str(m.payload[0]): m for m in root.moves()["Reduce"]}
    k_then = space.node_from_path((by_size["k_1"].next,))
    cin_then = space.node_from_path((by_size["C_in"].next,))
    assert "C_in" in {str(m.payload[0]) for m in k_then.moves()["Reduce"]}
    assert "k_1" not in {str(m.payload[0]) for m in cin_then.moves().get("Reduce", [])}


def test_transpositions_meet():
    space = SynthSpace(SynthOptions.resnet18(), enforce_flops=False)
    path = path_of(space, conv2d(space.size_space))
    assert [n.type for n in path] == ["Reduce", "Reduce", "Reduce", "Contraction", "Unfold", "Unfold", "Finalize"]
    mid = space.node_from_path(path[:4])
    unfolds = [m for m in mid.moves()["Unfold"] if A.kind(m.payload[0]) == "iterator"
               and A.is_share_l(m.payload[1]) and str(m.payload[1].size) == "k_1"]
    # the two equal k windows are interchangeable here: an Unfold with the other window is an alias
    aliases = [Next(t, k) for (t, k), m in mid.aliases().items() if m in unfolds]
    ends = set()
    for first in [m.next for m in unfolds] + aliases:
        a = mid.child(first)
        for second in a.moves().get("Unfold", []):
            if A.kind(second.payload[0]) == "iterator" and second.payload[0] is not mid._find(first).payload[0]:
                b = a.child(second.next)
                if b is not None:
                    ends.add(b.key)
    # unfolding H then W or W then H, with either of the two equal k windows, is one node
    assert len(unfolds) == 2 and len(aliases) == 2 and len(ends) == 1


def _check_move_rules(space, node):
    s = node.state
    o = space.options
    for t, moves in node.moves().items():
        for m in moves:
            p = m.payload
            if t == "Merge":
                d = p[0]
                assert A.kind(d) not in ("ShareL", "ShareR", "Split", "MergeL", "reduce")  # M1, M2
            elif t == "Shift":
                d = p[0]
                assert A.kind(d) not in ("reduce", "ShareL", "Shift") and not A.is_unordered(d)  # H1, H2
            elif t == "Stride":
                assert A.kind(p[0]) not in ("Unfold", "Stride", "Split")  # T1
                assert space.upper(p[1] * p[0].size) <= o.max_strided_dim_size  # T2
            elif t == "Split":
                lhs, rhs = p
                assert A.kind(lhs) != "Split"  # S1
                assert not (isinstance(A.boundary(lhs, 1), type(s.reductions[0]))
                            and isinstance(A.boundary(rhs, 0), type(s.reductions[0]))) if s.reductions else True  # S2
            elif t == "Unfold":
                main, win = p
                assert A.kind(win) != "reduce" and not A.ends_up_reduce(main)  # U1, U2
                assert all(v.numerator % 2 == 1 for v in space.bindings.values(win.size))  # U3
                assert space.lower(main.size / win.size) >= o.min_unfold_ratio  # U4
            elif t == "Expand":
                assert A.kind(p[0]) == "MergeR"  # E1 (tiles disallowed)
            elif t == "Contraction":
                outer = [d for d, e in p if e]
                assert len(p) >= 2 and outer and len(outer) < len(p)  # K1
            if t not in ("Reduce", "Contraction", "Finalize") and s.n_weights:
                ops = p[:2] if t in ("Split", "Unfold") else p[:1]
                assert any(space.is_new(s, d) for d in ops if hasattr(d, "height"))  # C3
            if t not in ("Reduce", "Finalize"):
                dims = [x for x in (p if t != "Contraction" else [d for d, _ in p]) if hasattr(x, "height")]
                assert all(d.height + 1 <= o.max_chain_length for d in dims)  # C2
            if t == "Reduce":
                assert s.in_reduction_phase  # reductions first ...
                assert not s.reductions or p[0].exps >= s.reductions[-1].size.exps  # ... non-decreasing


def test_moves_obey_the_rules():
    for preset in ("tiny", "resnet18"):
        space = SynthSpace(getattr(SynthOptions, preset)())
        rng = random.Random(3)
        seen = 0
        for _ in range(6):
            node = space.root()
            for _ in range(8):
                if node.is_final:
                    break
                _check_move_rules(space, node)
                seen += 1
                got = node.random_child(rng)
                if got is None:
                    break
                node = got[1]
        assert seen > 10


def test_children_are_unique_and_sorted():
    space = SynthSpace(SynthOptions.resnet18(), enforce_flops=False)
    path = path_of(space, conv2d(space.size_space))
    mid = space.node_from_path(path[:4])
    kids = mid.children()
    keys = [c.key for _, c in kids]
    assert len(keys) == len(set(keys))
    order = [(n.type, n.key) for n, _ in kids]
    from syno.synth.protocol import NEXT_TYPES
    assert order == sorted(order, key=lambda x: (NEXT_TYPES.index(x[0]), x[1]))
    # the Unfold with the other (equal) window is an alias: not a move, not listed, but it still
    # replays to the listed edge's child (issue #19: a walk must never take an unlisted key)
    listed = dict(kids)
    moves = {m.next for ms in mid.moves().values() for m in ms}
    hidden = [(t, k) for (t, k) in mid.aliases() if t == "Unfold"]
    assert hidden
    for t, k in hidden:
        alias = Next(t, k)
        assert alias not in listed and alias not in moves
        assert mid.child(alias) is listed[mid.canonical_next(alias)]
