"""CSV output and the rich tables of ``syno bench``."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Sequence

from .core import BenchRow
from .operators import BASELINE

__all__ = ["write_csv", "read_csv", "render_tables", "print_tables"]


def write_csv(rows: Iterable[BenchRow], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=BenchRow.columns())
        w.writeheader()
        for r in rows:
            w.writerow(r.as_dict())
    return path


def read_csv(path: str | Path) -> list[dict]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def _ms(v: float) -> str:
    return "-" if v is None or not math.isfinite(v) else (f"{v:.3f}" if v < 100 else f"{v:.1f}")


def _x(v: float) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.2f}x"


def render_tables(rows: Sequence[BenchRow]):
    """rich Tables: one end-to-end table, one layer-wise table per (operator, backend, batch)."""
    from rich.markup import escape
    from rich.table import Table

    tables = []
    model_rows = [r for r in rows if r.scope == "model"]
    if model_rows:
        t = Table(title=f"end-to-end latency on {model_rows[0].device_name}")
        for c in ("model", "N", "backend", "variant", "config", "median ms", "speedup"):
            t.add_column(c, justify="right" if c in ("N", "median ms", "speedup") else "left")
        groups = dict.fromkeys((r.model, r.batch, r.backend) for r in model_rows)
        for gi, g in enumerate(groups):
            rs = [r for r in model_rows if (r.model, r.batch, r.backend) == g]
            rs.sort(key=lambda r: r.variant != BASELINE)
            for i, r in enumerate(rs):
                ok = r.status == "ok"
                t.add_row(g[0] if i == 0 else "", str(g[1]) if i == 0 else "", g[2] if i == 0 else "",
                          escape(r.variant + (f" ({r.impl})" if r.impl not in ("torch", "") and r.impl not in r.variant
                                              else "")),
                          escape(r.config), _ms(r.median_ms) if ok else escape(r.status[:40]),
                          _x(r.speedup) if ok else "-",
                          end_section=i == len(rs) - 1 and gi < len(groups) - 1)
        tables.append(t)
    layer_rows = [r for r in rows if r.scope == "layer"]
    for key in dict.fromkeys((r.variant, r.backend, r.batch) for r in layer_rows if r.variant != BASELINE):
        var, backend, batch = key
        t = Table(title=escape(f"layer-wise: {var} vs original layer, {backend}, N={batch} (median ms)"))
        for c in ("layer", "count", "input", "original", escape(var), "speedup"):
            t.add_column(c, justify="left" if c in ("layer", "input") else "right")
        base = {r.layer: r for r in layer_rows if r.variant == BASELINE and r.backend == backend and r.batch == batch}
        tot_b = tot_k = 0.0
        for r in layer_rows:
            if (r.variant, r.backend, r.batch) != key:
                continue
            b = base.get(r.layer)
            t.add_row(escape(r.layer), str(r.count), r.input_shape, _ms(b.median_ms) if b else "-",
                      _ms(r.median_ms) if r.status == "ok" else escape(r.status[:30]), _x(r.speedup))
            if b and r.status == "ok" and b.status == "ok":
                tot_b += b.median_ms * r.count
                tot_k += r.median_ms * r.count
        if tot_k > 0:
            t.add_row("sum over placeholders", "", "", _ms(tot_b), _ms(tot_k), _x(tot_b / tot_k))
        tables.append(t)
    return tables


def print_tables(rows: Sequence[BenchRow], console=None) -> None:
    from rich.console import Console

    console = console or Console()
    for t in render_tables(rows):
        console.print(t)
