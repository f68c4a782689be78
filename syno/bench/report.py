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
    from rich.table import Table

    tables = []
    model_rows = [r for r in rows if r.scope == "model"]
    if model_rows:
        variants = list(dict.fromkeys(r.variant for r in model_rows if r.variant != BASELINE))
        t = Table(title=f"end-to-end latency (median ms) on {model_rows[0].device_name}")
        for c in ("model", "N", "backend", "baseline"):
            t.add_column(c, justify="right" if c in ("N", "baseline") else "left")
        for v in variants:
            t.add_column(v, justify="right")
            t.add_column("speedup", justify="right")
        groups = dict.fromkeys((r.model, r.batch, r.backend) for r in model_rows)
        for g in groups:
            rs = {r.variant: r for r in model_rows if (r.model, r.batch, r.backend) == g}
            b = rs.get(BASELINE)
            cells = [g[0], str(g[1]), g[2] + (f" [{b.config}]" if b and b.config else ""),
                     _ms(b.median_ms) if b and b.status == "ok" else (b.status[:30] if b else "-")]
            for v in variants:
                r = rs.get(v)
                if r is None:
                    cells += ["-", "-"]
                elif r.status != "ok":
                    cells += [r.status[:30], "-"]
                else:
                    cells += [_ms(r.median_ms) + ("" if not b or r.config == b.config else f" [{r.config}]"),
                              _x(r.speedup)]
            t.add_row(*cells)
        tables.append(t)
    layer_rows = [r for r in rows if r.scope == "layer"]
    for key in dict.fromkeys((r.variant, r.backend, r.batch) for r in layer_rows if r.variant != BASELINE):
        var, backend, batch = key
        t = Table(title=f"layer-wise: {var} vs original layer, {backend}, N={batch} (median ms)")
        for c in ("layer", "count", "input", "original", var, "speedup"):
            t.add_column(c, justify="left" if c in ("layer", "input") else "right")
        base = {r.layer: r for r in layer_rows if r.variant == BASELINE and r.backend == backend and r.batch == batch}
        tot_b = tot_k = 0.0
        for r in layer_rows:
            if (r.variant, r.backend, r.batch) != key:
                continue
            b = base.get(r.layer)
            t.add_row(r.layer, str(r.count), r.input_shape, _ms(b.median_ms) if b else "-",
                      _ms(r.median_ms) if r.status == "ok" else r.status[:30], _x(r.speedup))
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
