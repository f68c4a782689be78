"""One registry of operator implementations.

An implementation name is ``"<backend>:<plan>"``:

* backend ``einsum`` (the reference, any device), ``fast`` / ``fastd`` (cuDNN/cuBLAS stages,
  :mod:`syno.codegen.fast`), ``triton`` (generated fused kernels, :mod:`syno.codegen.triton`;
  CUDA, or CPU under ``TRITON_INTERPRET=1``);
* plan ``min`` (the module's plan), ``nodiag`` (no diagonal views) or ``wfirst`` (weights
  contracted first), see :data:`syno.codegen.fast.PLAN_OPTIONS`.

:func:`build` turns a name into a callable ``(x, *weights) -> y`` for a module;
:func:`candidates` lists what can run on a device; :func:`choose` times the candidates by GPU
time (CUDA-graph replays, falling back to CUDA events) and caches the winner on disk (at most
:data:`MAX_CACHE_ENTRIES`, oldest dropped first);
:func:`compile_operator` is the one explicit tuning step (pick the implementation, tune Triton
tiles within a budget) to run before timing or compiling a model: it returns a
:class:`CompiledOperator`; :func:`compile_model` runs it for every generated module of a model at
the shapes one forward pass gives them. ``forward`` never tunes except for
``implementation="auto"`` on its first eager CUDA call without a compiled choice.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

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

    def pack(self, module, x_strides=None) -> None:
        """Store ``module``'s weights in the layouts the generated kernels read best
        (:meth:`TritonOperator.weight_layouts`): same shapes and values, other strides, so every
        implementation still runs on them and no per-call copy is made."""
        from .triton.runtime import relayout

        layouts = self.operator.weight_layouts(x_strides)
        with torch.no_grad():
            for j, p in enumerate(module.weights, start=1):
                order = layouts.get(f"w{j}")
                if order is None or p.dim() != len(order):
                    continue
                want = relayout(torch.empty(p.shape, device="meta"), order).stride()
                if p.stride() != want:
                    p.data = relayout(p.data, order)


def build(module, name: str) -> Callable:
    backend, plan_name = parse(name)
    if backend == "triton":
        from .fast import variant_plan
        impl = TritonImpl(variant_plan(module, f"einsum:{plan_name}"))
        impl.pack(module)
        return impl
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


#: choices kept in the disk cache: one per (operator, sizes, device, dtype, layout, grad mode), so a
#: long search would otherwise grow it (and the time to read it) without end
MAX_CACHE_ENTRIES = 4096


def _cache_path() -> Path:
    return Path(os.environ.get("SYNO_CACHE_DIR", Path.home() / ".cache" / "syno")) / "registry.json"


def _bounded(data: dict[str, dict], limit: int) -> dict[str, dict]:
    """The newest ``limit`` entries (by their ``when``)."""
    if len(data) <= limit:
        return data
    newest = sorted(data, key=lambda k: data[k].get("when", 0.0), reverse=True)[:limit]
    return {k: data[k] for k in newest}


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
        data = _bounded(data, MAX_CACHE_ENTRIES)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)
    return choice


@dataclass(frozen=True)
class CompiledOperator:
    """What :func:`compile_operator` returns: a module with its implementation fixed, and how it
    was chosen (``ms``: GPU milliseconds per candidate, NaN where nothing was timed; ``tiles``:
    the Triton tile tuning per candidate). Calling it runs that implementation, no selection."""

    module: Any
    implementation: str
    ms: dict[str, float]
    tiles: dict[str, Any]
    fn: Callable = field(repr=False, compare=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, *self.module.weights)


def compile_operator(module, x: torch.Tensor, *, backward: bool = True, budget_s: float = 120.0,
                     backends: Sequence[str] | None = None, plans: Sequence[str] | None = None,
                     tune_tiles: bool = True, tune_backward: bool = True) -> CompiledOperator:
    """The explicit tuning step: tune Triton tiles of each Triton candidate (within ``budget_s``),
    time every candidate by GPU time, set ``module.implementation`` to the fastest. Run it before
    timing or ``torch.compile``; never inside."""
    start = time.perf_counter()
    dev = x.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
    names = candidates(module, dev, backends, plans)
    if not names:
        raise ValueError(f"no implementation of {module.op.name or module.op.hash} runs on {dev} with backends "
                         f"{list(backends or BACKENDS)} and plans {list(plans or PLAN_OPTIONS)}")
    tiles = {}
    if tune_tiles and dev == "cuda":
        from .triton.tune import tune
        for name in names:
            if parse(name)[0] != "triton" or time.perf_counter() - start > budget_s:
                continue
            impl = module._get_impl(name)
            xs = x.detach().to(dtype)
            impl.pack(module, xs.stride())
            ws = [w.detach().to(dtype) for w in module.weights]
            prec = "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"
            tiles[name] = tune(impl.operator, xs, ws, backward=backward and tune_backward, precision=prec,
                               budget_s=max(0.0, budget_s - (time.perf_counter() - start)))
            impl.pack(module, xs.stride())  # the tuner may have changed what is fused
    if dev == "cuda" and len(names) > 1:
        times = measure(module, x, names, backward)
    else:  # nothing to choose between
        times = {n: math.nan for n in names}
    choice = min(times, key=lambda n: times[n] if not math.isnan(times[n]) else math.inf)
    module.implementation = choice
    return CompiledOperator(module, choice, times, tiles, module._get_impl(choice))


def compile_model(model: torch.nn.Module, example: torch.Tensor, **kwargs) -> list[CompiledOperator]:
    """:func:`compile_operator` for every generated module of ``model`` at the input it gets in one
    forward pass on ``example`` (no grad, eval mode); modules of the same operator at the same input sizes,
    dtype and layout share one tuning. ``kwargs`` as :func:`compile_operator`'s."""
    from syno.models.profile import probe_forward

    from .fast import tune_key
    from .torch import SynoModule

    seen: list[tuple[SynoModule, torch.Tensor]] = []

    def capture(mod, inp):
        if all(m is not mod for m, _ in seen):
            seen.append((mod, inp[0].detach().clone()))

    probe_forward(model, example,
                  [m.register_forward_pre_hook(capture) for m in model.modules() if isinstance(m, SynoModule)])
    backward = kwargs.get("backward", True)
    done: dict[str, CompiledOperator] = {}
    out = []
    for mod, x in seen:
        key = tune_key(mod, x, backward) + json.dumps(sorted(kwargs.get("backends") or []))
        first = done.get(key)
        if first is None:
            first = done[key] = compile_operator(mod, x, **kwargs)
            out.append(first)
        else:
            mod.implementation = first.implementation
            out.append(CompiledOperator(mod, first.implementation, first.ms, first.tiles,
                                        mod._get_impl(first.implementation)))
    return out


__all__ = ["BACKENDS", "Backend", "parse", "normalize", "build", "candidates", "choose", "measure",
           "compile_operator", "compile_model", "CompiledOperator", "MAX_CACHE_ENTRIES", "gpu_time", "TritonImpl"]
