"""Search over the synthesis space: MCTS, random search, sessions, evaluators (docs/search.md)."""

from .base import EvalResult, RewardConfig, SearchAlgorithm
from .mcts import MCTS, MCTSConfig
from .random_search import RandomSearch, RandomSearchConfig

__all__ = ["EvalResult", "RewardConfig", "SearchAlgorithm", "MCTS", "MCTSConfig", "RandomSearch",
           "RandomSearchConfig"]
