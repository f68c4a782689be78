"""``meta.json`` of a kernel directory as pydantic models.

Every field is optional with a default, unknown keys are kept (``extra="allow"``), and a file without
``schema`` is version 0 (written before the schema existed): old sessions always read, and a later
version only *adds* optional fields or blocks. Two extension blocks are defined now so later work has
a place that old readers ignore:

* ``latency``: measured latencies of the kernel (:class:`LatencyRecord`: ms, speedup over the
  original, implementation, dtype, batch, device, library versions);
* ``rungs``: multi-fidelity evaluations (:class:`Rung`: a training budget, its result and the
  learning curve), cheapest first.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ["META_SCHEMA_VERSION", "KernelMeta", "LatencyRecord", "Rung"]

#: version written by this code; readers accept any version (unknown fields are kept, not interpreted)
META_SCHEMA_VERSION = 1


def _finite(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{v!r} is not a number") from None
    return f if math.isfinite(f) else None


def _lenient(v: Any) -> float | None:
    """A number of an extension block: anything that is not a finite number reads as None."""
    try:
        return _finite(v)
    except ValueError:
        return None


class LatencyRecord(BaseModel):
    """One latency measurement of a kernel (or of the whole model with the kernel). Numbers are
    validated leniently (non-finite -> None) so that a failed timing never hides the kernel."""

    model_config = ConfigDict(extra="allow")

    ms: float | None = None                   #: median wall time (None: the timing failed)
    speedup: float | None = None              #: original / this, measured side by side in the same run

    _num = field_validator("ms", "speedup", mode="before")(classmethod(lambda cls, v: _lenient(v)))
    scope: str = "model"                      #: "model" (end to end) or "layer"
    implementation: str = ""                  #: e.g. "einsum", "fast:min", "triton"
    dtype: str = "float32"
    batch: int | None = None
    device: str = ""                          #: e.g. "cuda:0 NVIDIA H100", "cpu x2"
    versions: dict[str, str] = Field(default_factory=dict)   #: torch, triton, syno ...
    measured: str | None = None               #: ISO time


class Rung(BaseModel):
    """One fidelity of a multi-fidelity evaluation: the budget, the result and the learning curve."""

    model_config = ConfigDict(extra="allow")

    budget: float | None = None               #: e.g. epochs or training steps
    unit: str = "epochs"
    status: str = "ok"
    accuracy: float | None = None
    loss: float | None = None
    curve: list[dict[str, Any]] = Field(default_factory=list)   #: the trainer's history entries
    time: float | None = None                 #: wall seconds

    _num = field_validator("accuracy", "loss", "time", "budget", mode="before")(
        classmethod(lambda cls, v: _lenient(v)))


class KernelMeta(BaseModel):
    """``meta.json``. Numbers that were NaN/inf when written are stored as null and read as None."""

    model_config = ConfigDict(extra="allow")

    schema_: int = Field(0, alias="schema")   #: 0: written before the schema existed
    path: str = ""                            #: the kernel's path in the synthesis space
    hash: str = ""                            #: the operator hash (the directory name's suffix)
    status: str = "ok"                        #: see :mod:`syno.session.status`
    target: Literal["accuracy", "loss"] | None = None   #: what the directory-name prefix encodes
    accuracy: float | None = None
    loss: float | None = None
    flops: float | None = None                #: MACs per sample of the whole model with the kernel
    params: float | None = None
    time: float | None = None                 #: session seconds when the result arrived
    eval_time: float | None = None            #: wall seconds of the evaluation
    reward: float | None = None
    message: str = ""
    model: str | None = None
    dataset: str | None = None
    algorithm: str | None = None
    operator: dict[str, Any] | str | None = None   #: serialized IR (also in operator.json)
    operator_hash: str | None = None
    result: dict[str, Any] | None = None      #: the evaluator's full result (search kernels)
    latency: list[LatencyRecord] = Field(default_factory=list)
    rungs: list[Rung] = Field(default_factory=list)

    _nums = field_validator("accuracy", "loss", "flops", "params", "time", "eval_time", "reward",
                            mode="before")(classmethod(lambda cls, v: _finite(v)))

    @field_validator("latency", "rungs", mode="before")
    @classmethod
    def _blocks(cls, v: Any, info) -> list:
        """An extension block never makes the core record unreadable: entries that are not objects are
        dropped, entries that do not validate are kept as they are (unvalidated; the raw file has them)."""
        model = LatencyRecord if info.field_name == "latency" else Rung
        out = []
        for x in v if isinstance(v, list) else []:
            if isinstance(x, dict):
                try:
                    out.append(model.model_validate(x))
                except ValidationError:
                    out.append(model.model_construct(**x))
        return out

    @field_validator("message", mode="before")
    @classmethod
    def _text(cls, v: Any) -> str:
        return "" if v is None else str(v)

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, v: Any) -> str:
        return "ok" if v is None else str(v)

    def metric(self, key: str) -> float | None:
        """``key`` from the top level, else from ``result`` (older writers kept some numbers only there)."""
        v = getattr(self, key, None) if key in type(self).model_fields else (self.model_extra or {}).get(key)
        if v is None and isinstance(self.result, dict):
            try:
                v = _finite(self.result.get(key))
            except ValueError:
                v = None
        return v

    def dump(self) -> dict[str, Any]:
        """The JSON object to write (current schema version; empty extension blocks left out)."""
        d = self.model_dump(by_alias=True, exclude_none=False)
        d["schema"] = META_SCHEMA_VERSION
        for key in ("latency", "rungs"):
            if not d[key]:
                d.pop(key)
        return d
