"""Kernel-directory names: ``<metric5>_<hash>`` for an evaluated kernel, ``ERROR_<hash>`` for a failed one.

``<metric5>`` is ``int(accuracy * 10000)`` for an accuracy target and ``int(loss * 1000)`` for a
loss target, zero-padded to 5 digits. The prefix is only a convenience for ``ls``: it does not say
which target it encodes, so ranking always reads ``meta.json`` (and the session's target), never
the prefix.
"""

from __future__ import annotations

import math
import re
from typing import Literal

__all__ = ["KERNEL_DIR_RE", "kernel_dir_name", "parse_kernel_dir_name", "is_kernel_dir_name", "Target"]

KERNEL_DIR_RE = re.compile(r"^(?P<prefix>\d{5,}|ERROR)_(?P<hash>[0-9A-Za-z]+)$")
Target = Literal["accuracy", "loss"]


def kernel_dir_name(op_hash: str, *, ok: bool, target: Target = "accuracy", accuracy: float | None = None,
                    loss: float | None = None) -> str:
    """The directory name of a kernel (``ok=False``: ``ERROR_<hash>``)."""
    if not op_hash or not op_hash.isalnum():
        raise ValueError(f"kernel hash {op_hash!r}: letters and digits only")
    if not ok:
        return f"ERROR_{op_hash}"
    if target == "loss":
        value = loss if loss is not None and math.isfinite(loss) else 99.999
        return f"{max(0, int(value * 1000)):05d}_{op_hash}"
    if target != "accuracy":
        raise ValueError(f"target {target!r}: accuracy or loss")
    acc = accuracy if accuracy is not None and math.isfinite(accuracy) else 0.0
    return f"{min(max(0, int(acc * 10000)), 99999):05d}_{op_hash}"


def is_kernel_dir_name(name: str) -> bool:
    return KERNEL_DIR_RE.match(name) is not None


def parse_kernel_dir_name(name: str) -> tuple[bool, int | None, str] | None:
    """``(error, prefix value, hash)`` of a kernel-directory name, or None when it is not one."""
    m = KERNEL_DIR_RE.match(name)
    if m is None:
        return None
    error = m.group("prefix") == "ERROR"
    return error, None if error else int(m.group("prefix")), m.group("hash")
