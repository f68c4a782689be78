"""End-to-end and layer-wise latency of a model with and without a substituted operator.

* **End to end** (``scope="model"``): the *vanilla* zoo model (no placeholders, like the original's
  ``-orig`` baselines) against the placeholder model with every placeholder filled by the operator
  (stride-2 sites become ``AvgPool2d(2) + operator``, as in the search).
* **Layer-wise** (``scope="layer"``): for every distinct placeholder site, the original layer
  (the stride-2 conv itself at a downsampling site) against what replaces it, at that site's input
  shape. Identical sites are measured once; ``count`` says how many placeholders share the row.

Each measurement compiles the module for its backend (``eager``, ``inductor`` with one
:class:`CompileConfig` or the best of a tuning grid, ``tvm``), warms it up and takes the median
of repeated runs (:func:`syno.bench.timing.measure`). For ``eager`` and ``inductor``,
:func:`syno.bench.tune.compile_module` first runs the codegen registry's tuning step
(:func:`syno.codegen.registry.compile_model`) at that config's dtype and memory layout, for
inference, so generated operators never tune inside a timed call; ``tvm`` exports the model,
where an ``"auto"`` operator traces its default (cuDNN-path) variant: TVM imports no Triton kernel. ``speedup`` = baseline median / row median
for the same scope, layer, backend and batch, all measured in the same call.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from .operators import BASELINE, OperatorSpec
from .timing import TimingOptions, device_name, measure
from .tune import CompileConfig, TuneCache, compile_module, default_grid, tune

__all__ = ["BenchOptions", "BenchRow", "bench_model", "bench_layers", "layer_sites", "LayerSite", "BACKENDS",
           "build_baseline", "build_substituted", "example_input"]

BACKENDS = ("eager", "inductor", "tvm")


@dataclass
class BenchOptions:
    device: str = "cpu"
    batches: Sequence[int] = (1,)
    backends: Sequence[str] = ("eager", "inductor")
    image_size: int | None = None          #: None: 224 (tiny: 16)
    num_classes: int | None = None         #: None: 1000 (tiny: 10)
    config: CompileConfig = field(default_factory=CompileConfig)   #: inductor config (dtype/cl also for eager)
    tune: bool = False                     #: pick the inductor config from a grid (cached)
    grid: list[CompileConfig] | None = None
    cache_path: str | Path | None = None
    timing: TimingOptions = field(default_factory=TimingOptions)
    end_to_end: bool = True
    layers: bool = False
    tf32: bool = True                      #: allow TF32 on CUDA (as the original)
    tvm_trials: int = 0                    #: MetaSchedule trials (0: TVM's default schedules)
    tvm_work_dir: str | Path | None = None
    threads: int | None = None             #: CPU threads (torch.set_num_threads) during the run
    seed: int = 0
    log: Callable[[str], None] | None = print
    #: ``time.monotonic()`` after which remaining measurements are recorded as skipped
    deadline: float | None = None
    #: called with each finished row (speedup filled in when its baseline came first), e.g. to stream a CSV
    on_row: Callable[["BenchRow"], None] | None = None


@dataclass
class BenchRow:
    scope: str              #: "model" | "layer"
    model: str
    variant: str            #: "baseline" or the operator label
    impl: str               #: "torch" (baseline) | "codegen" | "manual"
    op_hash: str
    backend: str
    config: str             #: compile config label (eager: dtype/cl only)
    device: str
    device_name: str
    batch: int
    input_shape: str
    median_ms: float = math.nan
    mean_ms: float = math.nan
    std_ms: float = math.nan
    min_ms: float = math.nan
    repeats: int = 0
    compile_s: float = math.nan
    speedup: float = math.nan
    layer: str = ""         #: layer-wise: site description
    count: int = 1          #: layer-wise: placeholders sharing this site
    status: str = "ok"

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def as_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------ models
def _defaults(name: str, opts: BenchOptions) -> dict:
    kw = {}
    if name != "gpt2":
        kw["image_size"] = opts.image_size if opts.image_size is not None else (16 if name == "tiny" else 224)
        kw["num_classes"] = opts.num_classes if opts.num_classes is not None else (10 if name == "tiny" else 1000)
    return kw


def build_baseline(name: str, opts: BenchOptions) -> nn.Module:
    """The vanilla model (no placeholders)."""
    from syno.models import build_model

    torch.manual_seed(opts.seed)
    return build_model(name, placeholders=False, **_defaults(name, opts)).eval()


def build_substituted(name: str, spec: OperatorSpec, batch: int, opts: BenchOptions) -> nn.Module:
    """The placeholder model (mappings recorded at ``batch``) filled with ``spec.factory``."""
    from syno.models import build_model, fill_placeholders

    torch.manual_seed(opts.seed)
    model = build_model(name, placeholders=True, mapping_batch=batch, **_defaults(name, opts))
    fill_placeholders(model, spec.factory)
    return model.eval()


def example_input(model: nn.Module, batch: int, device: torch.device | str, seed: int = 0) -> torch.Tensor:
    """Random input of the model's input spec (never zeros: they can hide wrong work and time faster)."""
    from syno.models import input_spec

    shape, dtype = input_spec(model)
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        x = torch.randn((batch, *shape), generator=g, dtype=dtype)
    else:
        vocab = getattr(getattr(model, "config", None), "vocab_size", 100)
        x = torch.randint(0, vocab, (batch, *shape), generator=g, dtype=dtype)
    return x.to(device)


# ------------------------------------------------------------------------------------- measurement
class _Env:
    """CUDA flags for the run (TF32, cudnn.benchmark), restored afterwards."""

    def __init__(self, opts: BenchOptions):
        self.opts = opts

    def __enter__(self):
        self.threads = torch.get_num_threads()
        if self.opts.threads:
            torch.set_num_threads(self.opts.threads)
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                      torch.backends.cudnn.benchmark)
        if torch.device(self.opts.device).type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = self.opts.tf32
            torch.backends.cudnn.allow_tf32 = self.opts.tf32
            torch.backends.cudnn.benchmark = True
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = self.saved


def _cleanup(device: torch.device) -> None:
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _eager_config(cfg: CompileConfig) -> CompileConfig:
    return CompileConfig(mode="default", channels_last=cfg.channels_last, dtype=cfg.dtype, freezing=False)


def _eager_label(cfg: CompileConfig) -> str:
    lab = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[cfg.dtype]
    return lab + ("+cl" if cfg.channels_last else "")


def _measure_one(factory: Callable[[], nn.Module], example: torch.Tensor, backend: str, opts: BenchOptions, *,
                 kernel_hash: str, cache_name: str, log) -> tuple[dict, str]:
    """Build, compile and time one module; returns (timing fields, config label)."""
    device = example.device
    if backend == "eager":
        cfg = _eager_config(opts.config)
        compiled = compile_module(factory().to(device), example, cfg, backend="eager")
        label = _eager_label(cfg)
    elif backend == "inductor":
        cfg = opts.config
        if opts.tune:
            res = tune(lambda: factory().to(device), example, kernel_hash=kernel_hash, model_name=cache_name,
                       grid=opts.grid or default_grid(device), cache=TuneCache(opts.cache_path),
                       timing=opts.timing, log=log, deadline=opts.deadline)
            cfg = res.best
            if log:
                log(f"tuned {cache_name} [{kernel_hash}]: best {cfg.label()} ({res.best_ms:.3f} ms; "
                    f"{res.measured} measured, {res.cached} from cache)")
        compiled = compile_module(factory().to(device), example, cfg, backend="inductor")
        label = cfg.label()
    elif backend == "tvm":
        from .tvm_backend import compile_tvm

        compiled = compile_tvm(factory().to(device), example, trials=opts.tvm_trials, work_dir=opts.tvm_work_dir,
                               log=log)
        label = compiled.config
    else:
        raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS}")
    t = measure(compiled.run, device, options=opts.timing)
    return dict(median_ms=t.median_ms, mean_ms=t.mean_ms, std_ms=t.std_ms, min_ms=t.min_ms, repeats=t.repeats,
                compile_s=compiled.compile_s), label


def _available_backends(backends: Iterable[str], log) -> list[str]:
    out = []
    for b in backends:
        if b not in BACKENDS:
            raise ValueError(f"unknown backend {b!r}; choose from {BACKENDS}")
        if b == "tvm":
            from .tvm_backend import tvm_available

            ok, why = tvm_available()
            if not ok:
                if log:
                    log(f"backend tvm skipped: {why}")
                continue
        out.append(b)
    return out


def _fill_speedups(rows: list[BenchRow]) -> None:
    base = {}
    for r in rows:
        if r.variant == BASELINE and r.status == "ok":
            base[(r.scope, r.model, r.layer, r.backend, r.batch)] = r.median_ms
    for r in rows:
        b = base.get((r.scope, r.model, r.layer, r.backend, r.batch))
        if b is not None and r.status == "ok" and r.median_ms > 0:
            r.speedup = b / r.median_ms


def _row(scope, model, variant, impl, op_hash, backend, device, batch, shape, **kw) -> BenchRow:
    return BenchRow(scope=scope, model=model, variant=variant, impl=impl, op_hash=op_hash, backend=backend,
                    config=kw.pop("config", ""), device=str(device), device_name=device_name(device), batch=batch,
                    input_shape="x".join(str(s) for s in shape), **kw)


def _attempt(rows, make_row, fn, opts: BenchOptions, what):
    log = opts.log
    if opts.deadline is not None and time.monotonic() > opts.deadline:
        row = make_row(status="skipped: time budget")
        if log:
            log(f"{what}: skipped (time budget)")
    else:
        try:
            timing, label = fn()
            row = make_row(config=label, **timing)
            if log:
                log(f"{what} [{label}]: {timing['median_ms']:.3f} ms (compile {timing['compile_s']:.1f} s)")
        except Exception as exc:  # noqa: BLE001 - one failing variant must not lose the others
            msg = f"error: {type(exc).__name__}: {exc}".splitlines()[0][:300]
            row = make_row(status=msg)
            if log:
                log(f"{what}: {msg}")
    rows.append(row)
    _fill_speedups(rows)
    if opts.on_row is not None:
        opts.on_row(row)


# --------------------------------------------------------------------------------------- end to end
def bench_model(name: str, specs: Sequence[OperatorSpec], opts: BenchOptions | None = None) -> list[BenchRow]:
    """Latency rows of model ``name``: baseline and each operator, per batch and backend (and per layer).

    Failures of one variant (e.g. an operator Inductor cannot compile) are recorded as rows with a
    ``status`` starting with ``error:``; nothing is raised for them.
    """
    opts = opts or BenchOptions()
    log = opts.log
    device = torch.device(opts.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda but CUDA is not available")
    backends = _available_backends(opts.backends, log)
    rows: list[BenchRow] = []
    with _Env(opts):
        for batch in opts.batches:
            if opts.end_to_end:
                probe = build_baseline(name, opts)
                x = example_input(probe, batch, device, opts.seed)
                del probe
                for backend in backends:
                    variants = [(BASELINE, "torch", "baseline", BASELINE, lambda: build_baseline(name, opts))]
                    for s in specs:
                        variants.append((s.label, s.impl, s.op_hash, s.cache_key,
                                         lambda s=s: build_substituted(name, s, batch, opts)))
                    for label, impl, h, key, factory in variants:
                        make = lambda **kw: _row("model", name, label, impl, h, backend, device, batch,  # noqa: E731
                                                 tuple(x.shape), **kw)
                        _attempt(rows, make, lambda: _measure_one(factory, x, backend, opts, kernel_hash=key,
                                                                  cache_name=name, log=log),
                                 opts, f"{name} N={batch} {backend} {label}")
                        _cleanup(device)
            if opts.layers:
                for s in specs:
                    rows.extend(bench_layers(name, s, batch, opts, backends=backends))
    _fill_speedups(rows)
    return rows


# ---------------------------------------------------------------------------------------- layerwise
@dataclass
class LayerSite:
    indices: list[int]          #: placeholder indices sharing this site
    mapping: dict
    input_shape: tuple[int, ...]
    downsample: bool            #: stride-2 site: original = stride-2 conv, replacement = AvgPool + operator
    original: nn.Module         #: the layer the placeholder stands for (a copy)
    description: str

    def replacement(self, factory) -> nn.Module:
        op = factory(dict(self.mapping))
        if self.downsample:
            return nn.Sequential(nn.AvgPool2d(2, ceil_mode=True), op)
        return op


def _describe(orig: nn.Module, mapping: dict, downsample: bool) -> str:
    if isinstance(orig, nn.Conv2d):
        k = "x".join(str(v) for v in orig.kernel_size)
        s = f" s{orig.stride[0]}" if orig.stride[0] != 1 else ""
        return f"conv{k}{s} {orig.in_channels}->{orig.out_channels} @{mapping.get('H')}" + (" (pooled)" if downsample else "")
    if isinstance(orig, nn.Linear):
        return f"linear {orig.in_features}->{orig.out_features} seq{mapping.get('seq_len')}"
    return f"{type(orig).__name__} {mapping}"


def layer_sites(model: nn.Module, batch: int, device: torch.device | str = "cpu", seed: int = 0) -> list[LayerSite]:
    """Distinct placeholder sites of an unfilled placeholder model, with their input shapes.

    A stride-2 site's input is the input of its ``AvgPool2d`` (the full-resolution tensor) and its
    original layer the restored stride-2 conv.
    """
    from syno.models.placeholder import PooledPlaceholder, placeholders

    phs = placeholders(model)
    pooled = {id(m.placeholder) for m in model.modules() if isinstance(m, PooledPlaceholder)}
    # Record input shapes on a meta-device copy (free at any size): the hook sits on the AvgPool
    # wrapper for stride-2 sites, on the placeholder otherwise.
    shadow = copy.deepcopy(model).to("meta")
    shadow_pooled = {id(m.placeholder): m for m in shadow.modules() if isinstance(m, PooledPlaceholder)}
    shapes: dict[int, tuple] = {}
    for i, p in enumerate(placeholders(shadow)):
        target = shadow_pooled.get(id(p), p)
        target.register_forward_pre_hook(lambda mod, args, i=i: shapes.__setitem__(i, tuple(args[0].shape)))
    with torch.no_grad():
        shadow(example_input(model, batch, "meta", seed))
    del shadow
    sites: dict[tuple, LayerSite] = {}
    for i, p in enumerate(phs):
        down = id(p) in pooled
        orig = p.restored_layer() if down else p.original_layer
        if p.mapping is None or i not in shapes:
            raise RuntimeError(f"placeholder {i} has no mapping/input shape (was it filled or excluded?)")
        key = (tuple(sorted(p.mapping.items())), shapes[i], down, repr(orig))
        if key in sites:
            sites[key].indices.append(i)
        else:
            sites[key] = LayerSite([i], dict(p.mapping), shapes[i], down, copy.deepcopy(orig).to(device),
                                   _describe(orig, p.mapping, down))
    return list(sites.values())


def bench_layers(name: str, spec: OperatorSpec, batch: int, opts: BenchOptions | None = None, *,
                 backends: Sequence[str] | None = None) -> list[BenchRow]:
    """Layer-wise rows (original layer vs operator module) for every distinct placeholder site of ``name``."""
    from syno.models import build_model

    opts = opts or BenchOptions()
    log = opts.log
    device = torch.device(opts.device)
    backends = list(backends) if backends is not None else _available_backends(opts.backends, log)
    model = build_model(name, placeholders=True, mapping_batch=batch, **_defaults(name, opts))
    sites = layer_sites(model, batch, device, opts.seed)
    rows: list[BenchRow] = []
    g = torch.Generator().manual_seed(opts.seed)
    with _Env(opts):
        for site in sites:
            x = torch.randn(site.input_shape, generator=g).to(device)
            for backend in backends:
                for label, impl, h, key, factory in (
                        (BASELINE, "torch", "baseline", BASELINE, lambda site=site: copy.deepcopy(site.original)),
                        (spec.label, spec.impl, spec.op_hash, spec.cache_key,
                         lambda site=site: site.replacement(spec.factory))):
                    make = lambda **kw: _row("layer", name, label, impl, h, backend, device, batch,  # noqa: E731
                                             site.input_shape, layer=site.description, count=len(site.indices), **kw)
                    _attempt(rows, make, lambda: _measure_one(factory, x, backend, opts, kernel_hash=key,
                                                              cache_name=f"{name}:{site.description}", log=log),
                             opts, f"{name} N={batch} {backend} {site.description} {label}")
                    _cleanup(device)
    _fill_speedups(rows)
    return rows
