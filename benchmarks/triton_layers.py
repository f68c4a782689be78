#!/usr/bin/env python3
"""Operator 1 through the Triton backend, stage by stage, against cuDNN on ResNet-18's 3x3 layers.

One process per layer is enough (each row is side by side: cuDNN conv and our kernels on the same
inputs, same dtype and layout, GPU time from CUDA-graph replays via
:func:`syno.codegen.registry.gpu_time`). For each layer and batch size it prints

* ``conv``: cuDNN 3x3 conv (bf16, channels_last, ``cudnn.benchmark``);
* ``cudnn (3,1) over 1.5C``: what cuDNN takes for Operator 1's second stage alone (after the first
  stage wrote the kw-shifted copies: a (3,1) conv over 1.5C channels) — a bound for any lowering
  that materialises the first stage;
* ``unfused``: our two generated kernels (the grouped 1x1 stage writing the shifted copies, then
  the tap-structured implicit GEMM), each stage's best tile of a small sweep;
* ``fused``: one kernel, the grouped stage recomputed on tensor cores inside the GEMM's loads
  (block-diagonal ``tl.dot``, :func:`syno.codegen.triton.gemm.dot_producer`);

with weights stored in the layout the kernels read best (``--no-pack``: as allocated) and the
max relative error against the reference evaluator at N=1. Run (GPU)::

    for L in 64@56 128@28 256@14 512@7; do python benchmarks/triton_layers.py --layer $L --batches 128,1; done
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

DOT_TILES = [(128, 64, 32, 4, 3), (128, 64, 16, 4, 4), (64, 64, 16, 4, 4), (128, 128, 32, 8, 3),
             (64, 128, 32, 4, 3), (64, 64, 32, 4, 4), (128, 128, 16, 8, 4),
             (64, 256, 16, 8, 3), (128, 256, 16, 8, 3), (128, 256, 32, 8, 3)]
THIN_TILES = [(128, 1, 16, 4, 2), (256, 1, 16, 4, 2), (512, 1, 16, 4, 2), (1024, 1, 16, 8, 2)]


def sweep_configs(spec, m: int, n: int, k: int, b: int) -> list:
    """The tiles of the sweep for one stage kernel, clamped to the problem, plus split-K variants."""
    from dataclasses import replace

    from syno.codegen.triton.runtime import Config, _pow2, default_split
    from syno.codegen.triton.tune import candidates

    if spec.grouped:  # thin grouped stage: the tuner's own candidates (BK follows BN)
        return candidates(spec, m, n, k)
    cfgs: list = []
    for bm, bn, bk, warps, stages in (DOT_TILES if spec.two else THIN_TILES):
        # no larger than the problem (a thin stage's K is 2-16 values: BK beyond it is masked)
        bm = min(bm, _pow2(m, 16, 256 if spec.two else 1024))
        bn = min(bn, _pow2(n, 16, 256)) if spec.two else 1
        bk = min(bk, _pow2(k, 16 if spec.two else 1, 128))
        cfg = Config(bm, bn, bk, warps, stages)
        if cfg in cfgs:
            continue
        cfgs.append(cfg)
        split = default_split(spec, cfg, m, n, k, b)
        if split > 1:  # few output tiles: also try split-K (fp32 partial sums)
            cfgs.append(replace(cfg, split=split))
    return cfgs


def best_tiles(top, x, ws, dtype, vals, gpu_time) -> dict:
    """Each materialised stage's fastest validated tile of the sweep (the tuner's selection with
    this script's tiles and CUDA-graph timing; a thin grouped stage also as the flat kernel),
    installed on ``top``."""
    from syno.codegen.triton.tune import best_tile

    out = {}
    for i, st in enumerate(top.prog.stages):
        if st.store.leaf in top.fused:
            continue
        y, inter = top.forward(x, ws)
        bufs = top.inputs(x, ws)
        bufs.update(zip(top.materialized, inter))
        bufs["y"] = y
        best, flat = best_tile(top, "fwd", i, bufs, vals, dtype, "ieee", gpu_time, verbose=True,
                               configs_for=sweep_configs)
        top.configs[top.config_key("fwd", i, dtype, vals)] = best[0]
        out[i] = f"{best[0].key()} {best[1] * 1000:.1f}us{' (flat)' if flat else ''}"
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layer", default="64@56", help="C@H of the 3x3 layer (C_in = C_out = C)")
    ap.add_argument("--batches", default="128,1")
    ap.add_argument("--no-pack", action="store_true", help="keep weights as allocated (no relayout)")
    ap.add_argument("--backward", default="128",
                    help="batch sizes for forward+backward (the tuner's tiles and fusion choice; '' = none)")
    ap.add_argument("--tune-budget", type=float, default=60.0, help="seconds of tuning for forward+backward")
    args = ap.parse_args(argv)

    from syno.codegen.registry import gpu_time
    from syno.codegen.triton.runtime import TritonOperator, relayout
    from syno.ir import library
    from syno.ir.evaluate import reference_forward
    from syno.ir.lowering import plan_for

    torch.backends.cudnn.benchmark = True
    dtype = torch.bfloat16
    C, H = (int(v) for v in args.layer.split("@"))
    op = library.operator1()
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}; Operator 1 at {C}@{H}, bf16, "
          f"channels_last, weights {'as allocated' if args.no_pack else 'packed'}", flush=True)
    for N in (int(b) for b in args.batches.split(",")):
        mapping = dict(N=N, C_in=C, C_out=C, H=H, g=32, k_1=3, s=2)
        plan = plan_for(op, mapping)
        top = TritonOperator(plan)
        shapes = [tuple(plan.values[c] for c in t) for t in plan.analysis.tensors]
        x = torch.randn(N, C, H, H, device="cuda", dtype=dtype).to(memory_format=torch.channels_last)
        ws0 = [torch.randn(s, device="cuda", dtype=dtype) / 8 for s in shapes[1:]]
        w = torch.randn(C, C, 3, 3, device="cuda", dtype=dtype).to(memory_format=torch.channels_last)
        conv = gpu_time(lambda: F.conv2d(x, w, padding=1)) * 1000
        t = torch.randn(N, 3 * C // 2, H, H, device="cuda", dtype=dtype).to(memory_format=torch.channels_last)
        w31 = torch.randn(C, 3 * C // 2, 3, 1, device="cuda", dtype=dtype).to(memory_format=torch.channels_last)
        s2 = gpu_time(lambda: F.conv2d(t, w31, padding=(1, 0))) * 1000
        print(f"N={N} {C}@{H}: cuDNN conv {conv:.1f}us | cuDNN (3,1) over 1.5C {s2:.1f}us ({conv / s2:.2f}x)",
              flush=True)
        vals = top.class_sizes(x)
        for label, fused in (("unfused", ()), ("fused", tuple(top.fusable()))):
            top.fused = frozenset(fused)
            layouts = {} if args.no_pack else top.weight_layouts(x.stride())
            ws = [relayout(w0, layouts[f"w{j}"]) if f"w{j}" in layouts else w0
                  for j, w0 in enumerate(ws0, start=1)]
            tiles = best_tiles(top, x, ws, dtype, vals, gpu_time)
            with torch.no_grad():
                us = gpu_time(lambda: top.forward(x, ws)) * 1000
                y, _ = top.forward(x, ws)
            err = ""
            if N == 1:
                ref = reference_forward(op, mapping, [x.float(), *[v.float() for v in ws]])
                err = f" err {((y.float() - ref).abs().max() / ref.abs().max()).item():.1e}"
            print(f"    {label:8s} {us:7.1f}us ({conv / us:.2f}x){err}  stages: {tiles}", flush=True)
            if label == "unfused" and 0 in tiles and len(tiles) == 2:
                # what a hybrid (our first stage, then cuDNN's (3,1) conv over its output) would take
                s0 = float(tiles[0].split()[1].rstrip("us"))
                print(f"    hybrid estimate: stage 0 {s0:.1f}us + cuDNN (3,1) {s2:.1f}us = {s0 + s2:.1f}us "
                      f"({conv / (s0 + s2):.2f}x)", flush=True)
        if str(N) in args.backward.split(","):
            fwd_bwd(op, plan, x, ws0, w, args.tune_budget, args.no_pack)


def fwd_bwd(op, plan, x, ws0, w, budget: float, no_pack: bool) -> None:
    """Forward+backward (input and every weight gradient) through the registered custom op, tiles
    and fusion chosen by the tuner (``syno.codegen.triton.tune``, do_bench), vs cuDNN's conv
    forward+backward on the same input; CUDA-graph GPU time."""
    from syno.codegen.registry import gpu_time
    from syno.codegen.triton.ops import apply, register
    from syno.codegen.triton.runtime import TritonOperator, relayout
    from syno.codegen.triton.tune import tune

    top = TritonOperator(plan)
    layouts = {} if no_pack else top.weight_layouts(x.stride())
    ws = [relayout(w0, layouts[f"w{j}"]) if f"w{j}" in layouts else w0 for j, w0 in enumerate(ws0, start=1)]
    res = tune(top, x, ws, backward=True, budget_s=budget, use_cache=False)
    key = register(top)
    xg = x.detach().requires_grad_()
    wg = [v.detach().requires_grad_() for v in ws]
    wc = w.detach().requires_grad_()
    gy = torch.randn_like(F.conv2d(x, w, padding=1))

    def ours():
        torch.autograd.grad(apply(key, xg, wg, "ieee"), [xg, *wg], gy)

    def cudnn():
        torch.autograd.grad(F.conv2d(xg, wc, padding=1), [xg, wc], gy)

    t_conv, t_ours = gpu_time(cudnn) * 1000, gpu_time(ours) * 1000
    fused = res.get("fuse", {}).get("leaves", sorted(top.fused))
    stages = {k: v[0] for k, v in res.items() if k != "fuse"}
    print(f"    fwd+bwd  cuDNN {t_conv:.1f}us | ours {t_ours:.1f}us ({t_conv / t_ours:.2f}x) "
          f"fused={fused} tiles={stages}", flush=True)


if __name__ == "__main__":
    main()
