"""Int8 post-training quantization of ResNet-18 with and without a synthesized operator.

Trains (or, with --resume, reuses) ResNet-18 on the embedded digits data upsampled to --image-size
(or any dataset `syno.post` reads), once with its original convolutions and once with the operator
in every placeholder; quantizes both to int8 (torch.ao FX graph mode, x86 engine; see
syno/post/quantize.py); and reports fp32/int8 test accuracy and the CPU latency of all four models
measured side by side in one run (interleaved rounds, medians), with the int8/fp32 ratio.

    python benchmarks/quantize.py                       # digits at 32x32, Operator 1, 12 epochs
    python benchmarks/quantize.py --image-size 16 --epochs 6 --threads 2
    python benchmarks/quantize.py --kernel results/resnet18-session/07889_<hash>

Exit status 1 if an int8 model loses more than --max-drop accuracy points (default 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--operator", default="operator1", help="hand-built operator (operator1, stacked_conv)")
    ap.add_argument("--kernel", default=None, help="kernel directory instead of --operator")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--device", default="auto", help="training device; the quantized models run on the CPU")
    ap.add_argument("--calib-batches", type=int, default=8)
    ap.add_argument("--latency-batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=None, help="torch threads while timing (default: torch's)")
    ap.add_argument("--max-drop", type=float, default=1.0, help="allowed int8 accuracy drop, points")
    ap.add_argument("--out", default="bench-quantize")
    ap.add_argument("--resume", action="store_true", help="reuse finished trainings in --out")
    args = ap.parse_args(argv)

    import torch

    from syno.post.quantize import quantize_experiment

    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "device": args.device, "progress": True}
    if args.lr is not None:
        overrides["lr"] = args.lr
    t0 = time.time()
    rep = quantize_experiment(
        args.model, args.dataset, args.out, kernel_dir=args.kernel,
        operator=None if args.kernel else args.operator, data_dir=args.data_dir, image_size=args.image_size,
        overrides=overrides, resume=args.resume, calib_batches=args.calib_batches,
        latency_batch=args.latency_batch, latency_rounds=args.rounds, threads=args.threads,
        log=lambda m: print(m, file=sys.stderr, flush=True))
    lat = rep["latency"]
    print(f"# {args.model} on {args.dataset} {args.image_size}x{args.image_size}, operator {rep['operator']}; "
          f"torch {torch.__version__}, engine {rep['backend']}, {platform.machine()} {os.cpu_count()} CPUs, "
          f"{lat['threads']} threads, batch {lat['batch']}, {lat['rounds']} interleaved rounds "
          f"({time.time() - t0:.0f} s total)")
    print(f"{'variant':10s} {'fp32 acc':>9s} {'int8 acc':>9s} {'drop pts':>9s} {'fp32 ms':>9s} {'int8 ms':>9s} "
          f"{'int8/fp32':>9s}")
    worst = 0.0
    for name, v in rep["variants"].items():
        drop = 100 * v["accuracy_drop"]
        worst = max(worst, drop)
        print(f"{name:10s} {100 * v['fp32_accuracy']:9.2f} {100 * v['int8_accuracy']:9.2f} {drop:9.2f} "
              f"{v['fp32_ms']:9.3f} {v['int8_ms']:9.3f} {v['int8_over_fp32']:9.3f}")
    for k, r in rep.get("relative_to_original_fp32", {}).items():
        print(f"{k} / original/fp32 latency: {r:.3f}")
    print(json.dumps({"out": str(Path(args.out) / "quantize.json"), "worst_drop_points": round(worst, 3)}))
    return 0 if worst <= args.max_drop else 1


if __name__ == "__main__":
    raise SystemExit(main())
