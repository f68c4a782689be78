"""Evaluations per minute of the Ray executor with 1, 2, 4 ... CPU workers (real digits training).

The job is the real one: ``KernelJob`` of the ``tiny`` preset (the tiny CNN with a synthesized
operator in its placeholders, trained on scikit-learn's digits for ``--epochs`` epochs on the CPU),
the same as ``syno demo`` / ``syno search tiny``. To compare worker counts on equal work, every point
evaluates the **same fixed list** of ``--kernels`` operators (drawn once by random search with the
FLOPs filter of the preset); a warm-up round (one extra kernel per worker) runs first so actor
start-up and first-iteration effects are not timed. Each actor reserves one Ray CPU and runs one
torch thread.

``--local-pool`` measures :class:`~syno.search.evaluator.LocalPoolEvaluator` with the same workers
and kernels as a reference for Ray's overhead.

Usage::

    python benchmarks/ray_scaling.py --workers 1,2,4 --kernels 16 --out ray-scaling.json
    python benchmarks/ray_scaling.py --address auto ...   # on a running cluster (ray start --head)

The Ray instance this script starts (no ``--address``) declares ``max(--workers)`` logical CPUs,
whatever the machine has: on a 2-core machine the 4-worker point oversubscribes the cores on purpose,
and the printout says how many cores there are.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def fixed_kernels(problem, options, n: int, seed: int) -> list[str]:
    """``n`` distinct operators (by hash), drawn by random search with the problem's FLOPs filter."""
    from syno.search import RandomSearch, RandomSearchConfig
    from syno.synth.protocol import path_to_str

    algo = RandomSearch(problem.space, RandomSearchConfig(seed=seed), reward=options.reward,
                        final_filter=problem.final_filter)
    out: list[str] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        for p in algo.propose(1):
            ps = path_to_str(p)
            h = problem.identify(ps)
            algo.forget(p)
            if h not in seen:
                seen.add(h)
                out.append(ps)
    if len(out) < n:
        raise SystemExit(f"only {len(out)} distinct kernels found")
    return out


def drain(ev, paths: list[str]) -> tuple[float, list[tuple[str, Any]]]:
    """Evaluate ``paths`` keeping every slot busy; returns (wall seconds, results)."""
    todo = list(paths)
    done: list[tuple[str, Any]] = []
    t0 = time.perf_counter()
    while todo or ev.running:
        while todo and ev.capacity() > 0:
            ev.submit(todo.pop(0))
        done += ev.poll(timeout=5.0)
    return time.perf_counter() - t0, done


def measure(kind: str, job, workers: int, warmup: list[str], kernels: list[str], address: str | None) -> dict:
    from syno.search.evaluator import LocalPoolEvaluator
    from syno.search.ray_executor import RayEvaluator

    t0 = time.perf_counter()
    if kind == "ray":
        ev = RayEvaluator(job, workers=workers, cpus_per_worker=1, use_gpu=False, address=address)
        ev.wait_ready()
    else:
        ev = LocalPoolEvaluator(job, workers=workers, threads=1)
    try:
        drain(ev, warmup[:workers])  # every worker set up and warm
        startup = time.perf_counter() - t0
        wall, results = drain(ev, kernels)
    finally:
        ev.close()
    times = [r.time for _, r in results]
    statuses: dict[str, int] = {}
    for _, r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    return {"executor": kind, "workers": workers, "kernels": len(results), "wall_s": wall,
            "evals_per_min": 60.0 * len(results) / wall, "startup_s": startup,
            "kernel_s_median": statistics.median(times), "kernel_s_sum": sum(times), "statuses": statuses,
            "failures": [{"path": p, "status": r.status, "message": r.message[:600]} for p, r in results if not r.ok],
            "loadavg_after": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    ap.add_argument("--kernels", type=int, default=16, help="kernels timed per point (the same for every point)")
    ap.add_argument("--epochs", type=int, default=1, help="digits training epochs per kernel")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--address", default=None, help="Ray cluster (auto / HOST:PORT); default: start one here")
    ap.add_argument("--local-pool", action="store_true", help="also time LocalPoolEvaluator (reference)")
    ap.add_argument("--out", default=None, help="write the results as JSON")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.workers.split(",")]

    import ray

    from syno.search.options import build_options
    from syno.search.problem import make_problem

    options = build_options("tiny", {"train.epochs": args.epochs, "session_dir": tempfile.mkdtemp(),
                                     "train.device": "cpu"})
    problem = make_problem(options)
    kernels = fixed_kernels(problem, options, args.kernels + max(counts), args.seed)
    warmup, kernels = kernels[:max(counts)], kernels[max(counts):]
    if args.address is None:
        # Ray runs its workers at nice 15 by default; on a machine shared with other work that alone
        # would starve them next to the local pool's nice-0 processes. Same priority for both here.
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(num_cpus=max(counts), include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=args.address, log_to_driver=False)
    env = {"cpu_cores": os.cpu_count(), "ray_cpus": ray.cluster_resources().get("CPU"), "python": platform.python_version(),
           "ray": ray.__version__, "cpu": platform.processor() or platform.machine(),
           "loadavg_before": os.getloadavg()[0], "model": "tiny", "dataset": "digits", "epochs": args.epochs}
    print(f"# {args.kernels} tiny/digits kernels ({args.epochs} epoch) per point; {os.cpu_count()} CPU cores here, "
          f"Ray CPUs {env['ray_cpus']}; load {env['loadavg_before']:.2f}", flush=True)
    rows = []
    kinds = ["ray"] + (["local"] if args.local_pool else [])
    for w in counts:
        for kind in kinds:
            row = measure(kind, problem.job(), w, warmup, kernels, args.address)
            rows.append(row)
            print(f"{kind:5s} workers={w}: {row['evals_per_min']:.1f} evals/min ({row['wall_s']:.1f} s for "
                  f"{row['kernels']} kernels; median kernel {row['kernel_s_median']:.2f} s; statuses {row['statuses']}; "
                  f"start-up {row['startup_s']:.1f} s; load {row['loadavg_after']:.2f})", flush=True)
            for f in row["failures"]:
                print(f"    {f['status']}: {f['message'][:300]!r}", flush=True)
            if kind == "ray":
                t0 = time.monotonic()  # let the killed actors release their CPUs before the next point
                while ray.available_resources().get("CPU", 0) < ray.cluster_resources().get("CPU", 0) and \
                        time.monotonic() - t0 < 30:
                    time.sleep(0.2)
    for kind in kinds:
        base = next(r for r in rows if r["executor"] == kind and r["workers"] == counts[0])
        for r in rows:
            if r["executor"] == kind:
                r["ratio_to_first"] = r["evals_per_min"] / base["evals_per_min"]
    print("\n| executor | workers | evals/min | ratio to 1 worker | median kernel s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['executor']} | {r['workers']} | {r['evals_per_min']:.1f} | {r['ratio_to_first']:.2f} | "
              f"{r['kernel_s_median']:.2f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
