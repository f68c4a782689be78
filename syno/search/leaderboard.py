"""The leaderboard of a session: its kernels ranked by reward, as rows or a rich table."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from .latency import headline_speedup
from .session import KernelRecord, SessionStore

__all__ = ["leaderboard_rows", "print_leaderboard", "session_summary"]


def _ratio(rec: KernelRecord, ref: dict[str, Any], key: str) -> float | None:
    base = ref.get(key)
    val = rec.result.flops if key == "macs" else rec.result.params
    if not base or not val:
        return None
    return val / base


def leaderboard_rows(store: SessionStore, include_failed: bool = False, *, min_speedup: float | None = None,
                     sort: str = "reward") -> list[dict[str, Any]]:
    """One dict per kernel, best first (failed kernels last, if included).

    ``sort="speedup"`` ranks by measured speedup (unmeasured last); ``min_speedup`` keeps only kernels
    measured at least that much faster than the original model (:mod:`syno.search.latency`)."""
    if sort not in ("reward", "speedup"):
        raise ValueError(f"sort by {sort!r}: choose reward or speedup")
    try:
        ref = store.info().get("options", {}).get("reference", {}) or {}
    except Exception:  # noqa: BLE001 - a leaderboard of kernel dirs still works without session.json
        ref = {}
    recs = store.kernels()
    # multi-fidelity sessions (syno.search.fidelity): a kernel trained to a higher rung ranks first, then
    # by its metric at that rung (see _within_rung)
    ok = sorted((r for r in recs if r.reward is not None),
                key=lambda r: (-_rung(r), _within_rung(r), -r.reward,
                               -(r.result.accuracy if math.isfinite(r.result.accuracy) else 0), r.time))
    rows = []
    if min_speedup is not None:
        ok = [r for r in ok if (headline_speedup(r.meta) or 0.0) >= min_speedup]
    if sort == "speedup":
        ok.sort(key=lambda r: -(headline_speedup(r.meta) or 0.0))
    for rank, r in enumerate(ok, start=1):
        rows.append(_row(r, rank, ref))
    if include_failed:
        for r in sorted((r for r in recs if r.reward is None), key=lambda r: r.time):
            rows.append(_row(r, None, ref))
    return rows


def _rung(r: KernelRecord) -> int:
    """Highest rung the kernel reached (0 for single-fidelity sessions)."""
    rung = r.meta.get("rung", 0)
    return rung if isinstance(rung, int) else 0


def _within_rung(r: KernelRecord) -> float:
    """Order among the kernels of one rung (lower first): the rung's accuracy (or loss). Every kernel of a rung
    is normalised by the same offset (``Asha.offset``), so this is the normalised order, whereas the stored
    rewards used the offset known when each kernel finished its rung: the first promoted kernels, rewarded
    before the offset was trusted, kept the rewards of their raw 15-epoch accuracies and outranked better
    kernels promoted later. Single-fidelity sessions rank by reward alone (0 here)."""
    if not r.meta.get("rungs"):
        return 0.0
    if r.meta.get("target") == "loss":
        return r.result.loss if math.isfinite(r.result.loss) else math.inf
    return -r.result.accuracy if math.isfinite(r.result.accuracy) else 0.0


def _row(r: KernelRecord, rank: int | None, ref: dict[str, Any]) -> dict[str, Any]:
    budgets = [x.get("budget") for x in r.meta.get("rungs") or [] if x.get("status") in ("ok", "pruned")]
    return {"rank": rank, "dir": r.name, "rung": _rung(r), "budget": budgets[-1] if budgets else None, "hash": r.hash, "status": r.result.status, "reward": r.reward,
            "accuracy": r.result.accuracy, "loss": r.result.loss, "flops": r.result.flops,
            "flops_ratio": _ratio(r, ref, "macs"), "params": r.result.params,
            "params_ratio": _ratio(r, ref, "params"), "speedup": headline_speedup(r.meta),
            "eval_time": r.result.time, "time": r.time, "path": r.path,
            "message": r.result.message.splitlines()[0] if r.result.message else ""}


def session_summary(store: SessionStore) -> dict[str, Any]:
    recs = store.kernels()
    status = Counter(r.result.status for r in recs)
    ok = [r for r in recs if r.reward is not None]
    best = max(ok, key=lambda r: r.reward) if ok else None
    return {"kernels": len(recs), "status": dict(status), "rewarded": len(ok),
            "best": best.name if best else None, "best_reward": best.reward if best else None,
            "elapsed": max((r.time for r in recs), default=0.0)}


def _fmt(x: float | None, spec: str) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, spec)


def print_leaderboard(store: SessionStore, top: int = 20, include_failed: bool = False,
                      console: Console | None = None, title: str | None = None, *, min_speedup: float | None = None,
                      sort: str = "reward") -> list[dict[str, Any]]:
    console = console or Console()
    rows = leaderboard_rows(store, include_failed=include_failed, min_speedup=min_speedup, sort=sort)
    timed = any(r["speedup"] is not None for r in rows)
    rungs = any(r["budget"] is not None for r in rows)
    problems = store.scan()[1]
    summ = session_summary(store)
    try:
        opts = store.info().get("options", {})
    except Exception:  # noqa: BLE001
        opts = {}
    loss_target = (opts.get("reward") or {}).get("target") == "loss"
    has_ref = bool((opts.get("reference") or {}).get("macs"))
    table = Table(title=title or f"{store.root}  ({summ['kernels']} kernels, "
                                 + ", ".join(f"{k} {v}" for k, v in sorted(summ["status"].items())) + ")",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("loss" if loss_target else "acc", justify="right", no_wrap=True)
    table.add_column("reward", justify="right", no_wrap=True)
    if rungs:  # the training budget of the rung each kernel reached (epochs, or steps)
        table.add_column("rung", justify="right", no_wrap=True)
    table.add_column("MACs", justify="right", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    if timed:  # measured speedup over the original model (end to end unless latency.scope says otherwise)
        table.add_column("speedup", justify="right", no_wrap=True, min_width=7)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("kernel directory", no_wrap=True, min_width=22)
    table.add_column("status", overflow="fold", min_width=6)
    shown = rows if top <= 0 else [r for r in rows if r["rank"] is None or r["rank"] <= top]
    for r in shown:
        macs = _fmt(r["flops_ratio"], ".3f") if has_ref else _fmt(r["flops"] or None, ".3g")
        params = _fmt(r["params_ratio"], ".3f") if has_ref else _fmt(r["params"] or None, ".3g")
        status = r["status"] if not r["message"] or r["status"] in ("ok", "pruned") else \
            f"{r['status']}: {r['message'][:40]}"
        table.add_row(str(r["rank"] or "-"),
                      _fmt(r["loss"], ".4f") if loss_target else _fmt(r["accuracy"], ".4f"),
                      _fmt(r["reward"], ".4f"),
                      *([f"{r['rung']}:{_fmt(r['budget'], 'g')}" if r["budget"] is not None else "-"] if rungs else []),
                      macs, params,
                      *([_fmt(r["speedup"], ".2f") + ("x" if r["speedup"] is not None else "")] if timed else []),
                      _fmt(r["eval_time"], ".0f") + "s", r["dir"], status)
    console.print(table)
    ref = opts.get("reference") or {}
    if ref.get("macs"):
        console.print(f"MACs and params relative to the original model ({ref['macs']:.4g} MACs/sample, "
                      f"{ref.get('params', 0):.4g} params)")
    for line in problems:  # damaged kernel directories: listed, not fatal
        console.print(f"warning: {line}", highlight=False, markup=False, soft_wrap=True)
    return rows
