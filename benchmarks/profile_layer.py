#!/usr/bin/env python3
"""Nsight Compute profile of Operator 1's generated kernels vs cuDNN on one ResNet-18 layer.

Tiles are tuned first (``syno.codegen.triton.tune``, outside the profiled range); then cuDNN's
3x3 conv, our unfused forward (each stage's kernel) and our fused forward run once each inside
``cudaProfilerStart/Stop``, so ``ncu --profile-from-start off`` sees only those kernels. Run on
the GPU machine (Firecracker runtime; leave the clocks alone)::

    ncu --profile-from-start off --clock-control none --csv \\
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,\\
sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__inst_executed_pipe_tensor.sum \\
        python benchmarks/profile_layer.py --layer 256@14 --batch 128 > ncu.csv
    python benchmarks/profile_layer.py --summarize ncu.csv --layer 256@14 --batch 128

The summary prints per kernel: time, DRAM bytes read/written, achieved TFLOP/s (the stage's
MACs from the plan, 2 FLOPs each; the conv's 9*C*C*H*W*N) and bandwidth.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def build(layer: str, batch: int):
    from syno.ir import library
    from syno.ir.lowering import plan_for

    C, H = (int(v) for v in layer.split("@"))
    mapping = dict(N=batch, C_in=C, C_out=C, H=H, g=32, k_1=3, s=2)
    return library.operator1(), mapping, plan_for(library.operator1(), mapping), C, H


def run(args) -> None:
    import torch
    import torch.nn.functional as F

    from syno.codegen.triton.runtime import TritonOperator, relayout
    from syno.codegen.triton.tune import tune

    torch.backends.cudnn.benchmark = True
    _, _, plan, C, H = build(args.layer, args.batch)
    dt = torch.bfloat16
    x = torch.randn(args.batch, C, H, H, device="cuda", dtype=dt).to(memory_format=torch.channels_last)
    w = torch.randn(C, C, 3, 3, device="cuda", dtype=dt).to(memory_format=torch.channels_last)
    top = TritonOperator(plan)
    shapes = [tuple(plan.values[c] for c in t) for t in plan.analysis.tensors]
    layouts = top.weight_layouts(x.stride())
    ws = [torch.randn(s, device="cuda", dtype=dt) / 8 for s in shapes[1:]]
    ws = [relayout(v, layouts[f"w{j}"]) if f"w{j}" in layouts else v for j, v in enumerate(ws, start=1)]
    tune(top, x, ws, backward=False, budget_s=args.tune_budget, use_cache=False)
    fusable = tuple(top.fusable())
    def every_variant():
        F.conv2d(x, w, padding=1)
        for fused in ((), fusable):
            top.fused = frozenset(fused)
            top.forward(x, ws)

    with torch.no_grad():
        for _ in range(3):  # compile and warm every variant outside the profiled range
            every_variant()
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStart()
        every_variant()
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStop()
    print(f"# profiled: conv, unfused ({len(plan_stages(top))} kernels), fused {list(fusable)}", file=sys.stderr)


def plan_stages(top) -> list[int]:
    return [i for i, st in enumerate(top.prog.stages) if st.store.leaf not in top.fused]


def summarize(args) -> None:
    _, _, plan, C, H = build(args.layer, args.batch)
    conv_flops = 2 * 9 * C * C * H * H * args.batch
    stage_macs = [st.macs for st in plan.steps if st.kind in ("contract", "sum")]
    rows: dict[tuple[str, str], dict[str, float]] = {}
    order: list[tuple[str, str]] = []
    with open(args.summarize) as fh:
        lines = [ln for ln in fh if ln.startswith('"')]
    for rec in csv.DictReader(lines):
        key = (rec["ID"], rec["Kernel Name"])
        if key not in rows:
            rows[key] = {}
            order.append(key)
        val = rec["Metric Value"].replace(",", "")
        try:
            rows[key][rec["Metric Name"]] = float(val) * _unit(rec.get("Metric Unit", ""))
        except ValueError:
            pass
    print("| kernel | time us | DRAM read MB | DRAM write MB | GB/s | TFLOP/s | SM throughput % |")
    print("|---|---|---|---|---|---|---|")
    for key in order:
        m = rows[key]
        t = m.get("gpu__time_duration.sum", 0.0)  # seconds
        rd, wr = m.get("dram__bytes_read.sum", 0.0), m.get("dram__bytes_write.sum", 0.0)
        name = key[1]
        if name.startswith("stage"):  # ours: stage<i> is the i-th contraction of the plan
            flops = 2 * stage_macs[int(name[5:])] if int(name[5:]) < len(stage_macs) else None
        else:
            flops = conv_flops
        tf = f"{flops / t / 1e12:.0f}" if flops and t else "-"
        print(f"| {key[1][:40]} | {t * 1e6:.1f} | {rd / 1e6:.1f} | {wr / 1e6:.1f} | "
              f"{(rd + wr) / t / 1e9 if t else 0:.0f} | {tf} | "
              f"{m.get('sm__throughput.avg.pct_of_peak_sustained_elapsed', 0):.0f} |")
    print(f"# plan MACs: {plan.flops} (conv: {conv_flops // 2}); per contraction: {stage_macs}; a fused "
          "stage1 also computes stage0 (its TFLOP/s counts stage1's MACs only)")


def _unit(u: str) -> float:
    return {"ns": 1e-9, "nsecond": 1e-9, "us": 1e-6, "usecond": 1e-6, "ms": 1e-3, "msecond": 1e-3, "s": 1.0,
            "second": 1.0, "byte": 1.0, "Kbyte": 1e3, "KB": 1e3, "Mbyte": 1e6, "MB": 1e6, "Gbyte": 1e9, "GB": 1e9,
            "%": 1.0}.get(u, 1.0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layer", default="256@14")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--tune-budget", type=float, default=20.0)
    ap.add_argument("--summarize", default=None, help="an ncu --csv file: print the per-kernel table")
    args = ap.parse_args(argv)
    summarize(args) if args.summarize else run(args)


if __name__ == "__main__":
    main()
