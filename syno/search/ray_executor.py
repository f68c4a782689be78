"""Ray backend of the :class:`~syno.search.evaluator.Evaluator` interface (docs/ray.md).

The search driver (MCTS, the session directory) stays in one process, the *head*; kernel evaluations
run in Ray actors anywhere in the cluster, one per GPU (``num_gpus=1``) or per CPU slot. Each actor
calls ``job.setup(slot)`` once and then ``job.evaluate(path)`` per kernel, exactly like a worker of
:class:`~syno.search.evaluator.LocalPoolEvaluator`; results travel back as ``EvalResult`` dicts and
the driver alone writes them (the session).

Semantics (the tests in ``tests/search/test_ray_executor.py`` check each):

* **Backpressure**: ``capacity()`` is the number of evaluation slots (live actors) minus the paths
  being evaluated or queued, so the driver never has more kernels in flight than the cluster has
  slots and MCTS virtual loss steers it away from pending nodes. ``workers=None`` sizes the pool from
  ``ray.available_resources()`` and grows it when nodes join (checked every ``grow_interval`` s).
  An actor that has been waiting for resources longer than ``start_grace`` seconds (its node is gone
  and nothing replaced it) stops counting as a slot.
* **Fault tolerance**: a worker process or node that dies mid-evaluation re-queues its kernel (at
  most ``max_retries`` times; then it is returned with status ``crash``), and the dead actor is
  replaced by a fresh one. No submitted path is ever dropped: every path comes back from ``poll``
  exactly once. A kernel over ``timeout`` seconds gets its actor killed and status ``timeout`` (no
  retry); an exception inside ``evaluate`` is status ``error`` (no retry).
* **Driver restart**: actors belong to the driver, so Ray removes them when it dies; a new driver
  re-attaches with ``ray.init(address=...)`` and the session re-submits its in-flight paths.
* **Code and data**: when it connects to an existing cluster the evaluator ships the driver's
  ``syno`` package to the workers (``runtime_env={"py_modules": [...]}``), so every worker imports
  the same syno; ``SYNO_*`` environment variables (``SYNO_DATA_DIR``) are forwarded. The job
  object itself travels once through the object store (``ray.put``).

Ray is imported lazily: without it, constructing :class:`RayEvaluator` raises
:class:`RayNotInstalledError` ("pip install syno[ray]"); nothing else in syno needs Ray.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .base import EvalResult
from .evaluator import Evaluator, EvaluatorError, Job, safe_evaluate

__all__ = ["RayEvaluator", "RayNotInstalledError", "import_ray", "syno_runtime_env"]

log = logging.getLogger(__name__)

INSTALL_HINT = 'the Ray executor needs Ray: pip install "syno[ray]" (or: pip install "ray[default]")'


class RayNotInstalledError(EvaluatorError, ImportError):
    """``--executor ray`` was asked for, but Ray is not installed."""


def import_ray():
    """``import ray``, or :class:`RayNotInstalledError` with the install command."""
    try:
        import ray
    except ImportError as exc:
        raise RayNotInstalledError(INSTALL_HINT) from exc
    return ray


def syno_runtime_env(ship_code: bool = True, env_vars: Mapping[str, str] | None = None,
                     forward_prefix: str = "SYNO_") -> dict[str, Any]:
    """A Ray ``runtime_env`` that makes workers import this process's ``syno``.

    ``ship_code``: upload the ``syno`` package directory (``py_modules``; a few hundred KiB) so a
    worker needs only syno's dependencies (torch, ...) installed, not syno itself. Environment
    variables starting with ``forward_prefix`` (``SYNO_DATA_DIR``, ...) are forwarded, then
    ``env_vars`` on top.
    """
    env: dict[str, Any] = {}
    if ship_code:
        import syno

        env["py_modules"] = [str(Path(syno.__file__).resolve().parent)]
        env["excludes"] = ["__pycache__/", "*.pyc"]
    fwd = {k: v for k, v in os.environ.items() if forward_prefix and k.startswith(forward_prefix)}
    fwd.update(env_vars or {})
    if fwd:
        env["env_vars"] = dict(fwd)
    return env


class _EvalWorker:
    """The Ray actor (wrapped with ``ray.remote`` lazily). Sequential: one kernel at a time."""

    def __init__(self, threads: int):
        # Ray sets OMP_NUM_THREADS from num_cpus as well; torch itself is imported by the job (lazily,
        # so a cheap job does not pay for it) and limited to ``threads`` after its setup.
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        os.environ.setdefault("MKL_NUM_THREADS", str(threads))
        self.threads = threads
        self.job: Job | None = None

    def setup(self, job: Job, slot: int) -> dict[str, Any]:
        import socket
        import traceback

        import ray

        info = {"pid": os.getpid(), "host": socket.gethostname(), "node_ip": ray.util.get_node_ip_address(),
                "gpus": [str(g) for g in ray.get_gpu_ids()], "slot": slot}
        try:
            job.setup(slot)
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which decides
            return {**info, "ok": False, "error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"}
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(self.threads)
        self.job = job
        return {**info, "ok": True}

    def evaluate(self, path: str) -> dict[str, Any]:
        assert self.job is not None, "setup() failed or was not called"
        return safe_evaluate(self.job, path).to_dict()

    def pid(self) -> int:
        return os.getpid()


@dataclass
class _Actor:
    slot: int
    handle: Any
    setup_ref: Any                  # ObjectRef of setup(); None once it resolved
    created: float
    ready: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    task: str | None = None         # path being evaluated
    task_ref: Any = None
    started: float = 0.0


class RayEvaluator(Evaluator):
    """Evaluate kernels in Ray actors; see the module docstring.

    ``job``: the picklable job (``setup(slot)``, ``evaluate(path)``). ``address``: ``None`` starts a
    local Ray instance in this process (or uses the one already initialized), ``"auto"`` joins the
    cluster started on this machine with ``ray start``, ``"HOST:PORT"`` a remote head (the GCS port,
    6379 by default). ``workers``: number of actors (None: as many as free resources allow, growing
    when nodes join; at most ``max_workers``). ``use_gpu``: one actor per ``gpus_per_worker`` GPUs
    (None: if the cluster has GPUs). ``cpus_per_worker``: CPUs reserved per actor (also its torch
    threads). ``timeout``: seconds per kernel. ``max_retries``: how often a kernel whose worker died is
    re-queued before it is returned as ``crash``. ``ship_code``: upload this syno to the workers
    (None: when joining an existing cluster). ``runtime_env``: merged over :func:`syno_runtime_env`.
    ``start_timeout``: raise :class:`EvaluatorError` if no actor has come up after that many seconds.
    """

    def __init__(self, job: Job, *, address: str | None = None, workers: int | None = None,
                 max_workers: int | None = None, use_gpu: bool | None = None, gpus_per_worker: float = 1.0,
                 cpus_per_worker: float = 1.0, timeout: float | None = None, max_retries: int = 2,
                 ship_code: bool | None = None, runtime_env: Mapping[str, Any] | None = None,
                 init_kwargs: Mapping[str, Any] | None = None, start_timeout: float = 600.0,
                 start_grace: float = 120.0, grow_interval: float = 10.0, max_setup_failures: int = 3):
        if workers is not None and workers < 1:
            raise ValueError("workers must be >= 1 (or None: size from the cluster)")
        if max_workers is not None and max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        ray = import_ray()
        self._ray = ray
        self.job = job
        self.timeout = timeout
        self.max_retries = max_retries
        self.start_timeout = start_timeout
        self.start_grace = start_grace
        self.grow_interval = grow_interval
        self.max_setup_failures = max_setup_failures
        self.cpus_per_worker = float(cpus_per_worker)
        self.gpus_per_worker = float(gpus_per_worker)

        self._owns_ray = False
        joining = address is not None or bool(os.environ.get("RAY_ADDRESS"))
        ship = joining if ship_code is None else ship_code
        env = syno_runtime_env(ship_code=ship)
        env.update(dict(runtime_env or {}))
        self.runtime_env = env
        if not ray.is_initialized():
            kw = {"address": address, "namespace": "syno", "log_to_driver": True}
            kw.update(dict(init_kwargs or {}))
            if env:
                kw["runtime_env"] = copy.deepcopy(env)  # ray.init consumes keys of the dict it gets
            try:
                ray.init(**kw)
            except (ConnectionError, RuntimeError, ray.exceptions.RayError) as exc:
                where = address or os.environ.get("RAY_ADDRESS")
                hint = ""
                if where not in (None, "auto") and "token" not in os.environ.get("RAY_AUTH_MODE", ""):
                    hint = (" If the cluster uses token authentication (the default of `ray start` since "
                            "Ray 2.5x), set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or copy the head's "
                            "~/.ray/auth_token).")
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise EvaluatorError(f"cannot reach the Ray cluster at {where!r}: {first}. Is it running "
                                     f"(`ray start --head`, docs/ray.md)?{hint}") from None
            self._owns_ray = True
            self._actor_env = None
        else:
            # Ray was initialized by the caller: its job-level runtime_env may lack ours.
            self._actor_env = env if (ship_code or runtime_env) else None

        res = ray.cluster_resources()
        self.use_gpu = bool(res.get("GPU", 0) >= max(gpus_per_worker, 1e-9)) if use_gpu is None else use_gpu
        if self.use_gpu and res.get("GPU", 0) < gpus_per_worker:
            self.close_ray()
            raise EvaluatorError(f"GPU evaluation workers were asked for, but the Ray cluster has no GPU "
                                 f"(resources: {res}); train on the CPU (--device cpu) or add GPU nodes")
        self.auto_size = workers is None
        self.max_workers = max_workers
        n = workers if workers is not None else max(1, self._free_slots())
        if max_workers is not None:
            n = min(n, max_workers)
        self._job_ref = ray.put(job)
        self._remote_cls = ray.remote(_EvalWorker)
        self._actors: list[_Actor] = []
        self._queue: deque[str] = deque()           # submitted (or re-queued), waiting for an actor
        self._attempts: dict[str, int] = {}          # path -> evaluations lost to dead workers
        self._last_error: dict[str, str] = {}
        self._done: list[tuple[str, EvalResult]] = []
        self._setup_failures = 0
        self._t_start = time.monotonic()
        self._ever_ready = False
        self._last_grow = time.monotonic()
        self._closed = False
        self.stats = {"submitted": 0, "returned": 0, "requeued": 0, "crash": 0, "timeout": 0, "replaced": 0,
                      "setup_failures": 0, "grown": 0, "max_busy": 0}
        for i in range(n):
            self._actors.append(self._spawn(i))

    # -- resources -----------------------------------------------------------------------------
    def _free_slots(self) -> int:
        avail = self._ray.available_resources()
        cpu = int(avail.get("CPU", 0) // self.cpus_per_worker) if self.cpus_per_worker > 0 else 1 << 30
        if self.use_gpu:
            gpu = int(avail.get("GPU", 0) // self.gpus_per_worker)
            return min(gpu, cpu)
        return cpu

    def _spawn(self, slot: int) -> _Actor:
        opts: dict[str, Any] = {"num_cpus": self.cpus_per_worker, "max_restarts": 0, "max_task_retries": 0}
        if self.use_gpu:
            opts["num_gpus"] = self.gpus_per_worker
        if self._actor_env:
            opts["runtime_env"] = copy.deepcopy(self._actor_env)
        threads = max(1, int(round(self.cpus_per_worker)))
        handle = self._remote_cls.options(**opts).remote(threads)
        ref = handle.setup.remote(self._job_ref, slot)
        return _Actor(slot, handle, ref, time.monotonic())

    def _replace(self, a: _Actor, why: str) -> None:
        try:
            self._ray.kill(a.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        if self._closed:
            return
        log.info("replacing Ray evaluation worker %d (%s)", a.slot, why)
        self.stats["replaced"] += 1
        self._actors[self._actors.index(a)] = self._spawn(a.slot)

    def _slots(self) -> int:
        """Actors that are up, or starting and not yet given up on."""
        now = time.monotonic()
        return sum(1 for a in self._actors if a.ready or now - a.created < self.start_grace)

    def _maybe_grow(self) -> None:
        if not self.auto_size or self._closed:
            return
        now = time.monotonic()
        if now - self._last_grow < self.grow_interval:
            return
        self._last_grow = now
        if any(not a.ready for a in self._actors):  # let pending actors take their resources first
            return
        extra = self._free_slots()
        if self.max_workers is not None:
            extra = min(extra, self.max_workers - len(self._actors))
        for _ in range(max(0, extra)):
            self._actors.append(self._spawn(len(self._actors)))
            self.stats["grown"] += 1
        if extra > 0:
            log.info("Ray cluster grew: %d evaluation workers now", len(self._actors))

    # -- Evaluator interface -------------------------------------------------------------------
    def capacity(self) -> int:
        if self._closed:
            return 0
        self._refresh()
        self._maybe_grow()
        # finished results not yet returned by poll() still count, so the driver's in-flight set
        # (submitted, not yet polled) never exceeds the slots
        return max(0, self._slots() - len(self.running))

    def submit(self, path: str) -> None:
        if self._closed:
            raise RuntimeError("evaluator is closed")
        if path in self.running:
            raise RuntimeError(f"{path!r} is already being evaluated")
        self._queue.append(path)
        self.stats["submitted"] += 1
        self._dispatch()

    @property
    def running(self) -> list[str]:
        return ([a.task for a in self._actors if a.task is not None] + list(self._queue)
                + [p for p, _ in self._done])

    @property
    def workers(self) -> int:
        return len(self._actors)

    def wait_ready(self, n: int | None = None, timeout: float | None = None) -> int:
        """Block until ``n`` actors (default: all) have finished ``job.setup``; returns how many are
        ready. Optional: ``submit`` works before, paths wait for a ready actor."""
        n = len(self._actors) if n is None else n
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._refresh()
            ready = sum(a.ready for a in self._actors)
            refs = [a.setup_ref for a in self._actors if a.setup_ref is not None]
            if ready >= n or not refs or (deadline is not None and time.monotonic() >= deadline):
                return ready
            left = 5.0 if deadline is None else min(5.0, max(0.0, deadline - time.monotonic()))
            self._ray.wait(refs, num_returns=1, timeout=left)
            self._check_start()

    def workers_info(self) -> list[dict[str, Any]]:
        """One dict per actor: slot, ready, pid/host/node_ip/gpus (once set up), task and for how many
        seconds it has been running (``task_s``)."""
        now = time.monotonic()
        return [{**a.info, "slot": a.slot, "ready": a.ready, "task": a.task,
                 "task_s": now - a.started if a.task is not None else None} for a in self._actors]

    def poll(self, timeout: float | None = None) -> list[tuple[str, EvalResult]]:
        ray = self._ray
        deadline = None if timeout is None else time.monotonic() + timeout
        self._refresh()
        while True:
            self._dispatch()
            self._check_timeouts()
            if self._done or not self.running:
                break
            refs = [a.task_ref for a in self._actors if a.task_ref is not None]
            refs += [a.setup_ref for a in self._actors if a.setup_ref is not None]
            now = time.monotonic()
            waits = [5.0]  # wake up now and then: timeouts, start deadline, growth
            if deadline is not None:
                waits.append(max(0.0, deadline - now))
            if self.timeout is not None:
                waits += [max(0.0, a.started + self.timeout - now) for a in self._actors if a.task is not None]
            wait_s = min(waits)
            if refs:
                ready, _ = ray.wait(refs, num_returns=1, timeout=wait_s)
                if ready:
                    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                self._handle(set(ready))
            else:
                time.sleep(wait_s)
            self._check_start()
            self._maybe_grow()
            if self._done or (deadline is not None and time.monotonic() >= deadline):
                break
        out, self._done = self._done, []
        self.stats["returned"] += len(out)
        return out

    # -- internals -------------------------------------------------------------------------------
    def _refresh(self) -> None:
        """Take in whatever finished since the last call (setups, results) without waiting."""
        refs = [a.task_ref for a in self._actors if a.task_ref is not None]
        refs += [a.setup_ref for a in self._actors if a.setup_ref is not None]
        if refs:
            ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
            if ready:
                self._handle(set(ready))
                self._dispatch()

    def _dispatch(self) -> None:
        for a in self._actors:
            if not self._queue:
                return
            if a.ready and a.task is None:
                path = self._queue.popleft()
                a.task, a.started = path, time.monotonic()
                a.task_ref = a.handle.evaluate.remote(path)
                busy = sum(1 for x in self._actors if x.task is not None)
                self.stats["max_busy"] = max(self.stats["max_busy"], busy)

    def _handle(self, ready: set) -> None:
        ray = self._ray
        for a in list(self._actors):
            if a.setup_ref is not None and a.setup_ref in ready:
                ref, a.setup_ref = a.setup_ref, None
                try:
                    info = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    info = {"ok": False, "error": f"worker died during setup: {type(exc).__name__}: {exc}"}
                if info.get("ok"):
                    a.ready, a.info = True, info
                    self._ever_ready = True
                    self._setup_failures = 0
                else:
                    self._setup_failures += 1
                    self.stats["setup_failures"] += 1
                    if self._setup_failures >= self.max_setup_failures:
                        msg = info.get("error", "")
                        self.close()
                        raise EvaluatorError(f"Ray evaluation workers fail during setup:\n{msg}")
                    self._replace(a, "setup failed")
                    continue
            if a.task_ref is not None and a.task_ref in ready:
                ref, path = a.task_ref, a.task
                a.task_ref, a.task = None, None
                try:
                    data = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # not raised by evaluate itself: e.g. unpickling
                    self._done.append((path, EvalResult(status="error", time=time.monotonic() - a.started,
                                                        message=f"{type(exc).__name__}: {exc}"[-4000:])))
                    self._attempts.pop(path, None)
                except ray.exceptions.RayError as exc:  # the actor, its process or its node died
                    self._lost(path, a, exc)
                    self._replace(a, f"died: {type(exc).__name__}")
                else:
                    self._attempts.pop(path, None)
                    self._last_error.pop(path, None)
                    self._done.append((path, EvalResult.from_dict(data)))

    def _lost(self, path: str, a: _Actor, exc: BaseException) -> None:
        n = self._attempts.get(path, 0) + 1
        self._attempts[path] = n
        where = f"{a.info.get('host', '?')} pid {a.info.get('pid', '?')}"
        self._last_error[path] = f"worker {where} died ({type(exc).__name__}: {str(exc).splitlines()[0][:300]})"
        if n > self.max_retries:
            self.stats["crash"] += 1
            self._done.append((path, EvalResult(status="crash", time=time.monotonic() - a.started,
                                                message=f"{self._last_error.pop(path)}; {n} attempt(s), "
                                                        f"max_retries={self.max_retries}")))
            self._attempts.pop(path, None)
        else:
            self.stats["requeued"] += 1
            log.warning("kernel re-queued (attempt %d of %d): %s", n + 1, self.max_retries + 1, self._last_error[path])
            self._queue.appendleft(path)

    def _check_timeouts(self) -> None:
        if self.timeout is None:
            return
        now = time.monotonic()
        for a in list(self._actors):
            if a.task is not None and now - a.started > self.timeout:
                self.stats["timeout"] += 1
                self._done.append((a.task, EvalResult(status="timeout", time=now - a.started,
                                                      message=f"killed after {self.timeout:g} s")))
                self._attempts.pop(a.task, None)
                a.task, a.task_ref = None, None
                self._replace(a, "kernel timeout")

    def _check_start(self) -> None:
        if self._ever_ready or time.monotonic() - self._t_start < self.start_timeout:
            return
        ray = self._ray
        msg = (f"no Ray evaluation worker started within {self.start_timeout:g} s; each needs "
               f"{self.cpus_per_worker:g} CPU" + (f" and {self.gpus_per_worker:g} GPU" if self.use_gpu else "") +
               f"; cluster: {ray.cluster_resources()}, free: {ray.available_resources()}")
        self.close()
        raise EvaluatorError(msg)

    def kill_worker(self, slot: int, sig: int = signal.SIGKILL) -> int:
        """Kill the process of actor ``slot`` with ``sig`` (fault-injection for tests and drills; the
        actor must be on this machine). Returns the pid."""
        a = next(x for x in self._actors if x.slot == slot)
        pid = a.info.get("pid") or self._ray.get(a.handle.pid.remote())
        os.kill(pid, sig)
        return pid

    def close_ray(self) -> None:
        """Shut Ray down if this evaluator started it."""
        if self._owns_ray:
            self._owns_ray = False
            self._ray.shutdown()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for a in self._actors:
            try:
                self._ray.kill(a.handle, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        self.close_ray()
