"""Prefetched proposals (issue #17 item 3): a background thread keeps proposals ready, the driver gets
them at once, reports interleave safely, and checkpoints never record unhanded proposals."""

from __future__ import annotations

import time

from syno.search.base import as_path_str
from syno.search.mcts import MCTS, MCTSConfig
from .synthetic import SyntheticSpace
from syno.search.prefetch import Prefetcher
from syno.search.random_search import RandomSearch


def _wait_ready(p: Prefetcher, n: int, timeout: float = 30.0) -> None:
    t = time.monotonic()
    while len(p._ready) < n and time.monotonic() - t < timeout:
        time.sleep(0.01)
    assert len(p._ready) >= n


def test_prefetched_proposals_are_handed_out_at_once_and_reports_interleave():
    sp = SyntheticSpace(seed=3)
    algo = Prefetcher(MCTS(sp, MCTSConfig(seed=0)), depth=2).start()
    try:
        seen = set()
        for _ in range(12):
            _wait_ready(algo, 1)
            t = time.perf_counter()
            (path,) = algo.propose(1)
            assert time.perf_counter() - t < 0.05  # from the queue, no rollout on the caller's thread
            key = as_path_str(path)
            assert key not in seen
            seen.add(key)
            algo.report(path, sp.evaluate(path))  # while the thread proposes the next one
        assert algo.stats()["evaluated"] == 12
    finally:
        algo.close()
    assert algo.error is None


def test_checkpoint_forgets_proposals_not_handed_out():
    sp = SyntheticSpace(seed=4)
    inner = MCTS(sp, MCTSConfig(seed=0))
    algo = Prefetcher(inner, depth=2).start()
    try:
        _wait_ready(algo, 2)
        (handed,) = algo.propose(1)
        state = algo.state_dict()
        # only the handed-out proposal is in flight in the checkpoint (the ready ones were forgotten)
        fresh = MCTS(sp, MCTSConfig(seed=0))
        fresh.load_state_dict(state)
        assert [as_path_str(p) for p in fresh.pending] == [as_path_str(handed)]
        assert [as_path_str(p) for p in algo.pending] == [as_path_str(handed)]
    finally:
        algo.close()


def test_revise_is_queued_like_a_report():
    sp = SyntheticSpace(seed=5)
    algo = Prefetcher(MCTS(sp, MCTSConfig(seed=0)), depth=1).start()
    try:
        _wait_ready(algo, 1)
        (path,) = algo.propose(1)
        algo.report(path, sp.evaluate(path))
        algo.revise(path, sp.evaluate(path))  # queued while the thread may be proposing
        assert algo.stats()["evaluated"] == 1  # stats applies the queue first
        assert not hasattr(Prefetcher(RandomSearch(sp)), "revise")  # only what the wrapped one offers
    finally:
        algo.close()
