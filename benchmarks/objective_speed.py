"""``--objective speed`` vs ``--objective accuracy``: measured speedups found in the same number of evaluations.

Two searches of the same preset, space, seed, proxy trainer and evaluation count; they differ only
in ``objective.kind``. Every kernel of both is timed before training (:mod:`syno.search.latency`:
end-to-end forward of the model with the kernel in every placeholder against the original model,
on the device that trains it: CUDA-graph replays on a GPU, single-thread wall time on a CPU), so the
comparison is the latency the searches found, not MACs. Accuracy here is a cheap proxy (a few
training steps), the same for both searches; only the latency is the point (issue 16).

Presets:

* ``--gpu`` (default when CUDA is available): the ``resnet18`` preset (its synthesis space, FLOPs
  window and 224x224 placeholders), trained for ``--steps`` steps on the embedded digits upsampled to
  224x224 as generated proxy data (1 input channel, 10 classes: only the stem and the classifier
  differ from the CIFAR-100 model; every placeholder mapping is ResNet-18's), latency at
  ``--latency-batch`` (default 128) in float32;
* CPU (default without CUDA): the ``tiny`` preset on digits, a fraction of an epoch per kernel.

The reward's accuracy bounds are opened to ``[0, 1]`` (power 1) for both runs, so the few-step proxy
accuracies give the speed objective a signal (the presets' 0.4 lower bound would zero every reward).
``--min-speedup`` applies the pre-filter (status ``slow``, not trained) to the speed run only.

Usage (one command each; ``--out`` gets the JSON, stdout the table)::

    python benchmarks/objective_speed.py                       # CPU, tiny, 6 evaluations each (~2 min)
    python benchmarks/objective_speed.py --gpu --evals 30 --out $OUT/objective_speed.json   # H100: <= 6 min
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _overrides(args, kind: str, root: Path) -> dict[str, Any]:
    o: dict[str, Any] = {
        "session_dir": str(root / kind), "objective.kind": kind, "mcts.seed": args.seed,
        "run.max_evaluations": args.evals, "run.workers": args.workers, "run.kernel_timeout": args.kernel_timeout,
        "run.budget_seconds": args.budget_s / 2, "run.drain_seconds": 30,
        "reward.acc_lower": 0.0, "reward.acc_upper": 1.0, "reward.power": 1.0,
        "train.epochs": 1, "train.max_steps_per_epoch": args.steps, "train.progress": False,
        "latency.budget_ms": args.timing_ms,
    }
    from syno.search.options import SearchOptions, parse_value

    if "fidelity" in SearchOptions.model_fields:  # one proxy budget per kernel in both runs (no promotions)
        o["fidelity.enabled"] = False
    if args.implementation is not None:
        o["implementation"] = args.implementation
    for item in args.sets:
        key, _, value = item.partition("=")
        o[key] = parse_value(value)  # as `syno search --set`
    if kind == "speed" and args.min_speedup is not None:
        o["objective.min_speedup"] = args.min_speedup
    if args.gpu:
        o.update({"dataset": "digits", "image_size": 224, "train.device": "cuda", "train.batch_size": 32,
                  "train.eval_batch_size": 256, "train.epoch_time_limit_s": None,
                  "latency.batch": args.latency_batch})
    else:
        o.update({"train.eval_batch_size": 360})
    return o


def _summary(root: Path, kind: str, wall: float) -> dict[str, Any]:
    from syno.search.latency import headline_speedup
    from syno.search.session import SessionStore

    recs = SessionStore(root / kind).kernels()
    measured = [(r, headline_speedup(r.meta)) for r in recs]
    sp = [s for _, s in measured if s is not None]
    trained = [(r, s) for r, s in measured if r.result.ok and s is not None]
    best = max(trained, key=lambda t: t[1], default=None)
    first = recs[0].meta.get("latency", [{}])[0] if recs and recs[0].meta.get("latency") else {}
    return {
        "objective": kind, "evaluations": len(recs), "trained": sum(r.result.ok for r in recs),
        "slow": sum(r.result.status == "slow" for r in recs),
        "failed": sum(not r.result.ok and r.result.status != "slow" for r in recs),
        "measured": len(sp), "faster_than_original": sum(s > 1.0 for s in sp),
        "median_speedup": statistics.median(sp) if sp else None, "max_speedup": max(sp) if sp else None,
        "best_trained_speedup": best[1] if best else None,
        "best_trained_accuracy": best[0].result.accuracy if best else None,
        "best_trained_kernel": best[0].name if best else None,
        "top5_speedups": sorted(sp, reverse=True)[:5],
        "speedups_in_order": sp, "wall_s": round(wall, 1),
        "device": first.get("device"), "batch": first.get("batch"), "dtype": first.get("dtype"),
        "baseline_ms": first.get("baseline_ms"), "versions": first.get("versions"),
    }


def _fmt(x, spec=".3f") -> str:
    return "-" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpu", action="store_true", default=None, help="resnet18 preset on CUDA (default: when available)")
    p.add_argument("--cpu", dest="gpu", action="store_false", help="tiny preset on the CPU")
    p.add_argument("--evals", type=int, default=None, help="evaluations per objective (default: GPU 30, CPU 6)")
    p.add_argument("--steps", type=int, default=None, help="training steps per kernel (default: GPU 10, CPU 8)")
    p.add_argument("--latency-batch", type=int, default=128, help="GPU: batch of the timed input")
    p.add_argument("--timing-ms", type=float, default=100.0, help="timed wall time per latency measurement")
    p.add_argument("--min-speedup", type=float, default=None, help="speed run: pre-filter kernels slower than this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="evaluation processes (default: GPU 1, CPU 0 = inline)")
    p.add_argument("--kernel-timeout", type=float, default=240.0)
    p.add_argument("--implementation", default=None,
                   help="codegen implementation of both searches (default: the search's, auto). On CUDA, auto "
                        "tunes Triton tiles for up to 30 s per kernel for training and 30 s for latency; "
                        "fast:min (cuDNN/einsum plans, no tuning) fits 2 x 30 evaluations in minutes")
    p.add_argument("--budget-s", type=float, default=None,
                   help="wall-time cap of both searches together (default: GPU 330, CPU 900); a run cut short "
                        "is compared on the evaluations both reached")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="one more search option for both runs (JSON value where it parses), e.g. latency.sites=false")
    p.add_argument("--work", type=Path, default=None, help="session directories (default: a temporary directory)")
    p.add_argument("--out", type=Path, default=None, help="write the summary JSON here")
    args = p.parse_args(argv)
    if args.gpu is None:
        args.gpu = torch.cuda.is_available()
    if args.gpu and not torch.cuda.is_available():
        p.error("--gpu: CUDA is not available")
    args.evals = args.evals or (30 if args.gpu else 6)
    args.steps = args.steps or (10 if args.gpu else 8)
    args.workers = args.workers if args.workers is not None else (1 if args.gpu else 0)
    args.budget_s = args.budget_s or (330.0 if args.gpu else 900.0)
    model = "resnet18" if args.gpu else "tiny"

    from syno.search.options import build_options
    from syno.search.run import run_search

    root = args.work or Path(tempfile.mkdtemp(prefix="objective-speed-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in ("accuracy", "speed"):
        opts = build_options(model, _overrides(args, kind, root))
        t0 = time.perf_counter()
        summary = run_search(opts)
        wall = time.perf_counter() - t0
        print(f"{kind}: {summary.evaluated} kernels in {wall:.0f} s ({summary.stop_reason})", file=sys.stderr)
        rows.append(_summary(root, kind, wall))
    n = min(r["evaluations"] for r in rows)
    for r in rows:  # compare on the evaluations both runs reached
        first = r["speedups_in_order"][:n]
        r["compared_evaluations"] = n
        r["max_speedup_first_n"] = max(first) if first else None
        r["faster_first_n"] = sum(s > 1.0 for s in first)
    head = rows[0]
    print(f"\n{model} preset, {n} evaluations each, seed {args.seed}; latency on {head['device']}, "
          f"N={head['batch']}, {head['dtype']}; original model {_fmt(head['baseline_ms'], '.4g')} ms")
    print("\n| objective | evaluations | trained | slow | faster than original | median speedup | max speedup "
          "| best trained speedup (its acc) | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['objective']} | {r['evaluations']} | {r['trained']} | {r['slow']} | "
              f"{r['faster_first_n']}/{n} | {_fmt(r['median_speedup'])} | {_fmt(r['max_speedup_first_n'])} | "
              f"{_fmt(r['best_trained_speedup'])} ({_fmt(r['best_trained_accuracy'], '.3f')}) | {r['wall_s']} |")
    result = {"model": model, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "work": str(root), "rows": rows}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
