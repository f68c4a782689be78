"""Tile autotuning by GPU time, cached on disk.

Each stage (forward and backward) is timed on its own with ``triton.testing.do_bench`` (CUDA
events around many launches: GPU time, not Python wall clock) over a short list of tile
configurations, within a user-set time budget (stages left when it runs out keep the default
tile). Results go to ``$SYNO_CACHE_DIR/triton_tune.json`` (default ``~/.cache/syno``) keyed by
operator hash, plan variant, full mapping incl. dynamic sizes, dtype, input layout, device name
and torch/triton versions. Tuning is an explicit call (:func:`tune`); the forward never tunes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from dataclasses import replace

from .runtime import Config, TritonOperator, _pow2, default_split, grouped_config

#: two-operand (tl.dot) candidates, most promising first (the budget may stop the list early):
#: (BM, BN, BK, warps, stages)
#: BK=16 rows serve fused grouped producers, whose block-diagonal dot wastes BK/J of its MACs
DOT_CONFIGS = [(128, 64, 32, 4, 4), (128, 128, 32, 8, 3), (128, 64, 16, 4, 4), (64, 64, 32, 4, 4),
               (128, 64, 64, 4, 3), (64, 128, 32, 4, 4), (64, 64, 16, 4, 4), (256, 64, 32, 8, 3),
               (32, 64, 64, 4, 4)]
#: thin grouped stages (BM, BN, warps, stages): memory-bound, so wide row tiles
GROUPED_CONFIGS = [(128, 32, 4, 2), (256, 32, 8, 2), (128, 16, 4, 2), (256, 64, 8, 2), (64, 32, 4, 2),
                   (128, 64, 4, 2), (32, 16, 2, 2), (16, 16, 1, 2), (32, 32, 2, 2)]
SUM_CONFIGS = [(128, 1, 32, 4, 2), (256, 1, 16, 4, 2), (64, 1, 64, 4, 2)]
#: at most this many candidates per stage
MAX_CANDIDATES = int(os.environ.get("SYNO_TRITON_TUNE_MAX", "9"))


def cache_path() -> Path:
    return Path(os.environ.get("SYNO_CACHE_DIR", Path.home() / ".cache" / "syno")) / "triton_tune.json"


def _load() -> dict:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _save(data: dict) -> None:
    p = cache_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=0, sort_keys=True))
    tmp.replace(p)


def cache_key(op: TritonOperator, x: torch.Tensor, dtype: torch.dtype) -> str:
    import triton

    plan = op.plan
    layout = "".join(str(k) for k in sorted(range(x.dim()), key=lambda k: -x.stride(k)))
    dev = torch.cuda.get_device_name(x.device) if x.is_cuda else "cpu"
    parts = [plan.op.hash, f"wf{int(plan.weights_first)}d{int(plan.allow_diag)}",
             ",".join(f"{k}={v}" for k, v in sorted(plan.mapping.items())),
             "x" + ",".join(str(s) for s in x.shape), str(dtype), layout, dev,
             torch.__version__, triton.__version__]
    return "|".join(parts)


def load_cached(op: TritonOperator, x: torch.Tensor) -> int:
    """Install tiles cached for ``x``'s shape/dtype/layout/device; returns how many."""
    entry = _load().get(cache_key(op, x, x.dtype), {})
    vals = op.class_sizes(x)
    for tag, cfg in entry.items():
        if tag == "fuse":  # changes the op's outputs: only an explicit tune() applies it
            continue
        direction, idx = tag.split(":")
        op.configs[op.config_key(direction, int(idx), x.dtype, vals)] = Config.parse(cfg["config"])
    return len(entry)


def candidates(spec, m: int, n: int, k: int) -> list[Config]:
    out = []
    if spec.grouped:
        for bm, bn, w, s in GROUPED_CONFIGS:
            c = grouped_config(spec, Config(min(bm, _pow2(m, 16, 256)), bn, 16, w, s), n)
            if c not in out:
                out.append(c)
        return out[:MAX_CANDIDATES]
    for bm, bn, bk, w, s in (DOT_CONFIGS if spec.two else SUM_CONFIGS):
        bm = min(bm, _pow2(m, 16, 256))
        if spec.two:
            bn = min(bn, _pow2(n, 16, 256))
            bk = min(bk, _pow2(k, 16, 128))
        else:
            bk = min(bk, _pow2(k, 1, 128))
        c = Config(bm, bn, bk, w, s)
        if c not in out:
            out.append(c)
    return out[:MAX_CANDIDATES]


def _bench(fn) -> float:
    from triton.testing import do_bench
    return do_bench(fn, warmup=5, rep=20)


def tune(op: TritonOperator, x: torch.Tensor, weights, *, backward: bool = True, budget_s: float = 60.0,
         precision: str = "ieee", use_cache: bool = True, verbose: bool = False, timer=None,
         fusion: bool | None = None) -> dict:
    """Pick each stage's tile by GPU time on these inputs; returns {stage: (config, ms)}.

    ``timer(fn) -> ms``: how a stage launch and a whole forward are timed (default: do_bench for
    tiles, CUDA-graph replays for the fusion choice); ``fusion``: compare fused and unfused
    forwards (default: on CUDA). Both exist so the whole flow runs under the CPU interpreter."""
    bench = timer or _bench

    dtype = x.dtype
    key = cache_key(op, x, dtype)
    vals = op.class_sizes(x)
    data = _load() if use_cache else {}
    entry = data.get(key, {})
    result = {}
    for tag, cfg in entry.items():
        if tag == "fuse":
            op.fused = frozenset(cfg["leaves"])
            result[tag] = cfg
            continue
        direction, idx = tag.split(":")
        op.configs[op.config_key(direction, int(idx), dtype, vals)] = Config.parse(cfg["config"])
        if cfg.get("flat"):
            op.flat_thin = op.flat_thin | {int(idx)}
        result[tag] = (cfg["config"], cfg["ms"])
    todo = [("fwd", i) for i in range(len(op.prog.stages))]
    if backward:
        todo += [("bwd", i) for i in range(len(op.bwd))]
    todo = [t for t in todo if f"{t[0]}:{t[1]}" not in entry]
    fusable = op.fusable() if (x.is_cuda if fusion is None else fusion) else []
    if not todo and (not fusable or "fuse" in entry):
        return result
    default_fused, op.fused = op.fused, frozenset()  # tiles are tuned unfused
    y, inter = op.forward(x, weights, precision)
    fbufs = op.inputs(x, weights)
    fbufs.update(zip(op.prog.intermediates, inter))
    fbufs["y"] = y
    bbufs: dict = {}
    if backward:
        needs = [True] * (1 + len(weights))
        op.backward(torch.randn_like(y), x, weights, inter, needs, precision, keep=bbufs)
    start = time.perf_counter()
    for direction, i in todo:
        if time.perf_counter() - start > budget_s:
            break
        bufs = fbufs if direction == "fwd" else bbufs
        best, flat = best_tile(op, direction, i, bufs, vals, dtype, precision, bench, verbose)
        if best is None:
            continue
        op.configs[op.config_key(direction, i, dtype, vals)] = best[0]
        entry[f"{direction}:{i}"] = {"config": best[0].key(), "ms": best[1], "flat": flat}
        result[f"{direction}:{i}"] = (best[0].key(), best[1])
    if fusable and "fuse" not in entry and time.perf_counter() - start <= budget_s:
        entry["fuse"] = result["fuse"] = choose_fusion(op, x, weights, fusable, precision, timer)
    elif "fuse" not in entry:
        op.fused = default_fused  # no time left to compare: keep the default
    if use_cache:
        data = _load()
        data[key] = entry
        _save(data)
    return result


def _default_configs(spec, m: int, n: int, k: int, b: int) -> list[Config]:
    return [replace(cfg, split=default_split(spec, cfg, m, n, k, b)) for cfg in candidates(spec, m, n, k)]


def best_tile(op: TritonOperator, direction: str, i: int, bufs, vals, dtype, precision, bench,
              verbose: bool = False, configs_for=_default_configs) -> tuple[tuple[Config, float] | None, bool]:
    """((config, ms) of the fastest tile of one stage whose result agrees with the default tile's,
    or None; whether it is the flat kernel): a thin grouped forward stage is also timed as the flat
    kernel (the grouped one launches few programs on small problems, e.g. N=1) and the faster
    kept, leaving ``op.flat_thin`` set accordingly. ``configs_for(spec, m, n, k, b)``: the tiles
    to try (default: the tuner's candidates with split-K where the output tiles are few)."""
    _, spec, _ = op.kernel(direction, i, dtype, bufs)
    want = stage_output(op, direction, i, bufs, vals, dtype, None, precision)  # the default tile's
    best = _best_tile(op, direction, i, bufs, vals, dtype, precision, bench, want, verbose, configs_for)
    if direction != "fwd" or not spec.grouped:
        return best, False
    op.flat_thin = op.flat_thin | {i}
    alt = _best_tile(op, direction, i, bufs, vals, dtype, precision, bench, want, verbose, configs_for)
    if alt is not None and (best is None or alt[1] < best[1]):
        return alt, True
    op.flat_thin = op.flat_thin - {i}
    return best, False


def _best_tile(op: TritonOperator, direction: str, i: int, bufs, vals, dtype, precision, bench, want,
               verbose: bool, configs_for) -> tuple[Config, float] | None:
    """The fastest tile of ``configs_for`` whose result agrees with ``want``: (config, ms)."""
    _, spec, (m, n, b, k), _ = op.resolve(direction, i, bufs, vals, dtype)
    best = None
    for cfg in configs_for(spec, m, n, k, b):
        try:
            got = stage_output(op, direction, i, bufs, vals, dtype, cfg, precision)
        except Exception as exc:  # e.g. out of shared memory for this tile
            if verbose:
                print(f"# {direction}{i} {cfg.key()}: {type(exc).__name__}")
            continue
        if not agrees(got, want, dtype, precision):
            # a tile whose result differs from the default tile's (a miscompiled pipeline of
            # chained dots was seen on the H100): never chosen, however fast
            if verbose:
                print(f"# {direction}{i} {cfg.key()}: result differs, rejected")
            continue
        if direction == "fwd":
            run = lambda: op.launch_forward(i, bufs, vals, dtype, cfg, precision)  # noqa: E731
        else:
            run = lambda: op.launch(direction, i, bufs, vals, dtype, cfg, precision)  # noqa: E731
        try:
            ms = bench(run)
        except Exception as exc:
            if verbose:
                print(f"# {direction}{i} {cfg.key()}: {type(exc).__name__}")
            continue
        if verbose:
            print(f"# {direction}{i} {cfg.key()}: {ms * 1e3:.1f} us")
        if best is None or ms < best[1]:
            best = (cfg, ms)
    return best


def agrees(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, precision: str = "ieee") -> bool:
    """Whether a candidate kernel's result matches the reference tile's, up to the rounding of
    ``dtype`` (bf16/fp16 inputs, TF32 or IEEE fp32 products): a relative max error."""
    if dtype in (torch.bfloat16, torch.float16):
        tol = 5e-2
    elif dtype == torch.float32:
        tol = 1e-4 if precision == "ieee" else 2e-2
    else:
        tol = 1e-9
    g, w = got.double(), want.double()
    if not torch.isfinite(g).all():
        return False
    return bool((g - w).abs().max() <= tol * (1.0 + w.abs().max()))


def stage_output(op: TritonOperator, direction: str, index: int, bufs, vals, dtype, cfg, precision) -> torch.Tensor:
    """One launch of a stage with tile ``cfg`` (None: the default tile) into its (re-zeroed)
    output buffer; a copy of the result."""
    stages = op.prog.stages if direction == "fwd" else op.bwd
    leaf = stages[index].store.leaf
    if direction == "fwd":
        op.launch_forward(index, bufs, vals, dtype, cfg, precision)
    else:
        bufs[leaf].zero_()  # atomic and split-K stages accumulate
        op.launch(direction, index, bufs, vals, dtype, cfg, precision)
    return bufs[leaf].clone()


def choose_fusion(op: TritonOperator, x, weights, fusable, precision, timer=None) -> dict:
    """Forward GPU time (CUDA-graph replays) without and with the fusable intermediates computed
    inside their consumers; keeps the faster whose output matches the unfused one's, and returns
    {"leaves", "ms"}."""
    from syno.codegen.registry import gpu_time

    timer = timer or gpu_time
    times = {}
    with torch.no_grad():
        op.fused = frozenset()
        want, _ = op.forward(x, weights, precision)
        want = want.clone()
    for leaves in ((), tuple(fusable)):
        op.fused = frozenset(leaves)
        try:
            with torch.no_grad():
                got, _ = op.forward(x, weights, precision)
                if leaves and not agrees(got, want, x.dtype, precision):
                    times[leaves] = float("inf")  # differs from the unfused result: never chosen
                    continue
                times[leaves] = timer(lambda: op.forward(x, weights, precision))
        except Exception:
            times[leaves] = float("inf")
    best = min(times, key=times.get)
    op.fused = frozenset(best)
    return {"leaves": list(best), "ms": {",".join(k) or "none": v for k, v in times.items()}}


__all__ = ["tune", "cache_path", "cache_key", "candidates", "agrees", "stage_output", "best_tile"]
