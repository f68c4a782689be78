"""Kernel directories for kernels that no search produced (the paper's hand-written kernels).

:func:`write_kernel_dir` writes one exactly like a search session's (:mod:`syno.session` holds the
format: names, ``meta.json`` schema, atomic writes): ``meta.json`` with the serialized operator,
``operator.json``, ``loop.txt``, ``graph.dot`` and one standalone module ``kernel_<j>.py`` per distinct
mapping. Every post-search step reads kernel directories with :func:`syno.session.read_kernel_dir` /
:func:`syno.session.scan_kernel_dirs`; operators always come from the serialized IR, never from
importing the ``.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from syno.ir.graph import Operator
from syno.session import META_SCHEMA_VERSION, Target, kernel_dir_name, write_kernel_dir_atomic

__all__ = ["write_kernel_dir"]


def _artifacts(op: Operator, mappings: list[dict[str, int]]) -> dict[str, str]:
    """The auxiliary files; each is optional (the IR in meta.json is authoritative), so a failure
    becomes a comment in the file instead of an exception."""
    files = {"operator.json": op.to_json() + "\n"}
    try:
        from syno.ir.looptext import loop_text

        files["loop.txt"] = loop_text(op) + "\n"
    except Exception as exc:  # noqa: BLE001
        files["loop.txt"] = f"# loop text unavailable: {exc}\n"
    try:
        from syno.ir.dot import to_dot

        files["graph.dot"] = to_dot(op) + "\n"
    except Exception as exc:  # noqa: BLE001
        files["graph.dot"] = f"// graph unavailable: {exc}\n"
    for j, m in enumerate(mappings):
        try:
            from syno.codegen.export import module_source

            files[f"kernel_{j}.py"] = module_source(op, m)
        except Exception as exc:  # noqa: BLE001
            files[f"kernel_{j}.py"] = f"# standalone module unavailable: {type(exc).__name__}: {exc}\n"
    return files


def write_kernel_dir(parent: str | Path, op: Operator, meta: dict[str, Any], *, ok: bool, target: Target = "accuracy",
                     accuracy: float | None = None, loss: float | None = None,
                     mappings: list[dict[str, int]] | None = None) -> Path:
    """Write (or update in place, keeping other files such as ``reeval.json``) the kernel directory of
    ``op`` under ``parent``; the name encodes ``accuracy`` or, for a loss target, ``loss``."""
    name = kernel_dir_name(op.hash, ok=ok, target=target, accuracy=accuracy, loss=loss)
    full = {"path": meta.get("path", ""), "hash": op.hash, "accuracy": accuracy, "flops": None, "params": None,
            "time": None, "loss": loss, "status": "ok", **meta, "schema": META_SCHEMA_VERSION, "target": target,
            "operator": op.to_dict(), "operator_hash": op.hash}
    if mappings:
        full["mappings"] = mappings
    return write_kernel_dir_atomic(parent, name, full, _artifacts(op, list(mappings or [])), replace=True)
