"""What a search optimizes: accuracy alone (the original) or accuracy and measured speed.

``objective.kind`` (``syno search --objective``):

* ``accuracy``: the reward of :class:`~syno.search.base.RewardConfig` (the original's, under its
  FLOPs window);
* ``speed``: that reward times a speed factor, ``r = r_acc * min(1, s / speedup_target) ** speed_weight``
  with ``s`` the kernel's measured speedup over the original model (:mod:`syno.search.latency`), so
  at equal accuracy a faster kernel always scores higher, one at ``speedup_target`` or faster gets
  the full accuracy reward, and the reward stays in ``[0, 1]``. A kernel without a measured speedup
  fails (it cannot be ranked by speed).

``objective.min_speedup`` (``--min-speedup``, either objective): a kernel measured slower than this is
not trained at all (it is timed first) and is recorded with status ``slow``, a failure, as the
original treated kernels outside its FLOPs window.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .base import EvalResult, RewardConfig

__all__ = ["ObjectiveOptions", "Objective", "make_reward", "SLOW", "slow_reason"]

SLOW = "slow"  #: the status of a kernel rejected by --min-speedup (registered in syno.session.status)


class ObjectiveOptions(BaseModel):
    """``objective.*`` options."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["accuracy", "speed"] = Field("accuracy", description="accuracy: the original's reward; speed: "
                                               "accuracy reward times a measured-speedup factor")
    min_speedup: float | None = Field(None, gt=0, description="kernels measured slower than this (speedup over "
                                      "the original model) get status 'slow' and are not trained")
    speedup_target: float = Field(2.0, gt=0, description="speed objective: speedup that earns the full reward")
    speed_weight: float = Field(1.0, ge=0, description="speed objective: exponent of the speed factor")


def slow_reason(speedup: float | None, min_speedup: float | None) -> str | None:
    """Why a kernel with measured ``speedup`` is rejected by ``min_speedup`` (None: it is not)."""
    if min_speedup is None or speedup is None:
        return None
    if speedup < min_speedup:
        return f"measured speedup {speedup:.3f} < --min-speedup {min_speedup:g}"
    return None


class Objective:
    """The reward of a search: callable on an :class:`EvalResult` like :class:`RewardConfig` (whose
    attributes, e.g. ``target``, it exposes), ``None`` for a failed kernel."""

    def __init__(self, reward: RewardConfig, objective: ObjectiveOptions | None = None):
        self.reward = reward
        self.objective = objective or ObjectiveOptions()

    def __getattr__(self, name: str) -> Any:
        if name in ("reward", "objective"):  # not yet set (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.reward, name)

    def __call__(self, result: EvalResult) -> float | None:
        r = self.reward(result)
        if r is None or self.objective.kind == "accuracy":
            return r
        s = result.extra.get("speedup") if isinstance(result.extra, dict) else None
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s) or s <= 0:
            return None
        o = self.objective
        return r * min(1.0, s / o.speedup_target) ** o.speed_weight


def make_reward(options) -> Objective:
    """The reward function of a search's options (``reward`` and ``objective``); refuses a speed objective
    or a minimum speedup that nothing would measure (every kernel would fail)."""
    objective = getattr(options, "objective", None) or ObjectiveOptions()
    wants = "--objective speed" if objective.kind == "speed" else \
        "--min-speedup" if objective.min_speedup is not None else None
    if wants is not None:
        if getattr(options, "problem", None) is not None:
            raise ValueError(f"{wants}: the {options.model!r} problem's kernels are not timed (no latency to judge "
                             f"them by)")
        if not options.latency.enabled:
            raise ValueError(f"{wants} needs measured latencies, but latency.enabled is false")
    return Objective(options.reward, objective)
