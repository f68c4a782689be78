"""A small pure-Python synthesis space with known rewards, for testing and benchmarking search.

Test scaffolding, not part of the package: :func:`register` makes it the search problem named
``synthetic`` (``syno search synthetic``, ``build_options("synthetic")``), which exercises sessions,
resume, executors and the CLI in seconds without training; ``benchmarks/search_efficiency.py``
measures MCTS against random search on it.

State = the *set* of applied "atoms" (so different orders reach the same node: transpositions).
Each atom has a primitive type from :data:`~syno.synth.protocol.NEXT_TYPES` and a hex key; some
pairs of atoms conflict (cannot both be applied). A node with at least ``min_ops`` atoms and no
"poison" atom has a ``Finalize`` child. Nodes from which no final can be reached are dead ends.

Each final has a deterministic accuracy: a planted target set ``T`` (the best final) gives the
maximum; accuracy grows with ``|S & T|`` and shrinks with atoms outside ``T``, plus a small
hash-based jitter; a few finals "crash" (status ``error``). This has the structure MCTS can exploit
(good partial states lead to good finals), while a blind random walk rarely hits ``T`` exactly.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Sequence

from syno.search.base import EvalResult
from syno.search.fidelity import split_task
from syno.search.problem import ProblemType, register_problem
from syno.synth.protocol import NEXT_TYPES, Next, Path, path_from_str

__all__ = ["SyntheticSpace", "SyntheticNode", "SyntheticJob", "SyntheticProblem", "register"]

_OP_TYPES = tuple(t for t in NEXT_TYPES if t != "Finalize")


def _digest(text: str, n: int = 8) -> str:
    return hashlib.blake2b(text.encode(), digest_size=n).hexdigest()


@dataclass(frozen=True)
class _Atom:
    index: int
    type: str
    key: str


class SyntheticNode:
    """A node of :class:`SyntheticSpace`; implements :class:`~syno.synth.protocol.SynthNode`."""

    def __init__(self, space: SyntheticSpace, atoms: frozenset[int], final: bool, path: Path):
        self._space = space
        self.atoms = atoms
        self._final = final
        self._path = path
        self._children: list[tuple[Next, SyntheticNode]] | None = None

    @property
    def key(self) -> str:
        return ("F" if self._final else "P") + ",".join(str(a) for a in sorted(self.atoms))

    @property
    def path(self) -> Path:
        return self._path

    @property
    def depth(self) -> int:
        return len(self._path)

    @property
    def is_final(self) -> bool:
        return self._final

    def is_dead_end(self) -> bool:
        return not self._final and not self._space._reachable(self.atoms)

    def children(self) -> Sequence[tuple[Next, SyntheticNode]]:
        if self._children is None:
            sp = self._space
            out: list[tuple[Next, SyntheticNode]] = []
            if not self._final:
                if sp._can_finalize(self.atoms):
                    nxt = Next("Finalize", sp.finalize_key(self.atoms))
                    out.append((nxt, SyntheticNode(sp, self.atoms, True, self._path + (nxt,))))
                for a in sp._addable(self.atoms):
                    nxt = Next(sp.atoms[a].type, sp.atoms[a].key)
                    out.append((nxt, SyntheticNode(sp, self.atoms | {a}, False, self._path + (nxt,))))
            out.sort(key=lambda c: (NEXT_TYPES.index(c[0].type), c[0].key))
            self._children = out
        return self._children

    def operator(self):
        raise NotImplementedError("synthetic nodes have no IR operator; use SyntheticSpace.evaluate(path)")

    def __repr__(self) -> str:
        return f"SyntheticNode({self.key})"


class SyntheticSpace:
    """See the module docstring. Deterministic for a given ``seed``.

    ``n_atoms`` atoms, at most ``max_ops`` per operator, finals need ``>= min_ops`` atoms; the
    planted optimum has ``target_size`` atoms; ``conflict_prob`` of atom pairs conflict;
    ``poison`` atoms forbid finalization; ``crash_prob`` of finals fail when evaluated.
    """

    def __init__(self, n_atoms: int = 14, max_ops: int = 6, min_ops: int = 2, target_size: int = 5,
                 conflict_prob: float = 0.08, poison: int = 1, crash_prob: float = 0.05, seed: int = 0):
        if not (1 <= min_ops <= target_size <= max_ops <= n_atoms):
            raise ValueError("need 1 <= min_ops <= target_size <= max_ops <= n_atoms")
        rng = random.Random(f"mock-space-{seed}")  # the seed text of before: the same planted spaces
        self.seed = seed
        self.max_ops, self.min_ops = max_ops, min_ops
        self.crash_prob = crash_prob
        self.atoms = tuple(_Atom(i, _OP_TYPES[rng.randrange(len(_OP_TYPES))], _digest(f"{seed}/atom/{i}"))
                           for i in range(n_atoms))
        order = list(range(n_atoms))
        rng.shuffle(order)
        self.target = frozenset(order[:target_size])
        self.poison = frozenset(order[target_size:target_size + poison])
        conflicts: set[frozenset[int]] = set()
        for a, b in itertools.combinations(range(n_atoms), 2):
            if {a, b} <= self.target:
                continue  # the planted optimum stays reachable
            if rng.random() < conflict_prob:
                conflicts.add(frozenset((a, b)))
        self.conflicts = conflicts
        self._reach_memo: dict[frozenset[int], bool] = {}
        self.evaluations = 0

    # -- structure -------------------------------------------------------------------------
    def finalize_key(self, atoms: frozenset[int]) -> str:
        return _digest(f"{self.seed}/final/{sorted(atoms)}")

    def _can_finalize(self, atoms: frozenset[int]) -> bool:
        return len(atoms) >= self.min_ops and not (atoms & self.poison)

    def _addable(self, atoms: frozenset[int]) -> list[int]:
        if len(atoms) >= self.max_ops:
            return []
        return [a for a in range(len(self.atoms))
                if a not in atoms and not any(frozenset((a, b)) in self.conflicts for b in atoms)]

    def _reachable(self, atoms: frozenset[int]) -> bool:
        memo = self._reach_memo.get(atoms)
        if memo is None:
            memo = self._can_finalize(atoms) or any(self._reachable(atoms | {a}) for a in self._addable(atoms))
            self._reach_memo[atoms] = memo
        return memo

    # -- SearchSpace protocol ----------------------------------------------------------------
    def root(self) -> SyntheticNode:
        return SyntheticNode(self, frozenset(), False, ())

    def node_from_path(self, path: Path) -> SyntheticNode:
        node = self.root()
        for nxt in path:
            for edge, child in node.children():
                if edge == nxt:
                    node = child
                    break
            else:
                raise ValueError(f"edge {nxt} does not exist at {node.key!r}")
        return node

    def random_final(self, node: SyntheticNode, rng: random.Random, max_tries: int = 64) -> SyntheticNode | None:
        """Random walk: a uniformly random child *type*, then a uniformly random key of that type."""
        if node.is_final:
            return node
        for _ in range(max_tries):
            cur = node
            while not cur.is_final:
                kids = cur.children()
                if not kids:
                    break
                types = sorted({n.type for n, _ in kids}, key=NEXT_TYPES.index)
                t = types[rng.randrange(len(types))]
                options = [c for n, c in kids if n.type == t]
                cur = options[rng.randrange(len(options))]
            if cur.is_final:
                return cur
        return None

    # -- ground truth --------------------------------------------------------------------------
    def accuracy_of(self, atoms: frozenset[int]) -> float:
        hit = len(atoms & self.target) / len(self.target)
        extra = len(atoms - self.target) / self.max_ops
        jitter = int(self.finalize_key(atoms)[:4], 16) / 0xFFFF * 0.04 - 0.02
        exact = 0.08 if atoms == self.target else 0.0
        return max(0.01, min(0.99, 0.2 + 0.6 * hit - 0.3 * extra + jitter + exact))

    def crashes(self, atoms: frozenset[int]) -> bool:
        if atoms == self.target:
            return False
        return int(self.finalize_key(atoms)[4:8], 16) / 0xFFFF < self.crash_prob

    def evaluate(self, path: Path) -> EvalResult:
        """The known result of the final reached by ``path`` (counts evaluations)."""
        node = self.node_from_path(path)
        if not node.is_final:
            raise ValueError("not a final node")
        self.evaluations += 1
        if self.crashes(node.atoms):
            return EvalResult(status="error", accuracy=0.0, message="synthetic crash")
        return EvalResult(status="ok", accuracy=self.accuracy_of(node.atoms), flops=len(node.atoms),
                          params=len(node.atoms))

    @property  # not cached_property: its lock (Python 3.11) cannot be pickled by value, as Ray ships this module
    def best_accuracy(self) -> float:
        return self.accuracy_of(self.target)

    def all_finals(self) -> list[frozenset[int]]:
        """Every reachable final (exhaustive; for tests on small spaces)."""
        seen: set[frozenset[int]] = set()
        out: list[frozenset[int]] = []
        stack = [frozenset()]
        visited: set[frozenset[int]] = set()
        while stack:
            s = stack.pop()
            if s in visited:
                continue
            visited.add(s)
            if self._can_finalize(s) and s not in seen:
                seen.add(s)
                out.append(s)
            stack.extend(s | {a} for a in self._addable(s))
        return out


@dataclass
class SyntheticJob:
    """Picklable evaluation recipe for :class:`SyntheticSpace` (see :mod:`syno.search.evaluator`).

    ``delay`` seconds per kernel; finals are selected by a hash of their key to ``hang`` (sleep
    forever: the evaluator's timeout must kill them), ``die`` (the worker process exits) or
    ``raise_`` (an exception) with the given probabilities. The planted optimum always succeeds.
    """

    space_kwargs: dict
    delay: float = 0.0
    hang: float = 0.0
    die: float = 0.0
    raise_: float = 0.0

    def setup(self, slot: int) -> None:
        self.space = SyntheticSpace(**self.space_kwargs)

    def behaviour(self, atoms: frozenset[int]) -> str:
        if atoms == self.space.target:
            return "ok"
        u = int(_digest(f"behaviour/{sorted(atoms)}")[:8], 16) / 0xFFFFFFFF
        for name, p in (("hang", self.hang), ("die", self.die), ("raise", self.raise_)):
            if u < p:
                return name
            u -= p
        return "ok"

    def evaluate(self, path: str) -> EvalResult:
        path, rung = split_task(path)  # a rung k > 0: as if trained longer (accuracy 1 - (1 - acc) * 0.8 ** k)
        node = self.space.node_from_path(path_from_str(path))
        what = self.behaviour(node.atoms)
        if what == "hang":
            time.sleep(1e6)
        if what == "die":
            os._exit(7)
        if what == "raise":
            raise RuntimeError("synthetic kernel failure")
        if self.delay:
            time.sleep(self.delay)
        res = self.space.evaluate(path_from_str(path))
        if rung:
            res.accuracy = 1 - (1 - res.accuracy) * 0.8 ** rung
            res.extra = {**res.extra, "rung": rung}
        return res


class SyntheticProblem:
    """:class:`SyntheticSpace` with :class:`SyntheticJob`: a
    :class:`~syno.search.problem.SearchProblem` that trains nothing."""

    def __init__(self, space_kwargs: dict | None = None, delay: float = 0.0, hang: float = 0.0, die: float = 0.0,
                 raise_: float = 0.0):
        self.space_kwargs = dict(space_kwargs or {})
        self.space = SyntheticSpace(**self.space_kwargs)
        self.final_filter = None
        self._job = SyntheticJob(self.space_kwargs, delay=delay, hang=hang, die=die, raise_=raise_)

    @classmethod
    def from_settings(cls, settings: dict) -> SyntheticProblem:
        """From ``options.problem`` (``--set problem.delay=3``, ``problem.space.seed=1``, ...)."""
        return cls(settings.get("space"), delay=settings.get("delay", 0.0), hang=settings.get("hang", 0.0),
                   die=settings.get("die", 0.0), raise_=settings.get("raise", 0.0))

    def job(self) -> SyntheticJob:
        return self._job

    def check(self) -> None:
        """Nothing to check: the space needs no data."""

    def identify(self, path: str) -> str:
        key = self.space.node_from_path(path_from_str(path)).key
        return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()

    def artifacts(self, path: str) -> tuple[dict[str, str], dict[str, Any]]:
        node = self.space.node_from_path(path_from_str(path))
        atoms = sorted(node.atoms)
        return {"atoms.txt": " ".join(map(str, atoms)) + "\n"}, {"atoms": atoms}


def register() -> None:
    """Make this space the search problem named ``synthetic`` (tests/conftest.py calls it)."""
    register_problem(ProblemType(
        "synthetic", SyntheticProblem.from_settings,
        preset={"dataset": "synthetic", "reward": {"power": 1.0}, "problem": {"space": {"seed": 0}, "delay": 0.0}}))
