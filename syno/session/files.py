"""Atomic writes: a crash or a kill never leaves a half-written session file or kernel directory."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

__all__ = ["SessionError", "jsonable", "read_json", "write_json_atomic", "write_kernel_dir_atomic"]


class SessionError(RuntimeError):
    """A session file is missing, damaged or inconsistent (the message names the file and what to do)."""


def jsonable(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, tuples -> lists, paths -> str, pydantic models and numpy/torch scalars unwrapped."""
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json", by_alias=True)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and not isinstance(obj, (str, bytes)):
        return jsonable(obj.item())
    return obj


def read_json(path: str | os.PathLike) -> Any:
    """Parse a session file; a missing or damaged one raises :class:`SessionError` naming it."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise SessionError(f"{path}: file is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SessionError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise SessionError(f"{path}: unreadable ({exc.strerror or exc})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int = 1) -> Path:
    """Strict JSON (NaN/inf become null) via a temporary file in the same directory and ``os.replace``.

    The file gets the usual permissions (0666 minus the umask), not ``mkstemp``'s private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(jsonable(obj), indent=indent, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_kernel_dir_atomic(root: str | os.PathLike, name: str, meta: Mapping[str, Any],
                            files: Mapping[str, str], *, replace: bool = False) -> Path:
    """Write ``root/name/`` with ``meta.json`` and ``files`` as one step: a temporary directory renamed
    into place. An existing directory is left alone (``replace=False``: a kernel directory is never
    rewritten) or has these files replaced one by one, atomically each, keeping its other files."""
    root = Path(root)
    final = root / name
    if final.exists():
        if replace:
            for fname, text in files.items():
                _write_text_atomic(final / fname, text)
            write_json_atomic(final / "meta.json", meta)
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for fname, text in files.items():
            (tmp / fname).write_text(text)
        write_json_atomic(tmp / "meta.json", meta)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
