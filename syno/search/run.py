"""Start or resume a search session from :class:`~syno.search.options.SearchOptions`.

:func:`run_search` is what ``syno search`` and ``syno demo`` call: it creates (or, with
``resume``, reopens) the session directory, builds the problem, the algorithm and the evaluator from
the options, replays the session's kernels, runs until the budget is used and returns a summary.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from syno import __version__

from .base import SearchAlgorithm
from .evaluator import Evaluator, InlineEvaluator, LocalPoolEvaluator
from .fidelity import Asha
from .mcts import MCTS
from .objective import make_reward
from .options import RUN_FIELDS, SearchOptions, apply_overrides
from .prefetch import Prefetcher
from .problem import make_problem
from .random_search import RandomSearch
from .session import RunSummary, SearchRunner, SessionError, SessionStore

__all__ = ["run_search", "make_algorithm", "make_evaluator", "load_session_options", "resume_options"]


def make_algorithm(options: SearchOptions, problem) -> SearchAlgorithm:
    if options.algorithm == "mcts":
        return MCTS(problem.space, options.mcts, reward=make_reward(options), final_filter=problem.final_filter)
    return RandomSearch(problem.space, options.random, reward=make_reward(options), final_filter=problem.final_filter)


def make_evaluator(options: SearchOptions, problem, executor: str = "local", address: str | None = None,
                   max_workers: int | None = None) -> Evaluator:
    r = options.run
    if executor == "ray":  # docs/ray.md; Ray is imported only here
        from .ray_executor import RayEvaluator

        device = str(getattr(options.train, "device", "cpu") or "cpu")
        return RayEvaluator(problem.job(), address=address, max_workers=max_workers, timeout=r.kernel_timeout,
                            cpus_per_worker=r.threads or 1,
                            use_gpu={"cpu": False, "auto": None}.get(device, device.startswith("cuda")))
    if executor != "local":
        raise ValueError(f"unknown executor {executor!r} (local or ray)")
    if r.workers == 0:
        return InlineEvaluator(problem.job())
    return LocalPoolEvaluator(problem.job(), workers=r.workers, timeout=r.kernel_timeout, threads=r.threads)


def make_fidelity(options: SearchOptions) -> Asha | None:
    """The rung bookkeeping of a multi-fidelity session (``fidelity.enabled``), else None."""
    f = options.fidelity
    if not f.enabled:
        return None
    return Asha(f.with_milestones(getattr(options.train, "prune_milestones", None) or {}), options.reward.target)


def load_session_options(store: SessionStore) -> SearchOptions:
    info = store.info()
    try:
        return SearchOptions.model_validate(info["options"])
    except Exception as exc:  # noqa: BLE001 - pydantic's message is precise enough
        from syno.cli_errors import one_line  # pydantic's message itemized on one line, without its URL
        raise SessionError(f"{store.root / 'session.json'}: the stored options are invalid: {one_line(exc)}") from None


# options that a session without any evaluated kernel may still change on resume (a search that failed
# on bad data is retried with corrected options); the rest derive the synthesis space
_RETRY_PREFIXES = ("data_dir", "dataset_kwargs", "train.", "reward.", "mcts.", "random.", "algorithm", "implementation",
                   "fidelity.")


def resume_options(stored: SearchOptions, overrides: Mapping[str, Any], *, kernels: int = 1) -> SearchOptions:
    """The stored options with ``overrides`` applied; only ``run.*`` (and ``session_dir``) may change,
    unless the session holds no kernel yet (``kernels == 0``): then the data, trainer, reward and
    algorithm options may be corrected too."""
    bad = sorted(k for k in overrides if not (k.startswith("run.") and k[4:] in RUN_FIELDS) and k != "session_dir")
    if kernels == 0:
        bad = [k for k in bad if not k.startswith(_RETRY_PREFIXES)]
        if bad:
            raise SessionError(f"cannot change {', '.join(bad)} when resuming: they define the session's search "
                               f"space; no kernel was evaluated yet, so remove the session directory and start a "
                               f"new search with these options")
    if bad:
        raise SessionError(f"cannot change {', '.join(bad)} when resuming: the session's search space, reward and "
                           f"trainer are fixed in session.json (only run.* options may change)")
    data = stored.to_json_dict()
    apply_overrides(data, overrides)
    return SearchOptions.model_validate(data)


def run_search(options: SearchOptions, *, resume: bool = False, rebuild_state: bool = False,
               on_event: Callable[[str, Any], None] | None = None,
               on_start: Callable[[SearchRunner, dict], None] | None = None, executor: str = "local",
               address: str | None = None, max_workers: int | None = None) -> RunSummary:
    """Run (or resume) the session ``options.directory``; see the module docstring."""
    store = SessionStore(options.directory)
    if resume and not store.exists():
        raise SessionError(f"{store.root / 'session.json'}: no session to resume here")
    if not resume and store.exists():
        store.create({})  # raises: a session already exists there
    problem = make_problem(options)  # before the directory is created: bad options leave nothing behind
    algorithm = make_algorithm(options, problem)
    problem.check()  # the data: a search that fails on it leaves no session behind
    if not resume:
        store.create({"options": options.to_json_dict(), "syno": __version__})
    elif load_session_options(store).space_digest() != options.space_digest():
        store.update_options(options.to_json_dict())  # corrected options of a session without kernels
    evaluator = make_evaluator(options, problem, executor, address, max_workers)
    if not isinstance(evaluator, InlineEvaluator):  # pools and Ray: proposals off the driver's critical path
        algorithm = Prefetcher(algorithm)
    try:
        runner = SearchRunner(store, problem, algorithm, evaluator, make_reward(options),
                              checkpoint_interval=options.run.checkpoint_interval, on_event=on_event,
                              info={"model": options.model}, fidelity=make_fidelity(options))
        restored = runner.restore(rebuild_state=rebuild_state)
        if on_start is not None:
            on_start(runner, restored)
        if isinstance(algorithm, Prefetcher):
            algorithm.start()  # after the replay: proposals start from the restored search
        r = options.run
        return runner.run(max_evaluations=r.max_evaluations, budget_seconds=r.budget_seconds,
                          drain_seconds=r.drain_seconds)
    finally:
        if isinstance(algorithm, Prefetcher):
            algorithm.close()
        evaluator.close()


def options_json(options: SearchOptions) -> str:
    return json.dumps(options.to_json_dict(), indent=1)
