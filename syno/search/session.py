"""Search sessions: a directory that holds every evaluated kernel, a checkpoint, and resumes.

Layout of ``results/<model>-session/`` (configurable)::

    session.json         options of the search (written once; checked on resume)
    state.json           algorithm checkpoint (tree statistics, RNG, in-flight receipts), atomic
    inflight.json        paths being evaluated right now, atomic, rewritten on every change
    <acc5>_<hash>/       one directory per evaluated kernel: meta.json, operator.json, loop.txt,
    ERROR_<hash>/        graph.dot, kernel.py (standalone module), whatever the problem provides

``<acc5>`` is ``int(accuracy * 10000)`` zero-padded to 5 digits (loss target: ``int(loss * 1000)``);
``<hash>`` is the operator's stable hash. Kernel directories are written atomically (a temporary
directory renamed into place), and they are the source of truth: on resume every kernel directory
the checkpoint does not know is replayed into the algorithm with the same reward formula, paths
that were in flight at the kill are submitted again, and no kernel with a directory is evaluated
twice. A damaged session file (``session.json``, ``state.json``, ``inflight.json``) stops the session
with one :class:`SessionError` naming the file and what to do; a kernel directory that cannot be read
or replayed is reported in one line and skipped, and the rest resumes. Nothing is deleted or
overwritten. The file formats live in :mod:`syno.session`.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path as FsPath
from typing import Any, Callable, Iterable, Mapping

from syno.session import (INFLIGHT_FILE, META_FILE, META_SCHEMA_VERSION, SESSION_FILE, STATE_FILE, SessionError,
                          is_kernel_dir_name, jsonable, kernel_dir_name, read_json, read_kernel_dir, write_json_atomic,
                          write_kernel_dir_atomic)
from syno.synth.protocol import path_from_str, path_to_str

from .base import EvalResult, RewardConfig, SearchAlgorithm
from .evaluator import Evaluator
from .fidelity import Asha, rung_task, split_task

__all__ = ["SessionError", "SessionStore", "KernelRecord", "SearchRunner", "RunSummary"]

STATE_FORMAT = "syno.session.state/1"


@dataclass
class KernelRecord:
    """One evaluated kernel as stored on disk."""

    dir: FsPath
    path: str
    hash: str
    result: EvalResult
    reward: float | None
    time: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.dir.name


class SessionStore:
    """Files of one session directory (no search logic)."""

    def __init__(self, root: str | os.PathLike):
        self.root = FsPath(root)

    # -- session.json ------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.root / SESSION_FILE).exists()

    def create(self, info: Mapping[str, Any]) -> None:
        if self.exists():
            raise SessionError(f"{self.root / SESSION_FILE}: a session already exists here; resume it "
                               f"(--resume) or choose another directory")
        self.root.mkdir(parents=True, exist_ok=True)
        leftovers = [p.name for p in self.root.iterdir() if is_kernel_dir_name(p.name)]
        if leftovers:
            raise SessionError(f"{self.root}: holds kernel directories ({leftovers[0]}, ...) but no "
                               f"{SESSION_FILE}; refusing to mix sessions")
        write_json_atomic(self.root / SESSION_FILE, {**info, "created": _now()})

    def info(self) -> dict[str, Any]:
        try:
            data = read_json(self.root / SESSION_FILE)
        except SessionError as exc:
            if not (self.root / SESSION_FILE).exists():
                raise
            # not "move it away": a session without session.json cannot be resumed at all
            raise SessionError(f"{exc}; the session's options are damaged. Nothing was changed; repair the file "
                               f"(its kernel directories are intact and readable with syno show)") from None
        if not isinstance(data, dict) or "options" not in data:
            raise SessionError(f"{self.root / SESSION_FILE}: not a syno session file (no 'options')")
        return data

    def update_options(self, options: Mapping[str, Any]) -> None:
        """Replace the stored options; only for a session that holds no kernel yet (a retried search)."""
        if self.kernel_dirs():
            raise SessionError(f"{self.root / SESSION_FILE}: the options of a session with evaluated kernels are fixed")
        info = self.info()
        write_json_atomic(self.root / SESSION_FILE, {**info, "options": dict(options), "updated": _now()})

    # -- state.json / inflight.json --------------------------------------------------------------
    def save_state(self, state: Mapping[str, Any]) -> None:
        write_json_atomic(self.root / STATE_FILE, {"format": STATE_FORMAT, "saved": _now(), **state})

    def load_state(self) -> dict[str, Any] | None:
        p = self.root / STATE_FILE
        if not p.exists():
            return None
        try:
            data = read_json(p)
        except SessionError as exc:
            raise SessionError(f"{exc}. Nothing was changed; move the file away (or resume with --rebuild-state) "
                               f"to rebuild the search state from the kernel directories") from None
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT or "algorithm" not in data:
            raise SessionError(f"{p}: not a syno session checkpoint (format {STATE_FORMAT!r} expected). Nothing "
                               f"was changed; move the file away to rebuild the search state from the kernel "
                               f"directories")
        return data

    def save_inflight(self, paths: Iterable[str]) -> None:
        write_json_atomic(self.root / INFLIGHT_FILE, {"paths": list(paths)})

    def load_inflight(self) -> list[str]:
        p = self.root / INFLIGHT_FILE
        if not p.exists():
            return []
        try:
            data = read_json(p)
        except SessionError as exc:
            raise SessionError(f"{exc}; the list of interrupted kernels is damaged. Nothing was changed; repair "
                               f"it or move the file away (those kernels are then not submitted again) and "
                               f"resume again") from None
        if not isinstance(data, dict) or not isinstance(data.get("paths"), list):
            raise SessionError(f"{p}: expected {{\"paths\": [...]}}; move the file away (its kernels are then "
                               f"not re-submitted) and resume again")
        return [str(x) for x in data["paths"]]

    # -- kernel directories ------------------------------------------------------------------------
    def kernel_dirs(self) -> list[FsPath]:
        if not self.root.exists():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and is_kernel_dir_name(p.name))

    def kernels(self) -> list[KernelRecord]:
        """Every readable kernel directory, in evaluation order (meta ``time``); see :meth:`scan`."""
        return self.scan()[0]

    def scan(self) -> tuple[list[KernelRecord], list[str]]:
        """Readable kernels in evaluation order, and one line per kernel directory that cannot be read
        (it is left on disk as it is; the line says which directory to repair or move away)."""
        out, problems = [], []
        for d in self.kernel_dirs():
            k = read_kernel_dir(d)
            try:
                if k.problem:
                    raise ValueError(k.problem)
                meta = k.meta
                res = EvalResult.from_dict(meta["result"])
                rec = KernelRecord(d, str(meta["path"]), str(meta["hash"]), res, k.record.reward,
                                   float(meta["time"]), meta)
                path_from_str(rec.path)
            except (KeyError, TypeError, ValueError) as exc:
                what = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
                problems.append(f"{d}: kernel skipped, {what}; it stays on disk unchanged (repair its meta.json or "
                                f"move the directory {d.name} out of the session)")
                continue
            out.append(rec)
        out.sort(key=lambda r: (r.time, r.name))
        return out, problems

    def clean_tmp(self) -> None:
        """Remove half-written kernel directories left by a kill (their kernels are re-evaluated)."""
        if self.root.exists():
            for p in self.root.iterdir():
                if p.name.startswith(".tmp-") and p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)

    def write_kernel(self, name: str, meta: Mapping[str, Any], files: Mapping[str, str], *,
                     replace: bool = False) -> FsPath:
        """``replace``: rewrite ``meta.json`` (and ``files``) of an existing directory, atomically each (a
        promoted kernel's new rung); otherwise an existing directory is never rewritten."""
        return write_kernel_dir_atomic(self.root, name, meta, files, replace=replace)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunSummary:
    evaluated: int          # kernel directories in the session after the run
    new: int                # evaluated by this run
    reissued: int           # in-flight paths from an interrupted run that were submitted again
    best: KernelRecord | None
    elapsed: float          # session time (all runs)
    stop_reason: str


class SearchRunner:
    """Drives ``algorithm`` with ``evaluator`` and records every kernel in ``store``.

    ``problem`` supplies ``identify(path) -> hash`` and ``artifacts(path) -> (files, meta)``; see
    :mod:`syno.search.problem`. Call :meth:`restore` (resume) before :meth:`run`.
    ``on_event(kind, data)`` receives ``"kernel"`` (a :class:`KernelRecord`) and ``"tick"`` events.
    """

    def __init__(self, store: SessionStore, problem, algorithm: SearchAlgorithm, evaluator: Evaluator,
                 reward: RewardConfig, *, checkpoint_interval: float = 30.0,
                 on_event: Callable[[str, Any], None] | None = None, info: Mapping[str, Any] | None = None,
                 fidelity: Asha | None = None):
        self.store = store
        self.problem = problem
        self.algo = algorithm
        self.evaluator = evaluator
        self.reward = reward
        self.checkpoint_interval = checkpoint_interval
        self.on_event = on_event or (lambda kind, data: None)
        self.info = dict(info or {})
        self.records: list[KernelRecord] = []
        self.by_hash: dict[str, KernelRecord] = {}
        self.inflight: dict[str, str] = {}      # path -> hash
        self.inflight_hash: dict[str, str] = {}  # hash -> path
        self.reissue: deque[str] = deque()
        self.elapsed_offset = 0.0
        self._t0 = time.monotonic()
        self._last_ckpt = time.monotonic()
        self._hash_cache: dict[str, str] = {}
        self.new = 0
        self.reissued = 0
        self._started: dict[str, float] = {}
        self.skipped: list[str] = []  # kernels restore() could not replay (one line each)
        self._durations: list[float] = []
        self.fidelity = fidelity  # rungs (syno.search.fidelity): promotions go before new kernels

    # -- resume ------------------------------------------------------------------------------
    def restore(self, rebuild_state: bool = False) -> dict[str, Any]:
        """Load the checkpoint, replay kernel directories it lacks, queue interrupted paths.

        A kernel that cannot be replayed (its directory is damaged, or its path does not exist in this
        session's synthesis space) never blocks the resume: it is left on disk unchanged, reported as
        one line in ``"skipped"``, and the rest resumes. A replayable-but-unplaceable kernel still
        counts: its operator is not evaluated again."""
        self.store.clean_tmp()
        records, skipped = self.store.scan()
        state = None if rebuild_state else self.store.load_state()
        if state is not None:
            try:
                self.algo.load_state_dict(state["algorithm"])
            except (KeyError, ValueError, TypeError) as exc:
                raise SessionError(f"{self.store.root / STATE_FILE}: cannot restore the search state "
                                   f"({type(exc).__name__}: {exc}). Nothing was changed; resume with "
                                   f"--rebuild-state to rebuild it from the kernel directories") from None
            self.elapsed_offset = float(state.get("elapsed", 0.0))
        replayed = 0
        if self.fidelity is not None:
            self.fidelity.load((r.hash, r.path, r.meta.get("rungs") or []) for r in records)
        for rec in records:
            self._remember(rec)
            try:
                if not self.algo.is_evaluated(rec.path):
                    self.algo.report(rec.path, self._rung_result(rec.hash, rec.result))
                    replayed += 1
            except ValueError as exc:  # the space cannot place this path: keep the kernel, skip the replay
                skipped.append(f"{rec.dir}: not replayed into the search, its path does not exist in this "
                               f"session's synthesis space ({exc}); the kernel is kept")
        if records:
            self.elapsed_offset = max(self.elapsed_offset, max(r.time for r in records))
        # an interrupted promotion ("<path>@<rung>") is found again by the rung rule and continues from its
        # training checkpoint; only rung-0 paths are re-submitted here
        candidates = [path_to_str(p) for p in self.algo.pending] + [
            p for p in self.store.load_inflight() if split_task(p)[1] == 0]
        for p in candidates:
            try:
                h = self._identify(p)
            except ValueError as exc:  # an in-flight path this space cannot rebuild: nothing to re-submit
                skipped.append(f"{self.store.root / INFLIGHT_FILE}: interrupted path {p} not submitted again ({exc})")
                continue
            if h in self.by_hash or p in self.reissue or any(self._identify(q) == h for q in self.reissue):
                continue
            self.reissue.append(p)
        self._t0 = time.monotonic()
        self.skipped = skipped
        return {"kernels": len(records), "replayed": replayed, "reissue": len(self.reissue), "skipped": skipped}

    # -- bookkeeping -------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.elapsed_offset + (time.monotonic() - self._t0)

    def _identify(self, path: str) -> str:
        h = self._hash_cache.get(path)
        if h is None:
            h = self._hash_cache[path] = self.problem.identify(split_task(path)[0])
        return h

    def _remember(self, rec: KernelRecord) -> None:
        self.records.append(rec)
        self.by_hash.setdefault(rec.hash, rec)

    def best(self) -> KernelRecord | None:
        ok = [r for r in self.records if r.reward is not None]
        if not ok:
            return None
        # multi-fidelity: the highest rung first, as the leaderboard ranks (syno.search.leaderboard)
        rung = (lambda r: self.fidelity.rung_of(r.hash)) if self.fidelity is not None else (lambda r: 0)
        return max(ok, key=lambda r: (rung(r), r.reward, r.result.accuracy if self.reward.target == "accuracy"
                                      else -r.result.loss))

    def checkpoint(self) -> None:
        self.store.save_state({"algorithm": self.algo.state_dict(), "algorithm_name": self.algo.name,
                               "elapsed": self.elapsed(), "evaluated": len(self.records),
                               "stats": jsonable(self.algo.stats())})
        self._last_ckpt = time.monotonic()

    def _submit(self, path: str) -> None:
        h = self._identify(path)
        self.evaluator.submit(path)
        self._started[path] = time.monotonic()
        self.inflight[path] = h
        self.inflight_hash[h] = path
        self.store.save_inflight(self.inflight)

    def _record(self, path: str, result: EvalResult) -> KernelRecord:
        h = self.inflight.pop(path, None) or self._identify(path)
        self.inflight_hash.pop(h, None)
        reward = self.reward(result)
        started = self._started.pop(path, None)
        if started is not None:
            self._durations.append(time.monotonic() - started)
        try:
            files, extra = self.problem.artifacts(path)
        except Exception as exc:  # noqa: BLE001 - artifacts are best effort; the result is what counts
            files, extra = {}, {"artifact_error": f"{type(exc).__name__}: {exc}"}
        meta = jsonable({
            "schema": META_SCHEMA_VERSION, "target": self.reward.target, "path": path, "hash": h,
            "status": result.status, "accuracy": result.accuracy, "loss": result.loss,
            "flops": result.flops, "params": result.params, "time": self.elapsed(), "eval_time": result.time,
            "reward": reward, "message": result.message, "algorithm": self.algo.name,
            **self.info, **extra, "result": result.to_dict(),
            # measured latencies (syno.search.latency) as the schema's latency block
            **({"latency": result.extra["latency"]} if result.extra.get("latency") else {}),
            # learning curve of rung 0 (multi-fidelity sessions; syno.search.fidelity)
            **({"rung": 0, "rungs": [self._rung_entry(result, 0)]} if self.fidelity is not None else {}),
        })
        name = kernel_dir_name(h, ok=result.ok, target=self.reward.target, accuracy=result.accuracy, loss=result.loss)
        d = self.store.write_kernel(name, meta, files)
        rec = KernelRecord(d, path, h, result, reward, meta["time"], meta)
        self._remember(rec)
        self.new += 1
        self.store.save_inflight(self.inflight)
        if self.fidelity is not None:
            self.fidelity.record(h, path, 0, reward is not None, self._metric(result), result.time)
        try:
            self.algo.report(path, result)
        except ValueError:
            pass  # the kernel is recorded; an algorithm that cannot place it just skips it
        self.on_event("kernel", rec)
        return rec

    # -- rungs (syno.search.fidelity) -------------------------------------------------------------
    def _metric(self, result: EvalResult) -> float | None:
        v = result.loss if self.reward.target == "loss" else result.accuracy
        return v if v is not None and math.isfinite(v) else None

    def _rung_entry(self, result: EvalResult, rung: int) -> dict[str, Any]:
        """meta.json's ``rungs`` entry of one rung's result (:class:`syno.session.schema.Rung`)."""
        o = self.fidelity.o
        return jsonable({"rung": rung, "budget": o.rungs[rung], "unit": o.unit, "status": result.status,
                         "accuracy": result.accuracy, "loss": result.loss, "curve": result.extra.get("curve") or [],
                         "time": result.time, "message": result.message[-500:]})

    def _rung_result(self, h: str, result: EvalResult) -> EvalResult:
        """What the algorithm sees: the result at the kernel's highest rung on rung 0's scale."""
        norm = self.fidelity.normalized(h) if self.fidelity is not None else None
        if norm is None or norm[0] == 0 or not result.ok:
            return result
        key = "loss" if self.reward.target == "loss" else "accuracy"
        return EvalResult(**{**result.__dict__, key: norm[1]})

    def _promoted(self, task: str, result: EvalResult) -> KernelRecord | None:
        """A promoted kernel's next rung finished: its meta.json gets the rung, and on success the kernel
        takes that rung's result (directory renamed to the new accuracy) and the algorithm's reward is
        revised. A kernel that fails at a higher rung keeps its lower rung's result and is not promoted
        again."""
        path, rung = split_task(task)
        h = self.inflight.pop(task, None) or self._identify(task)
        self.inflight_hash.pop(h, None)
        self._started.pop(task, None)
        self.store.save_inflight(self.inflight)
        old = self.by_hash.get(h)
        if old is None or self.fidelity is None:
            return None
        ok = result.ok and self.reward(result) is not None
        self.fidelity.record(h, path, rung, ok, self._metric(result), result.time)
        meta = dict(old.meta)
        meta["rungs"] = [r for r in meta.get("rungs") or [] if r.get("rung") != rung] + [self._rung_entry(result, rung)]
        meta["eval_time"] = (meta.get("eval_time") or 0.0) + result.time
        res, reward = old.result, old.reward
        if ok:
            # the latency is the operator's, measured once before rung 0 (syno.search.latency): kept
            lat = {k: v for k, v in old.result.extra.items() if k in ("latency", "speedup", "latency_seconds")}
            res = EvalResult(**{**result.__dict__, "time": meta["eval_time"], "extra": {**lat, **result.extra}})
            reward = self.reward(self._rung_result(h, res))
            meta.update(jsonable({"rung": rung, "status": res.status, "accuracy": res.accuracy, "loss": res.loss,
                                  "flops": res.flops or old.result.flops, "params": res.params or old.result.params,
                                  "reward": reward, "message": res.message, "result": res.to_dict()}))
        else:
            meta["rung_failed"] = {"rung": rung, "status": result.status, "message": result.message[-2000:]}
        d = self.store.write_kernel(old.name, meta, {}, replace=True)
        name = kernel_dir_name(h, ok=res.ok, target=self.reward.target, accuracy=res.accuracy, loss=res.loss)
        if ok and name != d.name and not (d.parent / name).exists():
            try:
                os.rename(d, d.parent / name)  # the name's prefix follows the kernel's best rung
                d = d.parent / name
            except OSError:
                pass
        rec = KernelRecord(d, old.path, h, res, reward, old.time, meta)
        self.records[self.records.index(old)] = rec
        self.by_hash[h] = rec
        if ok and hasattr(self.algo, "revise"):
            try:
                self.algo.revise(old.path, self._rung_result(h, res))
            except ValueError:
                pass
        if ok:
            self._renormalise(rung, skip=h)
        self.on_event("kernel", rec)
        return rec

    def _renormalise(self, rung: int, skip: str) -> None:
        """The new pair moved the offset of ``rung`` (``Asha.offset``): the other kernels at that rung were
        rewarded with the old one, and the first ones, rewarded before the offset was trusted, with their raw
        long-training accuracy. Their rewards (meta.json, the algorithm's statistics) follow the offset, so
        that rewards at one rung stay comparable with each other and with rung 0."""
        for h, rec in list(self.by_hash.items()):
            if h == skip or rec.reward is None or self.fidelity.rung_of(h) != rung:
                continue
            seen = self._rung_result(h, rec.result)
            reward = self.reward(seen)
            if reward is None or abs(reward - rec.reward) < 1e-9:
                continue
            meta = {**rec.meta, "reward": reward}
            try:
                d = self.store.write_kernel(rec.name, meta, {}, replace=True)
            except OSError:
                continue  # the kernel keeps its old reward on disk; the next promotion tries again
            new = KernelRecord(d, rec.path, h, rec.result, reward, rec.time, meta)
            self.records[self.records.index(rec)] = new
            self.by_hash[h] = new
            if hasattr(self.algo, "revise"):
                try:
                    self.algo.revise(rec.path, seen)
                except ValueError:
                    pass

    # -- main loop -----------------------------------------------------------------------------
    def run(self, max_evaluations: int | None = None, budget_seconds: float | None = None,
            drain_seconds: float | None = None, max_idle_proposals: int = 50) -> RunSummary:
        """Evaluate until ``max_evaluations`` kernels exist in the session, ``budget_seconds`` of this
        run have passed, or the space is used up. Kernels still running at the deadline may finish
        for ``drain_seconds`` more (None: wait for them); after that they are abandoned and will be
        submitted again by the next resume."""
        start = time.monotonic()
        deadline = start + budget_seconds if budget_seconds is not None else None
        stop_reason = ""
        idle = 0
        try:
            while True:
                now = time.monotonic()
                total = len(self.records) + len(self.inflight)
                if max_evaluations is not None and len(self.records) >= max_evaluations:
                    stop_reason = f"reached {max_evaluations} kernels"
                    if not self.inflight:
                        break
                if deadline is not None and now >= deadline:
                    stop_reason = stop_reason or "time budget used"
                    if not self.inflight:
                        break
                    if drain_seconds is not None and now >= deadline + drain_seconds:
                        break
                budget_done = False
                room = self.evaluator.capacity()
                if max_evaluations is not None:
                    room = min(room, max_evaluations - total)
                if deadline is not None and now >= deadline:
                    room = 0
                elif deadline is not None and self._durations:
                    # do not start kernels that would finish after the budget (median of recent ones)
                    recent = sorted(self._durations[-10:])
                    if now + recent[len(recent) // 2] > deadline:
                        room = 0
                        budget_done = True
                submitted = 0
                while room > 0 and self.fidelity is not None:
                    left = None if deadline is None else deadline - now
                    promo = self.fidelity.next_promotion(self.inflight_hash, time_left=left)
                    if promo is None:
                        break
                    self.fidelity.mark_started(promo[0], promo[2])
                    self._submit(rung_task(promo[1], promo[2]))
                    room -= 1
                    submitted += 1
                while room > 0 and self.reissue:
                    p = self.reissue.popleft()
                    if self._identify(p) in self.by_hash or self._identify(p) in self.inflight_hash:
                        continue
                    self._submit(p)
                    self.reissued += 1
                    room -= 1
                    submitted += 1
                if room > 0 and not self.algo.exhausted:
                    for p in self.algo.propose(room):
                        ps = path_to_str(p)
                        h = self._identify(ps)
                        if h in self.by_hash:  # same operator reached another way: reuse its result
                            self.algo.report(ps, self.by_hash[h].result)
                            continue
                        if h in self.inflight_hash:
                            continue
                        self._submit(ps)
                        submitted += 1
                if not self.inflight:
                    if budget_done:
                        stop_reason = stop_reason or "time budget used (no time left for another kernel)"
                        break
                    if self.algo.exhausted and not self.reissue:
                        stop_reason = stop_reason or "search space exhausted"
                        break
                    if submitted == 0:
                        idle += 1
                        if idle >= max_idle_proposals:
                            stop_reason = stop_reason or "no new kernel found"
                            break
                        continue
                idle = 0
                wait = 1.0
                if deadline is not None:
                    wait = max(0.0, min(wait, deadline - time.monotonic())) if time.monotonic() < deadline else 1.0
                for path, res in self.evaluator.poll(timeout=wait):
                    if split_task(path)[1]:
                        self._promoted(path, res)
                    else:
                        self._record(path, res)
                self.on_event("tick", self)
                if time.monotonic() - self._last_ckpt >= self.checkpoint_interval:
                    self.checkpoint()
        finally:
            self.checkpoint()
        return RunSummary(len(self.records), self.new, self.reissued, self.best(), self.elapsed(), stop_reason)

