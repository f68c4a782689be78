"""Metrics files: atomic JSON documents (written by :mod:`syno.session`'s one atomic writer) and
append-only JSON lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from syno.session.files import jsonable, write_json_atomic

__all__ = ["write_json", "append_jsonl", "read_jsonl", "jsonable"]


def write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as strict JSON atomically (temp file + rename, usual file mode), creating parent directories."""
    return write_json_atomic(path, obj, indent=indent)


def append_jsonl(path: str | Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(jsonable(obj), allow_nan=False) + "\n")


def read_jsonl(path: str | Path) -> list[Any]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
