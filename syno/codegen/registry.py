"""One registry of operator implementations.

An implementation name is ``"<backend>:<plan>"``:

* backend ``einsum`` (the reference, any device), ``fast`` / ``fastd`` (cuDNN/cuBLAS stages,
  :mod:`syno.codegen.fast`), ``triton`` (generated fused kernels, :mod:`syno.codegen.triton`;
  CUDA, or CPU under ``TRITON_INTERPRET=1``);
* plan ``min`` (the module's plan), ``nodiag`` (no diagonal views) or ``wfirst`` (weights
  contracted first), see :data:`syno.codegen.fast.PLAN_OPTIONS`.

:func:`build` turns a name into a callable ``(x, *weights) -> y`` for a module;
:func:`candidates` lists what can run on a device; :func:`choose` times the candidates by GPU
time (CUDA-graph replays, falling back to CUDA events) and caches the winner on disk;
:func:`compile_module` is the one explicit tuning step (pick the implementation, tune Triton
tiles within a budget) to run before timing or compiling a model — ``forward`` never tunes
except for ``implementation="auto"`` on its first eager CUDA call.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from .fast import PLAN_OPTIONS


@dataclass(frozen=True)
class Backend:
    name: str
    description: str
    devices: tuple[str, ...]          # device types it runs on ("cpu" for triton: interpreter only)

    def runs_on(self, device: str) -> bool:
        if self.name == "triton":
            from .triton import available
            from .triton.runtime import interpreting
            return available() and (device == "cuda" or interpreting())
        return device in self.devices


BACKENDS = {
    "einsum": Backend("einsum", "reference: torch.einsum per contraction", ("cpu", "cuda", "mps")),
    "fast": Backend("fast", "cuDNN/cuBLAS conv and linear stages, delta kernels", ("cpu", "cuda", "mps")),
    "fastd": Backend("fastd", "cuDNN stages, dense block-diagonal groups", ("cpu", "cuda", "mps")),
    "triton": Backend("triton", "generated Triton implicit-GEMM kernels, fwd + bwd", ("cuda",)),
}
ALIASES = {"einsum": "einsum:min", "fast": "fast:min", "fastd": "fastd:min", "triton": "triton:min"}


def parse(name: str) -> tuple[str, str]:
    """``"triton"`` -> ``("triton", "min")``; one clear error for unknown names."""
    name = ALIASES.get(name, name)
    backend, _, plan = name.partition(":")
    if backend not in BACKENDS or plan not in PLAN_OPTIONS:
        raise ValueError(f"unknown implementation {name!r}: use '<{'|'.join(BACKENDS)}>:"
                         f"<{'|'.join(PLAN_OPTIONS)}>' or 'auto'")
    return backend, plan


def normalize(name: str) -> str:
    if name == "auto":
        return name
    return "%s:%s" % parse(name)


class TritonImpl:
    """Callable running a plan through the ``syno::triton_fwd`` custom op. Under autocast the
    inputs are cast to the autocast dtype (custom ops are not autocast-aware); fp32 dots use TF32
    when ``torch.backends.cuda.matmul.allow_tf32`` is on."""

    def __init__(self, plan):
        from .triton.ops import register
        from .triton.runtime import TritonOperator

        self.operator = TritonOperator(plan)
        self.key = register(self.operator)

    def __call__(self, x: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        from .triton.ops import apply

        dev = x.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        x = x.to(dtype)
        ws = [w.to(dtype) for w in weights]
        prec = "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"
        return apply(self.key, x, ws, prec)

    def source(self, dtype=torch.bfloat16) -> str:
        return self.operator.source(dtype)


def build(module, name: str) -> Callable:
    backend, plan_name = parse(name)
    if backend == "triton":
        from .fast import variant_plan
        return TritonImpl(variant_plan(module, f"einsum:{plan_name}"))
    from .fast import build_variant
    return build_variant(module, f"{backend}:{plan_name}")


def candidates(module, device: str, backends: Sequence[str] | None = None,
               plans: Sequence[str] | None = None) -> list[str]:
    """Distinct runnable candidates: the cuDNN-path variants the peak-memory guard allows, plus
    the Triton kernels of each distinct plan (they materialise only the contraction results)."""
    from .fast import candidate_variants, variant_plan

    out = [v for v in candidate_variants(module)]
    if BACKENDS["triton"].runs_on(device):
        seen = set()
        for plan_name in PLAN_OPTIONS:
            plan = variant_plan(module, "einsum:" + plan_name)
            sig = tuple((s.kind, s.srcs, s.src_axes, s.dst_axes) for s in plan.steps)
            if sig not in seen:
                seen.add(sig)
                out.append(f"triton:{plan_name}")
    if backends is not None:
        out = [n for n in out if parse(n)[0] in backends]
    if plans is not None:
        out = [n for n in out if parse(n)[1] in plans]
    return out


def gpu_time(fn: Callable[[], object], reps: int = 20) -> float:
    """Milliseconds of GPU time per call: CUDA-graph replays (no launch overhead), or CUDA
    events around back-to-back calls when the callable cannot be captured."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        run = graph.replay
    except Exception:
        torch.cuda.synchronize()
        run = fn
    run()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = math.inf
    for _ in range(3):
        s.record()
        for _ in range(reps):
            run()
        e.record()
        e.synchronize()
        best = min(best, s.elapsed_time(e) / reps)
    return best


def measure(module, x: torch.Tensor, names: Sequence[str], backward: bool) -> dict[str, float]:
    """GPU milliseconds of each implementation on ``x`` (inf where it fails)."""
    out = {}
    weights = [w.detach().requires_grad_(backward) for w in module.weights]
    xx = x.detach().requires_grad_(backward and x.requires_grad)
    for name in names:
        try:
            fn = module._get_impl(name)
            gy = None

            def run(fn=fn):
                nonlocal gy
                y = fn(xx, *weights)
                if backward:
                    if gy is None:
                        gy = torch.randn_like(y)
                    torch.autograd.grad(y, [w for w in weights], gy)
                return y

            with torch.enable_grad() if backward else torch.no_grad():
                out[name] = gpu_time(run)
        except Exception:  # a variant that cannot run here (memory, capture) is skipped
            out[name] = math.inf
            torch.cuda.empty_cache()
    return out


def _cache_path() -> Path:
    return Path(os.environ.get("SYNO_CACHE_DIR", Path.home() / ".cache" / "syno")) / "registry.json"


def choose(module, x: torch.Tensor, *, backward: bool | None = None, backends: Sequence[str] | None = None,
           use_cache: bool = True) -> str:
    """Fastest implementation for ``x`` by GPU time; disk-cached (key: operator hash, mapping with
    dynamic sizes, device name, dtype, layout, torch version, fwd|fwdbwd)."""
    from .fast import tune_key

    if backward is None:
        backward = torch.is_grad_enabled() and any(w.requires_grad for w in module.weights)
    key = tune_key(module, x, backward) + json.dumps(sorted(backends or []))
    path = _cache_path()
    try:
        data = json.loads(path.read_text()) if use_cache else {}
    except (OSError, ValueError):
        data = {}
    names = candidates(module, x.device.type, backends)
    hit = data.get(key)
    if hit and hit.get("choice") in names:
        return hit["choice"]
    times = measure(module, x, names, backward)
    choice = min(times, key=times.get)
    if use_cache:
        data[key] = {"choice": choice, "ms": times, "when": time.time()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)
    return choice


def compile_module(module, x: torch.Tensor, *, backward: bool = True, budget_s: float = 120.0,
                   backends: Sequence[str] | None = None, plans: Sequence[str] | None = None,
                   tune_tiles: bool = True, tune_backward: bool = True) -> dict:
    """The explicit tuning step: tune Triton tiles of each Triton candidate (within ``budget_s``),
    time every candidate by GPU time, set ``module.implementation`` to the fastest. Returns
    ``{"choice", "ms", "tiles"}``. Run it before timing or ``torch.compile``; never inside."""
    start = time.perf_counter()
    dev = x.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
    names = candidates(module, dev, backends, plans)
    tiles = {}
    if tune_tiles and dev == "cuda":
        from .triton.tune import tune
        for name in names:
            if not name.startswith("triton") or time.perf_counter() - start > budget_s:
                continue
            impl = module._get_impl(name)
            xs = x.detach().to(dtype)
            ws = [w.detach().to(dtype) for w in module.weights]
            prec = "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"
            tiles[name] = tune(impl.operator, xs, ws, backward=backward and tune_backward, precision=prec,
                               budget_s=max(0.0, budget_s - (time.perf_counter() - start)))
    if dev == "cuda" and len(names) > 1:
        times = measure(module, x, names, backward)
    else:  # nothing to choose between
        times = {n: math.nan for n in names}
    choice = min(times, key=lambda n: times[n] if not math.isnan(times[n]) else math.inf)
    module.implementation = choice
    return {"choice": choice, "ms": times, "tiles": tiles}


__all__ = ["BACKENDS", "Backend", "parse", "normalize", "build", "candidates", "choose", "measure",
           "compile_module", "gpu_time", "TritonImpl"]
