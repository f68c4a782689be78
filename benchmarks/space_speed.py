#!/usr/bin/env python3
"""Speed of the whole synthesis space: ResNet-18 end to end with sampled operators vs the baseline.

Samples operators from the ``resnet18`` preset (``syno.synth.sample_operators``), puts each in
every ResNet-18 placeholder (224x224, 1000 classes, ``build_model(..., mapping_batch=N)`` +
``fill_placeholders``) and measures, against the vanilla model in the same process:

* plan MACs of the substituted layers / MACs of the convolutions they replace (``macs_ratio``);
* forward latency at each batch size (``--batches``), eager kernels and ``torch.compile``d
  (``--modes``); on CUDA the *GPU time* of one forward (CUDA-graph replay when it can be
  captured, else CUDA events around back-to-back calls), on CPU the median wall time;
  ``speedup`` = baseline time / operator time;
* peak memory of a no-grad forward (CUDA: ``max_memory_allocated``; CPU: live storages counted
  by :func:`syno.codegen.cost.measure_peak_bytes`) and its ratio to the baseline's, and the bytes
  of weights prepared once at inference (:mod:`syno.codegen.hoist`), which the model keeps;
* with ``--traffic`` (default on the CPU) or afterwards with ``--add-traffic`` (CPU, no timing:
  run it on the commit that was measured), the eager forward's kernels, bytes moved and roofline
  time counted on the meta device (:mod:`syno.bench.traffic`), and Spearman of the measured time
  against them next to Spearman against MACs.

Modules use ``implementation="auto"`` (on CUDA: the fastest variant by the autotuner, disk
cached; on CPU the guard's emitter) — the best implementation this codebase offers. ``--planner
macs`` restores the min-MAC planner of before issue #21 (no cost model, no selection tensors,
no guard) for a "before" column; run it into another ``--out`` (or the same file: rows carry the
planner). A plan the guard refuses is recorded with status ``too_costly``; any other failure is
recorded as ``error`` (the run goes on). Rows are appended to ``rows.jsonl`` as they are
measured and a rerun skips what is there (resumable); ``--wall`` caps the run's wall time.
``summary.md`` is rewritten at the end: speedup distribution, fraction faster, best five, worst,
Spearman(MACs ratio, time ratio), peak memory ratios.

GPU (one H100; ``--wall`` caps it at about 8 minutes, a rerun of the same command continues from
``rows.jsonl``; the sampled operators are cached in ``operators-<preset>-<seed>.jsonl``)::

    python benchmarks/space_speed.py --out results/space-speed --planner cost,macs --count 200 --wall 450

(``--planner cost,macs`` measures each operator with the new planner and the min-MAC planner of
before back to back, against one baseline per batch size and mode measured at the start.)

CPU smoke test (tiny preset and tiny model, seconds)::

    python benchmarks/space_speed.py --cpu --out /tmp/space-speed
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/space-speed")
    p.add_argument("--cpu", action="store_true", help="smoke mode: tiny preset, tiny model, CPU, a few operators")
    p.add_argument("--preset", default=None, help="synthesis preset (default resnet18; --cpu: tiny)")
    p.add_argument("--model", default=None, help="zoo model (default resnet18; --cpu: tiny)")
    p.add_argument("--count", type=int, default=None, help="operators (default 200; --cpu: 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batches", default=None, help="default 1,128 (--cpu: 2)")
    p.add_argument("--modes", default=None, help="eager,compiled (default on CUDA; --cpu: eager)")
    p.add_argument("--compiled-count", type=int, default=8,
                   help="compile (mode 'compiled') only the first this many operators: a compile costs ~30 s")
    p.add_argument("--planner", default="cost",
                   help="cost: the planner of issue #21 with its guard; macs: the min-MAC planner of before; "
                        "cost,macs: both, each operator measured under both back to back (before/after side by side)")
    p.add_argument("--implementation", default="auto")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default 10; --cpu: 3)")
    p.add_argument("--wall", type=float, default=None, help="stop starting new measurements after this many seconds")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: 1 with --cpu)")
    p.add_argument("--device", default=None)
    p.add_argument("--traffic", action=argparse.BooleanOptionalAction, default=None,
                   help="count each forward's kernels, bytes moved and roofline time on the meta device "
                        "(~1 s per row of CPU; default on for --cpu, off on CUDA: add them later with --add-traffic)")
    p.add_argument("--add-traffic", action="store_true",
                   help="only count traffic for the rows of --out that lack it (CPU, no timing; with this checkout's "
                        "plans: run it on the commit that measured the rows), then rewrite summary.md")
    p.add_argument("--family", action="store_true",
                   help="only the CPU row of issue #21: the unfold-of-unfold-over-channels operator at N=4, "
                        "C=64, H=56 vs nn.Conv2d(64, 64, 3), one thread, before and after")
    return p.parse_args(argv)


def family_row(reps: int = 5) -> str:
    """Issue #21's CPU row: time and peak memory, side by side in this process."""
    from syno.codegen.cost import measure_peak_bytes
    from syno.codegen.torch import SynoModule, build_module
    from syno.ir.graph import Operator
    from syno.ir.lowering import plan_for

    torch.set_num_threads(1)
    op = Operator.from_json((Path(__file__).resolve().parents[1] / "tests" / "codegen" / "data"
                             / "unfold_unfold_channels.json").read_text())
    m = {"N": 4, "C_in": 64, "C_out": 64, "H": 56}
    x = torch.randn(4, 64, 56, 56)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).eval()
    before = SynoModule(op, m, plan_for(op, m, cost="macs", select=False), implementation="einsum")
    after = build_module(op, m)
    after_einsum = build_module(op, m, implementation="einsum")
    rows = [("nn.Conv2d(64, 64, 3)", conv, None), ("before: min-MAC plan, einsum", before, before.plan),
            ("after: cost plan, auto (" + after.cpu_variant + ")", after, after.plan),
            ("after: cost plan, einsum", after_einsum, after_einsum.plan)]
    out = ["| N=4, C=64, H=56, 1 thread | MACs | ms (median of %d) | x conv time | peak MB | x input |" % reps,
           "|---|---|---|---|---|---|"]
    base_ms = None
    x_mb = x.numel() * 4 / 2**20
    for label, mod, plan in rows:
        def fn(mod=mod):
            with torch.no_grad():
                return mod(x)
        ms = cpu_ms(fn, reps)
        base_ms = base_ms or ms
        peak = measure_peak_bytes(lambda x, mod=mod: mod(x), x) / 2**20
        macs = plan.flops if plan is not None else 4 * 64 * 56 * 56 * 64 * 9
        out.append(f"| {label} | {macs / 1e6:.0f} M | {ms:.1f} | {ms / base_ms:.2f}x | {peak:.1f} | {peak / x_mb:.1f}x |")
    return "\n".join(out)


# ----------------------------------------------------------------------------------- operators
def load_operators(out: Path, preset: str, count: int, seed: int, log) -> list[tuple[str, object]]:
    """Sampled operators, cached in ``operators.jsonl`` (a rerun does not sample again)."""
    from syno.ir.graph import Operator
    from syno.synth.sampler import sample_operators

    cache = out / f"operators-{preset}-{seed}.jsonl"
    have = []
    if cache.exists():
        for line in cache.read_text().splitlines():
            try:
                e = json.loads(line)
                have.append((e["path"], Operator.from_json(e["operator"])))
            except (ValueError, KeyError):
                continue
    if len(have) >= count:
        return have[:count]
    t0 = time.monotonic()
    ops = sample_operators(preset, count, seed=seed, workers=max(1, min(16, os.cpu_count() or 1)))
    log(f"sampled {len(ops)} {preset} operators in {time.monotonic() - t0:.0f} s")
    cache.write_text("".join(json.dumps({"path": p, "operator": op.to_json()}) + "\n" for p, op in ops))
    return ops


# ----------------------------------------------------------------------------------- models
def factory_for(op, planner: str, implementation: str):
    from syno.codegen.torch import SynoModule, build_module

    def make(mapping):
        if planner == "macs":  # before #21: min-MAC plan, no selection tensors, no guard
            from syno.ir.lowering import plan_for
            return SynoModule(op, mapping, plan_for(op, mapping, cost="macs", select=False), implementation)
        return build_module(op, mapping, implementation=implementation)

    make.operator = op
    return make


def build(model_name: str, batch: int, factory=None):
    from syno.models import build_model, fill_placeholders

    kw = {"image_size": 16, "num_classes": 10} if model_name == "tiny" else {"image_size": 224, "num_classes": 1000}
    torch.manual_seed(0)
    if factory is None:
        return build_model(model_name, placeholders=False, **kw).eval()
    model = build_model(model_name, placeholders=True, mapping_batch=batch, **kw)
    fill_placeholders(model, factory)
    return model.eval()


def macs_ratio(model) -> float:
    """Plan MACs of the filled placeholders / MACs of a dense conv at the same mappings."""
    from syno.codegen.torch import SynoModule
    from syno.ir import library
    from syno.ir.lowering import plan_for

    conv = library.conv2d()
    ours = base = 0
    for m in model.modules():
        if isinstance(m, SynoModule):
            ours += m.plan.flops
            base += plan_for(conv, {k: m.mapping[k] for k in ("N", "C_in", "C_out", "H")}).flops
    return ours / base if base else math.nan


def example(model_name: str, batch: int, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    shape = (1, 16, 16) if model_name == "tiny" else (3, 224, 224)
    return torch.randn((batch, *shape), generator=g).to(device)


# ----------------------------------------------------------------------------------- timing
def gpu_ms(fn, reps: int) -> float:
    from syno.codegen.registry import gpu_time
    return gpu_time(fn, reps=reps)


def cpu_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def peak_bytes(model, x) -> int:
    if x.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        with torch.no_grad():
            model(x)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before + x.numel() * x.element_size()
    from syno.codegen.cost import measure_peak_bytes
    return measure_peak_bytes(lambda x: model(x), x)


def traffic(model_name: str, batch: int, factory=None) -> dict:
    """Kernels, bytes moved and the roofline estimate of one eager forward, counted per ATen op on
    the meta device (:mod:`syno.bench.traffic`): what the measured time is compared with besides MACs."""
    from syno.bench.traffic import count_forward
    counted = count_forward(build(model_name, batch, factory), example(model_name, batch, "cpu"))
    return {"kernels": counted.kernels, "bytes_moved": counted.bytes, "roofline_ms": counted.seconds() * 1e3}


def measure(model, x, mode: str, reps: int) -> float:
    from syno.codegen.registry import compile_model

    # the registry's explicit tuning step (forward never tunes): every candidate timed, as the
    # "auto" first call did before, Triton at its cached or default tiles
    compile_model(model, x, backward=False, tune_tiles=False)
    # inference compile as `syno bench` does it: Inductor freezing constant-folds what depends on
    # weights alone (an operator's weight preparation; the baseline's BatchNorm folding), which a
    # plain compile would recompute on every call
    fn_model = torch.compile(model, dynamic=False, options={"freezing": True}) if mode == "compiled" else model

    def fn():
        with torch.no_grad():
            return fn_model(x)

    fn()  # compile outside the timed region
    return gpu_ms(fn, reps) if x.device.type == "cuda" else cpu_ms(fn, reps)


# ----------------------------------------------------------------------------------- summary
def spearman(a: list[float], b: list[float]) -> float:
    def ranks(v):
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    if len(a) < 3:
        return math.nan
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    sa = math.sqrt(sum((x - ma) ** 2 for x in ra))
    sb = math.sqrt(sum((y - mb) ** 2 for y in rb))
    return cov / (sa * sb) if sa and sb else math.nan


def summarize(rows: list[dict], device_name: str) -> str:
    out = [f"# Space speed ({device_name})", ""]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("kind") == "operator":
            groups.setdefault((r["planner"], r["batch"], r["mode"]), []).append(r)
    out.append("| planner | N | mode | ok / total | too_costly | errors | median speedup | p10 | p90 | "
               "faster | worst | Spearman(MACs ratio, time ratio) | Spearman(bytes moved, time) | Spearman(roofline, time) | "
               "Spearman(MACs ratio, roofline) | max peak / baseline | max (peak + prepared weights) / baseline |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    details = []
    for (planner, batch, mode), rs in sorted(groups.items()):
        ok = [r for r in rs if r["status"] == "ok"]
        sp = sorted(r["speedup"] for r in ok)
        q = (lambda p: sp[min(len(sp) - 1, int(p * len(sp)))]) if sp else (lambda p: math.nan)
        rho = spearman([r["macs_ratio"] for r in ok], [1 / r["speedup"] for r in ok])
        counted = [r for r in ok if "roofline_ms" in r]
        rho_bytes = spearman([r["bytes_moved"] for r in counted], [1 / r["speedup"] for r in counted])
        rho_roof = spearman([r["roofline_ms"] for r in counted], [1 / r["speedup"] for r in counted])
        rho_macs_roof = spearman([r["macs_ratio"] for r in counted], [r["roofline_ms"] for r in counted])
        peak = max((r["peak_ratio"] for r in ok), default=math.nan)
        held = max((r.get("held_ratio", r["peak_ratio"]) for r in ok), default=math.nan)
        out.append(f"| {planner} | {batch} | {mode} | {len(ok)} / {len(rs)} | "
                   f"{sum(r['status'] == 'too_costly' for r in rs)} | {sum(r['status'] == 'error' for r in rs)} | "
                   f"{statistics.median(sp) if sp else math.nan:.3f}x | {q(0.1):.3f}x | {q(0.9):.3f}x | "
                   f"{sum(s > 1 for s in sp)} / {len(sp)} | {sp[0] if sp else math.nan:.3f}x | {rho:.2f} | {rho_bytes:.2f} | {rho_roof:.2f} | {rho_macs_roof:.2f} | {peak:.2f}x | {held:.2f}x |")
        best = sorted(ok, key=lambda r: -r["speedup"])[:5]
        worst = sorted(ok, key=lambda r: r["speedup"])[:1]
        details.append(f"\n## {planner}, N={batch}, {mode}\n")
        details.append("best five: " + ", ".join(f"{r['op'][:10]} {r['speedup']:.2f}x (MACs {r['macs_ratio']:.2f})"
                                                  for r in best))
        details.append("\nworst: " + ", ".join(f"{r['op'][:10]} {r['speedup']:.3f}x (MACs {r['macs_ratio']:.2f}, "
                                               f"peak {r['peak_ratio']:.1f}x)" for r in worst))
        hist = [0] * 6
        edges = [0.3, 0.5, 0.8, 1.0, 1.25]
        for s in sp:
            hist[sum(s >= e for e in edges)] += 1
        details.append("\ndistribution: " + ", ".join(
            f"{lab}: {n}" for lab, n in zip(["<0.3x", "0.3-0.5x", "0.5-0.8x", "0.8-1x", "1-1.25x", ">=1.25x"], hist)))
    return "\n".join(out + details) + "\n"


def add_traffic(rows: list[dict], rows_path: Path, ops, model_name: str, implementation: str, out: Path, log) -> int:
    """Traffic columns for measured rows that lack them (eager rows; compiled ones are fused by
    Inductor, which the per-op count does not model), counted here on the CPU; rows.jsonl rewritten."""
    by_hash = {op.hash: op for _, op in ops}
    for r in rows:
        if "roofline_ms" in r or r.get("mode") != "eager" or r.get("status", "ok") != "ok":
            continue
        if r.get("kind") == "baseline":
            r.update(traffic(model_name, r["batch"]))
        elif r.get("op") in by_hash:
            r.update(traffic(model_name, r["batch"], factory_for(by_hash[r["op"]], r["planner"], implementation)))
            log(f"traffic {r['op'][:10]} N={r['batch']}: {r['kernels']} kernels, {r['bytes_moved'] / 1e9:.2f} GB, "
                f"roofline {r['roofline_ms']:.3f} ms")
    tmp = rows_path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(rows_path)
    device = next((r["device"] for r in rows if "device" in r), "?")
    summary = summarize(rows, device)
    (out / "summary.md").write_text(summary)
    log(summary)
    return 0


# ----------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.family:
        print(family_row(args.reps or 5))
        return 0
    device = torch.device(args.device or ("cpu" if args.cpu or not torch.cuda.is_available() else "cuda"))
    preset = args.preset or ("tiny" if args.cpu else "resnet18")
    model_name = args.model or ("tiny" if args.cpu else "resnet18")
    count = args.count if args.count is not None else (4 if args.cpu else 200)
    batches = [int(b) for b in (args.batches or ("2" if args.cpu else "1,128")).split(",")]
    modes = (args.modes or ("eager" if args.cpu or device.type != "cuda" else "eager,compiled")).split(",")
    reps = args.reps or (3 if args.cpu else 10)
    threads = args.threads or (1 if args.cpu or device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    if args.traffic is None:
        args.traffic = device.type != "cuda"
    start = time.monotonic()
    deadline = start + args.wall if args.wall else math.inf
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    rows: list[dict] = []
    if rows_path.exists():
        for line in rows_path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a kill
    done = {(r.get("kind"), r.get("op"), r.get("planner"), r["batch"], r["mode"]) for r in rows if "batch" in r}
    log = print
    from syno.bench.timing import device_name
    dev_name = device_name(device)
    log(f"device {dev_name}; {count} {preset} operators in {model_name}, batches {batches}, modes {modes}, "
        f"planner {args.planner}")

    def record(row: dict) -> None:
        rows.append(row)
        with rows_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")

    from syno.codegen.hoist import live_prepared_bytes
    ops = load_operators(out, preset, count, args.seed, log)
    if args.add_traffic:
        return add_traffic(rows, rows_path, ops, model_name, args.implementation, out, log)
    base: dict[tuple, dict] = {(r["batch"], r["mode"]): r for r in rows if r.get("kind") == "baseline"}
    for batch in batches:
        for mode in modes:
            if (batch, mode) in base:
                continue
            model = build(model_name, batch).to(device)
            x = example(model_name, batch, device)
            row = {"kind": "baseline", "batch": batch, "mode": mode, "device": dev_name,
                   "ms": measure(model, x, mode, reps), "peak_bytes": peak_bytes(model, x),
                   **(traffic(model_name, batch) if args.traffic else {})}
            record(row)
            base[(batch, mode)] = row
            log(f"baseline N={batch} {mode}: {row['ms']:.3f} ms, peak {row['peak_bytes'] / 2**20:.1f} MB")
            del model
    stopped = False
    planners = args.planner.split(",")
    if any(p not in ("cost", "macs") for p in planners):
        raise SystemExit(f"--planner {args.planner!r}: use cost, macs or cost,macs")
    jobs = [(b, m, p) for b in batches for m in modes for p in planners]
    for k, (path, op) in enumerate(ops):
        for batch, mode, planner in jobs:
            key = ("operator", op.hash, planner, batch, mode)
            if key in done or (mode == "compiled" and k >= args.compiled_count):
                continue
            if time.monotonic() > deadline:
                stopped = True
                break
            row = {"kind": "operator", "op": op.hash, "path": path, "index": k, "planner": planner,
                   "batch": batch, "mode": mode, "device": dev_name}
            t0 = time.monotonic()
            model = None
            try:
                model = build(model_name, batch, factory_for(op, planner, args.implementation)).to(device)
                row["macs_ratio"] = macs_ratio(model)
                x = example(model_name, batch, device)
                row["ms"] = measure(model, x, mode, reps)
                row["peak_bytes"] = peak_bytes(model, x)
                # weights prepared once at inference (syno.codegen.hoist) live outside the forward's
                # peak: recorded so the memory a model keeps is reported too
                row["prepared_bytes"] = live_prepared_bytes()
                if args.traffic:
                    row.update(traffic(model_name, batch, factory_for(op, planner, args.implementation)))
                b = base[(batch, mode)]
                row.update(status="ok", speedup=b["ms"] / row["ms"], peak_ratio=row["peak_bytes"] / b["peak_bytes"],
                           held_ratio=(row["peak_bytes"] + row["prepared_bytes"]) / b["peak_bytes"])
            except Exception as exc:  # noqa: BLE001 - one failing operator is a row, not the end of the run
                from syno.codegen.cost import PlanTooCostly
                row["status"] = "too_costly" if isinstance(exc, PlanTooCostly) else "error"
                row["error"] = f"{type(exc).__name__}: {exc}"[:500]
                if row["status"] == "error":
                    row["traceback"] = traceback.format_exc(limit=4)[-2000:]
            finally:
                del model
                gc.collect()  # the next row's prepared-weight count must not see this model's caches
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            row["wall_s"] = time.monotonic() - t0
            record(row)
            log(f"[{k + 1}/{len(ops)}] {op.hash[:10]} N={batch} {mode} {planner}: {row['status']}"
                + (f" {row['speedup']:.3f}x (MACs {row['macs_ratio']:.2f}, peak {row['peak_ratio']:.2f}x)"
                   if row["status"] == "ok" else f" {row.get('error', '')[:120]}"))
            if stopped:
                break
        if stopped:
            log(f"wall-time cap reached after {time.monotonic() - start:.0f} s; rerun to continue")
            break
    summary = summarize(rows, dev_name)
    (out / "summary.md").write_text(summary)
    log(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
