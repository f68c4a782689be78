"""Lazy package exports: a package names what it re-exports, and a submodule is imported only when
one of its names is first used (so ``syno --help`` and light consumers never import torch or
matplotlib)."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, namespace: dict[str, Any], exports: dict[str, list[str]]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package`` whose submodule ``mod`` provides
    ``exports[mod]``; a resolved name is cached in the package's ``namespace``."""
    where = {name: mod for mod, names in exports.items() for name in names}
    public = sorted(where)

    def getattr_(name: str) -> Any:
        if name in where:
            value = getattr(importlib.import_module(f".{where[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted(list(namespace) + public)

    return getattr_, dir_, public
