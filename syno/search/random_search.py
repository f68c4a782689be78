"""Random search: independent random walks from the root (``space.random_final``), deduplicated.

The baseline for MCTS: it proposes finals from the same random-walk distribution MCTS uses for its
simulations, without any statistics. Finals are deduplicated by ``SynthNode.key`` (so transpositions
count once) and go through the same final filter (FLOPs ratio) as MCTS.
"""

from __future__ import annotations

import random
import time
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field

from syno.synth.protocol import Path, SearchSpace, path_from_str, path_to_str

from .base import EvalResult, FinalFilter, RewardConfig, SearchAlgorithm, as_path

__all__ = ["RandomSearch", "RandomSearchConfig"]

FORMAT = "syno.search.random/1"


class RandomSearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    walk_tries: int = Field(64, ge=1, description="max_tries passed to space.random_final")
    max_attempts: int = Field(2000, ge=1, description="random walks per propose() call at most")
    max_propose_seconds: float = Field(60.0, gt=0, description="wall time per propose() call at most")
    exhaust_after: int = Field(20000, ge=1,
                               description="consecutive walks without a new final after which the space counts as used up")
    seed: int = 0


class RandomSearch(SearchAlgorithm):
    name = "random"

    def __init__(self, space: SearchSpace, config: RandomSearchConfig | None = None,
                 reward: RewardConfig | None = None, final_filter: FinalFilter | None = None):
        self.space = space
        self.config = config or RandomSearchConfig()
        self.reward_fn = reward or RewardConfig(power=1.0)
        self.final_filter = final_filter
        self.rng = random.Random(self.config.seed)
        self.results: dict[str, float | None] = {}  # final key -> reward (None: failed)
        self.rejected: set[str] = set()             # finals refused by the filter
        self._pending: dict[str, Path] = {}
        self._fruitless = 0
        self.attempts = 0

    def _key(self, path: Path) -> str:
        node = self.space.node_from_path(path)
        if not node.is_final:
            raise ValueError(f"path {path_to_str(path)!r} does not reach a final node")
        return node.key

    def propose(self, k: int = 1) -> list[Path]:
        out: list[Path] = []
        root = self.space.root()
        deadline = time.monotonic() + self.config.max_propose_seconds
        for _ in range(self.config.max_attempts):
            if len(out) >= k or self.exhausted or time.monotonic() > deadline:
                break
            self.attempts += 1
            node = self.space.random_final(root, self.rng, self.config.walk_tries)
            if node is None or node.key in self.results or node.key in self._pending or node.key in self.rejected:
                self._fruitless += 1
                continue
            if self.final_filter is not None and self.final_filter(node) is not None:
                self.rejected.add(node.key)
                self._fruitless += 1
                continue
            self._fruitless = 0
            self._pending[node.key] = tuple(node.path)
            out.append(tuple(node.path))
        return out

    def report(self, path: Path | str, result: EvalResult) -> float | None:
        key = self._key(as_path(path))
        self._pending.pop(key, None)
        if key in self.results:
            return self.results[key]
        reward = self.reward_fn(result)
        self.results[key] = reward
        return reward

    def forget(self, path: Path | str) -> None:
        self._pending.pop(self._key(as_path(path)), None)

    def is_evaluated(self, path: Path | str) -> bool:
        return self._key(as_path(path)) in self.results

    @property
    def exhausted(self) -> bool:
        return self._fruitless >= self.config.exhaust_after or self.space.root().is_dead_end()

    @property
    def pending(self) -> list[Path]:
        return list(self._pending.values())

    def stats(self) -> dict[str, Any]:
        return {"evaluated": len(self.results), "failed": sum(r is None for r in self.results.values()),
                "filtered": len(self.rejected), "pending": len(self._pending), "walks": self.attempts}

    def state_dict(self) -> dict[str, Any]:
        from .mcts import _rng_to_json

        return {"format": FORMAT, "config": self.config.model_dump(), "results": self.results,
                "rejected": sorted(self.rejected),
                "pending": {k: path_to_str(p) for k, p in self._pending.items()},
                "fruitless": self._fruitless, "attempts": self.attempts, "rng": _rng_to_json(self.rng)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        from .mcts import _rng_from_json

        if state.get("format") != FORMAT:
            raise ValueError(f"not a random-search state (format {state.get('format')!r}, expected {FORMAT!r})")
        self.config = RandomSearchConfig(**state["config"])
        self.results = dict(state["results"])
        self.rejected = set(state["rejected"])
        self._pending = {k: path_from_str(p) for k, p in state["pending"].items()}
        self._fruitless = int(state["fruitless"])
        self.attempts = int(state["attempts"])
        self.rng = _rng_from_json(state["rng"])
