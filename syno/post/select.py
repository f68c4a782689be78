"""Cherry-pick kernels from a search session: the most accurate ones in a FLOPs window, without duplicates.

The original picked kernels by hand. :func:`select_kernels` does it reproducibly:

1. keep kernels that were evaluated successfully and whose operator loads from its serialized IR;
2. keep those whose whole-model FLOPs ratio ``flops / baseline_flops`` lies in
   ``[min_flops_ratio, max_flops_ratio]`` (bounds optional);
3. rank by accuracy (descending; or loss, ascending, for loss-target sessions), ties broken by fewer
   FLOPs, then by name;
4. walk the ranking and keep a kernel unless it is the same or near-same operator as one already
   kept (:func:`syno.post.equivalence.compare`: equal hash, or mutual fit on a probe), until ``top``
   are kept. A duplicate is therefore always represented by its most accurate member.

The result goes to ``<session>/selected.json``; equivalence verdicts are cached in
``<session>/.post-cache/equivalence.json`` (keyed by both hashes and the probe settings), so
re-running with another ``top`` or window is cheap.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Literal

from .equivalence import Equivalence, ProbeConfig, compare
from syno.session import KernelDir, SessionError, read_json, read_session_info, scan_kernel_dirs, \
    session_target, write_json_atomic

__all__ = ["select_kernels", "session_baseline_flops", "load_selection", "SELECTED_FILE"]

SELECTED_FILE = "selected.json"
_CACHE = Path(".post-cache") / "equivalence.json"
_SESSION_FILES = ("session.json", "config.json", "args.json", "state.json", "baseline.json")


def session_baseline_flops(session: str | Path) -> float | None:
    """The baseline model's FLOPs (MACs per sample) recorded in the session, if any.

    A syno search session records it as ``options.reference.macs`` in ``session.json``. Otherwise
    looks for a ``baseline_flops`` key (top level, or under ``baseline``/``model``) in
    ``session.json``, ``config.json``, ``args.json``, ``state.json`` or ``baseline.json``; a
    ``baseline.json`` of the form ``{"flops": ...}`` counts too.
    """
    root = Path(session)
    for name in _SESSION_FILES:
        p = root / name
        if not p.is_file():
            continue
        try:
            data = read_json(p)
        except SessionError:
            continue
        if not isinstance(data, dict):
            continue
        candidates = [data.get("baseline_flops")]
        ref = (data.get("options") or {}).get("reference") if isinstance(data.get("options"), dict) else None
        if isinstance(ref, dict):  # a syno search session: options.reference.macs of the original model
            candidates.append(ref.get("macs"))
        for sub in ("baseline", "model", "profile"):
            if isinstance(data.get(sub), dict):
                candidates += [data[sub].get("baseline_flops"), data[sub].get("flops") if sub == "baseline" else None]
        if name == "baseline.json":
            candidates.append(data.get("flops"))
        for c in candidates:
            if isinstance(c, (int, float)) and c > 0:
                return float(c)
    return None


def _load_cache(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path)
        return data if isinstance(data, dict) else {}
    except SessionError:
        return {}


def _verdict_from(d: dict[str, Any]) -> Equivalence:
    from .equivalence import FitResult

    d = dict(d)
    for k in ("a_fits_b", "b_fits_a"):
        if d.get(k) is not None:
            fr = dict(d[k])
            if fr.get("residual") is None:
                fr["residual"] = float("inf")
            d[k] = FitResult(**fr)
    return Equivalence(**d)


def select_kernels(session: str | Path, top: int = 10, *, min_flops_ratio: float | None = None,
                   max_flops_ratio: float | None = None, baseline_flops: float | None = None,
                   dedup: bool = True, probe: ProbeConfig | None = None,
                   target: Literal["auto", "accuracy", "loss"] = "auto", out: str | Path | None = None,
                   use_cache: bool = True, log: Callable[[str], None] | None = None,
                   min_speedup: float | None = None, rank_by: Literal["metric", "speedup"] = "metric"
                   ) -> dict[str, Any]:
    """Select up to ``top`` kernels of ``session``; writes and returns the ``selected.json`` content.

    ``min_speedup`` keeps only kernels whose measured speedup over the original model (recorded by the
    search, :mod:`syno.search.latency`) is at least that; an unmeasured kernel is rejected then.
    ``rank_by="speedup"`` ranks by measured speedup instead of accuracy (loss)."""
    from syno.search.latency import headline_speedup

    if top < 1:
        raise ValueError("top must be >= 1")
    if rank_by not in ("metric", "speedup"):
        raise ValueError(f"rank_by {rank_by!r}: choose metric or speedup")
    root = Path(session)
    say = log or (lambda _msg: None)
    probe = probe or ProbeConfig()
    windowed = min_flops_ratio is not None or max_flops_ratio is not None
    if windowed and baseline_flops is None:
        baseline_flops = session_baseline_flops(root)
        if baseline_flops is None:
            raise ValueError("a FLOPs window needs the baseline model's FLOPs: pass baseline_flops "
                             "(--baseline-flops) or record 'baseline_flops' in the session's session.json")
    info, _ = read_session_info(root)
    records = scan_kernel_dirs(root, include_errors=True)
    rejected: list[dict[str, Any]] = []
    usable: list[KernelDir] = []
    for r in records:
        if r.error:
            rejected.append({"name": r.name, "reason": "error"})
        elif not r.usable:
            rejected.append({"name": r.name, "reason": f"unusable: {r.problem or 'status ' + r.status}"})
        else:
            try:
                r.operator()
            except Exception as exc:  # noqa: BLE001 - a kernel whose IR does not load is skipped
                rejected.append({"name": r.name, "reason": f"operator does not load: {exc}"})
                continue
            usable.append(r)
    if target == "auto":  # the session's target (session.json), else what the kernels carry
        target = session_target(info, records)
    ranked: list[KernelDir] = []
    for r in usable:
        metric = r.accuracy if target == "accuracy" else r.loss
        if metric is None:
            rejected.append({"name": r.name, "reason": f"no {target}"})
            continue
        if windowed:
            if r.flops is None:
                rejected.append({"name": r.name, "reason": "no flops"})
                continue
            ratio = r.flops / baseline_flops
            if (min_flops_ratio is not None and ratio < min_flops_ratio) or \
                    (max_flops_ratio is not None and ratio > max_flops_ratio):
                rejected.append({"name": r.name, "reason": "flops-window", "flops_ratio": ratio})
                continue
        if min_speedup is not None:
            s = headline_speedup(r.meta)
            if s is None or s < min_speedup:
                rejected.append({"name": r.name, "reason": "not measured" if s is None else "slower", "speedup": s})
                continue
        ranked.append(r)
    sign = -1.0 if target == "accuracy" else 1.0
    ranked.sort(key=lambda r: (sign * (r.accuracy if target == "accuracy" else r.loss),
                               r.flops if r.flops is not None else float("inf"), r.name))
    if rank_by == "speedup":  # stable: equal speedups keep the accuracy order
        ranked.sort(key=lambda r: -(headline_speedup(r.meta) or 0.0))

    cache_path = root / _CACHE
    cache = _load_cache(cache_path) if use_cache else {}
    probe_key = probe.key()
    kept: list[KernelDir] = []
    duplicates: list[dict[str, Any]] = []
    comparisons = 0
    t0 = time.perf_counter()
    for r in ranked:
        if len(kept) >= top:
            break
        dup_of, verdict = None, None
        if dedup:
            for k in kept:
                key = "|".join(sorted((r.operator().hash, k.operator().hash))) + "|" + probe_key
                if key in cache:
                    verdict = _verdict_from(cache[key])
                else:
                    say(f"compare {r.name} with {k.name}")
                    verdict = compare(r.operator(), k.operator(), probe)
                    comparisons += 1
                    cache[key] = verdict.to_dict()
                    if use_cache:
                        write_json_atomic(cache_path, cache)
                if verdict.same:
                    dup_of = k
                    break
        if dup_of is not None:
            duplicates.append({"name": r.name, "duplicate_of": dup_of.name, "reason": verdict.reason,
                               "verdict": verdict.to_dict()})
            say(f"{r.name}: duplicate of {dup_of.name} ({verdict.reason})")
            continue
        kept.append(r)
        say(f"selected {r.name} (accuracy {r.accuracy}, flops {r.flops})")

    def entry(rank: int, r: KernelDir) -> dict[str, Any]:
        e = r.summary()
        e["rank"] = rank
        e["operator_hash"] = r.operator().hash
        e["flops_ratio"] = (r.flops / baseline_flops) if (baseline_flops and r.flops is not None) else None
        e["speedup"] = headline_speedup(r.meta)
        return e

    result = {
        "session": str(root.resolve()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "target": target,
        "top": top,
        "window": {"min_flops_ratio": min_flops_ratio, "max_flops_ratio": max_flops_ratio,
                   "baseline_flops": baseline_flops, "min_speedup": min_speedup},
        "rank_by": rank_by,
        "dedup": dedup,
        "probe": asdict(probe),
        "selected": [entry(i + 1, r) for i, r in enumerate(kept)],
        "duplicates": duplicates,
        "rejected": rejected,
        "counts": {"kernels": len(records), "usable": len(usable), "in_window": len(ranked),
                   "selected": len(kept), "duplicates": len(duplicates), "comparisons": comparisons},
        "compare_seconds": round(time.perf_counter() - t0, 3),
    }
    write_json_atomic(Path(out) if out is not None else root / SELECTED_FILE, result)
    return result


def load_selection(path: str | Path) -> list[Path]:
    """Kernel directories listed in a ``selected.json`` (a file, or a session directory holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / SELECTED_FILE
    data = json.loads(p.read_text())
    return [Path(e["dir"]) for e in data.get("selected", [])]
