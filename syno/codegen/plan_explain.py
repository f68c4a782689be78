"""Explain a lowering: the chosen plan per stage, and the alternatives the planner rejected.

``syno plan KERNEL_DIR_OR_OPERATOR_JSON --map N=8,C_in=64,C_out=64,H=56`` prints, for the plan
``build_module`` would use at that mapping, every step with its MACs, the elements it writes and
its result size, then one row per alternative plan (min-MAC planner, no selection tensors, no
diagonals, weights first) with its MACs, elements written, cost score and the peak forward memory
of each emitter (measured on meta tensors: nothing is allocated), and why it lost.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional

import typer

#: alternatives shown next to the chosen plan: name -> plan_for options
ALTERNATIVES = {
    "cost (default)": {},
    "min-MAC (before #21)": {"cost": "macs", "select": False},
    "no selection tensors": {"select": False},
    "no diagonals": {"allow_diag": False},
    "weights first": {"weights_first": True},
}


def _fmt(n: float) -> str:
    from .cost import fmt_bytes
    return fmt_bytes(n)


def plan_rows(op, mapping: Mapping[str, int], itemsize: int = 4) -> list[dict]:
    """One dict per distinct alternative plan: MACs, elements written, cost, peak bytes per
    emitter, whether it fits the limit."""
    from syno.ir.lowering import BYTE_WEIGHT, LoweringError, plan_for

    from .cost import peak_limit_bytes, plan_peak_bytes

    rows, seen = [], {}
    for name, opts in ALTERNATIVES.items():
        try:
            plan = plan_for(op, mapping, **opts)
        except LoweringError as exc:
            rows.append({"name": name, "error": str(exc)})
            continue
        sig = tuple((s.kind, s.srcs, s.src_axes, s.dst_axes) for s in plan.steps)
        if sig in seen:
            rows.append({"name": name, "same_as": seen[sig]})
            continue
        seen[sig] = name
        peaks = {em: plan_peak_bytes(plan, em, itemsize) for em in ("einsum", "fast")}
        limit = peak_limit_bytes(plan, itemsize=itemsize)
        rows.append({"name": name, "plan": plan, "macs": plan.flops, "written": plan.written,
                     "cost": plan.flops + BYTE_WEIGHT * plan.written,  # one scale for all rows
                     "peak": peaks, "limit": limit,
                     "fits": min(peaks.values()) <= limit})
    return rows


def explain(op, mapping: Mapping[str, int], *, limit=None) -> str:
    """Text: the chosen plan's stages, then the alternatives with their costs."""
    from syno.ir.lowering import BYTE_WEIGHT

    from .cost import PlanTooCostly, guard_plan, stage_text

    lines = []
    try:
        choice = guard_plan(op, mapping, limit=limit)
        plan = choice.plan
        lines.append(f"operator {op.name or op.hash} at "
                     + ", ".join(f"{k}={v}" for k, v in sorted(plan.mapping.items())))
        lines.append(f"chosen plan: {plan.flops:,} MACs, {plan.written:,} elements written, peak "
                     f"{_fmt(choice.peak_bytes)} with the {choice.emitter} emitter "
                     f"(limit {_fmt(choice.limit_bytes)})")
    except PlanTooCostly as exc:
        lines.append(f"refused: {exc}")
        plan = None
    if plan is not None:
        cl = plan.classes
        lines.append(f"  {'#':>2}  {'step':<9} {'MACs':>14} {'writes':>12} {'result':>10}  shape")
        for k, s in enumerate(plan.steps):
            shape = "[" + ", ".join(f"{cl[c].name}:{plan.values[c]}" for c in s.dst_axes) + "]"
            lines.append(f"  {k:>2}  {s.kind:<9} {s.macs:>14,} {s.writes:>12,} {_fmt(s.numel * 4):>10}  "
                         f"{s.dst} = {s.kind}({', '.join(s.srcs)}) -> {shape}")
        lines.append(f"  largest: {stage_text(plan)}")
    lines.append("alternatives:")
    lines.append(f"  {'plan':<22} {'MACs':>14} {'written':>12} {'cost':>14} {'peak einsum':>12} "
                 f"{'peak fast':>10}  verdict")
    for r in plan_rows(op, mapping):
        if "error" in r:
            lines.append(f"  {r['name']:<22} cannot lower: {r['error']}")
            continue
        if "same_as" in r:
            lines.append(f"  {r['name']:<22} same plan as {r['same_as']!r}")
            continue
        if plan is not None and r["plan"] is plan:
            verdict = "chosen"
        elif not r["fits"]:
            verdict = "rejected: peak over the limit"
        elif plan is not None and r["cost"] > plan.flops + BYTE_WEIGHT * plan.written:
            verdict = "rejected: higher cost"
        else:
            verdict = "not tried first"
        lines.append(f"  {r['name']:<22} {r['macs']:>14,} {r['written']:>12,} {r['cost']:>14,.0f} "
                     f"{_fmt(r['peak']['einsum']):>12} {_fmt(r['peak']['fast']):>10}  {verdict}")
    return "\n".join(lines)


def parse_mapping(text: str) -> dict[str, int]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not value.strip().lstrip("-").isdigit():
            raise ValueError(f"--map {text!r}: expected NAME=INT,... (e.g. N=8,C_in=64,C_out=64,H=56)")
        out[key.strip()] = int(value)
    return out


def load_operator(path: Path):
    from syno.ir.graph import Operator

    file = path / "operator.json" if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"{path}: no operator.json there")
    return Operator.from_json(file.read_text())


def triton_source(op, mapping: dict[str, int]) -> str:
    """The Triton kernels :mod:`syno.codegen.triton` generates for ``op`` at ``mapping`` (input
    channels_last when it is 4-D), with the plan they come from."""
    import torch

    from syno.ir.lowering import plan_for

    from .triton.runtime import TritonOperator

    plan = plan_for(op, mapping)
    top = TritonOperator(plan)
    x = torch.empty(top.shape("x", plan.values), device="meta")
    strides = x.to(memory_format=torch.channels_last).stride() if x.dim() == 4 else None
    return top.source(backward=True, x_strides=strides)


def plan_command(
    kernel: Path = typer.Argument(..., help="kernel directory (holding operator.json) or an operator .json file"),
    mapping: str = typer.Option("N=8,C_in=64,C_out=64,H=56", "--map",
                                help="sizes of the operator's variables, NAME=INT,..."),
    limit: Optional[str] = typer.Option(None, "--limit", help="peak memory limit: a factor of max(input+weights, "
                                        "output) like 8x, or bytes like 2GB (default $SYNO_PEAK_LIMIT or 8x)"),
    triton: bool = typer.Option(False, "--triton", help="also print the generated Triton kernels (forward and "
                                "backward; bf16, channels_last input, fused producers as the default picks)"),
) -> None:
    """Explain how an operator is lowered: stages with MACs, bytes written and peak memory, and the
    alternatives the planner rejected."""
    try:
        op = load_operator(kernel)
        m = parse_mapping(mapping)
        text = explain(op, m, limit=limit)
        if triton:
            text += "\n\n" + triton_source(op, m)
    except (ValueError, OSError, json.JSONDecodeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(text)


__all__ = ["explain", "plan_rows", "plan_command", "parse_mapping", "load_operator", "ALTERNATIVES"]
