"""Measurements quoted in docs/synthesis.md: ``python -m syno.synth.bench``.

* walk success rates with and without the bounds (single descents, and walks with backtracking);
* sampling throughput (distinct valid operators per second) per preset and worker count;
* exhaustive enumeration of the micro space with and without the shape-distance bound.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from .options import SynthOptions
from .sampler import sample_operators
from .space import SynthSpace, iterate_finals


def walk_rates(preset: str, walks: int, max_tries: int, seed: int = 0, **space_kw) -> dict:
    opts = getattr(SynthOptions, preset)()
    settings = dict(space_kw)
    if space_kw.pop("no_flops_pruning", False):
        opts = opts.model_copy(update={"enable_flops_pruning": False})
    space = SynthSpace(opts, **space_kw)
    rng = random.Random(seed)
    t = time.perf_counter()
    ok = 0
    distinct = set()
    for _ in range(walks):
        got = space.random_walk(space.root(), rng, max_tries)
        if got is not None:
            ok += 1
            distinct.add(got[1].operator().hash)
    dt = time.perf_counter() - t
    return {"preset": preset, "walks": walks, "max_tries": max_tries, "ok": ok, "distinct": len(distinct),
            "success_rate": ok / walks, "seconds": round(dt, 1), "states": space.stats["states"],
            "settings": settings}


def throughput(preset: str, count: int, workers: int, seed: int = 0) -> dict:
    """Distinct valid operators per second from a fresh space; with one worker also per CPU second
    of this process (the steadier figure on a shared machine)."""
    t, c = time.perf_counter(), time.process_time()
    got = sample_operators(preset, count, seed, workers, use_cache=False)
    dt, dc = time.perf_counter() - t, time.process_time() - c
    out = {"preset": preset, "count": len(got), "workers": workers, "seconds": round(dt, 1),
           "ops_per_second": round(len(got) / dt, 2)}
    if workers == 1:
        out.update(cpu_seconds=round(dc, 1), ops_per_cpu_second=round(len(got) / dc, 2))
    return out


def micro_exhaustive() -> dict:
    opts = SynthOptions(input_shape="[N, C_in: unordered, H]", output_shape="[N, C_out: unordered, H]",
                        primary_specs=("N: 0", "C_in: 2", "C_out: 2", "H: 0"), coefficient_specs=("k=3: 2", "s=2: 2"),
                        fixed_io_pairs=((0, 0),), mappings=({"N": 1, "C_in": 4, "C_out": 8, "H": 8},),
                        depth=5, max_reductions=2, max_tensors=3, max_chain_length=4, min_single_weight_params=1,
                        max_expansion_repeat_multiplier=4, max_strides=1, max_shifts=1, min_unfold_ratio=2.0,
                        min_weight_share_dim=2)
    out = {}
    for use in (True, False):
        space = SynthSpace(opts, use_distance=use)
        t = time.perf_counter()
        finals = {f.operator().hash for f in iterate_finals(space)}
        out["with_bound" if use else "without_bound"] = {"finals": len(finals), "nodes": len(space),
                                                          "seconds": round(time.perf_counter() - t, 1)}
    return out


def main() -> None:  # pragma: no cover - measurement script
    ap = argparse.ArgumentParser()
    ap.add_argument("--walks", type=int, default=200)
    ap.add_argument("--count", type=int, default=60)
    ap.add_argument("--skip-micro", action="store_true")
    ap.add_argument("--throughput-only", action="store_true",
                    help="only the sampling throughput of resnet18 with one worker (issue #17's target)")
    a = ap.parse_args()
    if a.throughput_only:
        print(json.dumps(throughput("resnet18", a.count, 1)), flush=True)
        return
    rows = []
    for preset in ("tiny", "resnet18"):
        rows.append(walk_rates(preset, a.walks, 0))
        rows.append(walk_rates(preset, a.walks, 0, use_distance=False))
        rows.append(walk_rates(preset, a.walks, 0, use_distance=False, no_flops_pruning=True))
        rows.append(walk_rates(preset, a.walks // 2, 16))
        rows.append(walk_rates(preset, a.walks // 2, 16, adaptive=False))
        rows.append(walk_rates(preset, a.walks // 2, 16, use_distance=False))
    for r in rows:
        print(json.dumps(r), flush=True)
    for preset in ("tiny", "resnet18"):
        for workers in (1, 2):
            print(json.dumps(throughput(preset, a.count, workers)), flush=True)
    if not a.skip_micro:
        print(json.dumps(micro_exhaustive()), flush=True)


if __name__ == "__main__":  # pragma: no cover
    main()
