"""Memory of a plan before anything is allocated, and the guard that refuses a plan over a limit.

* :func:`plan_peak_bytes` runs the generated forward of a plan (einsum reference, or the fast
  path) on ``meta`` tensors under a dispatch mode that adds up the storages alive at each aten
  op: the peak live bytes of a no-grad eager forward (inputs, weights, every intermediate, and
  the copies einsum makes of strided windows), with no memory touched. Views share their base's
  storage; a storage is freed when the last tensor holding it dies (the generated code ``del``s
  dead locals, :func:`syno.codegen.emit.release_dead`).
* :func:`peak_limit_bytes`: the limit, by default ``8 x max(input + weights, output)`` bytes;
  at least 16 MB; ``$SYNO_PEAK_LIMIT`` or an argument overrides it (``"16x"``: a factor; ``"2GB"``, ``"500M"``,
  ``"123456"``: bytes), and never above ``$SYNO_MEMORY_LIMIT`` (default: half the RAM).
* :func:`guard_plan` (used by :func:`syno.codegen.torch.build_module`): keeps the planner's plan
  when some implementation of it fits, else tries the alternatives (the plan under a peak limit,
  the min-MAC plan, no diagonals, weights first) and raises :class:`PlanTooCostly` — one line
  naming the operator, the mapping, the stage and the bytes — when none fits.
"""

from __future__ import annotations

import math
import os
import re
import weakref
from dataclasses import dataclass
from typing import Mapping

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from syno.ir.lowering import LoweringError, Plan, plan_for

#: default limit: this many times the larger of (input + weights) and output
DEFAULT_FACTOR = 8.0
#: a factor limit is never below this: at kilobyte sizes constant tensors (a selection tensor,
#: the padding of a window) dominate and nothing is at stake
MIN_LIMIT = 16 << 20
ENV_LIMIT = "SYNO_PEAK_LIMIT"
ENV_CAP = "SYNO_MEMORY_LIMIT"
_DTYPES = {2: torch.float16, 4: torch.float32, 8: torch.float64}


class PlanTooCostly(LoweringError):
    """Every plan of an operator at a mapping needs more memory than the limit allows."""

    def __init__(self, message: str, *, operator: str = "", mapping: Mapping[str, int] | None = None,
                 stage: str = "", peak_bytes: int = 0, limit_bytes: int = 0):
        super().__init__(message)
        self.operator = operator
        self.mapping = dict(mapping or {})
        self.stage = stage
        self.peak_bytes = peak_bytes
        self.limit_bytes = limit_bytes


def fmt_bytes(n: float) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


class _PeakMode(TorchDispatchMode):
    """Sum of the storages held by live tensors, maximum over the ops run under it."""

    def __init__(self):
        super().__init__()
        self.refs: dict[int, int] = {}
        self.size: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            self.current -= self.size.pop(key)
            del self.refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                key = st._cdata  # the StorageImpl: identity of the buffer, also on meta
                if key not in self.refs:
                    self.refs[key] = 0
                    self.size[key] = st.nbytes()
                    self.current += st.nbytes()
                    self.peak = max(self.peak, self.current)
                self.refs[key] += 1
                weakref.finalize(t, self._release, key)
        return out


def measure_peak_bytes(fn, *args) -> int:
    """Peak bytes of the storages ``fn(*args)`` allocates (no grad), plus the arguments':
    the same accounting as :func:`plan_peak_bytes`, on real tensors."""
    base = sum(a.untyped_storage().nbytes() for a in args)
    mode = _PeakMode()
    with torch.no_grad(), mode:
        y = fn(*args)
    del y
    return base + mode.peak


def tensor_bytes(plan: Plan, itemsize: int = 4) -> tuple[int, int, int]:
    """(input, weights, output) bytes at the plan's mapping."""
    v = plan.values
    shapes = [math.prod(v[c] for c in t) for t in plan.analysis.tensors]
    out = math.prod(v[c] for c in plan.analysis.outputs)
    return shapes[0] * itemsize, sum(shapes[1:]) * itemsize, out * itemsize


def forward_source(plan: Plan, implementation: str = "einsum") -> str:
    """Source of ``forward`` for ``plan`` with emitter ``einsum``, ``fast`` or ``fastd``."""
    from .registry import parse
    emitter = parse(implementation)[0]
    if emitter == "einsum":
        from .emit import emit_forward
        return emit_forward(plan)
    from .fast import emit_fast
    if emitter == "fast":
        return emit_fast(plan)[0]
    if emitter == "fastd":
        return emit_fast(plan, dense_groups=True, delta_windows=False)[0]
    raise ValueError(f"unknown emitter {emitter!r} (einsum, fast, fastd)")


def plan_peak_bytes(plan: Plan, implementation: str = "einsum", itemsize: int = 4) -> int:
    """Peak live bytes of a no-grad forward of ``plan`` with ``implementation``'s emitter
    (inputs and weights included), measured on meta tensors: nothing is allocated."""
    from .registry import parse
    cache = plan.__dict__.setdefault("_peak_cache", {})  # plans are immutable once built
    key = (parse(implementation)[0], itemsize)
    if key in cache:
        return cache[key]
    if key[0] == "triton":  # materialises only contraction results (kept for backward)
        from .triton import peak_bytes
        cache[key] = peak_bytes(plan, itemsize)
        return cache[key]
    from .torch import compile_source
    fn = compile_source(forward_source(plan, implementation), "forward", tag="meta")
    dtype = _DTYPES[itemsize]
    v = plan.values
    args = [torch.empty([v[c] for c in t], device="meta", dtype=dtype) for t in plan.analysis.tensors]
    base = sum(a.numel() for a in args) * itemsize
    mode = _PeakMode()
    with torch.no_grad(), mode:
        y = fn(*args)
    del y
    peak = cache[key] = base + mode.peak
    return peak


_SIZE = re.compile(r"^\s*([0-9.]+)\s*([kmgt]?)i?b?\s*$", re.I)


def parse_limit(text: str | float | int) -> tuple[str, float]:
    """``"8x"`` -> ("factor", 8.0); ``"2GB"``/``"500M"``/``123`` -> ("bytes", ...)."""
    if isinstance(text, (int, float)):
        return "bytes", float(text)
    s = str(text).strip().lower()
    if s.endswith("x"):
        try:
            return "factor", float(s[:-1])
        except ValueError:
            pass
    m = _SIZE.match(s)
    if not m:
        raise ValueError(f"peak limit {text!r}: use a factor like '8x' or bytes like '2GB'")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2)]
    return "bytes", float(m.group(1)) * scale


def memory_cap_bytes() -> int:
    """Absolute cap on one module's forward: ``$SYNO_MEMORY_LIMIT``, else half the machine's RAM
    (so an operator whose *weights* are absurd, e.g. k=3000 read from disk, is refused too)."""
    spec = os.environ.get(ENV_CAP)
    if spec:
        kind, value = parse_limit(spec)
        if kind != "bytes":
            raise ValueError(f"${ENV_CAP}={spec!r}: give bytes, e.g. '16GB'")
        return int(value)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 1 << 36


_LIVE = {"bytes": 0}


def live_weight_bytes() -> int:
    """Bytes of the weights of every live module built by ``build_module`` in this process:
    a model's placeholders are built one by one, and their weights add up before any forward."""
    return _LIVE["bytes"]


def track_weights(module) -> None:
    n = sum(p.numel() * p.element_size() for p in module.parameters())
    _LIVE["bytes"] += n
    weakref.finalize(module, _release_live, n)  # subtract exactly what was added


def _release_live(n: int) -> None:
    _LIVE["bytes"] -= n


def peak_limit_bytes(plan: Plan, limit: str | float | int | None = None, itemsize: int = 4) -> int:
    """The limit in bytes for ``plan`` (argument, else ``$SYNO_PEAK_LIMIT``, else 8x), never
    above :func:`memory_cap_bytes`."""
    spec = limit if limit is not None else os.environ.get(ENV_LIMIT) or f"{DEFAULT_FACTOR}x"
    kind, value = parse_limit(spec)
    if kind == "bytes":
        return min(int(value), memory_cap_bytes())
    x, w, y = tensor_bytes(plan, itemsize)
    return min(max(int(value * max(x + w, y)), MIN_LIMIT), memory_cap_bytes())


def stage_text(plan: Plan, k: int | None = None) -> str:
    """``stage 4 (unfold -> [N:4, C:64, ...] 1.4 GB)``: the step with the largest result."""
    k = plan.largest_step if k is None else k
    s = plan.steps[k]
    cl = plan.classes
    axes = ", ".join(f"{cl[c].name}:{plan.values[c]}" for c in s.dst_axes)
    return f"stage {k} ({s.kind} -> [{axes}], {fmt_bytes(s.numel * 4)})"


@dataclass
class Choice:
    plan: Plan
    emitter: str       # the emitter with the smaller peak (what "auto" runs off CUDA)
    peak_bytes: int
    limit_bytes: int


def _alternatives(op, mapping, weights_first: bool, limit_numel: int):
    yield dict(weights_first=weights_first)
    yield dict(weights_first=weights_first, peak_limit=limit_numel)
    yield dict(weights_first=weights_first, cost="macs", select=False)
    yield dict(weights_first=weights_first, allow_diag=False)
    if not weights_first:
        yield dict(weights_first=True)


def guard_plan(op, mapping: Mapping[str, int], *, weights_first: bool = False,
               implementation: str = "auto", limit: str | float | int | None = None,
               itemsize: int = 4) -> Choice:
    """The first plan (default, then alternatives) with an implementation whose peak forward
    memory is under the limit; :class:`PlanTooCostly` when there is none."""
    first = plan_for(op, mapping, weights_first=weights_first)
    limit_b = peak_limit_bytes(first, limit, itemsize)
    # the absolute cap also holds the weights already allocated by this process's modules (a
    # model's placeholders): an operator with absurd sizes is refused at the first placeholder
    # that would cross it, not after the process has grown past the machine's memory
    cap = memory_cap_bytes()
    live = live_weight_bytes()
    if live > cap // 2:
        import gc
        gc.collect()  # modules in reference cycles count until collected
        live = live_weight_bytes()
    limit_b = min(limit_b, max(0, cap - live))
    if implementation == "auto":
        emitters = ("einsum", "fast")
    else:
        from .registry import parse
        emitters = (parse(implementation)[0],)
    seen = set()
    best = None
    for opts in _alternatives(op, mapping, weights_first, max(1, limit_b // itemsize)):
        try:
            plan = plan_for(op, mapping, **opts)
        except LoweringError:
            continue
        sig = tuple((s.kind, s.srcs, s.src_axes, s.dst_axes) for s in plan.steps)
        if sig in seen:
            continue
        seen.add(sig)
        # the emitter with the smaller peak (ties: the reference); off CUDA "auto" runs it
        peaks = sorted((plan_peak_bytes(plan, em, itemsize), k, em) for k, em in enumerate(emitters))
        peak, _, em = peaks[0]
        if peak <= limit_b:
            return Choice(plan, em, peak, limit_b)
        if best is None or peak < best[1]:
            best = (plan, peak)
    plan, peak = best if best is not None else (first, plan_peak_bytes(first, emitters[0], itemsize))
    name = op.name or op.hash
    stage = stage_text(plan)
    mapping_text = ", ".join(f"{k}={v}" for k, v in sorted(plan.mapping.items()))
    capped = limit_b >= cap - live
    held = f" with {fmt_bytes(live)} of weights already built" if capped and live else ""
    raise PlanTooCostly(
        f"operator {name} at {mapping_text}: forward needs ~{fmt_bytes(peak)} (largest: {stage}), "
        f"over the limit {fmt_bytes(limit_b)}{held} (set ${ENV_CAP if capped else ENV_LIMIT}, "
        "e.g. '16x' or '4GB')",
        operator=name, mapping=plan.mapping, stage=stage, peak_bytes=peak, limit_bytes=limit_b)


__all__ = ["PlanTooCostly", "plan_peak_bytes", "peak_limit_bytes", "parse_limit", "guard_plan",
           "tensor_bytes", "fmt_bytes", "stage_text", "forward_source", "Choice", "DEFAULT_FACTOR",
           "ENV_LIMIT", "memory_cap_bytes", "measure_peak_bytes",
           "live_weight_bytes", "track_weights"]
