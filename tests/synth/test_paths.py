"""Replay and enumeration agree (issue #19 item 1): every element of a sampled path is among its
parent's ``children()``, and a move that a relabelling of equal reductions maps onto a listed move
is an alias (it replays, it is never a move a walk can take)."""

from __future__ import annotations

import random

from syno.synth.options import SynthOptions
from syno.synth.protocol import Next, path_from_str
from syno.synth.sampler import sample_operators
from syno.synth.space import SynthSpace


def assert_listed(space: SynthSpace, path, memo: dict) -> None:
    """Every element of ``path`` is among its parent's ``children()``, checked without building every
    child: the element is a listed move, and no other listed move of the parent gives the same
    canonical child (``children()`` lists each live move whose child no smaller key reaches)."""
    node = space.root()
    for nxt in path:
        listed = {m.next: m for ms in node.moves().values() for m in ms}
        assert nxt in listed, f"{nxt} is not a move of node {node.key} (aliases: {sorted(node.aliases())})"
        if nxt.type != "Finalize":  # finals are keyed by their assignment, never shared
            counts = memo.get(node.key)
            if counts is None:
                counts = memo[node.key] = {}
                for m in listed.values():
                    if m.type != "Finalize":
                        k = space.apply(node.state, m).key
                        counts[k] = counts.get(k, 0) + 1
            assert counts[space.apply(node.state, listed[nxt]).key] == 1, f"{nxt}: another move gives its child"
        node = node.child(nxt)
        assert node is not None
    assert node.is_final


def assert_in_children(space: SynthSpace, path) -> None:
    node = space.root()
    for nxt in path:
        kids = dict(node.children())
        assert nxt in kids, f"{nxt} is not among the children() of node {node.key}"
        node = kids[nxt]
    assert node.is_final


def test_sampled_tiny_paths_are_listed():
    ops = sample_operators("tiny", 200, seed=0)
    assert len(ops) == 200
    space = SynthSpace(SynthOptions.tiny())
    memo: dict = {}
    for path, _ in ops:
        assert_listed(space, path_from_str(path), memo)
    for path, _ in ops[:10]:  # and literally, on a few
        assert_in_children(space, path_from_str(path))


def test_fresh_tiny_walks_are_listed():
    """Walks of a fresh space (the shipped sample was drawn before aliases were collapsed)."""
    space = SynthSpace(SynthOptions.tiny())
    rng = random.Random(1)
    memo: dict = {}
    found = 0
    for _ in range(20):
        got = space.random_walk(space.root(), rng, 16)
        if got is not None:
            assert_listed(space, got[0], memo)
            found += 1
    assert found >= 6


def test_resnet18_paths_are_listed():
    """20 resnet18 operators (the shipped precomputed sample, drawn by walks of the fixed space: a
    resnet18 walk costs seconds) and, literally with children(), the first one (children() builds
    and bounds every child: seconds per resnet18 node)."""
    ops = sample_operators("resnet18", 20, seed=0)
    assert len(ops) == 20
    space = SynthSpace(SynthOptions.resnet18())
    memo: dict = {}
    for path, _ in ops:
        assert_listed(space, path_from_str(path), memo)
    assert_in_children(space, path_from_str(ops[0][0]))


def test_alias_of_a_symmetric_state_replays_to_the_listed_child():
    """After Reduce k_1, Reduce k_1 the two reductions are interchangeable: sharing either gives one
    child, listed once; the other key replays to it."""
    space = SynthSpace(SynthOptions.tiny())
    root = space.root()
    node = root
    for _ in range(2):
        node = next(c for n, c in node.children() if n.type == "Reduce" and str(c.state.reductions[-1].size) == "k_1")
    assert node.state.automorphisms()
    aliases = node.aliases()
    assert aliases
    kids = dict(node.children())
    for (t, k), rep in aliases.items():
        alias = Next(t, k)
        assert alias not in kids
        assert node.child(alias) is node.child(rep.next)
        assert node.canonical_next(alias) == rep.next
