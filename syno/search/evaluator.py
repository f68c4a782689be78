"""Evaluators: run kernel evaluations (train a model with the kernel) and hand back results.

An :class:`Evaluator` accepts path strings with ``submit`` while ``capacity() > 0`` and returns
finished ``(path, EvalResult)`` pairs from ``poll``. Two implementations:

* :class:`InlineEvaluator` evaluates in the calling process (one at a time; no timeouts). For tests,
  benchmarks and debugging.
* :class:`LocalPoolEvaluator` keeps ``workers`` processes (spawn context; one per GPU or CPU slot).
  Each worker calls ``job.setup(slot)`` once (rebuild the synthesis space, model, dataset from the
  options) and then ``job.evaluate(path)`` per kernel: the operator is rebuilt from its path, never
  imported from a generated ``.py``. A kernel that exceeds ``timeout`` seconds gets its worker killed
  and status ``timeout``; a worker that dies gets status ``crash``; an exception inside ``evaluate``
  gets status ``error``. The dead worker is replaced. No submitted path is ever dropped.

A *job* is any picklable object with ``setup(slot: int) -> None`` and ``evaluate(path: str) ->
EvalResult`` (see :class:`syno.search.problem.KernelJob`; the tests' ``SyntheticJob``).
A Ray backend (a later issue) implements the same :class:`Evaluator` interface.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from abc import ABC, abstractmethod
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from .base import EvalResult

__all__ = ["Evaluator", "EvaluatorError", "Job", "InlineEvaluator", "LocalPoolEvaluator", "safe_evaluate"]


class EvaluatorError(RuntimeError):
    """The evaluator cannot work at all (e.g. every worker fails during setup).

    The message is one line for the user; ``detail`` holds the worker's traceback, if any
    (``syno --debug`` prints it).
    """

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


class Job(Protocol):
    def setup(self, slot: int) -> None: ...

    def evaluate(self, path: str) -> EvalResult: ...


def safe_evaluate(job: Job, path: str) -> EvalResult:
    """``job.evaluate(path)`` with exceptions turned into an ``error`` result; records the wall time."""
    t0 = time.perf_counter()
    try:
        res = job.evaluate(path)
    except Exception as exc:  # noqa: BLE001 - any kernel failure is a result, not a crash of the search
        cost = sys.modules.get("syno.codegen.cost")  # loaded if it raised: no torch import here
        if cost is not None and isinstance(exc, cost.PlanTooCostly):
            # its plan needs more memory than the limit (issue #21): scored without training
            res = EvalResult(status="too_costly", message=str(exc))
        else:
            tb = traceback.format_exc(limit=8)
            res = EvalResult(status="error", message=f"{type(exc).__name__}: {exc}\n{tb}"[-4000:])
    if not res.time:
        res.time = time.perf_counter() - t0
    return res


class Evaluator(ABC):
    @abstractmethod
    def capacity(self) -> int:
        """How many more paths ``submit`` accepts now."""

    @abstractmethod
    def submit(self, path: str) -> None: ...

    @abstractmethod
    def poll(self, timeout: float | None = None) -> list[tuple[str, EvalResult]]:
        """Finished evaluations; waits up to ``timeout`` seconds (None: until one finishes) when
        something is running and nothing is finished yet."""

    @property
    @abstractmethod
    def running(self) -> list[str]:
        """Paths submitted and not yet returned by ``poll``."""

    def close(self) -> None:
        """Stop all workers (running evaluations are abandoned)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class InlineEvaluator(Evaluator):
    """Evaluates each submitted path synchronously inside ``poll``."""

    def __init__(self, job: Job, slot: int = 0):
        self.job = job
        job.setup(slot)
        self._queue: deque[str] = deque()

    def capacity(self) -> int:
        return 0 if self._queue else 1

    def submit(self, path: str) -> None:
        self._queue.append(path)

    def poll(self, timeout: float | None = None) -> list[tuple[str, EvalResult]]:
        out = []
        while self._queue:
            p = self._queue[0]
            out.append((p, safe_evaluate(self.job, p)))
            self._queue.popleft()
        return out

    @property
    def running(self) -> list[str]:
        return list(self._queue)


# ----------------------------------------------------------------------------------------------
# process pool

@contextmanager
def _sigint_ignored():
    """SIGINT ignored while a worker starts (an ignored signal stays ignored in the spawned child)."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals are not ours to change
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _worker_main(job: Job, conn: Connection, slot: int, threads: int | None) -> None:
    # Ctrl-C in a terminal reaches the whole process group; the parent stops the search and kills
    # its workers, so a worker ignores SIGINT instead of printing a traceback mid-kernel.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _worker_loop(job, conn, slot, threads)
    except (BrokenPipeError, ConnectionResetError, EOFError):
        return  # the parent is gone (killed, SIGTERM): nothing to report to, exit quietly


def _worker_loop(job: Job, conn: Connection, slot: int, threads: int | None) -> None:
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        os.environ.setdefault("MKL_NUM_THREADS", str(threads))
    try:
        job.setup(slot)
    except Exception as exc:  # noqa: BLE001
        conn.send(("setup_error", (f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=8))))
        return
    if threads and "torch" in sys.modules:  # jobs that train import torch in setup
        sys.modules["torch"].set_num_threads(threads)
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        res = safe_evaluate(job, msg)
        conn.send(("result", (msg, res.to_dict())))


@dataclass
class _Worker:
    slot: int
    process: Any
    conn: Connection
    task: str | None = None
    started: float = 0.0
    ready: bool = False


class LocalPoolEvaluator(Evaluator):
    """``workers`` processes on this machine; see the module docstring.

    ``timeout``: seconds per kernel (None: no limit). ``threads``: torch threads per worker
    (default: CPU cores divided among the workers). ``max_setup_failures``: give up (raise
    :class:`EvaluatorError`) after that many workers in a row fail during setup.
    """

    def __init__(self, job: Job, workers: int = 1, timeout: float | None = None, threads: int | None = None,
                 start_method: str = "spawn", max_setup_failures: int = 3):
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.job = job
        self.n = workers
        self.timeout = timeout
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self.ctx = mp.get_context(start_method)
        self.max_setup_failures = max_setup_failures
        self._setup_failures = 0
        self._last_setup_error: tuple[str, str] | None = None
        self._done: list[tuple[str, EvalResult]] = []
        self._workers: list[_Worker] = [self._spawn(i) for i in range(workers)]
        self._closed = False

    def _spawn(self, slot: int) -> _Worker:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker_main, args=(self.job, child, slot, self.threads),
                                name=f"syno-eval-{slot}", daemon=True)
        with _sigint_ignored():  # inherited: a Ctrl-C while the worker still imports cannot reach it
            proc.start()
        child.close()
        return _Worker(slot, proc, parent)

    def _replace(self, w: _Worker) -> None:
        self._kill(w)
        self._workers[self._workers.index(w)] = self._spawn(w.slot)

    @staticmethod
    def _kill(w: _Worker) -> None:
        if w.process.is_alive():
            w.process.kill()
        w.process.join(timeout=10)
        try:
            w.conn.close()
        except OSError:  # pragma: no cover
            pass

    def capacity(self) -> int:
        return sum(1 for w in self._workers if w.task is None)

    def submit(self, path: str) -> None:
        for w in self._workers:
            if w.task is None:
                w.conn.send(path)
                w.task, w.started = path, time.monotonic()
                return
        raise RuntimeError("no free worker; check capacity() before submit()")

    @property
    def running(self) -> list[str]:
        return [w.task for w in self._workers if w.task is not None]

    def poll(self, timeout: float | None = None) -> list[tuple[str, EvalResult]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._collect(0.0)
            if self._done or not self.running:
                break
            now = time.monotonic()
            wait_for = self._next_kernel_deadline(now)
            if deadline is not None:
                wait_for = min(wait_for, max(0.0, deadline - now)) if wait_for is not None else max(0.0, deadline - now)
            self._collect(wait_for)
            if self._done or (deadline is not None and time.monotonic() >= deadline):
                break
        out, self._done = self._done, []
        return out

    def _next_kernel_deadline(self, now: float) -> float | None:
        if self.timeout is None:
            return None
        busy = [w.started + self.timeout - now for w in self._workers if w.task is not None and w.ready]
        return max(0.0, min(busy)) if busy else None

    def _collect(self, wait_s: float | None) -> None:
        conns = {w.conn: w for w in self._workers}
        sentinels = {w.process.sentinel: w for w in self._workers}
        ready = wait(list(conns) + list(sentinels), timeout=wait_s)
        handled: set[int] = set()
        for obj in ready:
            w = conns.get(obj) or sentinels.get(obj)
            if w is None or id(w) in handled or w not in self._workers:
                continue
            handled.add(id(w))
            self._drain(w)
        now = time.monotonic()
        if self.timeout is not None:
            for w in list(self._workers):
                if w.task is not None and w.ready and now - w.started > self.timeout:
                    self._done.append((w.task, EvalResult(status="timeout", time=now - w.started,
                                                          message=f"killed after {self.timeout:g} s")))
                    w.task = None
                    self._replace(w)

    def _drain(self, w: _Worker) -> None:
        """Read every message of ``w``; handle its death."""
        try:
            while w.conn.poll():
                kind, payload = w.conn.recv()
                if kind == "ready":
                    w.ready = True
                    self._setup_failures = 0
                    w.started = time.monotonic()  # the kernel's clock starts when the worker is ready
                elif kind == "result":
                    path, res = payload
                    if path == w.task:
                        self._done.append((path, EvalResult.from_dict(res)))
                        w.task = None
                elif kind == "setup_error":
                    self._last_setup_error = payload  # (one-line message, traceback)
        except (EOFError, OSError):
            pass
        if not w.process.is_alive():
            w.process.join(timeout=1)
            if not w.ready:
                self._setup_failures += 1
                if self._setup_failures >= self.max_setup_failures:
                    self.close()
                    why, tb = self._last_setup_error or (
                        f"a worker exited with code {w.process.exitcode} before it was ready", "")
                    raise EvaluatorError(f"evaluation workers fail during setup: {why}", detail=tb)
            task = w.task
            if task is not None and w.ready:
                code = w.process.exitcode
                self._done.append((task, EvalResult(status="crash", time=time.monotonic() - w.started,
                                                    message=f"worker process died (exit code {code})")))
                task = None
            if not self._closed:
                self._replace(w)
                if task is not None:  # the worker died before it was ready: not the kernel's fault
                    fresh = self._workers[[x.slot for x in self._workers].index(w.slot)]
                    fresh.conn.send(task)
                    fresh.task, fresh.started = task, time.monotonic()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            try:
                w.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        end = time.monotonic() + 5
        for w in self._workers:
            if w.task is None:
                w.process.join(timeout=max(0.0, end - time.monotonic()))
            self._kill(w)
