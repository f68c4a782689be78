"""Graphviz DOT of an operator: primitives as nodes, dimensions as labelled edges.

Drawn top-down from the tensors (inputs at the top) to the output, the direction data flows.
"""

from __future__ import annotations

from .graph import Operator
from .primitives import Dim, IteratorDim, TopDim

_STYLE = {
    "Share": 'shape=circle, style=filled, fillcolor="#fde2b4"',
    "Unfold": 'shape=box, style="rounded,filled", fillcolor="#cfe8ff"',
    "Merge": 'shape=box, style="rounded,filled", fillcolor="#e3f5d8"',
    "Split": 'shape=box, style="rounded,filled", fillcolor="#e3f5d8"',
    "Shift": 'shape=box, style="rounded,filled", fillcolor="#f1e0ff"',
    "Stride": 'shape=box, style="rounded,filled", fillcolor="#f1e0ff"',
    "Expand": 'shape=box, style="rounded,filled", fillcolor="#eeeeee"',
}


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(op: Operator, name: str | None = None) -> str:
    title = name or op.name or f"operator_{op.hash}"
    lines = [f"digraph {_quote(title)} {{", "  newrank=true;", "  rankdir=TB;",
             '  node [fontname="Helvetica"]; edge [fontname="Helvetica", fontsize=10];']
    upstream: dict[Dim, str] = {}  # where each dim's data comes from, in forward order

    for t, dims in enumerate(op.tensors):
        label = "Input" if t == 0 else f"Weight {t}"
        lines.append(f"  subgraph cluster_in_{t} {{ label={_quote(label)}; style=dashed;")
        for a, d in enumerate(dims):
            node = f"in_{t}_{a}"
            lines.append(f"    {node} [shape=plaintext, label={_quote(f'{d.size} ({a})')}];")
            upstream[d] = node
        lines.append("  }")

    op_ids = {o: f"op_{k}" for k, o in enumerate(op.ops)}
    for o, node in op_ids.items():
        lines.append(f"  {node} [{_STYLE.get(o.name, 'shape=box')}, label={_quote(_op_label(o))}];")
        for b in o.bottoms:  # forward, an op produces its bottom dims from its tops
            upstream[b] = node
    for k, r in enumerate(op.reductions):
        lines.append(f"  red_{k} [shape=box, label={_quote('Sum ' + str(r.size))}];")
    lines.append('  subgraph cluster_out { label="Output"; style=dashed;')
    for d in op.outputs:
        lines.append(f"    out_{d.index} [shape=plaintext, label={_quote(f'{d.size} ({d.index})')}];")
    lines.append("  }")

    for d in op.all_dims:
        if isinstance(d, TopDim):
            end, order = op_ids[d.op], ("" if len(d.op.tops) < 2 else (" (L)" if d.slot == 0 else " (R)"))
        elif isinstance(d, IteratorDim):
            end, order = f"out_{d.index}", ""
        else:
            end, order = f"red_{op.reductions.index(d)}", ""
        lines.append(f"  {upstream[d]} -> {end} [label={_quote(str(d.size) + order)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _op_label(o) -> str:
    if o.name == "Merge":
        return f"Merge /{o.block}"
    if o.name == "Stride":
        return f"Stride {o.stride}"
    return o.name
