"""Read a search session's kernel directories; write kernel directories and JSON files atomically.

Session layout (fixed by the project spec): ``<session>/`` holds one directory per evaluated kernel,
``<int(accuracy*10000):05d>_<operator hash>`` or ``ERROR_<hash>``, each with ``meta.json`` (keys
``path, accuracy, flops, params, time, loss, status`` and the serialized operator under
``"operator"``, as a dict or a JSON string) and/or ``operator.json``, plus ``loop.txt``,
``graph.dot`` and a standalone module ``.py``. Operators are always loaded from the serialized IR
(:meth:`syno.ir.graph.Operator.from_json`), never by importing the ``.py``.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from syno.ir.graph import Operator

__all__ = ["KernelRecord", "scan_session", "load_kernel", "kernel_dir_name", "write_json", "read_json",
           "write_kernel_dir", "OK_STATUSES", "KERNEL_DIR_RE"]

KERNEL_DIR_RE = re.compile(r"^(?P<acc>\d{5,}|ERROR)_(?P<hash>[0-9A-Za-z]+)$")
OK_STATUSES = frozenset({"ok", "pruned"})


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """Write strict JSON (NaN/inf become null) atomically: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_strict(obj), indent=indent, allow_nan=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _strict(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return _strict(obj.model_dump())
    return obj


@dataclass
class KernelRecord:
    """One kernel directory of a session."""

    dir: Path
    hash: str                       # from the directory name (the operator hash)
    meta: dict[str, Any] = field(default_factory=dict)
    error: bool = False             # an ERROR_<hash> directory
    problem: str = ""               # why the directory could not be read (then ``usable`` is False)
    _operator: Operator | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def accuracy(self) -> float | None:
        return _finite(self.meta.get("accuracy"))

    @property
    def loss(self) -> float | None:
        return _finite(self.meta.get("loss"))

    @property
    def flops(self) -> float | None:
        return _finite(self.meta.get("flops"))

    @property
    def params(self) -> float | None:
        return _finite(self.meta.get("params"))

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        return str(self.meta.get("status", "ok"))

    @property
    def path(self) -> str:
        return str(self.meta.get("path", ""))

    @property
    def usable(self) -> bool:
        """Evaluated successfully, with a finite accuracy or loss and a readable operator."""
        if self.error or self.problem or self.status not in OK_STATUSES:
            return False
        if self.accuracy is None and self.loss is None:
            return False
        return self.has_operator

    @property
    def has_operator(self) -> bool:
        return "operator" in self.meta or (self.dir / "operator.json").is_file()

    def operator(self) -> Operator:
        """The kernel's operator, from ``meta["operator"]`` or ``operator.json`` (cached)."""
        if self._operator is None:
            data = self.meta.get("operator")
            if data is None:
                data = (self.dir / "operator.json").read_text()
            self._operator = Operator.from_json(data) if isinstance(data, str) else Operator.from_dict(data)
        return self._operator

    def summary(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "name": self.name, "hash": self.hash, "accuracy": self.accuracy,
                "loss": self.loss, "flops": self.flops, "params": self.params, "status": self.status,
                "path": self.path}


def load_kernel(kernel_dir: str | Path) -> KernelRecord:
    """Read one kernel directory (any name; the hash falls back to the operator's own hash)."""
    d = Path(kernel_dir)
    m = KERNEL_DIR_RE.match(d.name)
    rec = KernelRecord(dir=d, hash=m.group("hash") if m else "", error=bool(m and m.group("acc") == "ERROR"))
    meta_path = d / "meta.json"
    if not meta_path.is_file():
        rec.problem = "no meta.json"
        if not (d / "operator.json").is_file():
            return rec
    else:
        try:
            meta = read_json(meta_path)
            if not isinstance(meta, dict):
                raise ValueError("meta.json is not an object")
            rec.meta = meta
        except (ValueError, OSError) as exc:
            rec.problem = f"unreadable meta.json: {exc}"
            return rec
    if not rec.hash and rec.has_operator:
        try:
            rec.hash = rec.operator().hash
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            rec.problem = f"unreadable operator: {exc}"
    return rec


def scan_session(session: str | Path, *, include_errors: bool = False) -> list[KernelRecord]:
    """All kernel directories of ``session`` (sorted by name), skipping anything not named like one."""
    root = Path(session)
    if not root.is_dir():
        raise FileNotFoundError(f"session directory {str(root)!r} does not exist")
    out = []
    for d in sorted(root.iterdir()):
        if not d.is_dir():
            continue
        m = KERNEL_DIR_RE.match(d.name)
        if not m:
            continue
        if m.group("acc") == "ERROR" and not include_errors:
            continue
        out.append(load_kernel(d))
    return out


def kernel_dir_name(accuracy: float | None, op_hash: str) -> str:
    """``<int(accuracy*10000):05d>_<hash>``, or ``ERROR_<hash>`` for a failed kernel."""
    if accuracy is None or not math.isfinite(accuracy) or accuracy < 0:
        return f"ERROR_{op_hash}"
    return f"{min(int(accuracy * 10000), 99999):05d}_{op_hash}"


def write_kernel_dir(parent: str | Path, op: Operator, meta: dict[str, Any], *,
                     accuracy: float | None, mappings: list[dict[str, int]] | None = None) -> Path:
    """Write a kernel directory like a search session's: meta.json (with the operator), operator.json,
    loop.txt, graph.dot, and one standalone module ``kernel_<j>.py`` per distinct mapping."""
    d = Path(parent) / kernel_dir_name(accuracy, op.hash)
    d.mkdir(parents=True, exist_ok=True)
    op_dict = op.to_dict()
    full = {"path": meta.get("path", ""), "hash": op.hash, "accuracy": accuracy, "flops": None, "params": None,
            "time": None, "loss": None, "status": "ok", **meta, "operator": op_dict, "operator_hash": op.hash}
    if mappings:
        full["mappings"] = mappings
    write_json(d / "meta.json", full)
    write_json(d / "operator.json", op_dict)
    try:
        from syno.ir.looptext import loop_text

        (d / "loop.txt").write_text(loop_text(op) + "\n")
    except Exception as exc:  # noqa: BLE001 - auxiliary file
        (d / "loop.txt").write_text(f"# loop text unavailable: {exc}\n")
    try:
        from syno.ir.dot import to_dot

        (d / "graph.dot").write_text(to_dot(op) + "\n")
    except Exception as exc:  # noqa: BLE001
        (d / "graph.dot").write_text(f"// graph unavailable: {exc}\n")
    for j, m in enumerate(mappings or []):
        try:
            from syno.codegen.export import module_source

            (d / f"kernel_{j}.py").write_text(module_source(op, m))
        except Exception as exc:  # noqa: BLE001 - optional artefact; the IR in meta.json is authoritative
            (d / f"kernel_{j}.py").write_text(f"# standalone module unavailable: {type(exc).__name__}: {exc}\n")
    return d


def iter_usable(records: Iterable[KernelRecord]) -> list[KernelRecord]:
    return [r for r in records if r.usable]
