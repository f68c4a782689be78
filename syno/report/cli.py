"""``syno plot`` and ``syno report``: the commands behind ``syno.cli`` (matplotlib is imported inside them)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def _csv_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def plot(
    inputs: List[Path] = typer.Argument(..., metavar="INPUT", help="session directories and/or input files: bench CSVs, "
                                                  "baseline.json, reeval/quantize JSON, LM loss logs"),
    out: Path = typer.Option(Path("figures"), "--out", "-o", help="output directory"),
    only: Optional[str] = typer.Option(None, help="comma-separated figure names (default: all); names: "
                                                  "end-to-end-performance, accuracy-performance, case-study, "
                                                  "kernel-performance, gpt-loss, search-progress"),
    formats: str = typer.Option("png,pdf", "--format", help="comma-separated: png, pdf, svg"),
    max_acc_decrease: float = typer.Option(0.01, help="end-to-end: kernels need accuracy > baseline - this "
                                                      "(fraction; the original's default 0.01)"),
    pareto_acc_decrease: float = typer.Option(0.1, help="accuracy-vs-cost: show kernels with accuracy >= "
                                                        "baseline - this (plot.sh passes 0.1)"),
    operator: str = typer.Option("operator1", help="case study: the operator compared with the convolution"),
    dpi: int = typer.Option(120, help="PNG resolution"),
) -> None:
    """Draw the figures of the original artifact from whatever inputs exist; one line per figure."""
    from .figures import ALIASES, FIGURES, PlotOptions, plot_all
    from .inputs import collect

    names = _csv_list(only) or None
    if names:
        unknown = [n for n in names if n not in FIGURES and n not in ALIASES]
        if unknown:
            raise typer.BadParameter(f"unknown figure(s) {unknown}; choose from {list(FIGURES)}", param_hint="--only")
    fmts = tuple(_csv_list(formats))
    bad = [f for f in fmts if f not in ("png", "pdf", "svg")]
    if bad or not fmts:
        raise typer.BadParameter(f"formats must be png, pdf or svg (got {formats!r})", param_hint="--format")
    data = collect(inputs)
    typer.echo(f"inputs: {data.summary()}")
    for p in data.problems:
        typer.echo(f"warning: {p}", err=True)
    opts = PlotOptions(max_acc_decrease=max_acc_decrease, pareto_acc_decrease=pareto_acc_decrease,
                       case_operator=operator, formats=fmts, dpi=dpi)
    results = plot_all(data, out, opts, only=names)
    for r in results:
        typer.echo(r.line())
    drawn = sum(r.drawn for r in results)
    typer.echo(f"{drawn} of {len(results)} figure(s) written to {out}")
    if drawn == 0:
        raise typer.Exit(1)


def report(
    session: Path = typer.Argument(..., metavar="SESSION", help="search session directory"),
    extra: List[Path] = typer.Option([], "--input", "-i", help="more inputs (bench CSV, baseline.json, reevaluation "
                                                               "JSON, loss logs, other sessions); repeatable"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file (default SESSION/report.html)"),
    top: int = typer.Option(20, "--top", "-k",
                            help="kernels shown in full (loop text, diagram); all are in the leaderboard"),
    dot: bool = typer.Option(True, "--dot/--no-dot", help="render diagrams with Graphviz `dot` when installed"),
    max_acc_decrease: float = typer.Option(0.01, help="as for `syno plot`"),
    operator: str = typer.Option("operator1", help="as for `syno plot`"),
) -> None:
    """Write one self-contained HTML page: leaderboard, figures, each kernel's loop text and graph."""
    from .figures import PlotOptions
    from .html import dot_available, write_report

    if not session.is_dir():
        typer.echo(f"error: session directory {str(session)!r} does not exist", err=True)
        raise typer.Exit(2)
    if top < 0:
        raise typer.BadParameter("must be >= 0", param_hint="--top")
    opts = PlotOptions(max_acc_decrease=max_acc_decrease, case_operator=operator)
    path, figures = write_report(session, out, extra, top=top, use_dot=dot, opts=opts)
    for r in figures:
        if not r.drawn:
            typer.echo(f"figure {r.line()}")
    if dot and not dot_available():
        typer.echo("note: Graphviz `dot` is not installed; diagrams are shown as DOT source")
    typer.echo(f"wrote {path} ({path.stat().st_size // 1024} KiB, "
               f"{sum(r.drawn for r in figures)} figure(s))")
