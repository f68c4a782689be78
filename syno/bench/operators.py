"""What to substitute: resolve ``--operator NAME`` / ``--kernel DIR`` into a module factory.

An :class:`OperatorSpec` carries the IR operator (when known), its hash, and
``factory(mapping) -> nn.Module``, the thing :func:`syno.models.fill_placeholders` takes.
Implementations (``impl``):

* ``codegen``: ``syno.codegen.operator_factory(op)`` (the generated PyTorch module);
* ``manual``: the hand-written two-convolution modules of :mod:`syno.bench.manual`
  (``conv2d``, ``operator1``, ``stacked_conv``; also used for a kernel dir whose operator has the
  same hash as one of them);
* ``auto`` (default): ``codegen``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from torch import nn

from syno.session import is_ok, read_kernel_dir, read_session_info, session_target

from .manual import MANUAL_FACTORIES, manual_factory

__all__ = ["OperatorSpec", "resolve_operator", "find_kernels", "IMPLS", "BASELINE"]

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
    if impl == "manual":
        if manual_name is None:
            raise RuntimeError(f"{what}: no hand-written version (have {sorted(MANUAL_FACTORIES)}); use --impl codegen")
        return manual_factory(manual_name), "manual"
    from syno.codegen.torch import operator_factory

    return operator_factory(op, **(codegen_options or {})), "codegen"


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
    meta = read_kernel_dir(d).meta  # {} when missing or damaged: the operator is what matters here
    factory, used = _pick(op, _manual_name_for(op), impl, f"kernel {d}", codegen_options)
    return OperatorSpec(label=d.name, factory=factory, op_hash=op.hash, impl=used, operator=op, source=str(d),
                        meta=meta, options=dict(codegen_options or {}) if used == "codegen" else {})


def find_kernels(session_dir: str | Path, top: int | None = None) -> list[Path]:
    """Kernel dirs (holding ``operator.json``) under ``session_dir`` (searched recursively), best first.

    Each directory is read with :mod:`syno.session`; failed kernels (status not ok) are skipped.
    "Best" follows the target of the session the kernel belongs to (``session.json``'s reward target,
    else what its kernels record): highest accuracy, or lowest loss for a loss-target (GPT-2) session.
    The directory-name prefix is never used for ranking: it encodes accuracy or loss depending on
    the target.
    """
    root = Path(session_dir)
    by_session: dict[Path, list] = {}
    for f in sorted(root.rglob("operator.json")):
        k = read_kernel_dir(f.parent)
        if k.record is not None and not is_ok(k.status):
            continue
        by_session.setdefault(k.session, []).append(k)
    ranked = []
    for sess, kernels in by_session.items():
        target = session_target(read_session_info(sess)[0], kernels)
        for k in kernels:
            k.target = target  # lets a kernel without meta.json be ranked by its directory-name prefix
            v = k.metric(target)
            # unknown metric last; a loss ranks by its negation so that higher is better everywhere
            score = -math.inf if v is None else (v if target == "accuracy" else -v)
            ranked.append((target, score, k.dir))
    ranked.sort(key=lambda t: (t[0] != "accuracy", -t[1], str(t[2])))
    dirs = [d for _, _, d in ranked]
    return dirs[:top] if top else dirs
