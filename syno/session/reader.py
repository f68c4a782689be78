"""A tolerant reader of session directories: damaged files become ``problem`` strings, never exceptions.

Every consumer (``syno show``, ``select``, ``reevaluate``, ``bench``, ``plot``, ``report``) reads kernel
directories through :class:`KernelDir`; the search's resume reads them too and decides itself what a
problem means for it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from .files import SessionError, read_json
from .naming import Target, parse_kernel_dir_name
from .schema import KernelMeta
from .status import is_ok

__all__ = ["KernelDir", "read_kernel_dir", "scan_kernel_dirs", "read_session_info", "session_target"]


@dataclass
class KernelDir:
    """One kernel directory as read from disk.

    ``meta`` is the raw ``meta.json`` object (empty when missing or damaged), ``record`` the validated
    :class:`KernelMeta` (None then), ``problem`` says what could not be read. ``target`` is the
    session's target, used only to decode the directory-name prefix when ``meta.json`` is missing."""

    dir: Path
    meta: dict[str, Any] = field(default_factory=dict)
    record: KernelMeta | None = None
    problem: str = ""
    target: Target | None = None
    _operator: Any = field(default=None, repr=False)

    # -- identity ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def session(self) -> Path:
        return self.dir.parent

    @property
    def error(self) -> bool:
        """An ``ERROR_<hash>`` directory."""
        parsed = parse_kernel_dir_name(self.name)
        return bool(parsed and parsed[0])

    @property
    def hash(self) -> str:
        if self.record is not None and self.record.hash:
            return self.record.hash
        parsed = parse_kernel_dir_name(self.name)
        if parsed:
            return parsed[2]
        op = self.try_operator()
        return op.hash if op is not None else ""

    @property
    def path(self) -> str:
        return self.record.path if self.record is not None else ""

    @property
    def model(self) -> str | None:
        m = self.record.model if self.record is not None else None
        return m or None

    @property
    def dataset(self) -> str | None:
        return self.record.dataset if self.record is not None else None

    # -- results -----------------------------------------------------------------------------
    def _metric(self, key: str) -> float | None:
        return self.record.metric(key) if self.record is not None else None

    def _prefix(self, target: str) -> float | None:
        """The directory-name prefix, when ``meta.json`` is missing and the target is known."""
        parsed = parse_kernel_dir_name(self.name)
        if self.record is not None or not parsed or parsed[0] or self.target != target:
            return None
        return parsed[1] / (10000 if target == "accuracy" else 1000)

    @property
    def accuracy(self) -> float | None:
        v = self._metric("accuracy")
        return v if v is not None else self._prefix("accuracy")

    @property
    def loss(self) -> float | None:
        v = self._metric("loss")
        return v if v is not None else self._prefix("loss")

    @property
    def flops(self) -> float | None:
        return self._metric("flops")

    @property
    def params(self) -> float | None:
        return self._metric("params")

    @property
    def time(self) -> float | None:
        """Session seconds when the result arrived."""
        return self.record.time if self.record is not None else None

    @property
    def eval_time(self) -> float | None:
        if self.record is None:
            return None
        if self.record.eval_time is not None:
            return self.record.eval_time
        t = (self.record.result or {}).get("time")
        return float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) else None

    @property
    def reward(self) -> float | None:
        return self.record.reward if self.record is not None else None

    @property
    def status(self) -> str:
        if self.record is None:
            return "error" if self.error else "unknown"
        s = self.record.status
        if self.record.result and "status" not in self.meta:
            s = str(self.record.result.get("status") or s)
        if self.error:
            return s if not is_ok(s) else "error"
        return s

    @property
    def message(self) -> str:
        m = self.record.message if self.record is not None else ""
        if not m and self.record is not None and isinstance(self.record.result, dict):
            m = str(self.record.result.get("message") or "")
        return m or self.problem

    def metric(self, target: str) -> float | None:
        return self.loss if target == "loss" else self.accuracy

    @property
    def ok(self) -> bool:
        """Evaluated successfully, with a finite accuracy or loss."""
        return (not self.error and self.record is not None and is_ok(self.status)
                and (self.accuracy is not None or self.loss is not None))

    @property
    def usable(self) -> bool:
        """:attr:`ok` and its operator is on disk (selection, reevaluation and benchmarks need it)."""
        return self.ok and not self.problem and self.has_operator

    # -- files -------------------------------------------------------------------------------
    def text(self, name: str) -> str | None:
        p = self.dir / name
        try:
            return p.read_text() if p.is_file() else None
        except (OSError, UnicodeDecodeError):
            return None

    @property
    def loop_text(self) -> str | None:
        return self.text("loop.txt")

    @property
    def dot(self) -> str | None:
        return self.text("graph.dot")

    def standalone_module(self) -> Path | None:
        pys = sorted(p for p in self.dir.glob("*.py") if p.is_file())
        return pys[0] if pys else None

    @property
    def has_operator(self) -> bool:
        return (self.record is not None and self.record.operator is not None) or (self.dir / "operator.json").is_file()

    def operator_json(self) -> Any | None:
        """The serialized operator (``meta["operator"]`` or ``operator.json``), or None."""
        if self.record is not None and self.record.operator is not None:
            return self.record.operator
        txt = self.text("operator.json")
        if txt is None:
            return None
        try:
            return json.loads(txt)
        except ValueError:
            return None

    def operator(self):
        """The :class:`~syno.ir.graph.Operator` from its serialized IR (never by importing a ``.py``);
        raises ``ValueError`` naming the directory when there is none or it does not load."""
        if self._operator is None:
            from syno.ir.graph import Operator

            data = self.operator_json()
            if data is None:
                raise ValueError(f"{self.dir}: no readable serialized operator (meta.json 'operator' or operator.json)")
            try:
                self._operator = Operator.from_json(data) if isinstance(data, str) else Operator.from_dict(data)
            except Exception as exc:  # noqa: BLE001 - any decoding failure is the file's fault
                raise ValueError(f"{self.dir}: the serialized operator does not load ({type(exc).__name__}: "
                                 f"{exc})") from None
        return self._operator

    def try_operator(self):
        """:meth:`operator`, or None when it does not load."""
        try:
            return self.operator()
        except ValueError:
            return None

    def summary(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "name": self.name, "hash": self.hash, "accuracy": self.accuracy,
                "loss": self.loss, "flops": self.flops, "params": self.params, "status": self.status,
                "path": self.path}


def read_kernel_dir(d: str | Path, *, target: Target | None = None) -> KernelDir:
    """Read one kernel directory (any name); never raises for bad content."""
    k = KernelDir(dir=Path(d), target=target)
    mp = k.dir / "meta.json"
    if not mp.is_file():
        k.problem = "no meta.json"
        return k
    try:
        raw = read_json(mp)
        if not isinstance(raw, dict):
            raise SessionError(f"{mp}: not a JSON object")
    except SessionError as exc:
        k.problem = f"damaged meta.json ({str(exc).split(': ', 1)[-1]})"
        return k
    k.meta = raw
    try:
        k.record = KernelMeta.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        k.problem = f"invalid meta.json: {'.'.join(map(str, err['loc']))}: {err['msg']}"
    return k


def scan_kernel_dirs(root: str | Path, *, include_errors: bool = True, target: Target | None = None
                     ) -> list[KernelDir]:
    """Every kernel directory of a session, sorted by name (half-written ``.tmp-*`` ones are not kernels)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"session directory {str(root)!r} does not exist")
    out = []
    for d in sorted(root.iterdir()):
        parsed = parse_kernel_dir_name(d.name)
        if parsed is None or not d.is_dir() or (parsed[0] and not include_errors):
            continue
        out.append(read_kernel_dir(d, target=target))
    return out


def read_session_info(root: str | Path) -> tuple[dict[str, Any], str]:
    """``session.json`` as a dict and a problem string (``({}, "")`` when there is none)."""
    p = Path(root) / "session.json"
    if not p.is_file():
        return {}, ""
    try:
        data = read_json(p)
    except SessionError as exc:
        return {}, str(exc)
    if not isinstance(data, dict):
        return {}, f"{p}: not a JSON object"
    return data, ""


def session_target(info: dict[str, Any] | None, kernels: Iterable[KernelDir] = ()) -> Target:
    """The session's target: ``options.reward.target`` of ``session.json``, else the kernels' ``target``
    field, else ``loss`` when successful kernels have a loss and none an accuracy."""
    opts = (info or {}).get("options")
    reward = opts.get("reward") if isinstance(opts, dict) else None
    t = reward.get("target") if isinstance(reward, dict) else (info or {}).get("target")
    if t in ("accuracy", "loss"):
        return t
    kernels = list(kernels)
    marked = {k.record.target for k in kernels if k.record is not None and k.record.target}
    if len(marked) == 1:
        return marked.pop()
    oks = [k for k in kernels if k.ok]
    # an LM kernel may carry accuracy 0 next to its loss (older writers)
    if oks and all(k.accuracy is None or (k.accuracy == 0 and k.loss is not None) for k in oks) \
            and any(k.loss is not None for k in oks):
        return "loss"
    return "accuracy"
