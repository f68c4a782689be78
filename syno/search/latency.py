"""Latency in the loop: every evaluated kernel is timed on its worker's device before it is trained.

A :class:`KernelTimer` (built once per evaluation worker from :class:`LatencyOptions`) measures, for
one operator, with the implementation the trainer will use (``implementation`` of the search; on a
CPU ``auto`` resolves to :func:`~syno.search.problem.cpu_implementation`; on CUDA the registry's
explicit tuning step, :func:`syno.codegen.registry.compile_model`, fixes it before anything is timed,
at the timed dtype and batch, for forward, or forward+backward with ``latency.backward``, with at
most ``latency.tune_budget_s`` of Triton tile tuning per operator; the modules' ``forward`` never
tunes, so no tuning lands in a timing or a CUDA-graph capture):

* ``scope="model"``: the whole zoo model with every placeholder filled by the operator, against the
  vanilla model (real convolutions), forward (and forward+backward with ``latency.backward``);
* ``scope="layer"``: every distinct placeholder site (:func:`syno.bench.core.layer_sites`): the
  original layer against the operator module at that site's mapping and input shape;
* ``scope="layers"``: the sum over sites, each weighted by how many placeholders share it.

The speedup is measured **side by side**: the kernel and the original (vanilla model, original
layer) alternate in ``latency.rounds`` interleaved rounds, and ``speedup`` = median of the original's
round medians / the kernel's (``baseline_ms`` / ``ms``). The baseline is also measured once per
session and settings and cached in ``<session>/latency_baseline.json`` (keyed by everything that
changes a timing: device, threads, batch, dtype, mode, torch version; every worker reads it there);
each record carries it as ``session_baseline_ms``. Ratios against that one cached number alone were
not usable on a shared CPU: the same tiny model's cached baseline read 6.6, 19.2 and 37.6 ms in
three sessions of one afternoon on this machine, which alone turned the same kernel's "speedup"
from 1.2x into 5.2x.

Timing (:func:`syno.bench.timing.measure`: warm-up, then the median of repeated runs):

* CUDA: the forward is captured once into a CUDA graph and the graph's replays are timed with CUDA
  events (GPU time, no Python launch overhead); a module that cannot be captured is timed per call
  with CUDA events (``timer`` says which);
* CPU: wall time with ``torch`` threads fixed to ``latency.threads`` (default 1: a multi-threaded
  timing next to the other workers' trainings, or on a shared host, measures OpenMP barrier waits
  rather than the kernel); a short budget, since the demo's kernels train in seconds.

The records are :class:`syno.session.LatencyRecord` dicts (``meta.json``'s ``latency`` block); the
headline ``speedup`` (the scope of ``latency.scope``) also goes to ``EvalResult.extra["speedup"]``
where the reward (:mod:`syno.search.objective`) reads it, on replay too.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
import json
import math
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["LatencyOptions", "KernelTimer", "KernelLatency", "BASELINE_FILE", "headline_speedup",
           "latency_records", "library_versions"]

BASELINE_FILE = "latency_baseline.json"


class LatencyOptions(BaseModel):
    """How kernels are timed during a search (``latency.*`` options)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="time every evaluated kernel before training it")
    batch: int | None = Field(None, ge=1, description="batch of the timed input (None: the training batch)")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="compute dtype of the timed models (bf16/fp16 only on CUDA)")
    backward: bool = Field(False, description="also time forward+backward of the whole model")
    sites: bool = Field(True, description="also time every distinct placeholder site (layer-wise)")
    scope: Literal["model", "layers"] = Field(
        "model", description="which speedup the objective and --min-speedup use: the whole model's (end to "
        "end) or the placeholder sites' summed")
    cuda_graphs: bool = Field(True, description="CUDA: time replays of a captured CUDA graph")
    tf32: bool = Field(True, description="CUDA: TF32 and cudnn.benchmark on while timing, as the trainer runs "
                       "(it turns them on for the whole worker process, so the baseline must have them too)")
    warmup_ms: float = Field(20.0, ge=0, description="warm-up wall time per measurement")
    budget_ms: float = Field(100.0, gt=0, description="timed wall time per measurement")
    rounds: int = Field(3, ge=1, description="interleaved rounds of kernel and baseline per measurement (the "
                        "speedup is measured side by side; the session's cached baseline is recorded next to it)")
    min_repeat: int = Field(5, ge=1)
    max_repeat: int = Field(200, ge=1)
    threads: int | None = Field(1, ge=1, description="CPU: torch threads while timing (None: the worker's "
                                "share). One by default: stable next to concurrent trainings and on a busy host")
    tune_budget_s: float = Field(30.0, ge=0, description="CUDA: seconds of Triton tile tuning per operator in the "
                                 "registry's tuning step before timing (choices and tiles are cached on disk)")

    @model_validator(mode="after")
    def _scope_needs_sites(self) -> "LatencyOptions":
        if self.scope == "layers" and not self.sites:
            raise ValueError("latency.scope=layers needs latency.sites=true (the sites are what it sums)")
        return self


def library_versions() -> dict[str, str]:
    import torch

    from syno import __version__

    out = {"torch": torch.__version__, "syno": __version__}
    try:
        import triton

        out["triton"] = triton.__version__
    except Exception:  # noqa: BLE001 - triton is optional (CPU wheels)
        pass
    if torch.cuda.is_available():
        out["cuda"] = str(torch.version.cuda)
    return out


def latency_records(meta_or_result: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The latency records of a kernel's ``meta.json`` (``latency`` block, else ``result.extra``)."""
    if not isinstance(meta_or_result, dict):
        return []
    recs = meta_or_result.get("latency")
    if not recs:
        res = meta_or_result.get("result") if isinstance(meta_or_result.get("result"), dict) else meta_or_result
        recs = (res.get("extra") or {}).get("latency") if isinstance(res.get("extra"), dict) else None
    return [r for r in (recs or []) if isinstance(r, dict)]


def headline_speedup(meta_or_result: dict[str, Any] | None) -> float | None:
    """The speedup a kernel was judged by: ``extra.speedup`` of its result, else the forward
    end-to-end record of its latency block; None when it was not measured."""
    if not isinstance(meta_or_result, dict):
        return None
    res = meta_or_result.get("result") if isinstance(meta_or_result.get("result"), dict) else meta_or_result
    extra = res.get("extra") if isinstance(res.get("extra"), dict) else {}
    s = extra.get("speedup")
    if s is None:
        s = next((r.get("speedup") for r in latency_records(meta_or_result)
                  if r.get("scope") == "model" and r.get("mode", "forward") == "forward"), None)
    try:
        s = float(s)
    except (TypeError, ValueError):
        return None
    return s if math.isfinite(s) and s > 0 else None


@dataclass
class KernelLatency:
    """What :meth:`KernelTimer.measure` found for one operator."""

    records: list[dict[str, Any]]
    speedup: float | None             #: the headline (``latency.scope``) speedup
    implementation: str
    flops: float = 0.0                #: MACs per sample of the model with the kernel (the plans')
    params: int = 0                   #: parameters of that model

    def extra(self) -> dict[str, Any]:
        return {"latency": self.records, "speedup": self.speedup}


# ----------------------------------------------------------------------------------------------
# timing one callable

def _timing_options(o: LatencyOptions):
    from syno.bench.timing import TimingOptions

    return TimingOptions(warmup_ms=o.warmup_ms, budget_ms=o.budget_ms, min_warmup=2, min_repeat=o.min_repeat,
                         max_repeat=o.max_repeat, estimate_runs=2)


def _graph_forward(module, x, tries: int = 2) -> Callable[[], object] | None:
    """A CUDA-graph replay of ``module(x)`` (None when the module cannot be captured ``tries`` times;
    a first capture in a process has failed once with cudaErrorStreamCaptureInvalidated, see
    benchmarks/README.md, so it is tried again)."""
    for _ in range(tries):
        fn = _capture(module, x)
        if fn is not None:
            return fn
    return None


def _capture(module, x) -> Callable[[], object] | None:
    import torch

    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s), torch.no_grad():
            for _ in range(3):  # warm-up on a side stream, as capture requires
                module(x)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g), torch.no_grad():
            module(x)
        g.replay()  # a graph that does not replay is not timed
        torch.cuda.synchronize()
    except Exception:  # noqa: BLE001 - e.g. a host sync inside: time it per call instead
        try:
            torch.cuda.synchronize()
        except Exception:  # noqa: BLE001 - the failed capture's error, already handled
            pass
        return None

    from syno.codegen.hoist import live_prepared

    def replay(graph=g, keep=(module, x, live_prepared())):
        # The graph reads the parameters', the input's and the prepared weights' addresses
        # (syno.codegen.hoist: a later grad-mode call drops a module's cache): ``keep`` holds them
        # alive for as long as the replay can be called. Without it, a baseline graph cached across
        # kernels replayed into memory that empty_cache() had returned to the driver (an illegal
        # memory access in every kernel of a CUDA search).
        graph.replay()

    return replay


def forward_fn(module, x, o: LatencyOptions) -> tuple[Callable[[], object], str]:
    """A callable running ``module(x)`` as it will be timed, and the timer's name: on CUDA the replay
    of a captured CUDA graph (``cuda-graph``) or, when capture fails, the eager call timed with CUDA
    events (``cuda-events``); on a CPU the eager call (``cpu-wall``)."""
    import torch

    with torch.no_grad():
        module(x)  # one eager call first (lazy initialisation, cuDNN plan picks), never timed
    if x.device.type == "cuda" and o.cuda_graphs:
        fn = _graph_forward(module, x)
        if fn is not None:
            return fn, "cuda-graph"

    def fn():
        with torch.no_grad():
            return module(x)

    return fn, "cuda-events" if x.device.type == "cuda" else "cpu-wall"


def forward_backward_fn(module, x) -> tuple[Callable[[], object], str]:
    """One training step's forward+backward (no optimizer step), train mode."""
    module.train()

    def fn():
        module.zero_grad(set_to_none=True)
        module(x).float().square().mean().backward()

    fn()
    return fn, "cuda-events" if x.device.type == "cuda" else "cpu-wall"


def time_fn(fn, device, o: LatencyOptions, budget_ms: float | None = None) -> float:
    """Median latency (ms) of ``fn()``: warm-up, then repeats filling the budget."""
    from syno.bench.timing import measure

    t = _timing_options(o)
    if budget_ms is not None:
        t = replace(t, budget_ms=budget_ms)
    return measure(fn, device, options=t).median_ms


def side_by_side(fn, base_fn, device, o: LatencyOptions) -> tuple[float, float]:
    """(ms of ``fn``, ms of ``base_fn``) from ``o.rounds`` interleaved rounds (median of the rounds'
    medians), so a slow phase of a shared machine hits both sides instead of biasing the ratio."""
    import statistics

    ks, bs = [], []
    per_round = o.budget_ms / o.rounds
    for _ in range(o.rounds):
        ks.append(time_fn(fn, device, o, per_round))
        bs.append(time_fn(base_fn, device, o, per_round))
    return statistics.median(ks), statistics.median(bs)


# ----------------------------------------------------------------------------------------------
# the timer of a search

def _dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class KernelTimer:
    """Times operators in the search's model on ``device``; see the module docstring.

    ``session_dir`` (optional) holds the baseline cache; ``log`` receives one line per baseline
    measurement."""

    def __init__(self, options, device: str = "cpu", session_dir: str | Path | None = None,
                 log: Callable[[str], None] | None = None):
        import torch

        self.options = options            # SearchOptions
        self.o: LatencyOptions = options.latency
        self.device = torch.device(device)
        if self.device.type != "cuda" and self.o.dtype != "float32":
            raise ValueError(f"latency.dtype={self.o.dtype} needs a CUDA device (this worker runs on {device})")
        self.session_dir = Path(session_dir) if session_dir is not None else None
        self.log = log
        train_batch = getattr(options.train, "batch_size", None)
        self.batch = int(self.o.batch or train_batch or 1)
        self._baseline: dict[str, Any] | None = None
        self._fns: dict[str, Any] | None = None

    # -- settings ------------------------------------------------------------------------------
    @contextmanager
    def _pinned(self):
        """CPU: torch threads fixed to ``latency.threads`` while timing (restored afterwards)."""
        import torch

        before = torch.get_num_threads()
        flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
        if self.device.type == "cpu" and self.o.threads:
            torch.set_num_threads(self.o.threads)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.o.tf32
            torch.backends.cudnn.benchmark = self.o.tf32
        try:
            yield
        finally:
            torch.set_num_threads(before)
            (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark) = flags
            if self.device.type == "cuda":
                torch.cuda.empty_cache()  # the captured graphs' memory goes back before training

    def _threads(self) -> int:
        import torch

        return int(self.o.threads or torch.get_num_threads())

    def device_label(self) -> str:
        from syno.bench.timing import device_name

        if self.device.type == "cuda":
            return f"{self.device} {device_name(self.device)}"
        return f"cpu {device_name('cpu')}"  # includes the thread count

    def settings_key(self) -> str:
        """Everything that changes a timing; the baseline cache is keyed by it."""
        import torch

        o = self.o
        key = {"model": self.options.model, "dataset": self.options.dataset, "image_size": self.options.image_size,
               "model_kwargs": self.options.model_kwargs, "mappings": self.options.synth.mappings,
               "batch": self.batch, "dtype": o.dtype, "backward": o.backward, "sites": o.sites,
               "cuda_graphs": o.cuda_graphs, "tf32": o.tf32 if self.device.type == "cuda" else None,
               "device": self.device_label(),
               "threads": self._threads() if self.device.type == "cpu" else None, "torch": torch.__version__,
               "timing": [o.warmup_ms, o.budget_ms, o.min_repeat, o.max_repeat]}
        return hashlib.blake2b(json.dumps(key, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()

    # -- models ----------------------------------------------------------------------------------
    def _model(self, placeholders: bool):
        import torch

        from .options import reference_model

        torch.manual_seed(0)
        return reference_model(self.options, placeholders=placeholders)

    def _input(self, model):
        from syno.bench.core import example_input

        return example_input(model, self.batch, self.device)

    def _to(self, module, x):
        dt = _dtype(self.o.dtype)
        module = module.to(self.device).eval()
        if x.dtype.is_floating_point:
            module, x = module.to(dt), x.to(dt)
        return module, x

    def _sites(self):
        from syno.bench.core import layer_sites

        return layer_sites(self._model(True), self.batch, self.device)

    def _site_input(self, site):
        import torch

        g = torch.Generator().manual_seed(0)
        return torch.randn(site.input_shape, generator=g).to(self.device)

    # -- baseline ----------------------------------------------------------------------------------
    def _baseline_fns(self) -> dict[str, Any]:
        """The original model and layers, ready to time (built once per worker, kept for side-by-side runs)."""
        if self._fns is None:
            model = self._model(False)
            model, x = self._to(model, self._input(model))
            fns: dict[str, Any] = {"model": forward_fn(model, x, self.o)}
            if self.o.backward:
                import copy

                train_model = copy.deepcopy(model)
                fns["model_fwdbwd"] = forward_backward_fn(train_model, x)
            fns["sites"] = {}
            if self.o.sites:
                for site in self._sites():
                    m, xs = self._to(site.original, self._site_input(site))
                    fns["sites"][site.description] = (forward_fn(m, xs, self.o)[0], len(site.indices))
            self._fns = fns
        return self._fns

    def baseline(self) -> dict[str, Any]:
        """The session's baseline timings (``model``/``model_fwdbwd`` ms, ``sites`` ms by description),
        measured once per session and settings by the first worker and cached in the session directory."""
        if self._baseline is not None:
            return self._baseline
        with self._pinned():
            return self._load_or_measure_baseline()

    def _load_or_measure_baseline(self) -> dict[str, Any]:
        key = self.settings_key()
        path = self.session_dir / BASELINE_FILE if self.session_dir is not None else None
        cache: dict[str, Any] = {}
        if path is not None and path.is_file():
            from syno.session import SessionError, read_json

            try:
                data = read_json(path)
                cache = data if isinstance(data, dict) else {}
            except SessionError:
                cache = {}  # damaged: measured again and rewritten
            if isinstance(cache.get(key), dict):
                self._baseline = cache[key]
                return self._baseline
        t0 = time.perf_counter()
        base: dict[str, Any] = {"device": self.device_label(), "batch": self.batch, "dtype": self.o.dtype,
                                "measured": _now(), "versions": library_versions()}
        fns = self._baseline_fns()
        fn, base["timer"] = fns["model"]
        base["model"] = time_fn(fn, self.device, self.o)
        if "model_fwdbwd" in fns:
            base["model_fwdbwd"] = time_fn(fns["model_fwdbwd"][0], self.device, self.o)
        if self.o.sites:
            base["sites"] = {d: {"ms": time_fn(f, self.device, self.o), "count": n}
                             for d, (f, n) in fns["sites"].items()}
        base["seconds"] = round(time.perf_counter() - t0, 3)
        if self.log:
            self.log(f"latency baseline ({self.device_label()}, N={self.batch}): {base['model']:.4g} ms")
        if path is not None and path.parent.is_dir():
            from syno.session import write_json_atomic

            cache[key] = base
            try:
                write_json_atomic(path, cache)
            except OSError:
                pass  # a read-only session still times its kernels, each worker keeps its own baseline
        self._baseline = base
        return base

    # -- one operator ---------------------------------------------------------------------------------
    def implementation(self, op) -> str:
        impl = self.options.implementation
        if impl == "auto" and self.device.type != "cuda":
            from .problem import cpu_implementation

            impl = cpu_implementation(op, self.options.synth.mappings)
        return impl

    def measure(self, op) -> KernelLatency:
        """Time ``op`` in every scope (see the module docstring), side by side with the original."""
        from syno.codegen.torch import operator_factory
        from syno.models.placeholder import fill_placeholders

        session = self.baseline()
        impl = self.implementation(op)
        factory = operator_factory(op, implementation=impl)
        with self._pinned():
            fns = self._baseline_fns()
            common = {"dtype": self.o.dtype, "batch": self.batch, "device": self.device_label(),
                      "versions": library_versions(), "measured": _now(), "rounds": self.o.rounds}
            model = self._model(True)
            modules = fill_placeholders(model, factory)
            model, x = self._to(model, self._input(model))
            self._compile(model, x)
            fn, timer = forward_fn(model, x, self.o)
            ms, base_ms = side_by_side(fn, fns["model"][0], self.device, self.o)
            picked = _picked(modules, impl)
            flops = float(self.options.reference.get("non_placeholder_macs", 0)) + sum(
                float(m.plan.flops) / max(1, int(m.mapping.get("N", 1))) for m in modules)
            params = sum(p.numel() for p in model.parameters())
            records = [self._record("model", ms, base_ms, timer, picked, common, mode="forward",
                                    session_baseline_ms=session.get("model"))]
            if "model_fwdbwd" in fns:
                fb_fn, t2 = forward_backward_fn(model, x)
                fb, fb_base = side_by_side(fb_fn, fns["model_fwdbwd"][0], self.device, self.o)
                records.append(self._record("model", fb, fb_base, t2, picked, common, mode="forward+backward",
                                            session_baseline_ms=session.get("model_fwdbwd")))
            del model, fn
            if self.o.sites:
                total = total_base = 0.0
                for site in self._sites():
                    m, xs = self._to(site.replacement(factory), self._site_input(site))
                    self._compile(m, xs)  # the model's choice, from the registry's disk cache on CUDA
                    sfn, stimer = forward_fn(m, xs, self.o)
                    bfn, n = fns["sites"][site.description]
                    sms, sbase = side_by_side(sfn, bfn, self.device, self.o)
                    records.append(self._record("layer", sms, sbase, stimer, picked, common, mode="forward",
                                                layer=site.description, count=n,
                                                session_baseline_ms=(session.get("sites") or {}).get(
                                                    site.description, {}).get("ms")))
                    total += n * sms
                    total_base += n * sbase
                records.append(self._record("layers", total, total_base, timer, picked, common, mode="forward"))
        head = next(r for r in records if r["scope"] == self.o.scope and r["mode"] == "forward")
        return KernelLatency(records, head.get("speedup"), picked, flops, params)

    def _compile(self, module, x) -> None:
        """The registry's tuning step for the generated modules of ``module`` (already on the device,
        in the timed dtype): tuned for forward, or for forward+backward when that is timed too (one
        implementation serves both, as in training)."""
        from syno.codegen.registry import compile_model

        compile_model(module, x, backward=self.o.backward, budget_s=self.o.tune_budget_s)

    def _record(self, scope, ms, base_ms, timer, impl, common, **kw) -> dict[str, Any]:
        speedup = base_ms / ms if base_ms and ms > 0 and math.isfinite(base_ms) else None
        rec = {"scope": scope, "ms": ms, "speedup": speedup, "baseline_ms": base_ms, "implementation": impl,
               "timer": timer, **common, **kw}
        if self.device.type == "cpu":
            rec["threads"] = self._threads()
        else:
            rec["tf32"] = self.o.tf32
        return rec


def _picked(modules, impl: str) -> str:
    """The implementation(s) the filled modules actually ran (``auto``: what the tuning step fixed)."""
    names = list(dict.fromkeys(getattr(m, "implementation", impl) for m in modules))
    return ",".join(names) if names else impl


def evaluate_with_latency(timer: KernelTimer | None, objective, op, train: Callable[[], Any]):
    """Time ``op`` (when ``timer``), reject it as ``slow`` without training when it is slower than
    ``objective.min_speedup``, else ``train()`` and attach the latency to the result.

    A kernel whose timing fails is an ``error`` when the search needs its speed (speed objective or a
    minimum speedup); otherwise it is trained and the failure is noted in ``extra.latency_error``."""
    from .base import EvalResult
    from .objective import SLOW, slow_reason

    if timer is None:
        return train()
    needs_speed = objective.kind == "speed" or objective.min_speedup is not None
    t0 = time.perf_counter()
    try:
        lat = timer.measure(op)
    except Exception as exc:  # noqa: BLE001 - an operator that cannot be timed is judged by the objective
        why = f"latency measurement failed: {type(exc).__name__}: {exc}"
        if needs_speed:
            return EvalResult(status="error", message=why, time=time.perf_counter() - t0)
        res = train()
        res.extra = {**(res.extra or {}), "latency_error": why}
        return res
    timing_s = time.perf_counter() - t0
    reason = slow_reason(lat.speedup, objective.min_speedup)
    if reason is not None:
        return EvalResult(status=SLOW, accuracy=math.nan, flops=int(round(lat.flops)), params=int(lat.params),
                          time=timing_s, message=reason, extra={**lat.extra(), "latency_seconds": timing_s})
    res = train()
    res.extra = {**(res.extra or {}), **lat.extra(), "latency_seconds": timing_s}
    return res
