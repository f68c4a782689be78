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
:data:`MAX_CACHE_ENTRIES`, oldest dropped first).

**Tuning happens in one explicit step, never in ``forward``.** :func:`compile_operator` picks a
module's implementation (Triton tiles tuned within a budget, then every candidate timed, or the
choice read from the disk cache) and fixes it on the module; :func:`compile_model` runs it for
every generated module of a model at the shapes one forward pass gives them. Every pipeline that
runs a model (training: :mod:`syno.train.pipeline`; search latency: :mod:`syno.search.latency`;
benchmarks: :mod:`syno.bench.tune`) calls :func:`compile_model` under the dtype/autocast, memory
layout and grad mode it will run with, before it trains or times. :data:`TUNER_CALLS` counts the
tuner's work (candidate timings, tile tunings), so a test can prove ``forward`` did none.

The miss rule (a module left at ``implementation="auto"``, never compiled, run on CUDA): ``forward``
runs the module's default variant (:func:`syno.codegen.fast.default_variant`, deterministic) and
warns once per module (:class:`UntunedWarning`, not during :func:`compile_model`'s own probe
pass); it neither tunes nor raises. Raising would break every correct caller that is not a
timed pipeline (interactive use, export, equivalence checks, quantization) for a choice that only
changes speed, and silently tuning there is what this rule replaces: a first call that takes
seconds, is timed into a benchmark, or runs inside a CUDA-graph capture. Off CUDA nothing is
timed: ``"auto"`` runs ``module.cpu_variant`` (the reference unless it would not fit), and
:func:`compile_operator` fixes that same variant, so compiling changes nothing there.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections import Counter
from contextlib import contextmanager
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


#: the tuner's work since import, by kind: ``"measure"`` (candidates timed by :func:`measure`) and
#: ``"tiles"`` (Triton tile tunings by :func:`compile_operator`). Only the explicit step adds to it;
#: tests compare it around a ``forward`` to prove that nothing was tuned there
TUNER_CALLS: Counter[str] = Counter()


def measure(module, x: torch.Tensor, names: Sequence[str], backward: bool) -> dict[str, float]:
    """GPU milliseconds of each implementation on ``x`` (inf where it fails)."""
    TUNER_CALLS["measure"] += 1
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


def _read_cache() -> dict[str, dict]:
    try:
        data = json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _store(key: str, choice: str, times: dict[str, float]) -> None:
    """Add one choice to the disk cache (re-read first: another process may have added entries)."""
    data = _read_cache()
    data[key] = {"choice": choice, "ms": times, "when": time.time()}
    data = _bounded(data, MAX_CACHE_ENTRIES)
    path = _cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # concurrent workers never share a temporary file
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)


def _choice_key(module, x: torch.Tensor, backward: bool, backends: Sequence[str] | None,
                plans: Sequence[str] | None = None, tiles: bool = True) -> str:
    """Disk-cache key of one choice: :func:`syno.codegen.fast.tune_key` (operator, sizes, device,
    dtype, layout, torch version, grad mode) plus the candidate filters; a choice timed with
    untuned Triton tiles is kept apart from a tuned one."""
    from .fast import tune_key

    key = tune_key(module, x, backward) + json.dumps(sorted(backends or []))
    if plans:
        key += json.dumps(sorted(plans))
    return key if tiles else key + "|untuned-tiles"


def choose(module, x: torch.Tensor, *, backward: bool | None = None, backends: Sequence[str] | None = None,
           use_cache: bool = True) -> str:
    """Fastest implementation for ``x`` by GPU time; disk-cached (key: operator hash, mapping with
    dynamic sizes, device name, dtype, layout, torch version, fwd|fwdbwd). Tuning: call it from the
    explicit step (:func:`compile_operator` does), never from ``forward``."""
    if backward is None:
        backward = torch.is_grad_enabled() and any(w.requires_grad for w in module.weights)
    key = _choice_key(module, x, backward, backends)
    names = candidates(module, x.device.type, backends)
    hit = _read_cache().get(key) if use_cache else None
    if hit and hit.get("choice") in names:
        return hit["choice"]
    times = measure(module, x, names, backward)
    choice = min(times, key=times.get)
    if use_cache:
        _store(key, choice, times)
    return choice


def untimed_choice(module, names: Sequence[str], device: str) -> str:
    """The deterministic pick when nothing is timed (off CUDA, or a single candidate): what
    ``"auto"`` runs there (``cpu_variant`` off CUDA, the default variant on CUDA) when it is a
    candidate, else the first candidate."""
    want = module.cpu_variant if device != "cuda" else module._default
    return want if want in names else names[0]


# -- the miss rule -----------------------------------------------------------------------------
class UntunedWarning(UserWarning):
    """An ``"auto"`` module ran on CUDA without :func:`compile_model` / :func:`compile_operator`:
    it runs its default variant, untuned (the miss rule in this module's docstring)."""


_PROBING = [0]  # > 0 while compile_model's probe pass runs the not yet compiled modules


@contextmanager
def _probing():
    _PROBING[0] += 1
    try:
        yield
    finally:
        _PROBING[0] -= 1


def warn_untuned(module, x: torch.Tensor) -> bool:
    """The miss rule's warning for ``module`` run on ``x``; returns whether it was issued (not while
    :func:`compile_model` probes: its modules are about to be compiled)."""
    if _PROBING[0]:
        return False
    dev = x.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
    warnings.warn(
        f"operator {module.op.name or module.op.hash}: implementation='auto' on {dev} ({dtype}) was never "
        f"compiled, so it runs the default {module._default!r} untuned; call "
        f"syno.codegen.compile_model(model, example) under the dtype, layout and grad mode it runs with "
        f"(or set module.implementation)", UntunedWarning, stacklevel=2)
    return True


# -- the explicit step -------------------------------------------------------------------------
@dataclass(frozen=True)
class CompiledOperator:
    """What :func:`compile_operator` returns: a module with its implementation fixed, and how it
    was chosen (``ms``: GPU milliseconds per candidate, NaN where nothing was timed; ``tiles``:
    the Triton tile tuning per candidate; ``cached``: the choice came from the disk cache).
    Calling it runs that implementation, no selection."""

    module: Any
    implementation: str
    ms: dict[str, float]
    tiles: dict[str, Any]
    fn: Callable = field(repr=False, compare=False)
    cached: bool = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, *self.module.weights)


def _tune_tiles(module, name: str, x: torch.Tensor, dtype: torch.dtype, backward: bool, budget_s: float):
    """Tune the Triton tiles of implementation ``name`` on ``x`` (the tile cache of
    :mod:`syno.codegen.triton.tune` answers repeats) and pack the weights for what it fuses."""
    from .triton.tune import tune

    TUNER_CALLS["tiles"] += 1
    impl = module._get_impl(name)
    xs = x.detach().to(dtype)
    impl.pack(module, xs.stride())
    ws = [w.detach().to(dtype) for w in module.weights]
    prec = "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"
    out = tune(impl.operator, xs, ws, backward=backward, precision=prec, budget_s=max(0.0, budget_s))
    impl.pack(module, xs.stride())  # the tuner may have changed what is fused
    return out


def compile_operator(module, x: torch.Tensor, *, backward: bool = True, budget_s: float = 120.0,
                     backends: Sequence[str] | None = None, plans: Sequence[str] | None = None,
                     tune_tiles: bool = True, tune_backward: bool = True, use_cache: bool = True) -> CompiledOperator:
    """The explicit tuning step: tune Triton tiles of each Triton candidate (within ``budget_s``),
    time every candidate by GPU time, set ``module.implementation`` to the fastest. A choice in
    the disk cache for the same key (:func:`choose`'s) is taken without timing (only the chosen
    Triton kernel's tiles are tuned, from their own cache). Run it under the autocast, layout and
    grad mode the module will run with, before timing or ``torch.compile``; never inside. Off
    CUDA nothing is timed: :func:`untimed_choice` picks."""
    start = time.perf_counter()
    dev = x.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
    names = candidates(module, dev, backends, plans)
    if not names:
        raise ValueError(f"no implementation of {module.op.name or module.op.hash} runs on {dev} with backends "
                         f"{list(backends or BACKENDS)} and plans {list(plans or PLAN_OPTIONS)}")
    timed = dev == "cuda" and len(names) > 1
    has_triton = any(parse(n)[0] == "triton" for n in names)
    key = _choice_key(module, x, backward, backends, plans, tiles=tune_tiles or not has_triton)
    hit = _read_cache().get(key) if use_cache and timed else None
    if not (hit and hit.get("choice") in names):
        hit = None
    tiles = {}
    all_tuned = True  # a choice timed with some tiles left untuned (budget spent) is not cached
    if tune_tiles and dev == "cuda":
        for name in names:
            if parse(name)[0] != "triton" or (hit is not None and name != hit["choice"]):
                continue  # the cache already chose: only the chosen kernel's tiles matter
            left = budget_s - (time.perf_counter() - start)
            if left <= 0:
                all_tuned = False
                continue
            tiles[name] = _tune_tiles(module, name, x, dtype, backward and tune_backward, left)
    if hit is not None:
        times = {n: float(hit.get("ms", {}).get(n, math.nan)) for n in names}
        choice = hit["choice"]
    elif timed:
        times = measure(module, x, names, backward)
        choice = min(times, key=times.get)
        if use_cache and all_tuned:
            _store(key, choice, times)
    else:  # nothing to choose between, or nothing timed here
        times = {n: math.nan for n in names}
        choice = untimed_choice(module, names, dev)
    module.implementation = choice
    return CompiledOperator(module, choice, times, tiles, module._get_impl(choice), cached=hit is not None)


def _needs_compile(module, device: str, tune_tiles: bool) -> bool:
    """``"auto"`` modules are compiled; a fixed implementation (the user's or the search's) is kept,
    only a Triton one has its tiles tuned on CUDA."""
    impl = module.implementation
    return impl == "auto" or (tune_tiles and device == "cuda" and parse(impl)[0] == "triton")


def _compile_one(module, x: torch.Tensor, kwargs: dict) -> CompiledOperator:
    """An ``"auto"`` module: :func:`compile_operator`. A fixed Triton one: its tiles only (the fixed
    name may be a plan that :func:`candidates` folds into an identical one, so it is not re-chosen)."""
    impl = module.implementation
    if impl == "auto":
        return compile_operator(module, x, **kwargs)
    dev = x.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
    backward = kwargs.get("backward", True) and kwargs.get("tune_backward", True)
    tiles = {impl: _tune_tiles(module, impl, x, dtype, backward, kwargs.get("budget_s", 120.0))}
    return CompiledOperator(module, impl, {impl: math.nan}, tiles, module._get_impl(impl))


def compile_model(model: torch.nn.Module, example: torch.Tensor, **kwargs) -> list[CompiledOperator]:
    """:func:`compile_operator` for every generated module of ``model`` at the input it gets in one
    forward pass on ``example`` (no grad, eval mode); modules of the same operator at the same input
    sizes, dtype and layout share one tuning. ``kwargs`` as :func:`compile_operator`'s.

    Call it under the autocast context, with the memory layout (parameters and ``example``
    channels_last or not) and with the ``backward`` (grad mode) the model will run with: they are
    part of what is timed and of the cache key. Modules with a fixed implementation keep it (a
    Triton one gets its tiles tuned on CUDA). A model without ``"auto"`` modules is not probed."""
    from syno.models.profile import probe_forward

    from .torch import SynoModule

    mods = [m for m in model.modules() if isinstance(m, SynoModule)]
    tune_tiles = kwargs.get("tune_tiles", True)
    if not any(_needs_compile(m, example.device.type, tune_tiles) for m in mods):
        return [CompiledOperator(m, m.implementation, {m.implementation: math.nan}, {},
                                 m._get_impl(m.implementation)) for m in mods]

    seen: list[tuple[SynoModule, torch.Tensor]] = []

    def capture(mod, inp):
        if all(m is not mod for m, _ in seen):
            seen.append((mod, inp[0].detach().clone()))

    with _probing():  # the modules run uncompiled here: no miss warning
        probe_forward(model, example, [m.register_forward_pre_hook(capture) for m in mods])
    backward = kwargs.get("backward", True)
    done: dict[str, CompiledOperator] = {}
    out = []
    for mod, x in seen:
        impl = mod.implementation
        if not _needs_compile(mod, x.device.type, tune_tiles):
            out.append(CompiledOperator(mod, impl, {impl: math.nan}, {}, mod._get_impl(impl)))
            continue
        key = _choice_key(mod, x, backward, kwargs.get("backends"), kwargs.get("plans")) + impl
        first = done.get(key)
        if first is None:
            first = done[key] = _compile_one(mod, x, kwargs)
            out.append(first)
        else:
            mod.implementation = first.implementation
            out.append(CompiledOperator(mod, first.implementation, first.ms, first.tiles,
                                        mod._get_impl(first.implementation), first.cached))
    return out


__all__ = ["BACKENDS", "Backend", "parse", "normalize", "build", "candidates", "choose", "measure",
           "compile_operator", "compile_model", "CompiledOperator", "MAX_CACHE_ENTRIES", "gpu_time", "TritonImpl",
           "TUNER_CALLS", "UntunedWarning", "untimed_choice", "warn_untuned"]
