"""TorchInductor tuning: compile a model under a grid of options, keep the fastest; cache the choice.

The original tuned every model for hours with TVM MetaSchedule (reference §4.1) and ran
TorchInductor once with ``max-autotune`` (§4.2). Here the Inductor options themselves are the
search space: mode (``default``, ``reduce-overhead``, ``max-autotune``,
``max-autotune-no-cudagraphs``), ``coordinate_descent_tuning``, channels-last memory format and
the compute dtype (fp32 everywhere, bf16/fp16 on GPU). Weights are frozen (``freezing=True``:
constant folding, conv+BN folding, oneDNN weight prepacking on CPU), as in the original.

:func:`tune` measures every configuration of the grid and returns the best. The outcome is kept in
a JSON :class:`TuneCache` keyed by (kernel hash, model, input shape, device name); a second call
with the same key reuses the measured configurations and only measures the ones it has not seen.
Entries measured under another torch version are ignored.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from .timing import Timing, TimingOptions, device_name, measure

__all__ = ["CompileConfig", "Compiled", "compile_module", "default_grid", "parse_grid", "TuneCache", "TuneResult",
           "tune", "tune_inductor", "default_cache_path", "MODES", "DTYPES"]

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "float": "float32", "half": "float16"}


def _dtype_name(name: str) -> str:
    name = _DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose from fp32, bf16, fp16")
    return name


@dataclass(frozen=True)
class CompileConfig:
    """One point of the Inductor grid (``backend`` ``eager`` ignores all but dtype and channels_last)."""

    mode: str = "default"
    coordinate_descent_tuning: bool = False
    channels_last: bool = False
    dtype: str = "float32"
    freezing: bool = True
    fullgraph: bool = True

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose from {MODES}")
        object.__setattr__(self, "dtype", _dtype_name(self.dtype))

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def label(self) -> str:
        parts = [self.mode]
        if self.coordinate_descent_tuning:
            parts.append("cdt")
        if self.channels_last:
            parts.append("cl")
        parts.append({"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[self.dtype])
        if not self.freezing:
            parts.append("nofreeze")
        return "+".join(parts)

    def inductor_options(self) -> dict:
        from torch._inductor import list_mode_options

        opts = dict(list_mode_options(self.mode))
        if self.coordinate_descent_tuning:
            opts["coordinate_descent_tuning"] = True
        opts["freezing"] = self.freezing
        return opts

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CompileConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def default_grid(device: torch.device | str, *, dtypes: Sequence[str] | None = None,
                 modes: Sequence[str] | None = None) -> list[CompileConfig]:
    """The tuning grid: modes x coordinate-descent x channels-last x dtypes.

    CPU: modes ``default``/``max-autotune-no-cudagraphs``, fp32. CUDA: ``default``,
    ``reduce-overhead``, ``max-autotune``; fp32, bf16, fp16. Coordinate descent is implied by the
    max-autotune modes, so it is varied only for the others.
    """
    cuda = torch.device(device).type == "cuda"
    modes = list(modes or (("default", "reduce-overhead", "max-autotune") if cuda
                           else ("default", "max-autotune-no-cudagraphs")))
    dtypes = [_dtype_name(d) for d in (dtypes or (("float32", "bfloat16", "float16") if cuda else ("float32",)))]
    grid = []
    for mode, cl, dt in itertools.product(modes, (False, True), dtypes):
        cdts = (False,) if mode.startswith("max-autotune") else (False, True)
        for cdt in cdts:
            grid.append(CompileConfig(mode=mode, coordinate_descent_tuning=cdt, channels_last=cl, dtype=dt))
    return grid


def parse_grid(text: str, device: torch.device | str) -> list[CompileConfig]:
    """``"mode=default,max-autotune;cl=0,1;dtype=fp32,bf16;cdt=0"`` -> grid (missing keys: defaults of :func:`default_grid`)."""
    spec: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, _, vals = part.partition("=")
        spec[key.strip()] = [v.strip() for v in vals.split(",") if v.strip()]
    unknown = set(spec) - {"mode", "cl", "dtype", "cdt", "freezing"}
    if unknown:
        raise ValueError(f"unknown grid keys {sorted(unknown)}; use mode, cl, dtype, cdt, freezing")
    base = default_grid(device, dtypes=spec.get("dtype"), modes=spec.get("mode"))
    as_bool = lambda v: v.lower() in ("1", "true", "yes", "on")  # noqa: E731
    out = []
    for c in base:
        if "cl" in spec and c.channels_last not in {as_bool(v) for v in spec["cl"]}:
            continue
        if "cdt" in spec:
            wanted = {as_bool(v) for v in spec["cdt"]}
            if c.mode.startswith("max-autotune"):
                pass
            elif c.coordinate_descent_tuning not in wanted:
                continue
        for fz in ([as_bool(v) for v in spec["freezing"]] if "freezing" in spec else [True]):
            out.append(replace(c, freezing=fz))
    return list(dict.fromkeys(out))


@dataclass
class Compiled:
    """A model prepared for timing: ``run()`` does one inference on the prepared input."""

    run: Callable[[], object]
    config: CompileConfig
    compile_s: float
    backend: str


def prepare(model: nn.Module, example: torch.Tensor, config: CompileConfig) -> tuple[nn.Module, torch.Tensor]:
    """Cast/format ``model`` and ``example`` for ``config`` (dtype, channels-last); eval mode."""
    model = model.eval()
    x = example
    if config.torch_dtype != torch.float32:
        model = model.to(dtype=config.torch_dtype)
    if example.is_floating_point():
        x = example.to(dtype=config.torch_dtype)
    if config.channels_last and x.dim() == 4:
        _channels_last_(model)
        x = x.contiguous(memory_format=torch.channels_last)
    return model, x


def _channels_last_(model: nn.Module) -> None:
    """Channels-last for every 4-D parameter/buffer (``Module.to(memory_format=...)`` rejects the 5-D
    weights of Operator 1 and friends)."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.dim() == 4:
                t.data = t.data.contiguous(memory_format=torch.channels_last)


def compile_module(model: nn.Module, example: torch.Tensor, config: CompileConfig | None = None, *,
                   backend: str = "inductor", warm_calls: int = 2) -> Compiled:
    """Prepare ``model`` for ``backend`` (``eager`` or ``inductor``) and run it ``warm_calls`` times.

    Generated operator modules are tuned first (:func:`syno.codegen.registry.compile_model` at the
    config's dtype and layout, for inference; one probe forward when some are ``"auto"``). For
    Inductor the first compiled calls trigger compilation (timed as ``compile_s``, which therefore
    also includes the first runs). Everything runs under ``torch.no_grad()``.
    """
    config = config or CompileConfig()
    model, x = prepare(model, example, config)
    if backend not in ("eager", "inductor"):
        raise ValueError(f"compile_module handles eager/inductor, not {backend!r}")
    # The codegen registry's explicit tuning step, at this config's dtype and layout, for inference:
    # generated operator modules get their implementation fixed here, so neither the timed calls
    # nor Inductor's trace tune (a no-op for models without such modules).
    from syno.codegen.registry import compile_model
    compile_model(model, x, backward=False)
    if backend == "eager":
        fn: Callable = model
    else:
        fn = torch.compile(model, backend="inductor", fullgraph=config.fullgraph, dynamic=False,
                           options=config.inductor_options())

    def run():
        with torch.no_grad():
            return fn(x)

    t0 = time.perf_counter()
    for _ in range(max(1, warm_calls)):
        run()
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return Compiled(run=run, config=config, compile_s=time.perf_counter() - t0, backend=backend)


# ------------------------------------------------------------------------------------------ cache
def default_cache_path() -> Path:
    """``$SYNO_BENCH_CACHE`` or ``~/.cache/syno/inductor_tune.json``."""
    env = os.environ.get("SYNO_BENCH_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "syno" / "inductor_tune.json"


class TuneCache:
    """JSON file ``{key: {"torch": version, "results": {config label: {...}}, "best": label}}``."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_cache_path()
        self.data: dict = {}
        if self.path.exists():
            try:
                self.data = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                self.data = {}

    @staticmethod
    def key(kernel_hash: str, model: str, shape: Sequence[int], device: str) -> str:
        return f"{kernel_hash}|{model}|{'x'.join(str(int(s)) for s in shape)}|{device}"

    def entry(self, key: str) -> dict:
        e = self.data.get(key)
        if e is None or e.get("torch") != torch.__version__:
            e = {"torch": torch.__version__, "results": {}, "best": None}
            self.data[key] = e
        return e

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        tmp.replace(self.path)


@dataclass
class TuneResult:
    best: CompileConfig
    best_ms: float
    results: dict[str, dict] = field(default_factory=dict)   #: label -> {config, median_ms | error, compile_s}
    measured: int = 0                                        #: configurations measured by this call
    cached: int = 0                                          #: configurations reused from the cache
    key: str = ""


def tune(model_factory: Callable[[], nn.Module], example: torch.Tensor, *, kernel_hash: str, model_name: str,
         grid: Iterable[CompileConfig] | None = None, cache: TuneCache | None = None,
         timing: TimingOptions | None = None, log: Callable[[str], None] | None = None,
         deadline: float | None = None) -> TuneResult:
    """Measure ``model_factory()`` compiled under each configuration of ``grid``; return the fastest.

    ``model_factory`` must return a fresh model (it is cast in place for each configuration).
    Failing configurations (e.g. a dtype a kernel does not support) are recorded with their error
    and skipped. Results are merged into ``cache`` (saved after each measurement). Past
    ``deadline`` (``time.monotonic()``) no new configuration is measured once one has succeeded.
    """
    device = example.device
    grid = list(grid or default_grid(device))
    cache = cache if cache is not None else TuneCache()
    key = TuneCache.key(kernel_hash, model_name, tuple(example.shape), device_name(device))
    entry = cache.entry(key)
    measured = reused = 0
    for cfg in grid:
        label = cfg.label()
        if label in entry["results"]:
            reused += 1
            continue
        if (deadline is not None and time.monotonic() > deadline
                and any("median_ms" in v for v in entry["results"].values())):
            if log:
                log(f"tune {model_name} [{kernel_hash}]: time budget reached, {label} and later configs not measured")
            break
        rec: dict = {"config": cfg.to_dict()}
        try:
            compiled = compile_module(model_factory(), example, cfg, backend="inductor")
            t: Timing = measure(compiled.run, device, options=timing)
            rec.update(median_ms=t.median_ms, compile_s=compiled.compile_s, repeats=t.repeats)
            if log:
                log(f"tune {model_name} [{kernel_hash}] {label}: {t.median_ms:.3f} ms (compile {compiled.compile_s:.1f} s)")
        except Exception as exc:  # noqa: BLE001 - a failing configuration is data, not a crash
            rec["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            if log:
                log(f"tune {model_name} [{kernel_hash}] {label}: FAILED {rec['error']}")
            if os.environ.get("SYNO_BENCH_DEBUG"):
                traceback.print_exc()
        finally:
            torch._dynamo.reset()
        entry["results"][label] = rec
        measured += 1
        cache.save()
    wanted = {c.label() for c in grid}
    ok = {k: v for k, v in entry["results"].items() if k in wanted and "median_ms" in v}
    if not ok:
        raise RuntimeError(f"every configuration failed for {key}: "
                           + "; ".join(f"{k}: {v.get('error')}" for k, v in entry["results"].items() if k in wanted))
    best_label = min(ok, key=lambda k: ok[k]["median_ms"])
    entry["best"] = best_label
    cache.save()
    return TuneResult(best=CompileConfig.from_dict(ok[best_label]["config"]), best_ms=ok[best_label]["median_ms"],
                      results={k: v for k, v in entry["results"].items() if k in wanted},
                      measured=measured, cached=reused, key=key)


#: Package-level name of :func:`tune` (``syno.bench.tune`` is this module).
tune_inductor = tune
