"""A search *problem*: the synthesis space plus how to evaluate, identify and describe its kernels.

The session runner needs, besides a :class:`~syno.synth.protocol.SynthSpace`:

* ``job()``: a picklable recipe the evaluator workers use to rebuild everything and evaluate a path;
* ``identify(path) -> str``: the kernel's stable hash (the operator hash), used for directory names
  and deduplication;
* ``artifacts(path) -> (files, meta)``: the files of a kernel directory and extra ``meta.json`` keys;
* ``final_filter``: rejects finals before evaluation (the FLOPs-ratio filter).
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from syno.synth.protocol import SynthSpace, path_from_str

from .base import FinalFilter
from .evaluator import Job
from .mock import MockJob, MockSpace

__all__ = ["Problem", "MockProblem"]


class Problem(Protocol):
    space: SynthSpace
    final_filter: FinalFilter | None

    def job(self) -> Job: ...

    def identify(self, path: str) -> str: ...

    def artifacts(self, path: str) -> tuple[dict[str, str], dict[str, Any]]: ...


class MockProblem:
    """:class:`MockSpace` with :class:`MockJob` (model name ``mock``: exercises the whole session
    machinery in seconds, without training)."""

    def __init__(self, space_kwargs: dict | None = None, delay: float = 0.0, hang: float = 0.0, die: float = 0.0,
                 raise_: float = 0.0):
        self.space_kwargs = dict(space_kwargs or {})
        self.space = MockSpace(**self.space_kwargs)
        self.final_filter = None
        self._job = MockJob(self.space_kwargs, delay=delay, hang=hang, die=die, raise_=raise_)

    def job(self) -> MockJob:
        return self._job

    def identify(self, path: str) -> str:
        key = self.space.node_from_path(path_from_str(path)).key
        return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()

    def artifacts(self, path: str) -> tuple[dict[str, str], dict[str, Any]]:
        node = self.space.node_from_path(path_from_str(path))
        atoms = sorted(node.atoms)
        return {"atoms.txt": " ".join(map(str, atoms)) + "\n"}, {"atoms": atoms}
