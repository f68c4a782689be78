"""Operator latency vs cuDNN conv on the ResNet-18 3x3 layer set (GPU).

For each layer (C @ H x H: 64@56, 128@28, 256@14, 512@7), batch N in {1, 128} and operator
(conv2d written in primitives, Operator 1, stacked conv; sampled operators with FLOPs ratio <= 0.5
when ``syno.synth.sample_operators`` exists), measure side by side in one process:

* cuDNN ``nn.Conv2d(C, C, 3, padding=1, bias=False)`` (the baseline) and the generated module,
* eager and ``torch.compile`` (default mode, fullgraph),
* forward (with autograd recording, as in training) and forward + backward (input and weights),

and print speedup = baseline time / operator time. The generated module's implementation is
picked by the autotuner (eager, fwd+bwd) before compiling; the per-variant eager times are
saved too. Both sides: bf16 autocast, channels_last inputs, TF32 allowed, cudnn.benchmark on.

    python benchmarks/operator_latency.py --out results/operator_latency.json
    python benchmarks/operator_latency.py --quick          # 2 layers, N=1 and 8, no compile

Results are written after every layer, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
from torch import nn

from syno.codegen import fast
from syno.codegen.torch import build_module
from syno.ir import library

LAYERS = [(64, 56), (128, 28), (256, 14), (512, 7)]
OPERATORS = {"conv2d": library.conv2d, "operator1": library.operator1, "stacked_conv": library.stacked_conv}


def timed(fn, iters: int, reps: int, device: str) -> float:
    """Median over ``reps`` of the mean time of ``iters`` back-to-back calls (ms)."""
    for _ in range(3):
        fn()
    samples = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(iters):
                fn()
            e.record()
            e.synchronize()
            samples.append(s.elapsed_time(e) / iters)
        else:
            t = time.perf_counter()
            for _ in range(iters):
                fn()
            samples.append((time.perf_counter() - t) * 1e3 / iters)
    return statistics.median(samples)


def graph_timed(fn, iters: int, reps: int) -> float:
    """GPU time per call: capture ``fn`` into a CUDA graph and time its replays (no CPU overhead)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return timed(graph.replay, iters, reps, "cuda")


def bench_pair(base, ours, x, g, iters, reps, device, graphs=False):
    """Interleaved fwd and fwd+bwd timings of two modules on the same input.

    ``graphs``: time CUDA-graph replays instead (GPU time only; autocast cache off, as capture needs)."""
    def fwd(m):
        return lambda: m(x)

    grads = {g.dtype: g, torch.bfloat16: g.to(torch.bfloat16)}

    def fwdbwd(m):
        def run():
            y = m(x)
            y.backward(grads[y.dtype])
        return run

    out = {}
    with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda", cache_enabled=not graphs):
        for mode, make in (("fwd", fwd), ("fwdbwd", fwdbwd)):
            tb, to = [], []
            for _ in range(2):  # alternate to cancel drift
                if graphs:
                    tb.append(graph_timed(make(base), iters, reps))
                    to.append(graph_timed(make(ours), iters, reps))
                else:
                    tb.append(timed(make(base), iters, reps, device))
                    to.append(timed(make(ours), iters, reps, device))
            out[mode] = {"baseline_ms": min(tb), "ours_ms": min(to), "speedup": min(tb) / min(to)}
    for p in list(base.parameters()) + list(ours.parameters()) + [x]:
        p.grad = None
    return out


def sampled_operators(max_ratio: float, count: int):
    """Up to ``count`` operators from the synthesizer's sampler (ResNet-18 preset) whose plan MACs
    are <= ``max_ratio`` x conv2d's on a mid-size layer."""
    try:
        from syno.synth import sample_operators
    except ImportError:
        return {}
    try:
        ops = sample_operators("resnet18", count * 20, seed=0, workers=1, time_limit=120)
    except Exception as exc:  # the sampler's options may differ: report, do not fail the run
        print(f"# sampler unavailable: {exc}", file=sys.stderr)
        return {}
    m = {"N": 128, "C_in": 256, "C_out": 256, "H": 14}
    conv = library.conv2d()
    out = {}
    for _, op in ops:
        try:
            ratio = op.flops(op.bind(m))[0] / conv.flops(conv.bind(m))[0]
        except Exception:
            continue
        if ratio <= max_ratio:
            out[f"sampled_{op.hash[:8]}"] = lambda op=op: op
        if len(out) >= count:
            break
    return out


GRAPHS = os.environ.get("SYNO_BENCH_GRAPHS", "0") == "1"


def triton_row(mod, x, g, base, iters, reps, device, budget) -> dict:
    """Triton backend for ``mod``'s operator: tune tiles (timed apart, before measuring), check
    against the einsum reference, then CUDA-graph GPU time beside cuDNN. Per-stage GPU times
    and achieved TFLOP/s come from the tuner's measurements."""
    t0 = time.time()
    out = {}
    try:
        with torch.autocast(device, dtype=torch.bfloat16):
            res = mod.tune(x.detach(), backward=True, budget_s=budget, backends=["triton"], plans=["min"])
            # no_grad: an autograd graph kept alive here holds AccumulateGrad nodes made on the
            # default stream, and a later CUDA-graph capture of the backward then fails
            with torch.no_grad():
                y = mod(x.detach())
                ref = mod.reference_forward(x.detach())
        out["rel_err_vs_einsum"] = ((y.float() - ref.float()).norm() / ref.float().norm()).item()
        del y, ref
        out["tune_s"] = time.time() - t0
        op = mod._impls["triton:min"].operator
        vals = op.class_sizes(x)
        stages = {}
        for tag, (cfg, ms) in res.tiles.get("triton:min", {}).items():
            direction, i = tag.split(":")
            st = (op.prog.stages if direction == "fwd" else op.bwd)[int(i)]
            macs = math.prod(vals[c] for c in st.classes)
            stages[tag] = {"kind": st.kind, "tile": cfg, "us": ms * 1e3, "macs": macs,
                           "tflops": 2 * macs / (ms * 1e-3) / 1e12}
        out["stages"] = stages
        # SYNO_BENCH_GRAPHS=1: CUDA-graph replays; default CUDA events around back-to-back calls
        # (the H100 run's capture failed while an autograd graph was kept alive, fixed above but
        # not re-run; see README)
        out["graph"] = bench_pair(base, mod, x, g, iters, reps, device, graphs=GRAPHS)
    except Exception as exc:
        out["error"] = repr(exc)[:500]
    return out


def triton_rows(args, ops, layers, batches, device, results, t_start) -> int:
    """``--triton only``: cuDNN vs the Triton backend, CUDA-graph GPU time, bf16 channels_last."""
    print(f"{'op':<13}{'layer':>7}{'N':>4}{'MACs':>6}{'g.fwd':>7}{'g.f+b':>7}{'err':>9}{'tune s':>7}  stages (us, TFLOP/s)")
    for c, h in layers:
        for n in batches:
            iters = 50 if n == 1 else 10
            base = nn.Conv2d(c, c, 3, padding=1, bias=False).to(device).to(memory_format=torch.channels_last)
            x = torch.randn(n, c, h, h, device=device).to(memory_format=torch.channels_last).requires_grad_(True)
            g = torch.randn(n, c, h, h, device=device).to(memory_format=torch.channels_last)
            for name, make in ops.items():
                m = {"N": n, "C_in": c, "C_out": c, "H": h}
                try:
                    mod = build_module(make(), m, implementation="einsum").to(device)
                except Exception as exc:
                    print(f"# {name} {c}@{h} N={n}: cannot build ({exc})")
                    continue
                row = {"op": name, "C": c, "H": h, "N": n, "macs": mod.plan.flops,
                       "conv_macs": n * c * c * h * h * 9}
                row["triton"] = tr = triton_row(mod, x, g, base, iters, 3, device, args.tune_budget)
                results["rows"].append(row)
                if "error" in tr:
                    print(f"{name:<13}{f'{c}@{h}':>7}{n:>4}  error {tr['error'][:200]}", flush=True)
                else:
                    gr = tr["graph"]
                    st = " ".join(f"{k}={v['us']:.0f}/{v['tflops']:.0f}" for k, v in tr["stages"].items())
                    print(f"{name:<13}{f'{c}@{h}':>7}{n:>4}{row['macs'] / row['conv_macs']:>6.3f}"
                          f"{gr['fwd']['speedup']:>7.2f}{gr['fwdbwd']['speedup']:>7.2f}"
                          f"{tr['rel_err_vs_einsum']:>9.1e}{tr['tune_s']:>7.1f}  {st}", flush=True)
                with open(args.out, "w") as fh:
                    json.dump(results, fh, indent=1)
                del mod
    print(f"# total {time.time() - t_start:.0f} s")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/operator_latency.json")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 128])
    ap.add_argument("--layers", type=int, nargs="+", default=None, help="channel counts to run (default all)")
    ap.add_argument("--ops", nargs="+", default=list(OPERATORS))
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-graphs", action="store_true", help="skip the CUDA-graph (GPU time) columns")
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--budget-s", type=float, default=math.inf, help="skip remaining compiles after this many seconds")
    ap.add_argument("--sampled", type=int, default=2, help="sampled operators with FLOPs ratio <= 0.5")
    ap.add_argument("--triton", choices=["add", "only", "off"], default="add",
                    help="add: a Triton column (generated fused kernels, tiles tuned before timing) "
                         "beside the autotuned variant; only: just cuDNN vs Triton, CUDA-graph GPU time")
    ap.add_argument("--tune-budget", type=float, default=20.0, help="seconds of Triton tile tuning per row")
    args = ap.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch._dynamo.config.cache_size_limit = 64
    layers = [l for l in LAYERS if args.layers is None or l[0] in args.layers]
    batches = args.batches
    if args.quick:
        layers, batches = layers[-2:], [1, 8]
        args.no_compile = True
    ops = {k: OPERATORS[k] for k in args.ops}
    ops.update(sampled_operators(0.5, args.sampled) if args.sampled else {})
    t_start = time.time()
    results = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
               "torch": torch.__version__, "settings": "bf16 autocast, channels_last, TF32 on, cudnn.benchmark",
               "rows": []}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    print(f"# {results['device']}  torch {torch.__version__}  {results['settings']}")
    print(f"# speedup = cuDNN conv time / operator time (>1: operator faster); e: eager, c: torch.compile,"
          f" g: CUDA-graph replay (GPU time only); fwd: forward with autograd on, f+b: forward+backward")
    if args.triton == "only":
        return triton_rows(args, ops, layers, batches, device, results, t_start)
    header = f"{'op':<13}{'layer':>7}{'N':>4}{'MACs':>6} {'variant':<14}" \
             f"{'e.fwd':>6}{'e.f+b':>6}{'c.fwd':>6}{'c.f+b':>6}{'eg.fwd':>7}{'eg.f+b':>7}{'cg.fwd':>7}{'cg.f+b':>7}"
    print(header)
    for c, h in layers:
        for n in batches:
            iters = 50 if n == 1 else 10
            reps = 3
            base = nn.Conv2d(c, c, 3, padding=1, bias=False).to(device).to(memory_format=torch.channels_last)
            x = torch.randn(n, c, h, h, device=device).to(memory_format=torch.channels_last).requires_grad_(True)
            g = torch.randn(n, c, h, h, device=device).to(memory_format=torch.channels_last)
            base_compiled = None
            for name, make in ops.items():
                m = {"N": n, "C_in": c, "C_out": c, "H": h}
                try:
                    mod = build_module(make(), m).to(device)
                except Exception as exc:
                    print(f"# {name} {c}@{h} N={n}: cannot build ({exc})")
                    continue
                row = {"op": name, "C": c, "H": h, "N": n, "macs": mod.plan.flops,
                       "conv_macs": n * c * c * h * h * 9}
                # correctness in the benchmark setting: fast path vs einsum reference
                with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                    ref = mod.reference_forward(x.detach())
                    variants = fast.measure_variants(mod, x.detach(), backward=True)
                    choice = min(variants, key=variants.get)
                    mod.implementation = choice
                    err = ((mod(x.detach()).float() - ref.float()).norm() / ref.float().norm()).item()
                row.update(variant=choice, variants_fwdbwd_ms=variants, rel_err_vs_einsum=err)
                row["eager"] = bench_pair(base, mod, x, g, iters, reps, device)
                if device == "cuda" and not args.no_graphs:
                    try:
                        row["eager_graph"] = bench_pair(base, mod, x, g, iters, reps, device, graphs=True)
                    except Exception as exc:
                        row["eager_graph_error"] = repr(exc)[:300]
                if not args.no_compile and time.time() - t_start < args.budget_s:
                    try:
                        if base_compiled is None:
                            base_compiled = torch.compile(base, fullgraph=True)
                        comp = torch.compile(mod, fullgraph=True)
                        row["compiled"] = bench_pair(base_compiled, comp, x, g, iters, reps, device)
                        if not args.no_graphs:
                            try:
                                row["compiled_graph"] = bench_pair(base_compiled, comp, x, g, iters, reps,
                                                                   device, graphs=True)
                            except Exception as exc:
                                row["compiled_graph_error"] = repr(exc)[:300]
                    except Exception as exc:
                        row["compiled_error"] = repr(exc)[:500]
                if args.triton == "add" and device == "cuda":
                    row["triton"] = triton_row(mod, x, g, base, iters, reps, device, args.tune_budget)
                results["rows"].append(row)
                cols = ""
                for key, w in (("eager", 6), ("compiled", 6), ("eager_graph", 7), ("compiled_graph", 7)):
                    r = row.get(key)
                    cols += (f"{r['fwd']['speedup']:>{w}.2f}{r['fwdbwd']['speedup']:>{w}.2f}" if r
                             else f"{'-':>{w}}{'-':>{w}}")
                tr = row.get("triton", {}).get("graph")
                if tr:
                    cols += f"{tr['fwd']['speedup']:>7.2f}{tr['fwdbwd']['speedup']:>7.2f}"
                print(f"{name:<13}{f'{c}@{h}':>7}{n:>4}{row['macs'] / row['conv_macs']:>6.3f} {choice:<14}{cols}",
                      flush=True)
                with open(args.out, "w") as fh:
                    json.dump(results, fh, indent=1)
                del mod
            torch._dynamo.reset()
    print(f"# total {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
