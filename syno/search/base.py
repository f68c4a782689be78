"""What every search algorithm shares: evaluation results, the reward, the algorithm interface.

* :class:`EvalResult` is what an evaluator returns for one kernel (accuracy or loss, FLOPs, params,
  wall time, status). It is exactly what a kernel directory's ``meta.json`` stores, so a session can
  replay its kernels into a fresh algorithm.
* :class:`RewardConfig` turns a result into a reward in ``[0, 1]`` or ``None`` (a failed kernel).
  The same function is used for live updates and for replay on resume (the original used two
  different formulas and did not clamp at 1; see docs/search.md).
* :class:`SearchAlgorithm`: ``propose(k)`` paths to evaluate, ``report(path, result)`` their outcome,
  ``state_dict()`` / ``load_state_dict()`` for checkpoints.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

from syno.session.status import OK_STATUSES, is_ok
from syno.synth.protocol import Path, SynthNode, path_from_str, path_to_str

__all__ = ["EvalResult", "RewardConfig", "SearchAlgorithm", "FinalFilter", "Status", "as_path", "as_path_str",
           "OK_STATUSES"]

# A status name of syno.session.status.STATUSES (ok, pruned, error, nan, timeout, crash, filtered, ...);
# that table is the one place that says which statuses exist and which count as success.
Status = str

# A filter on final nodes applied before a kernel is handed out: returns None to accept, or a
# short reason to reject (the final is then marked dead without evaluation).
FinalFilter = Callable[[SynthNode], "str | None"]


def as_path(path: Path | str) -> Path:
    return path_from_str(path) if isinstance(path, str) else tuple(path)


def as_path_str(path: Path | str) -> str:
    return path if isinstance(path, str) else path_to_str(path)


@dataclass
class EvalResult:
    """Outcome of evaluating one kernel (one final node)."""

    status: Status = "ok"
    accuracy: float = 0.0          # best proxy accuracy in [0, 1] (accuracy target)
    loss: float = math.inf         # proxy loss (loss target; also recorded for classifiers)
    flops: int = 0                 # MACs per sample of the whole model with the kernel filled in
    params: int = 0                # parameters of the whole model
    time: float = 0.0              # wall seconds the evaluation took
    message: str = ""              # error text for failed kernels
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return is_ok(self.status)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not math.isfinite(d["loss"]):
            d["loss"] = None  # strict JSON has no Infinity
        if not math.isfinite(d["accuracy"]):
            d["accuracy"] = None
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalResult:
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in data.items() if k in known}
        if kw.get("loss") is None:
            kw["loss"] = math.inf
        if kw.get("accuracy") is None:
            kw["accuracy"] = math.nan
        return cls(**kw)


class RewardConfig(BaseModel):
    """Reward of a kernel, always in ``[0, 1]``; ``None`` marks a failed kernel.

    * ``target="accuracy"``: ``clamp((acc - lower) / (upper - lower), 0, 1) ** power``; a kernel
      whose accuracy is ``<= min_accuracy`` (default 0), NaN, or whose status is not ok fails.
    * ``target="loss"``: ``clamp((max_loss - loss) / max_loss, 0, 1) ** power``; a loss
      ``>= max_loss`` (or non-finite) fails.
    """

    model_config = ConfigDict(extra="forbid")

    target: Literal["accuracy", "loss"] = "accuracy"
    acc_lower: float = Field(0.0, ge=0.0, le=1.0)
    acc_upper: float = Field(1.0, ge=0.0, le=1.0)
    power: float = Field(2.0, gt=0.0)
    min_accuracy: float = Field(0.0, ge=0.0, le=1.0)
    max_loss: float = Field(6.9, gt=0.0)

    @model_validator(mode="after")
    def _check_bounds(self) -> RewardConfig:
        if self.acc_upper <= self.acc_lower:
            raise ValueError(f"acc_upper ({self.acc_upper}) must exceed acc_lower ({self.acc_lower})")
        return self

    def __call__(self, result: EvalResult) -> float | None:
        if not result.ok:
            return None
        if self.target == "accuracy":
            acc = result.accuracy
            if acc is None or not math.isfinite(acc) or acc <= self.min_accuracy:
                return None
            x = (acc - self.acc_lower) / (self.acc_upper - self.acc_lower)
        else:
            loss = result.loss
            if loss is None or not math.isfinite(loss) or loss >= self.max_loss:
                return None
            x = (self.max_loss - loss) / self.max_loss
        return min(1.0, max(0.0, x)) ** self.power


class SearchAlgorithm(ABC):
    """A search over a :class:`~syno.synth.protocol.SearchSpace`.

    ``propose(k)`` returns up to ``k`` paths of *final* nodes that have not been evaluated and are
    not in flight; ``report(path, result)`` feeds back an outcome. ``report`` also accepts paths the
    algorithm never proposed (replay of a session's kernels on resume) and duplicates (ignored).
    ``forget(path)`` withdraws an in-flight path without a result. State is JSON-serializable.
    """

    name: str = "abstract"

    @abstractmethod
    def propose(self, k: int = 1) -> list[Path]: ...

    @abstractmethod
    def report(self, path: Path | str, result: EvalResult) -> float | None:
        """Record ``result`` for ``path``; returns the reward used (None: failure)."""

    @abstractmethod
    def forget(self, path: Path | str) -> None: ...

    @property
    @abstractmethod
    def exhausted(self) -> bool:
        """True when no unevaluated final remains reachable (the space is used up)."""

    @property
    @abstractmethod
    def pending(self) -> list[Path]:
        """Paths proposed and not yet reported."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def is_evaluated(self, path: Path | str) -> bool:
        """Whether the final reached by ``path`` already has a result (success or failure)."""

    def stats(self) -> dict[str, Any]:
        return {}
