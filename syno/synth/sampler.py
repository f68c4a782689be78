"""Seeded sampling of distinct valid operators by random walks, across processes.

* :func:`sample` draws distinct final operators from one :class:`SynthSpace` (one process).
* :func:`sample_operators` is the entry point for other components: it rebuilds the space from the
  options in every worker process (``ProcessPoolExecutor``, one seed per worker), merges and
  deduplicates by ``Operator.hash``, and returns ``[(path_string, Operator)]``. Results are cached
  per process and, for the shipped presets, precomputed samples are used when they cover the request
  (``syno/synth/data/*.json``; regenerate them with ``python -m syno.synth.sampler``).

Every returned path replays to the same operator in any process:
``SynthSpace(options).node_from_path(path).operator().hash == op.hash``.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path as FsPath
from typing import Sequence

from syno.ir.graph import Operator

from .options import SynthOptions
from .protocol import path_to_str
from .space import SynthSpace

DATA_DIR = FsPath(__file__).with_name("data")
_MEMO: dict[tuple, list[tuple[str, str]]] = {}


def sample(space: SynthSpace, count: int, seed: int | None = None, *, max_walks: int | None = None,
           max_tries: int = 16, time_limit: float | None = None, patience: int = 300) -> list[tuple[str, Operator]]:
    """Up to ``count`` distinct valid operators from random walks (``max_tries`` backtracks each;
    ``seed`` defaults to ``options.seed``).

    Stops after ``max_walks`` walks (default ``50 * count + 100``), ``time_limit`` seconds, or
    ``patience`` walks in a row without a new operator (the space may have fewer)."""
    rng = random.Random(space.options.seed if seed is None else seed)
    out: list[tuple[str, Operator]] = []
    seen: set[str] = set()
    walks = 0
    idle = 0
    limit = max_walks if max_walks is not None else 50 * count + 100
    t0 = time.monotonic()
    while len(out) < count and walks < limit:
        if time_limit is not None and time.monotonic() - t0 > time_limit:
            break
        walks += 1
        if idle >= patience:
            break
        got = space.random_walk(space.root(), rng, max_tries)
        idle += 1
        if got is None:
            continue
        path, node = got
        op = node.operator()
        if op.hash in seen:
            continue
        idle = 0
        seen.add(op.hash)
        out.append((path_to_str(path), op))
    return out


def _options_of(options: SynthOptions | str | dict) -> SynthOptions:
    if isinstance(options, SynthOptions):
        return options
    if isinstance(options, str):
        preset = getattr(SynthOptions, options, None)
        if preset is None or options.startswith("_") or not callable(preset):
            raise ValueError(f"unknown preset {options!r}; use resnet18, gpt2, gpt2_linears or tiny, or pass SynthOptions")
        return preset()
    return SynthOptions.model_validate(options)


_WORKER_SPACES: dict[str, SynthSpace] = {}


def _worker(args) -> list[tuple[str, str]]:
    options_json, count, seed, max_tries, time_limit = args
    space = _WORKER_SPACES.get(options_json)
    if space is None:  # one space per worker process, kept warm across rounds
        space = _WORKER_SPACES[options_json] = SynthSpace(SynthOptions.model_validate_json(options_json))
    return [(p, op.to_json()) for p, op in sample(space, count, seed, max_tries=max_tries, time_limit=time_limit)]


def precomputed_path(options: SynthOptions, seed: int) -> FsPath:
    return DATA_DIR / f"samples-{options.digest()}-{seed}.json.gz"


def _precomputed(options: SynthOptions, seed: int) -> list[tuple[str, str]] | None:
    path = precomputed_path(options, seed)
    if not path.exists():
        return None
    data = json.loads(gzip.decompress(path.read_bytes()))
    if data.get("format") != "syno.samples/1":
        return None
    return [(e["path"], e["operator"]) for e in data["samples"]]


def sample_operators(options: SynthOptions | str | dict, count: int, seed: int = 0, workers: int | None = None, *,
                     max_tries: int = 16, time_limit: float | None = None,
                     use_cache: bool = True) -> list[tuple[str, Operator]]:
    """``count`` distinct valid operators (fewer only if ``time_limit`` runs out or the space has
    fewer reachable ones), as ``[(path_string, Operator)]`` in a deterministic order.

    ``options``: :class:`SynthOptions`, a preset name (``"tiny"``, ``"resnet18"``, ``"gpt2"``) or a
    dict. ``workers`` processes sample with seeds derived from ``seed`` (``workers=1`` runs in this
    process; default ``options.workers``)."""
    opts = _options_of(options)
    if workers is None:
        workers = opts.workers
    key = (opts.digest(), seed, workers, max_tries)
    cached = _MEMO.get(key) if use_cache else None
    if (cached is None or len(cached) < count) and use_cache:
        pre = _precomputed(opts, seed)
        if pre is not None and len(pre) >= count and (cached is None or len(pre) > len(cached)):
            cached = pre
    if cached is not None and len(cached) >= count:
        return [(p, Operator.from_json(j)) for p, j in cached[:count]]

    results: list[tuple[str, str]] = []
    seen: set[str] = set()
    t0 = time.monotonic()
    round_ = 0
    options_json = opts.model_dump_json()
    space = SynthSpace(opts)  # fresh: results depend only on (options, count, seed, workers)
    pool = None
    if workers > 1:
        # warm the space here first: forked workers inherit it (and what it learnt about dead ends)
        _WORKER_SPACES[options_json] = space
        for p, op in sample(space, max(1, count // (2 * workers)), seed - 1, max_tries=max_tries,
                            time_limit=time_limit):
            if op.hash not in seen:
                seen.add(op.hash)
                results.append((p, op.to_json()))
        pool = ProcessPoolExecutor(max_workers=workers)
    try:
        while len(results) < count:
            remaining_time = None if time_limit is None else time_limit - (time.monotonic() - t0)
            if remaining_time is not None and remaining_time <= 0:
                break
            need = count - len(results)
            if pool is None:
                batches = [[(p, op.to_json()) for p, op in
                            sample(space, need, seed + 7919 * round_, max_tries=max_tries, time_limit=remaining_time)]]
            else:
                per = -(-need * 5 // (4 * workers)) + 1  # oversample: workers find some of the same
                jobs = [(options_json, per, seed * 1009 + 7919 * round_ + i, max_tries, remaining_time)
                        for i in range(workers)]
                batches = list(pool.map(_worker, jobs))
            added = 0
            for batch in batches:
                for p, j in batch:
                    h = Operator.from_json(j).hash
                    if h not in seen:
                        seen.add(h)
                        results.append((p, j))
                        added += 1
            round_ += 1
            if added == 0:
                break  # the walks find nothing new
    finally:
        if pool is not None:
            pool.shutdown()
            _WORKER_SPACES.pop(options_json, None)
    results = results[:count]
    if use_cache:
        _MEMO[key] = results
    return [(p, Operator.from_json(j)) for p, j in results]


def write_precomputed(options: SynthOptions, count: int, seed: int = 0, workers: int = 1) -> FsPath:
    """Sample and store ``count`` operators for ``options`` under ``syno/synth/data``."""
    got = sample_operators(options, count, seed, workers, use_cache=False)
    DATA_DIR.mkdir(exist_ok=True)
    path = precomputed_path(options, seed)
    data = {"format": "syno.samples/1", "options": json.loads(options.model_dump_json()), "seed": seed,
            "samples": [{"path": p, "operator": op.to_json(), "hash": op.hash} for p, op in got]}
    path.write_bytes(gzip.compress(json.dumps(data).encode(), mtime=0))
    return path


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - maintenance entry point
    import argparse

    ap = argparse.ArgumentParser(description="precompute operator samples for a preset")
    ap.add_argument("preset", choices=["tiny", "resnet18", "gpt2", "gpt2_linears"])
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args(argv)
    t = time.time()
    path = write_precomputed(_options_of(a.preset), a.count, a.seed, a.workers)
    print(f"wrote {path} in {time.time() - t:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


__all__ = ["sample", "sample_operators", "write_precomputed"]
