"""What to substitute: resolve ``--operator NAME`` / ``--kernel DIR`` into a module factory.

An :class:`OperatorSpec` carries the IR operator (when known), its hash, and
``factory(mapping) -> nn.Module``, the thing :func:`syno.models.fill_placeholders` takes.
Implementations (``impl``):

* ``codegen``: ``syno.codegen.operator_factory(op)`` (the generated PyTorch module);
* ``manual``: the hand-written two-convolution modules of :mod:`syno.bench.manual`
  (``conv2d``, ``operator1``, ``stacked_conv``; also used for a kernel dir whose operator has the
  same hash as one of them);
* ``auto`` (default): ``codegen`` when :mod:`syno.codegen` provides ``operator_factory``, else
  ``manual`` when there is one, else an error that says what is missing.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from torch import nn

from .manual import MANUAL_FACTORIES, manual_factory

__all__ = ["OperatorSpec", "resolve_operator", "codegen_factory", "codegen_available", "find_kernels",
           "IMPLS", "BASELINE"]

IMPLS = ("auto", "codegen", "manual")
BASELINE = "baseline"

Factory = Callable[[Mapping[str, int]], nn.Module]


@dataclass
class OperatorSpec:
    label: str                   #: row label, e.g. "operator1", "07889_1525..."
    factory: Factory
    op_hash: str                 #: IR hash (cache key); "conv2d-manual" style when no IR op
    impl: str                    #: "codegen" | "manual"
    operator: object | None = None   #: syno.ir.graph.Operator
    source: str = ""             #: hand-built name or kernel dir
    meta: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)   #: codegen options used

    @property
    def cache_key(self) -> str:
        """Tuning-cache identity: IR hash + implementation (+ codegen options)."""
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.op_hash}/{self.impl}" + (f"[{opts}]" if opts else "")


def codegen_factory() -> Callable[[object], Factory] | None:
    """``syno.codegen.operator_factory`` (or ``syno.codegen.torch.operator_factory``) if it has landed, else None."""
    for name in ("syno.codegen", "syno.codegen.torch"):
        try:
            fn = getattr(importlib.import_module(name), "operator_factory", None)
        except ImportError:
            continue
        if fn is not None:
            return fn
    return None


def codegen_available() -> bool:
    return codegen_factory() is not None


def _hand_built() -> dict:
    from syno.ir.library import HAND_BUILT

    return HAND_BUILT


def _manual_name_for(op) -> str | None:
    hb = _hand_built()
    for name in MANUAL_FACTORIES:
        try:
            if hb[name]().hash == op.hash:
                return name
        except Exception:  # noqa: BLE001
            continue
    return None


def _pick(op, manual_name: str | None, impl: str, what: str, codegen_options: dict | None = None
          ) -> tuple[Factory, str]:
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; choose from {IMPLS}")
    gen = codegen_factory()
    if impl in ("auto", "codegen") and gen is not None and op is not None:
        return gen(op, **(codegen_options or {})), "codegen"
    if impl == "codegen":
        raise RuntimeError(f"{what}: syno.codegen.operator_factory is not available (syno/codegen has not landed "
                           "or failed to import); use --impl manual where a hand-written version exists")
    if manual_name is not None:
        return manual_factory(manual_name), "manual"
    raise RuntimeError(f"{what}: no implementation: syno.codegen.operator_factory is not available and there is "
                       f"no hand-written version (have {sorted(MANUAL_FACTORIES)})")


def resolve_operator(name: str | None = None, kernel_dir: str | Path | None = None, *,
                     impl: str = "auto", codegen_options: dict | None = None) -> OperatorSpec:
    """Exactly one of ``name`` (a key of ``syno.ir.library.HAND_BUILT``) or ``kernel_dir`` (holding ``operator.json``).

    ``codegen_options`` are passed to ``operator_factory(op, **codegen_options)`` (e.g.
    ``{"implementation": "einsum"}``).
    """
    if (name is None) == (kernel_dir is None):
        raise ValueError("give exactly one of an operator name or a kernel directory")
    if name is not None:
        hb = _hand_built()
        if name not in hb:
            raise ValueError(f"unknown operator {name!r}; hand-built operators: {sorted(hb)}")
        op = hb[name]()
        factory, used = _pick(op, name if name in MANUAL_FACTORIES else None, impl, f"operator {name!r}",
                              codegen_options)
        return OperatorSpec(label=name, factory=factory, op_hash=op.hash, impl=used, operator=op, source=name,
                            options=dict(codegen_options or {}) if used == "codegen" else {})

    from syno.ir.graph import Operator

    d = Path(kernel_dir)
    f = d / "operator.json"
    if not f.is_file():
        raise FileNotFoundError(f"{d} has no operator.json (not a kernel directory)")
    op = Operator.from_json(f.read_text())
    meta = {}
    if (d / "meta.json").is_file():
        try:
            meta = json.loads((d / "meta.json").read_text())
        except json.JSONDecodeError:
            meta = {}
    factory, used = _pick(op, _manual_name_for(op), impl, f"kernel {d}", codegen_options)
    return OperatorSpec(label=d.name, factory=factory, op_hash=op.hash, impl=used, operator=op, source=str(d),
                        meta=meta, options=dict(codegen_options or {}) if used == "codegen" else {})


def _accuracy(d: Path) -> float:
    try:
        acc = json.loads((d / "meta.json").read_text()).get("accuracy")
        if acc is not None:
            return float(acc)
    except (OSError, json.JSONDecodeError, TypeError, ValueError):
        pass
    head = d.name.split("_", 1)[0]
    return int(head) / 1e4 if head.isdigit() else float("-inf")


def find_kernels(session_dir: str | Path, top: int | None = None) -> list[Path]:
    """Kernel dirs (holding ``operator.json``) under ``session_dir``, best accuracy first.

    Accuracy comes from ``meta.json`` (``accuracy``) or the ``<acc*1e4>_`` dir-name prefix. Dirs
    whose ``meta.json`` status is not ok/pruned are skipped.
    """
    root = Path(session_dir)
    dirs = []
    for f in sorted(root.rglob("operator.json")):
        d = f.parent
        try:
            status = json.loads((d / "meta.json").read_text()).get("status", "ok")
        except (OSError, json.JSONDecodeError):
            status = "ok"
        if status in ("ok", "pruned"):
            dirs.append(d)
    dirs.sort(key=_accuracy, reverse=True)
    return dirs[:top] if top else dirs
