"""Multi-fidelity evaluation: successive-halving rungs with asynchronous promotion (ASHA).

A kernel is first trained for the cheapest budget (rung 0, e.g. 1 epoch). Whenever a worker is free
the runner asks :meth:`Asha.next_promotion` before proposing a new kernel: a kernel that is among the
best ``1 / reduction`` of the results of its rung (and above the rung's accuracy floor, the old
``prune_milestones``) is trained on to the next rung's budget, continuing from its checkpoint. No
worker ever waits for a rung to fill up (Li et al., "A System for Massively Parallel Hyperparameter
Tuning", MLSys 2020, Algorithm 2).

The rule is written here (forty lines) rather than taken from Optuna's ``SuccessiveHalvingPruner`` or
Ray Tune's ``ASHAScheduler``: both own the trial loop (a trial reports intermediate values and the
library decides to stop it), while here the search owns the loop and a kernel's training stops at
every rung and may be resumed much later, in another worker, after a kill. The bookkeeping must be
rebuilt from the kernel directories on resume, and neither library's state is stored there; Ray Tune
would also make Ray a base dependency.

Three schedules (``FidelityOptions.schedule``):

* ``prefix``: the trainer's schedule spans the top rung (``schedule_budget``), so a rung's result is a
  prefix of one run: the top rung's result *is* the long training's result, and a promoted kernel goes
  on from the checkpoint of its last rung. Its weakness: rung 0 is a few epochs at the long schedule's
  undecayed learning rate, where most kernels still sit near chance (a poor ranking).
* ``restart``: each rung's schedule ends at its own budget and a promotion continues from the
  checkpoint on the long schedule's tail (a warm restart): rung 0 ranks well, the top rung is no longer
  the long run.
* ``fresh``: each rung is the plain recipe at its budget, trained from scratch (its own checkpoint, so
  it still resumes mid-rung): rung 0 ranks as well as a short decayed run does and the top rung *is* the
  long run, at the price of retraining rung 0's few epochs on promotion. Measured on digits, 3 epochs of
  their own schedule rank kernels like 15-epoch training at Spearman 0.96 (39 kernels; 0.93 over 145, where
  5 epochs reach 0.95), 3 epochs of the 15-epoch schedule at 0.78 (benchmarks/README.md "Proxy fidelity").

Tasks handed to evaluators are strings: rung 0 is the kernel's path itself (so a session without
rungs looks exactly as before) and rung ``k > 0`` is ``"<path>@<k>"``; ``@`` never occurs in a path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any, Iterable, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["FidelityOptions", "Asha", "RungResult", "rung_task", "split_task", "rung_train_options",
           "checkpoint_file", "rung_checkpoint", "rung_checkpoint_done"]

_SEP = "@"


class FidelityOptions(BaseModel):
    """``fidelity.*`` options of a search (``--set fidelity.rungs=[1,3,15]``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="train kernels in rungs of increasing budget (ASHA)")
    rungs: list[float] = Field(default_factory=lambda: [1, 3, 9],
                               description="budgets of the rungs, cheapest first (epochs, or steps for lm)")
    unit: Literal["epochs", "steps"] = "epochs"
    reduction: float = Field(3.0, gt=1.0, description="promote the best 1/reduction of a rung")
    min_accuracy: dict[int, float] = Field(default_factory=dict, description="{rung budget: accuracy a kernel "
                                           "needs there to be promoted} (train.prune_milestones become these)")
    schedule_budget: float | None = Field(None, description="budget the learning-rate schedule spans (None: "
                                          "the top rung, so every rung is a prefix of the long run)")
    keep_checkpoints: bool = Field(False, description="keep a kernel's training checkpoint after its last rung")
    schedule: Literal["prefix", "restart", "fresh"] = Field(
        "prefix", description="prefix: one schedule over schedule_budget, stopped at each rung (the top rung is the "
        "long run); restart: each rung's schedule ends at its own budget (rung 0 is the plain short recipe; a "
        "promotion continues from the checkpoint with the schedule stretched to the new budget); fresh: each rung "
        "is the plain recipe at its budget, trained from scratch (rung 0 the short recipe, the top rung the long run)")

    @field_validator("rungs")
    @classmethod
    def _rungs(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("fidelity.rungs: at least one budget")
        if any(b <= 0 for b in v) or any(b >= c for b, c in zip(v, v[1:])):
            raise ValueError(f"fidelity.rungs: positive and increasing budgets expected, got {v}")
        return [float(b) for b in v]

    @model_validator(mode="after")
    def _schedule(self) -> FidelityOptions:
        if self.schedule_budget is not None and self.schedule_budget < self.rungs[-1]:
            raise ValueError(f"fidelity.schedule_budget {self.schedule_budget} is below the top rung {self.rungs[-1]}")
        return self

    def with_milestones(self, milestones: Mapping[int, float]) -> FidelityOptions:
        """The trainer's ``prune_milestones`` as rungs: each milestone epoch becomes a rung (if it is
        not one already) whose accuracy floor blocks promotion, instead of a second pruning rule."""
        if not milestones:
            return self
        rungs = sorted(set(self.rungs) | {float(e) for e in milestones if e < self.rungs[-1]})
        floors = {**{int(e): float(a) for e, a in milestones.items()}, **self.min_accuracy}
        return self.model_copy(update={"rungs": rungs, "min_accuracy": floors})

    @property
    def top(self) -> float:
        return self.schedule_budget or self.rungs[-1]

    def added(self, rung: int) -> float:
        """Budget a promotion to ``rung`` trains: the difference to the rung below when it continues from
        that rung's checkpoint, the whole budget for ``fresh`` (it starts again)."""
        below = 0.0 if rung == 0 or self.schedule == "fresh" else self.rungs[rung - 1]
        return self.rungs[rung] - below


def rung_task(path: str, rung: int) -> str:
    return path if rung == 0 else f"{path}{_SEP}{rung}"


def split_task(task: str) -> tuple[str, int]:
    """``(path, rung)`` of an evaluator task (see the module docstring)."""
    path, sep, rung = task.rpartition(_SEP)
    if not sep:
        return task, 0
    if not rung.isdigit():
        raise ValueError(f"malformed rung task {task!r}")
    return path, int(rung)


def checkpoint_file(session_dir: str, kernel_hash: str) -> FsPath:
    """Where a kernel's training state is kept between rungs (inside the session directory, so a
    resumed session, or a Ray worker on a shared file system, finds it)."""
    return FsPath(session_dir) / "checkpoints" / f"{kernel_hash}.pt"


def rung_checkpoint(session_dir: str, kernel_hash: str, fidelity: FidelityOptions, rung: int) -> FsPath:
    """The training-state file of rung ``rung`` of a kernel. ``prefix``/``restart``: one file per kernel,
    every rung continues it. ``fresh``: one per rung (``<hash>@<rung>.pt``), so a promotion starts from
    scratch yet resumes mid-rung after a kill."""
    base = checkpoint_file(session_dir, kernel_hash)
    if fidelity.schedule != "fresh" or rung == 0:
        return base
    return base.with_name(f"{kernel_hash}{_SEP}{rung}.pt")


def rung_checkpoint_done(session_dir: str, kernel_hash: str, fidelity: FidelityOptions, rung: int, ok: bool) -> None:
    """Remove the checkpoints no later rung will continue from: after the top rung or a failure, and for
    ``fresh`` after every rung (the next one starts again). ``keep_checkpoints`` keeps them."""
    if fidelity.keep_checkpoints:
        return
    if fidelity.schedule == "fresh" or rung == len(fidelity.rungs) - 1 or not ok:
        rung_checkpoint(session_dir, kernel_hash, fidelity, rung).unlink(missing_ok=True)


def rung_train_options(train, fidelity: FidelityOptions, rung: int):
    """The trainer options of rung ``rung``: ``prefix``, the schedule of the top budget stopped at this
    rung's; ``restart``/``fresh``, the schedule of this rung's own budget. Accuracy milestones are left to
    the rungs (:meth:`FidelityOptions.with_milestones`)."""
    budget = fidelity.rungs[rung]
    update: dict[str, Any] = {}
    if train.time_budget_s is not None:  # the per-kernel limit was set for rung 0's budget; a rung adds this much
        update["time_budget_s"] = train.time_budget_s * max(1.0, fidelity.added(rung) / fidelity.rungs[0])
    if fidelity.unit == "steps":
        return train.model_copy(update={**update, "max_iters": int(budget)})
    epochs = int(budget) if fidelity.schedule in ("restart", "fresh") else int(math.ceil(fidelity.top))
    return train.model_copy(update={**update, "epochs": epochs, "stop_epoch": int(budget), "prune_milestones": {}})


@dataclass
class RungResult:
    """One rung's outcome of one kernel (what meta.json's ``rungs`` block holds)."""

    rung: int
    budget: float
    ok: bool
    value: float | None          # accuracy (or loss for a loss target)
    time: float = 0.0


@dataclass
class _Kernel:
    path: str
    results: list[RungResult] = field(default_factory=list)
    promoted: set[int] = field(default_factory=set)   # rungs it was promoted *from*
    base_time: float | None = None                   # wall seconds of rung 0

    def top(self) -> RungResult | None:
        ok = [r for r in self.results if r.ok]
        return max(ok, key=lambda r: r.rung) if ok else None

    def failed_above(self) -> bool:
        return any(not r.ok for r in self.results)


class Asha:
    """ASHA bookkeeping for one session: rung results per kernel, the promotion rule, per-rung
    normalisation of the reward. Kernels are keyed by their operator hash."""

    def __init__(self, options: FidelityOptions, target: str = "accuracy"):
        self.o = options
        self.loss = target == "loss"
        self.kernels: dict[str, _Kernel] = {}

    # -- records --------------------------------------------------------------------------------
    def record(self, h: str, path: str, rung: int, ok: bool, value: float | None, time: float = 0.0) -> None:
        k = self.kernels.setdefault(h, _Kernel(path))
        k.results = [r for r in k.results if r.rung != rung]
        good = ok and value is not None and math.isfinite(value)
        k.results.append(RungResult(rung, self.o.rungs[rung] if rung < len(self.o.rungs) else math.nan, good,
                                    value if good else None, time))
        k.results.sort(key=lambda r: r.rung)
        if rung == 0:
            k.base_time = time
        if rung > 0:
            k.promoted.add(rung - 1)

    def load(self, entries: Iterable[tuple[str, str, list[Mapping[str, Any]]]]) -> None:
        """Rebuild from kernel directories: ``(hash, path, meta["rungs"])`` per kernel."""
        for h, path, rungs in entries:
            for i, r in enumerate(rungs):
                idx = int(r.get("rung", i))
                value = r.get("loss" if self.loss else "accuracy")
                self.record(h, path, idx, r.get("status") in ("ok",), value, float(r.get("time") or 0.0))

    def rung_of(self, h: str) -> int:
        """Highest rung with a successful result (-1: none)."""
        k = self.kernels.get(h)
        top = k.top() if k else None
        return top.rung if top else -1

    # -- promotion (ASHA) ------------------------------------------------------------------------
    def _score(self, v: float) -> float:
        return -v if self.loss else v

    def _floor_ok(self, rung: int, value: float) -> bool:
        floor = self.o.min_accuracy.get(int(self.o.rungs[rung]))
        return floor is None or self.loss or value >= floor

    def next_promotion(self, busy: Iterable[str] = (), time_left: float | None = None) -> tuple[str, str, int] | None:
        """``(hash, path, rung)`` of a kernel to train on to ``rung``, or None. Higher rungs first (as
        ASHA's ``get_job``); ``busy`` hashes are being evaluated; a promotion whose estimated time
        (rung-0 time scaled by the added budget) exceeds ``time_left`` is not started."""
        busy = set(busy)
        top_rung = len(self.o.rungs) - 1
        for rung in range(top_rung - 1, -1, -1):
            done = [(h, k) for h, k in self.kernels.items()
                    if any(r.rung == rung and r.ok for r in k.results)]
            n_top = int(len(done) // self.o.reduction)
            if n_top < 1:
                continue
            ranked = sorted(done, key=lambda hk: -self._score(next(r.value for r in hk[1].results if r.rung == rung)))
            for h, k in ranked[:n_top]:
                if rung in k.promoted or h in busy or k.failed_above():
                    continue
                value = next(r.value for r in k.results if r.rung == rung)
                if not self._floor_ok(rung, value):
                    continue
                if time_left is not None and k.base_time:
                    extra = k.base_time * self.o.added(rung + 1) / self.o.rungs[0]
                    if extra > time_left:
                        continue
                return h, k.path, rung + 1
        return None

    def mark_started(self, h: str, rung: int) -> None:
        """A promotion to ``rung`` was submitted (not proposed again while it runs or after it ends)."""
        self.kernels[h].promoted.add(rung - 1)

    # -- normalisation ---------------------------------------------------------------------------
    #: kernels measured at both rungs before their mean gain is trusted: with one, the offset would be
    #: that kernel's own gain and its normalised value its rung-0 value, whatever it learned since
    MIN_PAIRS = 3

    def offset(self, rung: int) -> float:
        """Mean change of the metric from rung 0 to ``rung`` over the kernels measured at both: what
        longer training adds to everyone, removed so that rungs are compared on rung 0's scale (0 until
        :attr:`MIN_PAIRS` kernels have both)."""
        if rung == 0:
            return 0.0
        diffs = []
        for k in self.kernels.values():
            a = next((r.value for r in k.results if r.rung == 0 and r.ok), None)
            b = next((r.value for r in k.results if r.rung == rung and r.ok), None)
            if a is not None and b is not None:
                diffs.append(b - a)
        return sum(diffs) / len(diffs) if len(diffs) >= self.MIN_PAIRS else 0.0

    def normalized(self, h: str) -> tuple[int, float] | None:
        """``(rung, value)``: the metric at the kernel's highest successful rung, on rung 0's scale."""
        k = self.kernels.get(h)
        top = k.top() if k else None
        if top is None:
            return None
        return top.rung, top.value - self.offset(top.rung)
