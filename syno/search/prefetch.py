"""Proposals prefetched off the driver's critical path (issue #17 item 3).

:class:`Prefetcher` wraps a :class:`~syno.search.base.SearchAlgorithm`: a background thread keeps
up to ``depth`` proposals ready, so when an evaluator frees up, :meth:`propose` hands out a kernel at
once instead of running MCTS rollouts (seconds on the resnet18 space) while GPUs wait. One lock
serializes the wrapped algorithm: the thread proposes one kernel at a time and ``report`` /
``forget`` / ``state_dict`` / ... take the lock between two proposals, so the algorithm's own code
needs no thread safety. A prefetched kernel is pending in the algorithm (its virtual loss steers
later proposals elsewhere) exactly like one handed out; ``state_dict`` forgets the ones not handed
out yet, so a checkpoint never records them as in flight.

The order in which reports and proposals interleave depends on timing, so a prefetching search is
not reproducible run to run (as any search with several evaluators already is); it is used only
with worker pools and Ray (:func:`syno.search.run.make_algorithm`)."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Mapping

from syno.synth.protocol import Path

from .base import EvalResult, SearchAlgorithm

__all__ = ["Prefetcher"]


class Prefetcher(SearchAlgorithm):
    def __init__(self, algorithm: SearchAlgorithm, depth: int = 2):
        self.algo = algorithm
        self.name = algorithm.name
        self.depth = max(1, int(depth))
        self._lock = threading.RLock()
        self._ready: deque[Path] = deque()
        self._reports: deque = deque()  # (method, args) applied by the thread between two proposals
        self._wake = threading.Condition(threading.Lock())
        self._stop = False
        self._dry = False  # the algorithm proposed nothing last time (exhausted or filtered out)
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # -- background ------------------------------------------------------------------------------
    def start(self) -> Prefetcher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="syno-prefetch", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=120)
            self._thread = None

    def _loop(self) -> None:
        while True:
            with self._wake:
                # full, or dry until a report / hand-out changes the search (a dry MCTS propose can
                # spend its whole time budget, holding the lock the driver's report needs)
                while not self._stop and (len(self._ready) >= self.depth or self._dry):
                    self._wake.wait()
                if self._stop:
                    return
            try:
                with self._lock:
                    self._drain()
                    got = [] if self.algo.exhausted else self.algo.propose(1)
            except BaseException as exc:  # noqa: BLE001 - surfaced by the next propose() on the driver
                with self._wake:
                    self.error = exc
                    self._wake.notify_all()
                return
            with self._wake:
                self._ready.extend(got)
                self._dry = not got
                self._wake.notify_all()

    def _kick(self) -> None:
        with self._wake:
            self._dry = False
            self._wake.notify_all()

    # -- SearchAlgorithm ---------------------------------------------------------------------------
    def propose(self, k: int = 1) -> list[Path]:
        """Ready proposals (at most ``k``); with none ready, wait for the one the thread is working on
        (proposing here too would do the same work twice); [] once the algorithm has nothing."""
        if self.error is not None:
            raise self.error
        out: list[Path] = []
        with self._wake:
            if not self._ready and self._thread is not None:
                self._dry = False
                self._wake.notify_all()
                while not self._ready and not self._dry and self.error is None and self._thread is not None:
                    self._wake.wait(timeout=0.5)
            while self._ready and len(out) < k:
                out.append(self._ready.popleft())
        if self.error is not None:
            raise self.error
        if not out and self._thread is None:  # not started: propose synchronously
            with self._lock:
                out = self.algo.propose(k)
        self._kick()
        return out

    def _drain(self) -> None:
        """Apply the queued reports (caller holds the lock). A path the algorithm cannot place raises
        ValueError, which the runner ignores for a recorded kernel; it is dropped here likewise."""
        while self._reports:
            method, args = self._reports.popleft()
            try:
                getattr(self.algo, method)(*args)
            except ValueError:
                pass

    def _defer(self, method: str, *args) -> None:
        self._reports.append((method, args))
        self._kick()

    def report(self, path: Path | str, result: EvalResult) -> float | None:
        """While the thread runs, the report is queued and applied before its next proposal (the
        driver never waits for a rollout in progress); it returns None then. Before ``start``, as
        the wrapped algorithm (restore replays the session synchronously)."""
        if self._thread is not None:
            self._defer("report", path, result)
            return None
        with self._lock:
            return self.algo.report(path, result)

    def forget(self, path: Path | str) -> None:
        if self._thread is not None:
            self._defer("forget", path)
            return
        with self._lock:
            self.algo.forget(path)

    @property
    def exhausted(self) -> bool:
        if self._ready or self._reports:
            return False
        if not self._lock.acquire(blocking=False):
            return False  # the thread is proposing: not known to be used up
        try:
            return self.algo.exhausted
        finally:
            self._lock.release()

    @property
    def pending(self) -> list[Path]:
        with self._lock, self._wake:
            self._drain()
            ready = set(self._ready)
            return [p for p in self.algo.pending if p not in ready]

    def _drop_ready(self) -> None:
        with self._wake:
            ready, self._ready = list(self._ready), deque()
        for p in ready:
            self.algo.forget(p)

    def state_dict(self) -> dict[str, Any]:
        with self._lock:
            self._drain()
            self._drop_ready()  # not handed out: not in flight (they are proposed again later)
            got = self.algo.state_dict()
        self._kick()
        return got

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        with self._lock:
            self._drop_ready()
            self.algo.load_state_dict(state)
        self._kick()

    def is_evaluated(self, path: Path | str) -> bool:
        with self._lock:
            self._drain()
            return self.algo.is_evaluated(path)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._drain()
            return self.algo.stats()

    def __getattr__(self, name: str):  # anything else the wrapped algorithm offers (best, revise, ...)
        attr = getattr(self.algo, name)
        if not callable(attr):
            return attr
        if name == "revise" and self._thread is not None:  # a revised reward: queued like a report
            return lambda *a: self._defer("revise", *a)

        def locked(*a, **kw):
            with self._lock:
                self._drain()
                return attr(*a, **kw)
        return locked
