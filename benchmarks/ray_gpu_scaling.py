"""Ray executor on a GPU host: evaluations/minute, GPU utilisation and scaling efficiency for 1, 2, 4, 8 GPUs.

For each GPU count G (those above the host's GPUs are reported as not run), a fresh **fixed-budget
search** runs on the Ray cluster: the MCTS driver in this process, G evaluation actors with
``num_gpus=1`` each (:class:`~syno.search.ray_executor.RayEvaluator`). The problem is the
``resnet18`` preset (the paper's CIFAR-100 proxy: synthesized operators in ResNet-18's placeholder
convolutions, reward from proxy accuracy, FLOPs-ratio filter) trained for ``--epochs`` short epochs on
**generated CIFAR-100-format data** (``cifar-100-python/{train,test,meta}`` pickles written by this
script: 100 classes of noisy class templates, learnable in an epoch or two; no download needed).
By default images stay 32x32 (the CIFAR stem); ``--image-size 224`` upsamples like the original.

Reported per point: kernels finished within the budget, evaluations/minute (finished / budget),
kernel-seconds/minute (their summed evaluation time / budget: less sensitive to which kernels MCTS
happened to pick), how busy the actors were (kernel-seconds / (G x budget)) and the driver (the share
of the budget it spent outside ``poll``: proposing, FLOPs filter, writing kernel directories; near
100% means the single driver, not the GPUs, limits the rate), mean GPU utilisation of the GPUs the actors hold (NVML via pynvml, else
``nvidia-smi``, sampled every 0.5 s during the budget), and scaling efficiency
``evals/min(G) / (G * evals/min(1))``. Actor start-up (CUDA init, dataset load) is excluded: the
budget starts once every actor is ready.

Usage::

    python benchmarks/ray_gpu_scaling.py --gpus 1,2,4,8 --budget 300 --epochs 2 --out gpu-scaling.json
    python benchmarks/ray_gpu_scaling.py --cpu --gpus 1,2 --budget 60 --train-images 512   # CPU fallback

``--cpu`` runs the same pipeline with CPU actors (one Ray CPU each) and ``train.device=cpu``, to check
the script on a machine without GPUs; its numbers say nothing about GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


# ----------------------------------------------------------------------------------------------
# data

def write_cifar100_format(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """``root/cifar-100-python/{train,test,meta}`` in the CIFAR-100 python-pickle format (what
    :func:`syno.data.vision.load_cifar100` reads): class templates (smooth random colour patterns)
    plus per-image noise and a random shift, uint8 [N, 3072], 100 fine labels."""
    d = root / "cifar-100-python"
    if (d / "train").is_file() and (d / "test").is_file():
        return root
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(100, 3, 4, 4))
    templates = coarse.repeat(8, axis=2).repeat(8, axis=3)  # 100 x 3 x 32 x 32, blocky 4x4 patterns

    def split(n: int) -> dict[bytes, Any]:
        labels = rng.integers(0, 100, size=n)
        x = templates[labels] * 0.7 + rng.normal(0, 40, size=(n, 3, 32, 32))
        shifts = rng.integers(-2, 3, size=(n, 2))
        for i, (dy, dx) in enumerate(shifts):
            x[i] = np.roll(x[i], (int(dy), int(dx)), axis=(1, 2))
        data = np.clip(x, 0, 255).astype(np.uint8).reshape(n, 3072)
        return {b"data": data, b"fine_labels": labels.tolist(), b"coarse_labels": (labels // 5).tolist()}

    for name, n in (("train", n_train), ("test", n_test)):
        with open(d / name, "wb") as f:
            pickle.dump(split(n), f, protocol=2)
    with open(d / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"class{i}".encode() for i in range(100)]}, f, protocol=2)
    return root


# ----------------------------------------------------------------------------------------------
# GPU utilisation

class GpuSampler:
    """Samples utilisation (%) of every GPU every ``interval`` s in a thread (NVML, else nvidia-smi)."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.samples: list[tuple[float, dict[int, float]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.source = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self.source = "nvml"
        except Exception:  # noqa: BLE001 - no NVML: try nvidia-smi
            self._nvml = None
            if shutil.which("nvidia-smi"):
                self.source = "nvidia-smi"

    def _read(self) -> dict[int, float]:
        if self._nvml is not None:
            return {i: float(self._nvml.nvmlDeviceGetUtilizationRates(h).gpu) for i, h in enumerate(self._handles)}
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,utilization.gpu", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
        vals = {}
        for line in out.strip().splitlines():
            i, u = line.split(",")
            vals[int(i)] = float(u)
        return vals

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), self._read()))
            except Exception:  # noqa: BLE001
                pass
            self._stop.wait(self.interval)

    def start(self) -> None:
        if self.source is None:
            return
        self.samples.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def mean(self, gpus: list[int]) -> dict[int, float]:
        out = {}
        for g in gpus:
            vals = [s[g] for _, s in self.samples if g in s]
            if vals:
                out[g] = sum(vals) / len(vals)
        return out


# ----------------------------------------------------------------------------------------------

def run_point(g: int, args, data_root: Path, work: Path, sampler: GpuSampler) -> dict[str, Any]:
    import ray

    from syno.search.options import build_options
    from syno.search.problem import make_problem
    from syno.search.ray_executor import RayEvaluator
    from syno.search.prefetch import Prefetcher
    from syno.search.run import make_algorithm
    from syno.search.session import SearchRunner, SessionStore

    device = "cpu" if args.cpu else "cuda"
    overrides: dict[str, Any] = {
        "data_dir": str(data_root), "image_size": args.image_size, "session_dir": str(work / f"session-{g}"),
        "train.epochs": args.epochs, "train.device": device, "train.batch_size": args.batch_size,
        "train.epoch_time_limit_s": None, "mcts.seed": args.seed, "run.kernel_timeout": args.kernel_timeout,
    }
    if args.max_steps:
        overrides["train.max_steps_per_epoch"] = args.max_steps
    options = build_options("resnet18", overrides)
    store = SessionStore(options.directory)
    store.create({"options": options.to_json_dict()})
    problem = make_problem(options)
    algo = make_algorithm(options, problem)
    if args.prefetch:  # as run_search does with pools and Ray
        algo = Prefetcher(algo)
    t_start = time.perf_counter()
    ev = RayEvaluator(problem.job(), workers=g, use_gpu=not args.cpu, cpus_per_worker=args.cpus_per_worker,
                      timeout=args.kernel_timeout)
    try:
        ready = ev.wait_ready(timeout=600)
        startup = time.perf_counter() - t_start
        gpus = sorted({int(x) for w in ev.workers_info() for x in w.get("gpus", [])})
        waited = [0.0]  # time the driver spends waiting in poll(); the rest is MCTS, artifacts, writes
        inner_poll = ev.poll

        def timed_poll(timeout=None):
            t = time.perf_counter()
            try:
                return inner_poll(timeout)
            finally:
                waited[0] += time.perf_counter() - t

        ev.poll = timed_poll
        runner = SearchRunner(store, problem, algo, ev, options.reward, checkpoint_interval=1e9)
        runner.restore()
        if args.prefetch:
            algo.start()
        sampler.start()
        t0 = time.perf_counter()
        summary = runner.run(budget_seconds=args.budget, drain_seconds=0.0)
        wall = time.perf_counter() - t0
        sampler.stop()
        stats = dict(ev.stats)
    finally:
        if args.prefetch:
            algo.close()
        ev.close()
    # let the killed actors give their GPUs back before the next point
    t1 = time.monotonic()
    while time.monotonic() - t1 < 60 and any(ray.available_resources().get(k, 0) < v for k, v in
                                             ray.cluster_resources().items() if k in ("CPU", "GPU")):
        time.sleep(0.5)
    recs = store.kernels()
    in_budget = recs  # run(drain_seconds=0) stops at the budget: kernels still running are abandoned
    statuses: dict[str, int] = {}
    for r in recs:
        statuses[r.result.status] = statuses.get(r.result.status, 0) + 1
    kernel_s = sum(r.result.time for r in in_budget)
    ok = [r for r in recs if r.result.ok]
    util = sampler.mean(gpus)
    return {"gpus": g, "prefetch": args.prefetch, "ready_workers": ready, "gpu_ids": gpus, "kernels": len(in_budget), "budget_s": args.budget,
            "wall_s": wall, "evals_per_min": 60.0 * len(in_budget) / args.budget,
            "kernel_s_per_min": 60.0 * kernel_s / args.budget,
            "kernel_s_median": float(np.median([r.result.time for r in recs])) if recs else None,
            "statuses": statuses, "best_accuracy": max((r.result.accuracy for r in ok), default=None),
            "gpu_util_mean": util, "gpu_util_overall": (sum(util.values()) / len(util)) if util else None,
            "util_source": sampler.source, "startup_s": startup, "stop_reason": summary.stop_reason,
            "actor_busy": kernel_s / (g * args.budget), "driver_busy": 1.0 - waited[0] / wall,
            "failures": [f"{r.result.status}: {r.result.message[:200]}" for r in recs if not r.result.ok],
            "evaluator_stats": stats}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", default="1,2,4,8", help="GPU counts to measure (those above the host's are skipped)")
    ap.add_argument("--budget", type=float, default=300.0, help="search seconds per point")
    ap.add_argument("--epochs", type=int, default=2, help="proxy epochs per kernel")
    ap.add_argument("--max-steps", type=int, default=None, help="cap on steps per epoch")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--train-images", type=int, default=10000)
    ap.add_argument("--test-images", type=int, default=2000)
    ap.add_argument("--image-size", type=int, default=None, help="None: 32 (CIFAR stem); 224: the original's")
    ap.add_argument("--kernel-timeout", type=float, default=600.0)
    ap.add_argument("--cpus-per-worker", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None, help="where to write/read the generated data (default: temp)")
    ap.add_argument("--address", default=None, help="existing Ray cluster; default: start one here")
    ap.add_argument("--cpu", action="store_true", help="CPU fallback: CPU actors, train.device=cpu")
    ap.add_argument("--no-prefetch", dest="prefetch", action="store_false",
                    help="propose on the driver's critical path (default: a background thread prefetches, as "
                         "run_search does with pools and Ray)")
    ap.add_argument("--object-store-mb", type=int, default=None, help="object store size of the Ray started here")
    ap.add_argument("--out", default=None, help="JSON results")
    ap.add_argument("--keep", action="store_true", help="keep the generated data and session directories")
    args = ap.parse_args(argv)

    import ray
    import torch

    work = Path(tempfile.mkdtemp(prefix="syno-gpu-scaling-"))
    data_root = write_cifar100_format(Path(args.data_dir) if args.data_dir else work / "data",
                                      args.train_images, args.test_images, seed=args.seed)
    wanted = [int(x) for x in args.gpus.split(",")]
    local = {"include_dashboard": False, "log_to_driver": False}
    if args.object_store_mb:
        local["object_store_memory"] = args.object_store_mb * 2**20
    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    elif args.cpu:
        ray.init(num_cpus=int(max(wanted) * args.cpus_per_worker), num_gpus=0, **local)
    else:
        ray.init(**local)
    have = int(ray.cluster_resources().get("CPU" if args.cpu else "GPU", 0) // (args.cpus_per_worker if args.cpu else 1))
    env = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
           "ray": ray.__version__, "cuda": torch.version.cuda, "mode": "cpu" if args.cpu else "gpu",
           "gpu_names": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
           "cluster": ray.cluster_resources(), "args": vars(args)}
    print(f"# resnet18 proxy search on generated CIFAR-100-format data ({args.train_images} train images, "
          f"{args.epochs} epoch(s), image {args.image_size or 32}px); budget {args.budget:g} s per point; "
          f"{'CPU fallback' if args.cpu else 'GPUs: ' + ', '.join(env['gpu_names'])}", flush=True)
    sampler = GpuSampler()
    rows, skipped = [], []
    for g in wanted:
        if g > have:
            skipped.append(g)
            print(f"G={g}: not run (the cluster has {have})", flush=True)
            continue
        row = run_point(g, args, data_root, work, sampler)
        rows.append(row)
        util = "n/a" if row["gpu_util_overall"] is None else f"{row['gpu_util_overall']:.0f}%"
        print(f"G={g}: {row['kernels']} kernels in {args.budget:g} s -> {row['evals_per_min']:.2f} evals/min, "
              f"{row['kernel_s_per_min']:.1f} kernel-s/min; median kernel {row['kernel_s_median']} s; GPU util {util}; "
              f"statuses {row['statuses']}; best acc {row['best_accuracy']}; start-up {row['startup_s']:.0f} s; "
              f"actors busy {row['actor_busy']:.0%}, driver busy {row['driver_busy']:.0%}", flush=True)
        for f in row["failures"][:5]:
            print(f"    {f!r}", flush=True)
    base = next((r for r in rows if r["gpus"] == 1), None)
    for r in rows:
        r["scaling_efficiency"] = (r["evals_per_min"] / (r["gpus"] * base["evals_per_min"])
                                   if base and base["evals_per_min"] > 0 else None)
    print("\n| GPUs | kernels | evals/min | kernel-s/min | mean GPU util | actors busy | driver busy | scaling efficiency |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        util = "n/a" if r["gpu_util_overall"] is None else f"{r['gpu_util_overall']:.0f}%"
        eff = "n/a" if r["scaling_efficiency"] is None else f"{r['scaling_efficiency']:.2f}"
        print(f"| {r['gpus']} | {r['kernels']} | {r['evals_per_min']:.2f} | {r['kernel_s_per_min']:.1f} | {util} | "
              f"{r['actor_busy']:.0%} | {r['driver_busy']:.0%} | {eff} |")
    for g in skipped:
        print(f"| {g} | not run (only {have} available) | | | | | | |")
    if args.out:
        Path(args.out).write_text(json.dumps({"env": env, "rows": rows, "skipped": skipped}, indent=1, default=str))
    ray.shutdown()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
