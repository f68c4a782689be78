"""Does a session's ranking agree with long training? (issue #22)

For a search session, pick K successful kernels at random, retrain each at the long fidelity (digits:
15 epochs of the search's own recipe, i.e. `syno reevaluate --epochs 15` with the demo's batch 32 and
lr 0.2), and report Spearman, Kendall and top-k overlap against the long result of

* each rung (the kernels of the sample that reached it, ranked by their accuracy there),
* the session's final ranking (its leaderboard: highest rung first, then reward),

with the compute each cost (wall seconds of training, summed over the whole session per rung).

``--run`` first runs two searches with the same wall-time budget as `syno demo` (default 3m): the demo
as it was before rungs (one epoch per kernel, ``fidelity.enabled=false``) and the demo's current default
(the tiny preset's rungs: 5 epochs, the best eighth 15), both at once (so they share the machine's load),
then measures the rung session and retrains both sessions' best kernels at 15 epochs, side by side.
Retraining runs in ``--jobs`` processes.

    python benchmarks/proxy_fidelity.py --run --out results/fidelity --budget 3m
    python benchmarks/proxy_fidelity.py --session results/demo-... --k 30 [--short 1,2,3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch


def _retrain(args: tuple) -> dict:
    """15-epoch retraining of one kernel directory with its session's recipe (a worker process), and with
    ``short`` budgets: the same recipe for that many epochs, its schedule ending there (``--short``)."""
    session, kdir, epochs, *rest = args
    short = rest[0] if rest else ()
    torch.set_num_threads(int(os.environ.get("PROXY_THREADS", "1")))
    from syno.search.options import SearchOptions
    from syno.search.problem import _load_data, evaluate_operator
    from syno.session import read_json, read_kernel_dir

    opts = SearchOptions.model_validate(read_json(Path(session) / "session.json")["options"])
    op = read_kernel_dir(kdir).operator()
    data = _load_data(opts)
    out: dict = {"dir": kdir, "short": {}}
    for n in [*short, epochs]:
        train = opts.train.model_copy(update={"epochs": n, "stop_epoch": None, "time_budget_s": None,
                                              "prune_milestones": {}, "progress": False})
        t0, c0 = time.perf_counter(), time.process_time()
        res = evaluate_operator(opts, op, data, train)
        r = {"status": res.status, "accuracy": res.accuracy if math.isfinite(res.accuracy) else None,
             "time": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
        if n == epochs:
            out.update(r)
        else:
            out["short"][n] = r
    return out


def retrain(session: Path, dirs: list[str], epochs: int, jobs: int, short: tuple[int, ...] = ()) -> dict[str, dict]:
    import multiprocessing as mp

    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:  # CUDA-safe workers
        return {r["dir"]: r for r in pool.map(_retrain, [(str(session), d, epochs, short) for d in dirs])}


def rank_stats(xs: list[float], ys: list[float], k: int) -> dict:
    from scipy.stats import kendalltau, spearmanr

    n = len(xs)
    if n < 3:
        return {"n": n}
    top_x = set(sorted(range(n), key=lambda i: -xs[i])[:k])
    top_y = set(sorted(range(n), key=lambda i: -ys[i])[:k])
    return {"n": n, "spearman": float(spearmanr(xs, ys).statistic), "kendall": float(kendalltau(xs, ys).statistic),
            f"top{k}": f"{len(top_x & top_y)}/{min(k, n)}"}


def measure(session: Path, k: int, epochs: int, jobs: int, seed: int, topk: int = 5, short: tuple[int, ...] = ()) -> dict:
    from syno.search.leaderboard import leaderboard_rows
    from syno.search.session import SessionStore

    store = SessionStore(session)
    rows = leaderboard_rows(store)  # final ranking: highest rung first, then reward
    recs = {r.name: r for r in store.kernels()}
    ok = [row for row in rows if row["accuracy"] is not None and math.isfinite(row["accuracy"])]
    sample = random.Random(seed).sample(ok, min(k, len(ok)))
    t0 = time.perf_counter()
    long = retrain(session, [str(session / row["dir"]) for row in sample], epochs, jobs, short)
    wall = time.perf_counter() - t0
    ys = {row["dir"]: long[str(session / row["dir"])]["accuracy"] for row in sample}
    sample = [row for row in sample if ys[row["dir"]] is not None]
    out: dict = {"session": str(session), "kernels": len(rows), "sampled": len(sample), "long_epochs": epochs,
                 "long_train_s": sum(long[str(session / r["dir"])]["time"] for r in sample), "long_wall_s": wall}
    # the final ranking: position in the leaderboard (higher is better)
    pos = {row["dir"]: -row["rank"] for row in rows}
    out["final"] = rank_stats([pos[r["dir"]] for r in sample], [ys[r["dir"]] for r in sample], topk)
    # each rung: kernels of the sample that reached it, by their accuracy there
    per_rung: dict[int, dict] = {}
    all_rungs: dict[int, list] = {}
    for rec in recs.values():
        for x in rec.meta.get("rungs") or []:
            all_rungs.setdefault(int(x["rung"]), []).append(x)
    for rung, entries in sorted(all_rungs.items()):
        pairs = []
        for row in sample:
            for x in recs[row["dir"]].meta.get("rungs") or []:
                if int(x["rung"]) == rung and x.get("status") == "ok" and x.get("accuracy") is not None:
                    pairs.append((x["accuracy"], ys[row["dir"]]))
        st = rank_stats([a for a, _ in pairs], [b for _, b in pairs], topk)
        st.update(budget=entries[0].get("budget"), evaluations=len(entries),
                  train_s=sum(float(x.get("time") or 0) for x in entries))
        per_rung[rung] = st
    if not all_rungs:  # a single-fidelity session: its one result per kernel
        st = rank_stats([r["accuracy"] for r in sample], [ys[r["dir"]] for r in sample], topk)
        st.update(evaluations=len(recs), train_s=sum(r.result.time for r in recs.values()))
        per_rung[0] = st
    out["rungs"] = per_rung
    # short runs of the plain recipe (--short): which budget would rank like the long one
    out["short"] = {}
    for n in short:
        pairs = [(long[str(session / r["dir"])]["short"][n]["accuracy"], ys[r["dir"]]) for r in sample]
        pairs = [(a, b) for a, b in pairs if a is not None]
        st = rank_stats([a for a, _ in pairs], [b for _, b in pairs], topk)
        st["cpu_s_per_kernel"] = sum(long[str(session / r["dir"])]["short"][n]["cpu_s"] for r in sample) / max(1, len(sample))
        out["short"][n] = st
    out["session_train_s"] = sum(st["train_s"] for st in per_rung.values())
    out["retrained"] = {r["dir"]: {"search": r["accuracy"], "rung": r.get("rung", 0), "rank": r["rank"],
                                   "long": ys[r["dir"]]} for r in sample}
    return out


def best_long(session: Path, epochs: int, jobs: int) -> dict:
    from syno.search.leaderboard import leaderboard_rows
    from syno.search.session import SessionStore

    rows = leaderboard_rows(SessionStore(session))
    if not rows:
        return {"kernels": 0}
    top = rows[0]
    r = retrain(session, [str(session / top["dir"])], epochs, jobs)[str(session / top["dir"])]
    return {"dir": top["dir"], "search_accuracy": top["accuracy"], "rung": top.get("rung", 0),
            "long_accuracy": r["accuracy"], "kernels": len(rows)}


def run_demo(session: Path, budget: str, fidelity: bool, workers: int | None, seed: int,
             sets: dict | None = None) -> float:
    """``syno demo --budget BUDGET`` into ``session``; ``fidelity=False``: as before rungs (1 epoch per kernel)."""
    from syno.search.options import build_options
    from syno.search.run import run_search
    from syno.search.cli import parse_duration

    cores = os.cpu_count() or 1
    w = workers or max(1, cores // 2)  # syno demo's defaults
    over = {"run.workers": w, "run.threads": 1, "latency.sites": False, "run.budget_seconds": parse_duration(budget),
            "run.drain_seconds": 20.0, "mcts.seed": seed, "random.seed": seed, "session_dir": str(session)}
    over.update(sets or {})
    if not fidelity:
        over["fidelity.enabled"] = False
    t0 = time.perf_counter()
    run_search(build_options("tiny", over))
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--session", type=Path, help="measure this session")
    ap.add_argument("--run", action="store_true", help="run the two demo searches first (into --out)")
    ap.add_argument("--out", type=Path, default=Path("results/proxy-fidelity"))
    ap.add_argument("--budget", default="3m", help="wall-time budget of each search (syno demo's default)")
    ap.add_argument("--workers", type=int, help="search workers (default: syno demo's, cores // 2)")
    ap.add_argument("--k", type=int, default=30, help="kernels retrained at random")
    ap.add_argument("--epochs", type=int, default=15, help="the long fidelity")
    ap.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1) // 2), help="retraining processes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--short", default="", help="also train the sampled kernels for these epochs (e.g. 1,2,3), "
                    "each with its own schedule, and rank them against the long result")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="search option for both searches (e.g. train.device=cuda), as syno search --set")
    ap.add_argument("--demo", type=Path, help=argparse.SUPPRESS)  # internal: one search of --run
    ap.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.demo:
        from syno.search.options import parse_value

        run_demo(a.demo, a.budget, not a.single, a.workers, a.seed,
                 {k: parse_value(v) for k, v in (x.split("=", 1) for x in a.sets)})
        return
    os.environ.setdefault("PROXY_THREADS", str(max(1, (os.cpu_count() or 1) // a.jobs)))
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    results: dict = {"machine": f"{os.cpu_count()} CPUs, {gpu}, torch {torch.__version__}", "budget": a.budget,
                     "sets": a.sets}
    if a.run:
        a.out.mkdir(parents=True, exist_ok=True)
        base, rungs = a.out / "one-epoch", a.out / "rungs"
        # both searches at once, so that they share whatever else the machine is doing
        t0 = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, __file__, "--demo", str(d), "--budget", a.budget, "--seed", str(a.seed),
                                   *(["--workers", str(a.workers)] if a.workers else []), *([] if rung else ["--single"]),
                                   *[f"--set={x}" for x in a.sets]])
                 for d, rung in ((base, False), (rungs, True))]
        if any(p.wait() for p in procs):
            sys.exit("a search failed")
        results["search_wall_s"] = time.perf_counter() - t0
        print(json.dumps(results), flush=True)
        results["best"] = {"one-epoch": best_long(base, a.epochs, a.jobs), "rungs": best_long(rungs, a.epochs, a.jobs)}
        print(json.dumps(results["best"]), flush=True)
        a.session = rungs
    if a.session is None:
        ap.error("--session or --run")
    short = tuple(int(x) for x in a.short.split(",") if x)
    results["fidelity"] = measure(a.session, a.k, a.epochs, a.jobs, a.seed, short=short)
    text = json.dumps(results, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")
    f = results["fidelity"]
    print(f"\n{f['session']}: {f['kernels']} kernels, {f['sampled']} retrained for {a.epochs} epochs "
          f"({f['long_train_s']:.0f} s of training)", file=sys.stderr)
    for rung, st in f["rungs"].items():
        print(f"  rung {rung} ({st.get('budget')} epochs, {st['evaluations']} evaluations, {st['train_s']:.0f} s): "
              f"n={st['n']} spearman={st.get('spearman', math.nan):.3f} kendall={st.get('kendall', math.nan):.3f} "
              f"top5={st.get('top5', '-')}", file=sys.stderr)
    for n, st in f["short"].items():
        print(f"  plain {n}-epoch run: n={st['n']} spearman={st.get('spearman', math.nan):.3f} "
              f"kendall={st.get('kendall', math.nan):.3f} top5={st.get('top5', '-')} "
              f"({st['cpu_s_per_kernel']:.1f} CPU s per kernel)", file=sys.stderr)
    st = f["final"]
    print(f"  final ranking: n={st['n']} spearman={st.get('spearman', math.nan):.3f} "
          f"kendall={st.get('kendall', math.nan):.3f} top5={st.get('top5', '-')}", file=sys.stderr)


if __name__ == "__main__":
    main()
