#!/usr/bin/env python3
"""Weight preparation at inference (``syno/codegen/hoist.py``), side by side.

ResNet-18 (224x224, 1000 classes) with each of the first COUNT operators of a space-speed sample in
every placeholder, N=1, no-grad forward, one CPU thread: the model built with
``SYNO_PREPARE_WEIGHTS=0`` (the plain forward) and with ``=1`` (weight-only statements run once and
are cached), each timed right after the baseline model (speedup = baseline / operator, median of 3);
peak = live storages during a forward (``syno.codegen.cost.measure_peak_bytes``) over the baseline's.

    python benchmarks/prepare_weights.py 40 [benchmarks/data/operators-resnet18-0.jsonl]

Without the file the operators are sampled now (``sample_operators("resnet18", COUNT, seed=0)``,
the sample ``space_speed.py`` uses).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import space_speed as ss  # noqa: E402


def median_ms(model, x, reps: int = 3) -> float:
    with torch.no_grad():
        model(x)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main(argv: list[str]) -> int:
    from syno.codegen.cost import measure_peak_bytes
    from syno.ir.graph import Operator

    torch.set_num_threads(1)
    count = int(argv[0]) if argv else 40
    if len(argv) > 1:
        lines = Path(argv[1]).read_text().splitlines()[:count]
        ops = [Operator.from_json(json.loads(line)["operator"]) for line in lines]
    else:
        from syno.synth.sampler import sample_operators
        ops = [op for _, op in sample_operators("resnet18", count, seed=0)]
    x = ss.example("resnet18", 1, "cpu")
    base = ss.build("resnet18", 1)
    base_peak = measure_peak_bytes(lambda t: base(t), x)
    rows = []
    for op in ops:
        row: dict = {"op": op.hash[:10]}
        for flag in ("0", "1"):
            os.environ["SYNO_PREPARE_WEIGHTS"] = flag
            try:
                model = ss.build("resnet18", 1, ss.factory_for(op, "cost", "fast:min"))
            except Exception as exc:  # noqa: BLE001 - e.g. PlanTooCostly: a row, not the end
                row["error"] = type(exc).__name__
                break
            with torch.no_grad():
                model(x)
                peak = measure_peak_bytes(lambda t: model(t), x)
            row[flag] = (median_ms(base, x) / median_ms(model, x), peak / base_peak)
        print(row, flush=True)
        rows.append(row)
    ok = [r for r in rows if "error" not in r]
    print("\n| weights | operators | median speedup | worst | faster | max peak / baseline |")
    print("|---|---|---|---|---|---|")
    for flag, label in (("0", "prepared per forward (before)"), ("1", "prepared once (after)")):
        sp = sorted(r[flag][0] for r in ok)
        print(f"| {label} | {len(ok)} | {statistics.median(sp):.3f}x | {sp[0]:.3f}x | "
              f"{sum(s > 1 for s in sp)} / {len(sp)} | {max(r[flag][1] for r in ok):.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
