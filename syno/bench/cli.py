"""``syno bench``: the command behind ``syno.cli`` (heavy imports happen inside the command)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from syno.cli_errors import fail


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _chosen_kernels(session: Path, top: int) -> list[Path]:
    """The first ``top`` kernels of ``SESSION/selected.json`` when `syno select` wrote one, else the best ``top``."""
    from .operators import find_kernels

    if (session / "selected.json").is_file():
        from syno.post.select import load_selection

        return [d for d in load_selection(session) if d.is_dir()][:top]
    return find_kernels(session, top)


def _searched_impl(kernel_dir: Path, device: str) -> dict | None:
    """On a CPU, the codegen implementation the search timed and trained the kernel with (``auto`` would
    run the einsum reference there), so the re-measurement runs the same code."""
    from syno.search.latency import latency_records
    from syno.session import read_kernel_dir

    if not device.startswith("cpu"):
        return None  # CUDA: auto autotunes, as it did in the search
    r = next((r for r in latency_records(read_kernel_dir(kernel_dir).meta) if r.get("scope") == "model"), None)
    impl = (r or {}).get("implementation")
    if not impl or "," in impl or not str(r.get("device", "")).startswith("cpu"):
        return None
    return {"implementation": impl}


def _searched_speedup(meta: dict) -> str:
    """What the search measured for this kernel (issue 16), to compare with the rows below."""
    from syno.search.latency import latency_records

    r = next((r for r in latency_records(meta) if r.get("scope") == "model" and r.get("mode") == "forward"), None)
    if r is None or r.get("speedup") is None:
        return ""
    return (f"; the search measured {r['speedup']:.3f}x ({r['ms']:.4g} ms, {r.get('device', '?')}, "
            f"N={r.get('batch')}, {r.get('implementation', '?')})")


def bench(
    model: str = typer.Argument(..., metavar="MODEL", help="zoo model: resnet18, resnet34, tiny, densenet121, ..."),
    operator: List[str] = typer.Option([], "--operator",
                                       help="hand-built operator (syno.ir.library.HAND_BUILT: conv2d, operator1, "
                                            "stacked_conv, ...); repeat or comma-separate for several"),
    kernel: List[Path] = typer.Option([], "--kernel", help="kernel dir holding operator.json; repeatable"),
    session: Optional[Path] = typer.Option(None, help="search session dir: bench the kernels `syno select` chose "
                                           "(its selected.json, e.g. --min-speedup), else its best --top kernels"),
    top: int = typer.Option(3, "--top", "-k", help="with --session: how many kernels (best accuracy first)"),
    impl: str = typer.Option("auto", help="auto | codegen | manual (hand-written two-conv versions)"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    batch: str = typer.Option("1", help="batch sizes, comma-separated, e.g. 1,128"),
    backend: str = typer.Option("eager,inductor", help="eager,inductor[,tvm]"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write all rows to this CSV"),
    image_size: Optional[int] = typer.Option(None, help="input H=W (default 224; tiny 16; <=64 = CIFAR stem)"),
    num_classes: Optional[int] = typer.Option(None, help="classifier outputs (default 1000; tiny 10)"),
    mode: str = typer.Option("default", help="inductor mode when not tuning"),
    dtype: str = typer.Option("fp32", help="fp32 | bf16 | fp16 (eager and inductor, when not tuning)"),
    channels_last: bool = typer.Option(False, help="channels-last memory format"),
    coordinate_descent: bool = typer.Option(False, help="inductor coordinate_descent_tuning (when not tuning)"),
    freezing: bool = typer.Option(True, help="inductor freezing (constant-fold weights)"),
    tune: bool = typer.Option(False, "--tune", help="pick the inductor config from a grid (cached per kernel/model/"
                                                    "shape/device)"),
    grid: Optional[str] = typer.Option(None, help="tuning grid, e.g. 'mode=default,max-autotune;cl=0,1;dtype=fp32'"),
    cache: Optional[Path] = typer.Option(None, help="tuning cache JSON (default $SYNO_BENCH_CACHE or "
                                                    "~/.cache/syno/inductor_tune.json)"),
    layers: bool = typer.Option(False, "--layers", help="also the layer-wise view (original layer vs operator)"),
    layers_only: bool = typer.Option(False, "--layers-only", help="only the layer-wise view"),
    warmup_ms: float = typer.Option(100.0, help="warm-up time per measurement"),
    budget_ms: float = typer.Option(500.0, help="timed time per measurement"),
    min_repeat: int = typer.Option(5, help="fewest timed runs"),
    max_repeat: int = typer.Option(1000, help="most timed runs"),
    tf32: bool = typer.Option(True, help="allow TF32 on CUDA (the original did)"),
    tvm_trials: int = typer.Option(0, help="MetaSchedule trials for --backend tvm (0: TVM default schedules)"),
    tvm_work_dir: Optional[Path] = typer.Option(None, help="MetaSchedule records dir"),
    time_budget: Optional[float] = typer.Option(None, help="seconds; later measurements are skipped (rows say so)"),
    threads: Optional[int] = typer.Option(None, help="CPU: torch threads for the run (default: torch's)"),
    seed: int = typer.Option(0),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no per-measurement log lines"),
) -> None:
    """End-to-end (and layer-wise) latency of MODEL vs MODEL with an operator substituted; prints speedups."""
    import time

    from rich.console import Console

    from .core import BenchOptions, bench_model
    from .operators import find_kernels, resolve_operator
    from .report import print_tables, write_csv
    from .timing import TimingOptions
    from .tune import CompileConfig, parse_grid

    console = Console()
    names = [n for o in operator for n in _csv_list(o)]
    kernels = list(kernel)
    if session is not None:
        found = _chosen_kernels(session, top)
        if not found:
            fail(f"--session {session}: no kernel directories (operator.json) there")
        kernels += found
    try:
        specs = [resolve_operator(name=n, impl=impl) for n in names]
        specs += [resolve_operator(kernel_dir=k, impl=impl, codegen_options=_searched_impl(k, device))
                  for k in kernels]
        batches = [int(b) for b in _csv_list(batch)]
        cfg = CompileConfig(mode=mode, coordinate_descent_tuning=coordinate_descent, channels_last=channels_last,
                            dtype=dtype, freezing=freezing)
        opts = BenchOptions(
            device=device, batches=batches, backends=_csv_list(backend), image_size=image_size,
            num_classes=num_classes, config=cfg, tune=tune, grid=parse_grid(grid, device) if grid else None,
            cache_path=cache, timing=TimingOptions(warmup_ms=warmup_ms, budget_ms=budget_ms, min_repeat=min_repeat,
                                                   max_repeat=max_repeat),
            end_to_end=not layers_only, layers=layers or layers_only, tf32=tf32, tvm_trials=tvm_trials,
            tvm_work_dir=tvm_work_dir, seed=seed,
            threads=threads, deadline=(time.monotonic() + time_budget) if time_budget else None,
            log=None if quiet else (lambda m: console.print(m, style="dim", markup=False, highlight=False)))
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        fail(exc)  # stderr, one line (stdout stays the tables)
    for s in specs:
        console.print(f"operator {s.label}: impl={s.impl} hash={s.op_hash}" + _searched_speedup(s.meta))
    try:
        rows = bench_model(model, specs, opts)
    except (ValueError, RuntimeError) as exc:
        fail(exc)
    print_tables(rows, console)
    if out is not None:
        write_csv(rows, out)
        console.print(f"wrote {len(rows)} rows to {out}")
    failed = [r for r in rows if r.status.startswith("error")]
    if failed:
        fail(f"{len(failed)} measurement(s) failed (their rows say why)", code=1)
