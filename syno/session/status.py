"""Status values of an evaluated kernel, in one place.

Each status says whether the kernel counts as successfully evaluated (it has a usable accuracy or
loss, gets a reward, and may be selected, reevaluated, benchmarked). New statuses (e.g. a kernel
rejected because its measured latency is too high) are added here, or registered at import time
with :func:`register_status`; readers treat a status they do not know as a failure, so an old
reader never ranks a kernel it does not understand.
"""

from __future__ import annotations

__all__ = ["STATUSES", "OK_STATUSES", "is_ok", "register_status"]

#: status -> (counts as success, meaning)
STATUSES: dict[str, tuple[bool, str]] = {
    "ok": (True, "trained normally"),
    "pruned": (True, "stopped early by the trainer (time limit, accuracy milestone) but has a result"),
    "error": (False, "an exception while building or training the model"),
    "nan": (False, "the training loss diverged"),
    "timeout": (False, "killed by the evaluator after its time limit"),
    "crash": (False, "the worker process died"),
    "filtered": (False, "rejected before training (e.g. the FLOPs ratio)"),
    "too_costly": (False, "rejected because its measured cost (latency) is too high"),
    "slow": (False, "measured slower than the search's --min-speedup before training, so not trained"),
}

#: the statuses that count as success (a view kept in sync by :func:`register_status`)
OK_STATUSES: set[str] = {name for name, (ok, _) in STATUSES.items() if ok}


def is_ok(status: str | None) -> bool:
    return status in OK_STATUSES


def register_status(name: str, *, ok: bool, meaning: str) -> None:
    """Add a status (idempotent for the same ``ok``); refuses to change an existing one's meaning of success."""
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"status {name!r}: use letters, digits and '_'")
    old = STATUSES.get(name)
    if old is not None and old[0] != ok:
        raise ValueError(f"status {name!r} is already registered with ok={old[0]}")
    STATUSES[name] = (ok, meaning)
    if ok:
        OK_STATUSES.add(name)
