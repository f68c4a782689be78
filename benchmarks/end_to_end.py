#!/usr/bin/env python3
"""End-to-end latency of ResNet-18/34 with the paper's operators substituted (one run, ratios).

For each model (ImageNet 224x224 input, 1000 classes), batch size and backend it measures the
vanilla torchvision model and the placeholder model filled with each operator: Operator 1 and the
stacked conv (hand-written two-conv versions from ``syno.bench.manual`` and the generated
``syno.codegen`` modules), plus the best kernels of a search session when ``--session`` is given.
Everything is measured in the same process, one after the other, so the printed ratios
(baseline / variant, same backend and batch) compare like with like.

Typical GPU run (N=1 first, so a time budget cuts N=128 before N=1)::

    python benchmarks/end_to_end.py --device cuda --out results/e2e --time-budget 420

CPU smoke test (small and fast)::

    python benchmarks/end_to_end.py --device cpu --models resnet18 --batches 1 --image-size 32 \
        --operators operator1 --impls manual --backends eager

Outputs under ``--out``: ``end_to_end.csv`` (every row, streamed as measured), ``summary.md``
(ratio tables), ``env.json`` (versions, device, options).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from syno.bench import (BenchOptions, BenchRow, CompileConfig, TimingOptions, bench_model, device_name,  # noqa: E402
                        find_kernels, parse_grid, print_tables, resolve_operator)
from syno.bench.operators import BASELINE  # noqa: E402


def _list(s: str) -> list[str]:
    return [t.strip() for t in s.split(",") if t.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", default="resnet18,resnet34")
    p.add_argument("--batches", default="1,128")
    p.add_argument("--backends", default="eager,inductor")
    p.add_argument("--operators", default="operator1,stacked_conv", help="hand-built operators")
    p.add_argument("--impls", default="manual,codegen", help="manual and/or codegen (codegen only if it exists)")
    p.add_argument("--codegen-implementation", default=None,
                   help="SynoModule implementation (default: 'auto' = autotuned fast path on CUDA)")
    p.add_argument("--session", default=None, help="search session dir: also its best --top kernels")
    p.add_argument("--top", type=int, default=2)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--mode", default=None, help="inductor mode (default: reduce-overhead on cuda, default on cpu)")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--no-freezing", action="store_true")
    p.add_argument("--no-tf32", action="store_true")
    p.add_argument("--tune", action="store_true", help="pick each model's inductor config from --grid (cached)")
    p.add_argument("--grid", default=None, help="tuning grid (syno.bench.parse_grid syntax)")
    p.add_argument("--cache", default=None, help="tuning cache JSON")
    p.add_argument("--layers", action="store_true", help="also layer-wise rows (every operator, every site)")
    p.add_argument("--warmup-ms", type=float, default=50)
    p.add_argument("--budget-ms", type=float, default=300)
    p.add_argument("--time-budget", type=float, default=None, help="seconds; later measurements are skipped")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--pretune", type=float, default=0.0,
                   help="seconds per placeholder of Triton tile tuning before any timing (with "
                        "--codegen-implementation triton:*; tiles go to the disk cache the timed models read)")
    p.add_argument("--out", default="benchmarks/results/end_to_end")
    return p.parse_args(argv)


def build_specs(args) -> list:
    impls = _list(args.impls)
    cg_opts = {}
    if args.codegen_implementation:
        cg_opts["implementation"] = args.codegen_implementation
    elif torch.device(args.device).type == "cuda" and importlib.util.find_spec("syno.codegen.fast") is None:
        cg_opts["implementation"] = "einsum"   # no fast path in this checkout
    specs = []
    for name in _list(args.operators):
        for impl in impls:
            s = resolve_operator(name, impl=impl, codegen_options=cg_opts if impl == "codegen" else None)
            s.label = f"{name}[{impl}]"
            specs.append(s)
    if args.session:
        for d in find_kernels(args.session, args.top):
            s = resolve_operator(kernel_dir=d, codegen_options=cg_opts)
            specs.append(s)
    return specs


def summary_markdown(rows: list[BenchRow]) -> str:
    rows = [r for r in rows if r.scope == "model"]
    variants = list(dict.fromkeys(r.variant for r in rows if r.variant != BASELINE))
    head = "| model | N | backend | baseline ms | " + " | ".join(variants) + " |"
    sep = "|" + "---|" * (4 + len(variants))
    lines = [head, sep]
    for key in dict.fromkeys((r.model, r.batch, r.backend) for r in rows):
        rs = {r.variant: r for r in rows if (r.model, r.batch, r.backend) == key}
        b = rs.get(BASELINE)
        cells = [key[0], str(key[1]), key[2] + (f" ({b.config})" if b and b.config else ""),
                 f"{b.median_ms:.3f}" if b and b.status == "ok" else (b.status if b else "-")]
        for v in variants:
            r = rs.get(v)
            if r is None or r.status != "ok":
                cells.append("-" if r is None else r.status.split(":")[0])
            else:
                extra = f" ({r.config})" if b is not None and r.config != b.config else ""
                cells.append((f"{r.median_ms:.3f} ms, **{r.speedup:.2f}x**" if math.isfinite(r.speedup)
                              else f"{r.median_ms:.3f} ms") + extra)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pretune(args, specs, cfg) -> None:
    """Tune the Triton tiles of every placeholder's shape (inputs captured by hooks on one
    forward of each substituted model, in the benchmark's dtype and layout) before timing: the
    timed models then read the tuned tiles from the disk cache and nothing tunes inside them."""
    from syno.bench.core import BenchOptions as _BO, build_substituted, example_input
    from syno.codegen.registry import compile_model, parse

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(args.dtype, torch.float32)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    for batch in (int(b) for b in _list(args.batches)):
        for name in _list(args.models):
            for spec in specs:
                if spec.impl != "codegen":
                    continue
                opts = _BO(device=args.device, batches=(batch,), image_size=args.image_size,
                           num_classes=args.num_classes)
                model = build_substituted(name, spec, batch, opts).to(args.device, dtype).to(memory_format=fmt)
                x = example_input(model, batch, args.device).to(dtype).to(memory_format=fmt)
                t0 = time.monotonic()
                todo = compile_model(model, x, backward=False, budget_s=args.pretune, backends=["triton"],
                                     plans=[parse(args.codegen_implementation)[1]])
                print(f"# pretuned the {len(todo)} placeholders of {name} N={batch} {spec.label} "
                      f"in {time.monotonic() - t0:.0f} s", flush=True)
                del model


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    specs = build_specs(args)
    mode = args.mode or ("reduce-overhead" if device.type == "cuda" else "default")
    cfg = CompileConfig(mode=mode, channels_last=args.channels_last, dtype=args.dtype, freezing=not args.no_freezing)
    env = {"argv": sys.argv, "torch": torch.__version__, "python": platform.python_version(),
           "device": device_name(device), "cuda": torch.version.cuda, "config": cfg.label(),
           "tf32": not args.no_tf32, "operators": [{"label": s.label, "impl": s.impl, "hash": s.op_hash}
                                                   for s in specs]}
    if device.type == "cuda":
        env["capability"] = torch.cuda.get_device_capability()
    (out / "env.json").write_text(json.dumps(env, indent=1))
    print(json.dumps(env), flush=True)

    csv_path = out / "end_to_end.csv"
    all_rows: list[BenchRow] = []
    with csv_path.open("w") as f:
        f.write(",".join(BenchRow.columns()) + "\n")

    def on_row(r: BenchRow) -> None:
        all_rows.append(r)
        with csv_path.open("a") as f:
            f.write(",".join(_csv_cell(v) for v in r.as_dict().values()) + "\n")

    if args.pretune and device.type == "cuda" and (args.codegen_implementation or "").startswith("triton"):
        pretune(args, specs, cfg)
    deadline = t_start + args.time_budget if args.time_budget else None
    # N=1 for every model first: a time budget then cuts the larger batches, not the headline.
    for batch in (int(b) for b in _list(args.batches)):
        for model in _list(args.models):
            opts = BenchOptions(
                device=args.device, batches=(batch,), backends=_list(args.backends), image_size=args.image_size,
                num_classes=args.num_classes, config=cfg, tune=args.tune,
                grid=parse_grid(args.grid, device) if args.grid else None, cache_path=args.cache,
                timing=TimingOptions(warmup_ms=args.warmup_ms, budget_ms=args.budget_ms), layers=args.layers,
                tf32=not args.no_tf32, threads=args.threads, deadline=deadline, on_row=on_row,
                log=lambda m: print(f"[{time.monotonic() - t_start:6.1f}s] {m}", flush=True))
            bench_model(model, specs, opts)
    md = summary_markdown(all_rows)
    (out / "summary.md").write_text(f"device: {env['device']}, torch {env['torch']}, inductor config "
                                    f"{cfg.label()}, TF32 {'on' if env['tf32'] else 'off'}\n\n" + md)
    print_tables(all_rows)
    print(md)
    print(f"total {time.monotonic() - t_start:.0f} s; rows in {csv_path}", flush=True)
    return 0


def _csv_cell(v) -> str:
    s = str(v)
    return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n') else s


if __name__ == "__main__":
    sys.exit(main())
