"""The contract between the synthesis space and the search algorithms.

Search (MCTS, random search) only sees this interface, so it can be tested against a small mock
space and run against the real guided-synthesis space unchanged.

* A :class:`Next` is one edge of the synthesis tree: the primitive *type* applied and a stable
  *key* (a hex digest of the applied primitive), e.g. ``Next("Unfold", "3fa2...")``.
* A path is a tuple of ``Next``; ``path_to_str`` / ``path_from_str`` give its serialized form
  (``"Reduce:ab12_Share:cd34"``; ``""`` is the root). A path string replays to the same node in
  any process: ``space.node_from_path(path_from_str(s))``.
* Nodes are canonical: two paths that reach the same partial operator give nodes with the same
  :attr:`SynthNode.key` (transpositions), which MCTS uses to share statistics.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from syno.ir.graph import Operator

# Order of primitive types; MCTS treats (type, key) as a two-level tree.
NEXT_TYPES = ("Reduce", "Expand", "Shift", "Stride", "Split", "Unfold", "Merge", "Contraction", "Finalize")


@dataclass(frozen=True, order=True)
class Next:
    type: str
    key: str

    def __str__(self) -> str:
        return f"{self.type}:{self.key}"


Path = tuple[Next, ...]


def path_to_str(path: Iterable[Next]) -> str:
    return "_".join(str(n) for n in path)


def path_from_str(text: str) -> Path:
    if not text:
        return ()
    out = []
    for part in text.split("_"):
        typ, sep, key = part.partition(":")
        if not sep or typ not in NEXT_TYPES or not key:
            raise ValueError(f"malformed path element {part!r} in path {text!r}")
        out.append(Next(typ, key))
    return tuple(out)


@runtime_checkable
class SynthNode(Protocol):
    @property
    def key(self) -> str:
        """Canonical identity of the partial operator (equal for transpositions)."""

    @property
    def path(self) -> Path: ...

    @property
    def depth(self) -> int: ...

    @property
    def is_final(self) -> bool:
        """A complete operator (reached by a ``Finalize`` edge)."""

    def is_dead_end(self) -> bool:
        """No final node is reachable below (known so far)."""

    def children(self) -> Sequence[tuple[Next, "SynthNode"]]:
        """Children in a deterministic order (computed lazily, cached)."""

    def operator(self) -> "Operator":
        """The operator of a final node."""


@runtime_checkable
class SearchSpace(Protocol):
    """What a search needs of a space (``syno.synth.space.SynthSpace`` implements it; the tests'
    synthetic space too)."""

    def root(self) -> SynthNode: ...

    def node_from_path(self, path: Path) -> SynthNode:
        """Replay ``path`` from the root; raises ``ValueError`` if an edge does not exist."""

    def random_final(self, node: SynthNode, rng: random.Random, max_tries: int = 64) -> SynthNode | None:
        """A random walk from ``node`` to a valid final node, or None if none was found."""
