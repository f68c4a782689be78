"""MCTS and random search against the synthetic space (no torch, fast)."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from syno.search.base import EvalResult, RewardConfig
from syno.search.mcts import MCTS, MCTSConfig
from .synthetic import SyntheticSpace
from syno.search.random_search import RandomSearch, RandomSearchConfig
from syno.synth.protocol import Next, SearchSpace, SynthNode, path_to_str


def drive(algo, space: SyntheticSpace, budget: int, k: int = 1):
    """Propose/evaluate/report until ``budget`` evaluations; returns (evaluations to the best, keys)."""
    found, keys, n = None, [], 0
    while n < budget:
        paths = algo.propose(k)
        if not paths:
            break
        for p in paths:
            node = space.node_from_path(p)
            keys.append(node.key)
            res = space.evaluate(p)
            n += 1
            algo.report(p, res)
            if found is None and node.atoms == space.target:
                found = n
    return found, keys


def test_synthetic_space_is_a_synth_space():
    sp = SyntheticSpace(seed=1)
    assert isinstance(sp, SearchSpace)
    assert isinstance(sp.root(), SynthNode)
    final = sp.random_final(sp.root(), __import__("random").Random(0))
    assert final.is_final and sp.node_from_path(final.path).key == final.key


def test_transpositions_reach_one_tree_node():
    sp = SyntheticSpace(seed=3, conflict_prob=0.0, poison=0)
    algo = MCTS(sp, MCTSConfig(seed=0))
    a, b = sorted(sp.target)[:2]
    na, nb = (Next(sp.atoms[i].type, sp.atoms[i].key) for i in (a, b))
    n1 = algo._node_of_path((na, nb))
    n2 = algo._node_of_path((nb, na))
    assert n1 is n2  # one TreeNode for both orders


def test_transposition_shares_result_and_lattice_credit():
    sp = SyntheticSpace(seed=3, conflict_prob=0.0, poison=0, min_ops=2)
    algo = MCTS(sp, MCTSConfig(seed=0))
    a, b = sorted(sp.target)[:2]
    na, nb = (Next(sp.atoms[i].type, sp.atoms[i].key) for i in (a, b))
    fin = Next("Finalize", sp.finalize_key(frozenset((a, b))))
    algo.report((na, nb, fin), EvalResult(accuracy=0.8))
    # the other ordering is the same final: known as evaluated, never proposed again
    assert algo.is_evaluated((nb, na, fin))
    # LRAVE credit on the other ordering (root --nb--> {b} --na--> {a,b}) although it was never walked
    node_b = algo._node_of_path((nb,))
    assert node_b.lrave[na.type].n == 1
    assert algo.nodes[node_b.key].mids[na.type].lrave[na.key].mean == pytest.approx(0.8)
    assert algo.root.lrave[nb.type].n >= 1
    # GRAVE by type and by arc
    assert algo.grave_arc[str(na)].mean == pytest.approx(0.8)
    assert algo.grave_type["Finalize"].n == 1


def test_transposed_final_is_not_proposed_twice():
    sp = SyntheticSpace(n_atoms=6, max_ops=3, min_ops=2, target_size=2, conflict_prob=0.0, poison=0, seed=2)
    algo = MCTS(sp, MCTSConfig(seed=1))
    _, keys = drive(algo, sp, budget=10_000, k=3)
    assert len(keys) == len(set(keys)) == len(sp.all_finals())
    assert algo.exhausted
    assert algo.propose(4) == []


def test_mcts_finds_best_faster_than_random():
    mcts_n, rand_n = [], []
    budget = 600
    for seed in range(8):
        f, _ = drive(MCTS(SyntheticSpace(seed=seed), MCTSConfig(seed=seed)), SyntheticSpace(seed=seed), budget)
        mcts_n.append(f or budget * 2)
        f, _ = drive(RandomSearch(SyntheticSpace(seed=seed), RandomSearchConfig(seed=seed)), SyntheticSpace(seed=seed), budget)
        rand_n.append(f or budget * 2)
    assert statistics.median(mcts_n) * 2 <= statistics.median(rand_n), (mcts_n, rand_n)
    assert sum(n <= budget for n in mcts_n) >= 6


def test_parallel_proposals_are_distinct_and_virtual_loss_is_released():
    sp = SyntheticSpace(seed=4)
    algo = MCTS(sp, MCTSConfig(seed=0))
    batch = algo.propose(6)
    assert len(batch) == 6
    keys = {sp.node_from_path(p).key for p in batch}
    assert len(keys) == 6
    assert sum(n.vl for n in algo.nodes.values()) > 0
    assert set(map(path_to_str, algo.pending)) == set(map(path_to_str, batch))
    for p in batch:
        algo.report(p, sp.evaluate(p))
    assert algo.pending == []
    assert all(n.vl == 0 for n in algo.nodes.values())
    for n in algo.nodes.values():
        for m in (n.mids or {}).values():
            assert m.vl == 0 and all(e.vl == 0 for e in m.edges.values())


def test_failure_marks_final_dead_without_negative_backprop():
    sp = SyntheticSpace(seed=5)
    algo = MCTS(sp, MCTSConfig(seed=0))
    (p,) = algo.propose(1)
    assert algo.report(p, EvalResult(status="error", message="boom")) is None
    final = algo._node_of_path(p)
    assert final.dead and final.failed and final.evaluated
    assert algo.root.stats.n == 0 and algo.root.vl == 0
    # a failed final is never proposed again
    for _ in range(30):
        for q in algo.propose(2):
            assert algo._node_of_path(q) is not final
            algo.report(q, sp.evaluate(q))


def test_duplicate_and_unknown_reports():
    sp = SyntheticSpace(seed=6)
    algo = MCTS(sp, MCTSConfig(seed=0))
    other = SyntheticSpace(seed=6)
    walk = other.random_final(other.root(), __import__("random").Random(9))
    # a path the algorithm never proposed (session replay on resume)
    r1 = algo.report(walk.path, EvalResult(accuracy=0.5))
    assert r1 == pytest.approx(0.5) and algo.is_evaluated(walk.path)
    assert algo.root.stats.n == 1
    # a duplicate keeps the first result and changes nothing
    assert algo.report(walk.path, EvalResult(accuracy=0.9)) == pytest.approx(0.5)
    assert algo.root.stats.n == 1


def test_final_filter_is_applied_before_proposal():
    sp = SyntheticSpace(seed=7)
    rejected = []

    def big_only(node):
        if len(node.atoms) < 4:
            rejected.append(node.key)
            return "too few FLOPs"
        return None

    for algo in (MCTS(sp, MCTSConfig(seed=0), final_filter=big_only),
                 RandomSearch(sp, RandomSearchConfig(seed=0), final_filter=big_only)):
        for _ in range(20):
            for p in algo.propose(2):
                assert len(sp.node_from_path(p).atoms) >= 4
                algo.report(p, sp.evaluate(p))
    assert rejected


def test_state_round_trip_and_deterministic_continuation():
    sp = SyntheticSpace(seed=8)
    algo = MCTS(sp, MCTSConfig(seed=3))
    for _ in range(15):
        for p in algo.propose(2):
            algo.report(p, sp.evaluate(p))
    in_flight = algo.propose(3)
    state = json.loads(json.dumps(algo.state_dict()))  # strict JSON round trip
    clone = MCTS(SyntheticSpace(seed=8))
    clone.load_state_dict(state)
    assert json.dumps(clone.state_dict(), sort_keys=True) == json.dumps(algo.state_dict(), sort_keys=True)
    # virtual loss is rebuilt from the in-flight receipts
    assert {k: n.vl for k, n in clone.nodes.items()} == {k: n.vl for k, n in algo.nodes.items()}
    assert set(map(path_to_str, clone.pending)) == set(map(path_to_str, in_flight))
    # both continue identically
    for p in in_flight:
        for a in (algo, clone):
            a.report(p, sp.evaluate(p))
    for _ in range(10):
        pa, pb = algo.propose(2), clone.propose(2)
        assert pa == pb
        for p in pa:
            res = sp.evaluate(p)
            algo.report(p, res)
            clone.report(p, res)
    assert algo.best() == clone.best()


def test_state_from_another_space_is_refused():
    algo = MCTS(SyntheticSpace(seed=1))
    state = algo.state_dict()
    other = MCTS(SyntheticSpace(seed=2, n_atoms=10))
    state["root"] = "nonsense"
    with pytest.raises(ValueError, match="different synthesis space"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="not an MCTS state"):
        other.load_state_dict({"format": "x"})


def test_random_search_round_trip_and_dedup():
    sp = SyntheticSpace(n_atoms=6, max_ops=3, min_ops=2, target_size=2, conflict_prob=0.0, poison=0, seed=2)
    algo = RandomSearch(sp, RandomSearchConfig(seed=0, exhaust_after=2000))
    _, keys = drive(algo, sp, budget=10_000, k=2)
    assert len(keys) == len(set(keys)) == len(sp.all_finals())
    assert algo.exhausted
    clone = RandomSearch(sp)
    clone.load_state_dict(json.loads(json.dumps(algo.state_dict())))
    assert clone.state_dict() == algo.state_dict()


@pytest.mark.parametrize("acc,expected", [(0.3, 0.0), (0.4, 0.0), (0.55, 0.5 ** 4), (0.7, 1.0), (0.78, 1.0)])
def test_reward_is_clamped(acc, expected):
    rc = RewardConfig(acc_lower=0.4, acc_upper=0.7, power=4)
    assert rc(EvalResult(accuracy=acc)) == pytest.approx(expected)


def test_reward_failures():
    rc = RewardConfig(acc_lower=0.4, acc_upper=0.7, power=4)
    assert rc(EvalResult(accuracy=0.0)) is None
    assert rc(EvalResult(accuracy=math.nan)) is None
    assert rc(EvalResult(status="timeout", accuracy=0.9)) is None
    assert rc(EvalResult(status="pruned", accuracy=0.7)) == 1.0
    loss = RewardConfig(target="loss", max_loss=6.9, power=1)
    assert loss(EvalResult(loss=6.9)) is None
    assert loss(EvalResult(loss=3.45)) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        RewardConfig(acc_lower=0.7, acc_upper=0.4)


def test_eval_result_json_round_trip():
    r = EvalResult(status="error", accuracy=math.nan, message="x")
    d = json.loads(json.dumps(r.to_dict()))
    back = EvalResult.from_dict(d)
    assert back.status == "error" and math.isnan(back.accuracy) and back.loss == math.inf
