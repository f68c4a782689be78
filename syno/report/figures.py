"""The five figures of the original artifact (plus the search's progress), drawn with matplotlib (Agg).

=====================  ============================  =============================================
file stem              original                      what it shows here
=====================  ============================  =============================================
end-to-end-performance Fig. 5 (end_to_end_perf_plot) top: per model and scenario (device, backend,
                                                     batch), the best end-to-end speedup among
                                                     kernels whose accuracy is within
                                                     ``max_acc_decrease`` of the baseline (strict,
                                                     as the original), geomean over models; bottom:
                                                     speedup vs accuracy of every benched kernel
accuracy-performance   Fig. 6 (plot-models;          per model: accuracy vs MACs (and vs latency per
  the original's                                     benched scenario), Pareto front, hollow
  imagenet-performance)                              baseline point; reevaluated accuracy (e.g.
                                                     ImageNet) when a reevaluation exists, else the
                                                     search's proxy accuracy (the title says which)
case-study             Fig. 8 (plot-quantization)    per layer: latency of the original conv vs
                                                     Operator 1 (and the stacked conv when benched);
                                                     end-to-end latency vs accuracy when known
kernel-performance     Fig. 9 (layerwise)            per layer: speedup of each benched operator
                                                     over the original layer, geomean over layers
gpt-loss               Fig. 10 (plot-loss)           perplexity of the smoothed training loss vs
                                                     steps, baseline vs kernels
search-progress        (not in the artifact)         each session's accuracy (loss) over search
                                                     time, best so far, failures
=====================  ============================  =============================================

Each ``fig_*`` function returns a :class:`matplotlib.figure.Figure` and a list of notes, or raises
:class:`MissingInput` naming what it lacks. :func:`plot_all` draws them all, writes PNG and PDF,
and returns one :class:`FigureResult` per figure; it never raises for missing or bad data.
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .inputs import BenchCsvRow, Inputs, KernelDir, group_by  # noqa: E402

__all__ = ["MissingInput", "FigureResult", "FIGURES", "ALIASES", "plot_all", "draw", "fig_end_to_end",
           "fig_imagenet_performance", "fig_case_study", "fig_kernel_performance", "fig_gpt_loss",
           "fig_search_progress", "PlotOptions", "smooth_losses"]

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f"]
MAX_PANELS = 6
MAX_VARIANTS = 8


class MissingInput(Exception):
    """A figure cannot be drawn: the message says which input is missing and how to make it."""


@dataclass
class PlotOptions:
    max_acc_decrease: float = 0.01          #: end-to-end: kernels must have acc > baseline - this
    pareto_acc_decrease: float = 0.1        #: accuracy-vs-cost: kernels with acc >= baseline - this
    case_operator: str = "operator1"        #: case study: hand-built operator name (or a kernel dir name)
    compare_operator: str = "stacked_conv"  #: case study: the hand-written alternative
    formats: tuple[str, ...] = ("png", "pdf")
    dpi: int = 120


@dataclass
class FigureResult:
    name: str                               #: file stem
    title: str
    files: list[Path] = field(default_factory=list)
    missing: str | None = None              #: why it was not drawn
    notes: list[str] = field(default_factory=list)
    png: bytes | None = None                #: the PNG (for the HTML report)

    @property
    def drawn(self) -> bool:
        return self.missing is None

    def line(self) -> str:
        if self.missing is not None:
            return f"{self.name}: not drawn: {self.missing}"
        where = ", ".join(str(f) for f in self.files) or "(in memory)"
        extra = f" ({'; '.join(self.notes)})" if self.notes else ""
        return f"{self.name}: {where}{extra}"


# ------------------------------------------------------------------------------------------- helpers
def _geomean(xs: Iterable[float]) -> float | None:
    xs = [x for x in xs if x is not None and x > 0 and math.isfinite(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def _short(name: str, n: int = 18) -> str:
    m = name.split("_", 1)
    if len(m) == 2 and m[0].isdigit() and len(name) > n:  # 07889_15252107013978896537 -> 07889_1525…
        return f"{m[0]}_{m[1][:4]}…"
    return name if len(name) <= n else name[: n - 1] + "…"


def _pct(x: float | None) -> str:
    return "?" if x is None else f"{100 * x:.2f}%"


def _hand_built_hash(name: str) -> str | None:
    try:
        from syno.ir.library import HAND_BUILT
    except Exception:  # noqa: BLE001
        return None
    f = HAND_BUILT.get(name)
    if f is None:
        return None
    try:
        return f().hash
    except Exception:  # noqa: BLE001
        return None


def _pretty_operator(name: str) -> str:
    """``operator1`` -> ``Operator 1``; ``operator1[codegen]`` (benchmarks/end_to_end.py) -> ``Operator 1 [codegen]``."""
    base, sep, rest = name.partition("[")
    pretty = {"operator1": "Operator 1", "stacked_conv": "Stacked conv", "conv2d": "Conv2d"}.get(base, base)
    return f"{pretty} [{rest}" if sep else pretty


def _speedups(rows: Sequence[BenchCsvRow]) -> dict[int, float]:
    """Speedup of each ok kernel row (by id): the CSV's own column (measured in the same call as its
    baseline), else baseline median / row median with the baseline from the same file."""
    base: dict[tuple, float] = {}
    for r in rows:
        if r.is_baseline and r.ok:
            base[(str(r.source), r.scope, r.model, r.layer, r.backend, r.device_name, r.batch)] = r.median_ms
    out = {}
    for r in rows:
        if r.is_baseline or not r.ok:
            continue
        if r.speedup is not None and r.speedup > 0:
            out[id(r)] = r.speedup
            continue
        b = base.get((str(r.source), r.scope, r.model, r.layer, r.backend, r.device_name, r.batch))
        if b is not None:
            out[id(r)] = b / r.median_ms
    return out


def _kernel_accuracy(inputs: Inputs, r: BenchCsvRow) -> tuple[float | None, float | None, KernelDir | None]:
    """(kernel accuracy, its baseline's accuracy, kernel) for a bench row (search accuracy, not reeval)."""
    k = inputs.find_kernel(name=r.variant, op_hash=r.op_hash, model=r.model)
    if k is None or k.accuracy is None or not k.ok:
        return None, None, k
    s = inputs.session_of(k)
    model = inputs.kernel_model(k) or r.model
    b = inputs.baseline_for(model, s.dataset if s else None)
    return k.accuracy, (b.accuracy if b else None), k


def _colors(keys: Sequence[str]) -> dict[str, str]:
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(keys)}


def _new_figure(w: float, h: float) -> Figure:
    fig = plt.figure(figsize=(w, h), layout="constrained")
    return fig


# --------------------------------------------------------------------------- 1. end-to-end performance
def fig_end_to_end(inputs: Inputs, opts: PlotOptions | None = None) -> tuple[Figure, list[str]]:
    opts = opts or PlotOptions()
    rows = [r for r in inputs.bench if r.scope == "model"]
    if not rows:
        raise MissingInput("no end-to-end bench rows (a `syno bench MODEL --session SESSION --out bench.csv` CSV)")
    sp = _speedups(rows)
    krows = [r for r in rows if id(r) in sp]
    if not krows:
        raise MissingInput("the bench CSV has no successful kernel measurement next to a successful baseline")
    notes: list[str] = []
    models = list(dict.fromkeys(r.model for r in krows))
    if len(models) > MAX_PANELS:
        notes.append(f"{len(models) - MAX_PANELS} more model(s) left out")
        models = models[:MAX_PANELS]
    scenarios = list(dict.fromkeys(r.scenario for r in krows if r.model in models))
    color = _colors(scenarios)
    tol = opts.max_acc_decrease

    # best eligible speedup per (model, scenario)
    best: dict[tuple[str, str], tuple[float, str]] = {}
    unfiltered: set[str] = set()
    points: dict[str, list[tuple[float, float, str, str]]] = {m: [] for m in models}  # x, speedup, scen, name
    x_is_delta: dict[str, bool] = {}
    for m in models:
        mrows = [r for r in krows if r.model == m]
        info = {id(r): _kernel_accuracy(inputs, r) for r in mrows}
        any_acc = any(a is not None for a, _, _ in info.values())
        x_is_delta[m] = any(a is not None and b is not None for a, b, _ in info.values())
        unknown = sorted({r.variant for r in mrows if info[id(r)][0] is None})
        if any_acc and unknown:
            notes.append(f"{m}: accuracy unknown for {', '.join(_short(u) for u in unknown[:4])}"
                         f"{' …' if len(unknown) > 4 else ''} (not eligible)")
        if not any_acc:
            unfiltered.add(m)
            notes.append(f"{m}: no accuracies known, best speedup unfiltered (hatched)")
        for r in mrows:
            acc, base_acc, _ = info[id(r)]
            s = sp[id(r)]
            if acc is not None:
                x = 100 * (acc - base_acc) if x_is_delta[m] and base_acc is not None else 100 * acc
                if x_is_delta[m] and base_acc is None:
                    continue
                points[m].append((x, s, r.scenario, r.variant))
            eligible = (acc is None and not any_acc) or (
                acc is not None and (base_acc is None or acc > base_acc - tol))
            if eligible:
                key = (m, r.scenario)
                if key not in best or s > best[key][0]:
                    best[key] = (s, r.variant)
        if any_acc and not any(k[0] == m for k in best):
            notes.append(f"{m}: no kernel within {100 * tol:g} points of the baseline accuracy")

    fig = _new_figure(max(8.0, 3.4 * len(models)), 7.2)
    gs = fig.add_gridspec(2, len(models), height_ratios=[1.1, 1])
    ax = fig.add_subplot(gs[0, :])
    groups = models + (["geomean"] if len(models) > 1 else [])
    width = 0.8 / max(1, len(scenarios))
    for j, sc in enumerate(scenarios):
        xs, ys, labels = [], [], []
        for i, m in enumerate(models):
            if (m, sc) in best:
                xs.append(i + (j - (len(scenarios) - 1) / 2) * width)
                ys.append(best[(m, sc)][0])
                labels.append(_short(best[(m, sc)][1], 12))
        if len(models) > 1:
            g = _geomean(best[(m, sc)][0] for m in models if (m, sc) in best)
            if g is not None:
                xs.append(len(models) + (j - (len(scenarios) - 1) / 2) * width)
                ys.append(g)
                labels.append("")
        bars = ax.bar(xs, ys, width=width * 0.95, color=color[sc], label=sc)
        for b, x in zip(bars, xs):
            i = int(round(x))
            if i < len(models) and models[i] in unfiltered:
                b.set_hatch("//")
                b.set_edgecolor("white")
        for b, y, lab in zip(bars, ys, labels):
            ax.annotate(f"{y:.2f}×", (b.get_x() + b.get_width() / 2, y), ha="center", va="bottom", fontsize=8,
                        xytext=(0, 2), textcoords="offset points")
            if lab:
                ax.annotate(lab, (b.get_x() + b.get_width() / 2, 0), ha="center", va="bottom", fontsize=6,
                            rotation=90, xytext=(0, 3), textcoords="offset points", color="white")
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylabel("speedup over baseline")
    fig.suptitle(f"End-to-end speedup: fastest kernel with accuracy > baseline − {100 * tol:g} pt", fontsize=12)
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=color[sc]) for sc in scenarios]
    labs = list(scenarios)
    if unfiltered:
        handles.append(Patch(facecolor="lightgray", hatch="//", edgecolor="white"))
        labs.append("accuracy unknown (unfiltered)")
    ncol = min(3, len(labs))
    ax.legend(handles, labs, fontsize=8, loc="upper center", ncol=ncol, framealpha=0.9)
    rows_needed = math.ceil(len(labs) / ncol)
    ax.set_ylim(0, max([v for v, _ in best.values()] + [1.0]) * (1.2 + 0.1 * rows_needed))  # room for the legend
    for i, m in enumerate(models):
        if not any(k[0] == m for k in best):
            ax.annotate(f"no kernel within\n{100 * tol:g} pt of the baseline", (i, 0), ha="center", va="bottom",
                        fontsize=8, color="gray", xytext=(0, 6), textcoords="offset points")

    for i, m in enumerate(models):
        a = fig.add_subplot(gs[1, i])
        pts = points[m]
        for sc in scenarios:
            ps = [p for p in pts if p[2] == sc]
            if ps:
                a.scatter([p[0] for p in ps], [p[1] for p in ps], s=22, color=color[sc], alpha=0.85,
                          edgecolor="white", linewidth=0.5)
        a.axhline(1.0, color="black", lw=0.8, ls="--")
        if x_is_delta[m]:
            a.axvline(-100 * tol, color="gray", lw=0.8, ls=":")
            a.axvspan(-100 * tol, max([0.0] + [p[0] for p in pts]) + 0.5, color="green", alpha=0.06)
            a.set_xlabel("Δ accuracy vs baseline (pt)")
        else:
            a.set_xlabel("accuracy (%)")
        if not pts:
            a.text(0.5, 0.5, "no kernel accuracies", ha="center", va="center", transform=a.transAxes, color="gray")
        for (mm, sc), (v, name) in best.items():
            if mm == m:
                for p in pts:
                    if p[2] == sc and p[3] == name:
                        a.scatter([p[0]], [p[1]], marker="*", s=110, color=color[sc], edgecolor="black",
                                  linewidth=0.6, zorder=5)
        a.set_title(m, fontsize=10)
        if i == 0:
            a.set_ylabel("speedup")
        a.grid(alpha=0.3)
    return fig, notes


# ---------------------------------------------------------------------- 2. accuracy vs MACs/latency
@dataclass
class _Point:
    model: str
    name: str
    hash: str
    accuracy: float
    flops: float | None
    dataset: str | None
    reevaluated: bool
    ref_flops: float | None = None      #: the original model's MACs recorded by the session


def _accuracy_points(inputs: Inputs) -> dict[str, list[_Point]]:
    pts: dict[str, list[_Point]] = {}
    reeval_models: set[str] = set()
    for e in inputs.reevals:
        if e.accuracy is None or e.status not in ("ok", "pruned"):
            continue
        k = inputs.find_kernel(name=e.name, op_hash=e.hash)
        model = e.model or (inputs.kernel_model(k) if k else None) or "?"
        flops = e.flops if e.flops is not None else (k.flops if k else None)
        pts.setdefault(model, []).append(_Point(model, e.name or (k.name if k else e.hash), e.hash or
                                                (k.hash if k else ""), e.accuracy, flops, e.dataset, True))
        reeval_models.add(model)
    for s in inputs.sessions:
        if s.target != "accuracy":
            continue
        for k in s.kernels:
            if not k.ok or k.accuracy is None:
                continue
            model = inputs.kernel_model(k) or "?"
            if model in reeval_models:
                continue
            pts.setdefault(model, []).append(_Point(model, k.name, k.hash, k.accuracy, k.flops, s.dataset, False,
                                                    s.baseline_flops))
    return pts


def _pareto(xy: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by any other (lower cost x, higher accuracy y), sorted by x."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(xy, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def fig_imagenet_performance(inputs: Inputs, opts: PlotOptions | None = None) -> tuple[Figure, list[str]]:
    opts = opts or PlotOptions()
    pts = _accuracy_points(inputs)
    pts = {m: p for m, p in pts.items() if p}
    if not pts:
        raise MissingInput("no kernel with an accuracy (needs a session with successful kernels of an accuracy "
                           "target, or a reevaluation JSON)")
    notes: list[str] = []
    models = list(pts)[:MAX_PANELS]
    if len(pts) > MAX_PANELS:
        notes.append(f"{len(pts) - MAX_PANELS} more model(s) left out")
    mrows = [r for r in inputs.bench if r.scope == "model" and r.ok]
    scen_by_model = {m: list(dict.fromkeys(r.scenario for r in mrows if r.model == m)) for m in models}
    scenarios = list(dict.fromkeys(s for m in models for s in scen_by_model[m]))
    if not scenarios:
        notes.append("no latency panels: no end-to-end bench rows for these models")
    n_rows = 1 + len(scenarios)
    fig = _new_figure(max(6.0, 3.6 * len(models)), 3.2 * n_rows + 0.4)
    axes = fig.subplots(n_rows, len(models), squeeze=False)
    tol = opts.pareto_acc_decrease
    titles = []
    for i, m in enumerate(models):
        P = pts[m]
        reev = any(p.reevaluated for p in P)
        dataset = next((p.dataset for p in P if p.dataset), None)
        b = inputs.baseline_for(m, dataset)
        if b is None and dataset is None:
            b = inputs.baseline_for(m)
        kept = [p for p in P if b is None or b.accuracy is None or p.accuracy >= b.accuracy - tol]
        if len(kept) < len(P):
            notes.append(f"{m}: {len(P) - len(kept)} kernel(s) below baseline − {100 * tol:g} pt not shown")
        empty = f"all {len(P)} kernel(s) below\nbaseline − {100 * tol:g} pt" if not kept else None
        if b is None:
            notes.append(f"{m}: no baseline{' for ' + dataset if dataset else ''}")
        titles.append(f"{m}" + (f" · {dataset}" if dataset else "") + (" (reevaluated)" if reev else " (search proxy)"))
        # row 0: MACs (relative to the baseline's, or to the original model's recorded by the session)
        ref = b.flops if (b is not None and b.flops) else next((p.ref_flops for p in P if p.ref_flops), None)
        rel = ref is not None and ref > 0
        xy = []
        for p in kept:
            if p.flops is not None:
                xy.append(((p.flops / ref) if rel else p.flops / 1e6, 100 * p.accuracy))
        base_xy = None
        if b is not None and b.accuracy is not None and rel:
            base_xy = (b.flops / ref if b.flops else 1.0, 100 * b.accuracy)
        _pareto_panel(axes[0, i], xy, base_xy, "MACs / sample (× baseline)" if rel else "MACs / sample (M)")
        axes[0, i].set_title(titles[-1], fontsize=10)
        if not xy:
            axes[0, i].text(0.5, 0.5, empty or "no MACs recorded", ha="center", va="center",
                            transform=axes[0, i].transAxes, color="gray")
        # latency rows
        for j, sc in enumerate(scenarios, start=1):
            ax = axes[j, i]
            rows = [r for r in mrows if r.model == m and r.scenario == sc]
            base_row = next((r for r in rows if r.is_baseline), None)
            lat_xy = []
            for p in kept:
                r = next((r for r in rows if not r.is_baseline and ((p.hash and r.op_hash == p.hash) or
                                                                      r.variant == p.name)), None)
                if r is not None:
                    lat_xy.append((r.median_ms, 100 * p.accuracy))
            bxy = (base_row.median_ms, 100 * b.accuracy) if (base_row and b and b.accuracy is not None) else None
            _pareto_panel(ax, lat_xy, bxy, f"latency (ms) · {sc}")
            if not lat_xy:
                ax.text(0.5, 0.5, empty or "no benched kernel", ha="center", va="center", transform=ax.transAxes,
                        color="gray")
    for a in axes[:, 0]:
        a.set_ylabel("top-1 accuracy (%)")
    fig.suptitle("Accuracy vs cost: Pareto front of the kernels (hollow: baseline)")
    return fig, notes


def _pareto_panel(ax, xy, base_xy, xlabel: str) -> None:
    if xy:
        ax.scatter([p[0] for p in xy], [p[1] for p in xy], s=16, color="#9ecae1", edgecolor="none", label="kernels")
        front = _pareto(xy)
        ax.plot([p[0] for p in front], [p[1] for p in front], "-o", color="#08519c", ms=4, lw=1.4,
                label="Pareto front")
        if base_xy is not None:
            top = max(front, key=lambda p: p[1])
            ax.plot([top[0], base_xy[0]], [top[1], base_xy[1]], "--", color="gray", lw=1)
    if base_xy is not None:
        ax.scatter([base_xy[0]], [base_xy[1]], s=60, facecolor="none", edgecolor="black", linewidth=1.5,
                   label="baseline", zorder=5)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.grid(alpha=0.3)
    if xy or base_xy:
        ax.legend(fontsize=7, loc="lower right")


# ----------------------------------------------------------------------------------- 3. case study
def _match_operator(rows: Sequence[BenchCsvRow], inputs: Inputs, name: str) -> list[BenchCsvRow]:
    """Rows of operator ``name``: by label (``name`` or ``name[impl]``) or by the hand-built operator's hash."""
    h = _hand_built_hash(name)
    return [r for r in rows if not r.is_baseline and (r.variant == name or r.variant.startswith(name + "[") or
                                                      (h and r.op_hash == h))]


def fig_case_study(inputs: Inputs, opts: PlotOptions | None = None) -> tuple[Figure, list[str]]:
    opts = opts or PlotOptions()
    op_name = opts.case_operator
    pretty = _pretty_operator(op_name)
    layer_rows = [r for r in inputs.bench if r.scope == "layer"]
    op_rows = [r for r in _match_operator(layer_rows, inputs, op_name) if r.ok]
    quant = [q for q in inputs.quantize if any(v.get("fp32_ms") for v in q.variants.values())][:3]
    if not op_rows and not quant:
        why = "no layer-wise bench rows" if not layer_rows else f"no successful layer-wise bench rows of {op_name}"
        raise MissingInput(f"{why} (a `syno bench resnet18 --operator {op_name},{opts.compare_operator} --layers "
                           f"--out bench.csv` CSV) and no quantize.json (syno.post.quantize)")
    cmp_rows = [r for r in _match_operator(layer_rows, inputs, opts.compare_operator) if r.ok]
    notes: list[str] = []
    panels = list(dict.fromkeys((r.model, r.scenario) for r in op_rows))
    if len(panels) > 4:
        notes.append(f"{len(panels) - 4} more model/scenario panel(s) left out")
        panels = panels[:4]
    # End-to-end accuracy-vs-latency panel (the original's case study) when accuracies are known.
    e2e = _case_e2e(inputs, op_name, opts.compare_operator)
    if not op_rows:
        notes.append(f"no layer-wise bench rows of {op_name}")
    n = len(panels) + len(quant) + (1 if e2e else 0)
    fig = _new_figure(max(7.0, 6.0 * min(n, 2)), 4.2 * math.ceil(n / 2) + 0.3)
    axes = fig.subplots(math.ceil(n / 2), min(n, 2), squeeze=False).ravel()
    for a in axes[n:]:
        a.set_visible(False)
    for ax, (model, sc) in zip(axes, panels):
        rows = [r for r in layer_rows if r.model == model and r.scenario == sc and r.ok]
        base = {r.layer: r for r in rows if r.is_baseline}
        # one series per variant label: e.g. operator1[manual] and operator1[codegen] (same operator hash)
        series: list[tuple[str, dict, str]] = [("original conv", base, "#7f7f7f")]
        for rows_of, colors in ((op_rows, ["#d62728", "#ff7f0e", "#e377c2", "#8c564b"]),
                                (cmp_rows, ["#1f77b4", "#17becf", "#9467bd", "#2ca02c"])):
            mine_rows = [r for r in rows_of if r.model == model and r.scenario == sc]
            for i, v in enumerate(dict.fromkeys(r.variant for r in mine_rows)):
                series.append((_pretty_operator(v), {r.layer: r for r in mine_rows if r.variant == v},
                               colors[i % len(colors)]))
        n_op = len({r.variant for r in op_rows if r.model == model and r.scenario == sc})
        layers = [lay for lay in dict.fromkeys(r.layer for r in rows)
                  if lay in base and any(lay in d for _, d, _ in series[1:1 + n_op])]
        if not layers:
            ax.text(0.5, 0.5, "no baseline layer rows", ha="center", va="center", transform=ax.transAxes)
            continue
        series = [x for x in series if any(lay in x[1] for lay in layers)]
        w = 0.8 / len(series)
        for j, (label, d, col) in enumerate(series):
            xs = [i + (j - (len(series) - 1) / 2) * w for i, lay in enumerate(layers) if lay in d]
            ys = [d[lay].median_ms for lay in layers if lay in d]
            bars = ax.bar(xs, ys, width=w * 0.95, color=col, label=label)
            if 0 < j and (j <= n_op or len(series) <= 3):  # speedup labels (the case operator's when crowded)
                for b, lay in zip(bars, [lay for lay in layers if lay in d]):
                    s = base[lay].median_ms / d[lay].median_ms
                    ax.annotate(f"{s:.2f}×", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                                va="bottom", fontsize=6, xytext=(0, 2), textcoords="offset points", color=col)
        totals = []
        counts = {}
        for label, d, _ in series[1:1 + n_op]:
            if all(lay in d for lay in layers):
                tot_b = sum(base[lay].median_ms * d[lay].count for lay in layers)
                tot_k = sum(d[lay].median_ms * d[lay].count for lay in layers)
                totals.append(f"{label}: {tot_b / tot_k:.2f}×")
                counts = {lay: d[lay].count for lay in layers}
        n_ph = sum(counts.values())
        ax.set_xticks(range(len(layers)), [f"L{i + 1}: {lay}" + (f" ×{counts[lay]}" if lay in counts else "")
                                           for i, lay in enumerate(layers)],
                      fontsize=7, rotation=30, ha="right", rotation_mode="anchor")
        ax.set_ylabel("latency (ms)")
        tot = f"\n{', '.join(totals)} over {n_ph} placeholder(s)" if totals else ""
        ax.set_title(f"{model} · {sc}{tot}", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax, q in zip(axes[len(panels):], quant):
        _quantize_panel(ax, q)
    if e2e:
        ax = axes[len(panels) + len(quant)]
        pts, title = e2e
        for label, ms, acc, col, marker in pts:
            ax.scatter([ms], [100 * acc], s=70, color=col, marker=marker, label=label, zorder=3,
                       edgecolor="black", linewidth=0.5)
        ax.set_xlabel("end-to-end latency (ms)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    else:
        notes.append("no end-to-end latency-vs-accuracy panel: needs end-to-end rows and accuracies of "
                     f"{op_name} and the baseline")
    fig.suptitle(f"Case study: {pretty} vs the original convolution, per layer")
    return fig, notes


def _operator_label(name: str | None, op_hash: str | None) -> str:
    for hb in ("operator1", "stacked_conv"):
        if op_hash and op_hash == _hand_built_hash(hb):
            return _pretty_operator(hb)
    return _pretty_operator(name) if name else "operator"


def _quantize_panel(ax, q) -> None:
    """The original's case-study panel from ``quantize.json``: accuracy vs latency of the original
    model and the operator model, fp32 and int8, measured side by side."""
    base = (q.variants.get("original") or {}).get("fp32_ms")
    styles = {"original": ("original", "#7f7f7f"), "operator": (_operator_label(q.operator, q.operator_hash),
                                                                "#d62728")}
    for name, v in q.variants.items():
        label, col = styles.get(name, (name, "#1f77b4"))
        for prec, marker in (("fp32", "o"), ("int8", "D")):
            ms, acc = v.get(f"{prec}_ms"), v.get(f"{prec}_accuracy")
            if ms is None or acc is None:
                continue
            ax.scatter([ms], [100 * acc], s=70, marker=marker, color=col, edgecolor="black", linewidth=0.5,
                       label=f"{label} {'INT8' if prec == 'int8' else 'fp32'}", zorder=3)
            if base:
                ax.annotate(f"{base / ms:.2f}×", (ms, 100 * acc), fontsize=7, xytext=(5, 3),
                            textcoords="offset points")
    lat = q.latency or {}
    where = f"CPU, batch {lat.get('batch')}, {lat.get('threads')} thread(s)" if lat else "CPU"
    ax.set_title(f"{q.model} on {q.dataset}: fp32 vs int8 ({where})", fontsize=9)
    ax.set_xlabel("latency (ms), side by side")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _case_e2e(inputs: Inputs, op_name: str, cmp_name: str):
    """Points (label, ms, accuracy, color, marker) of baseline / case operator / comparison, per the first
    scenario where the case operator has an end-to-end row and an accuracy."""
    rows = [r for r in inputs.bench if r.scope == "model" and r.ok]
    for r in _match_operator(rows, inputs, op_name):
        acc, base_acc, k = _kernel_accuracy(inputs, r)
        if acc is None:
            continue
        base_row = next((b for b in rows if b.is_baseline and b.model == r.model and b.scenario == r.scenario), None)
        pts = []
        if base_row is not None and base_acc is not None:
            pts.append(("original", base_row.median_ms, base_acc, "#7f7f7f", "o"))
        pts.append((_pretty_operator(op_name), r.median_ms, acc, "#d62728", "*"))
        for c in _match_operator([x for x in rows if x.model == r.model and x.scenario == r.scenario], inputs,
                                 cmp_name):
            cacc, _, _ = _kernel_accuracy(inputs, c)
            if cacc is not None:
                pts.append((_pretty_operator(cmp_name), c.median_ms, cacc, "#1f77b4", "s"))
        return pts, f"{r.model} end to end · {r.scenario}"
    return None


# ---------------------------------------------------------------------------- 4. kernel performance
def fig_kernel_performance(inputs: Inputs, opts: PlotOptions | None = None) -> tuple[Figure, list[str]]:
    opts = opts or PlotOptions()
    rows = [r for r in inputs.bench if r.scope == "layer"]
    if not rows:
        raise MissingInput("no layer-wise bench rows (a `syno bench MODEL --operator ... --layers --out bench.csv` CSV)")
    sp = _speedups(rows)
    krows = [r for r in rows if id(r) in sp]
    if not krows:
        raise MissingInput("the layer-wise bench rows have no successful kernel measurement next to a baseline")
    notes: list[str] = []
    panels = list(dict.fromkeys((r.model, r.scenario) for r in krows))
    if len(panels) > 4:
        notes.append(f"{len(panels) - 4} more model/scenario panel(s) left out")
        panels = panels[:4]
    fig = _new_figure(11.0, 4.8 * len(panels) + 0.4)
    axes = fig.subplots(len(panels), 1, squeeze=False).ravel()
    for ax, (model, sc) in zip(axes, panels):
        pr = [r for r in krows if r.model == model and r.scenario == sc]
        layers = list(dict.fromkeys(r.layer for r in pr))
        by_var = group_by(pr, lambda r: r.variant)
        gm = {v: _geomean(sp[id(r)] for r in rs) or 0 for v, rs in by_var.items()}
        variants = sorted(by_var, key=lambda v: -gm[v])
        if len(variants) > MAX_VARIANTS:
            notes.append(f"{model} · {sc}: {len(variants) - MAX_VARIANTS} slower operator(s) left out")
            variants = variants[:MAX_VARIANTS]
        color = _colors(variants)
        w = 0.8 / len(variants)
        groups = layers + ["geomean"]
        for j, v in enumerate(variants):
            d = {r.layer: sp[id(r)] for r in by_var[v]}
            xs = [i + (j - (len(variants) - 1) / 2) * w for i, lay in enumerate(layers) if lay in d]
            ys = [d[lay] for lay in layers if lay in d]
            xs.append(len(layers) + (j - (len(variants) - 1) / 2) * w)
            ys.append(gm[v])
            label = _pretty_operator(v) if not v[:5].isdigit() else _short(v, 16)
            ax.bar(xs, ys, width=w * 0.95, color=color[v], label=f"{label} (geomean {gm[v]:.2f}×)")
        ax.axhline(1.0, color="black", lw=0.8, ls="--")
        counts = {r.layer: r.count for r in pr}
        ax.set_xticks(range(len(groups)), [f"L{i + 1}: {lay} ×{counts[lay]}" for i, lay in enumerate(layers)] +
                      ["geomean"], fontsize=7, rotation=30, ha="right", rotation_mode="anchor")
        ax.set_ylabel("speedup over original layer")
        ax.set_title(f"{model} · {sc}", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Kernel performance: per-layer latency ratio (original / operator)")
    return fig, notes


# ------------------------------------------------------------------------------------ 5. GPT-2 loss
def smooth_losses(losses: Sequence[float], steps: Sequence[float] | None = None, *, drop: int | None = None,
                  window: int | None = None) -> tuple[list[float], list[float]]:
    """The original's processing (drop the first 1000 points, 50-point moving average), scaled down for
    short logs: drop ``min(1000, n // 10)`` points and average over ``min(50, max(1, n // 20))``.
    Returns (steps, smoothed losses); steps default to the entry index."""
    n = len(losses)
    drop = min(1000, n // 10) if drop is None else drop
    window = min(50, max(1, n // 20)) if window is None else window
    xs = list(steps) if steps is not None else list(range(1, n + 1))
    ys = list(losses)[drop:]
    xs = xs[drop:]
    if window > 1 and len(ys) >= window:
        acc = [0.0]
        for y in ys:
            acc.append(acc[-1] + y)
        ys = [(acc[i + window] - acc[i]) / window for i in range(len(ys) - window + 1)]
        xs = xs[window - 1:]
    return xs, ys


def fig_gpt_loss(inputs: Inputs, opts: PlotOptions | None = None) -> tuple[Figure, list[str]]:
    curves = [c for c in inputs.loss_curves if len(c.losses) >= 2]
    if not curves:
        raise MissingInput("no LM loss log (metrics.jsonl of an LM training, an LM baseline.json with history, "
                           "or the original's loss.log)")
    notes = []
    if not any(c.role == "baseline" for c in curves):
        notes.append("no baseline curve")
    if not any(c.role == "kernel" for c in curves):
        notes.append("no kernel curve")
    curves = sorted(curves, key=lambda c: (c.role != "baseline", c.label))
    if len(curves) > MAX_VARIANTS + 1:
        notes.append(f"{len(curves) - MAX_VARIANTS - 1} more curve(s) left out")
        curves = curves[:MAX_VARIANTS + 1]
    fig = _new_figure(11.0, 4.2)
    ax, bx = fig.subplots(1, 2, width_ratios=[2.2, 1])
    finals = []
    kcolors = iter(PALETTE[1:] * 3)
    for c in curves:
        xs, ys = smooth_losses(c.losses, c.steps)
        if not ys:
            continue
        ppl = [math.exp(min(y, 50.0)) for y in ys]
        col = "black" if c.role == "baseline" else next(kcolors)
        label = f"{c.label} (baseline)" if c.role == "baseline" and "baseline" not in c.label else c.label
        ax.plot(xs, ppl, color=col, lw=1.3, label=label)
        finals.append((label, ppl[-1], col))
    ax.set_yscale("log")
    ax.set_xlabel("steps" if all(c.steps for c in curves) else "log entry")
    ax.set_ylabel("perplexity (smoothed training loss)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title("Language-model training: perplexity")
    bx.barh(range(len(finals)), [f[1] for f in finals], color=[f[2] for f in finals])
    bx.set_yticks(range(len(finals)), [_short(f[0], 22) for f in finals], fontsize=7)
    bx.invert_yaxis()
    for i, f in enumerate(finals):
        bx.annotate(f"{f[1]:.1f}", (f[1], i), va="center", fontsize=7, xytext=(2, 0), textcoords="offset points")
    bx.set_xlabel("final perplexity")
    bx.set_title("at the end of the log", fontsize=9)
    return fig, notes


# ------------------------------------------------------------------------------ search progress
def _session_panels(items: list, height: float) -> tuple[Figure, list, list, list[str]]:
    """One panel per session, side by side, at most MAX_PANELS: ``(fig, axes, items kept, notes)``."""
    notes = []
    if len(items) > MAX_PANELS:
        notes.append(f"{len(items) - MAX_PANELS} more session(s) left out")
        items = items[:MAX_PANELS]
    fig = _new_figure(max(6.0, 4.6 * len(items)), height)
    axes = fig.subplots(1, len(items), squeeze=False).ravel()
    return fig, axes, items, notes


def fig_search_progress(inputs: Inputs, opts: PlotOptions | None = None) -> tuple[Figure, list[str]]:
    sessions = [s for s in inputs.sessions if s.kernels]
    if not sessions:
        raise MissingInput("no session with evaluated kernels")
    fig, axes, sessions, notes = _session_panels(sessions, 3.8)
    for ax, s in zip(axes, sessions):
        loss = s.target == "loss"
        use_time = all(k.time is not None for k in s.kernels)
        ks = s.kernels
        xs_ok, ys_ok, xs_bad = [], [], []
        best_x, best_y = [], []
        best = None
        for i, k in enumerate(ks):
            x = k.time if use_time else i + 1
            v = s.metric(k)
            if k.ok and v is not None:
                y = v if loss else 100 * v
                xs_ok.append(x)
                ys_ok.append(y)
                if best is None or (y < best if loss else y > best):
                    best = y
            else:
                xs_bad.append(x)
            if best is not None:
                best_x.append(x)
                best_y.append(best)
        ax.scatter(xs_ok, ys_ok, s=14, color="#1f77b4", alpha=0.7, label=f"evaluated ({len(xs_ok)})")
        if best_x:
            ax.step(best_x, best_y, where="post", color="#d62728", lw=1.4, label="best so far")
        if xs_bad:  # on the bottom edge of the axes
            ax.scatter(xs_bad, [0.03] * len(xs_bad), marker="x", color="gray", s=18, label=f"failed ({len(xs_bad)})",
                       transform=ax.get_xaxis_transform(), clip_on=False)
        b = inputs.baseline_for(s.model, s.dataset, metric="loss" if loss else "accuracy")
        if b is not None:
            bv = b.loss if loss else 100 * b.accuracy
            ax.axhline(bv, color="black", ls="--", lw=0.9, label=f"baseline {bv:.2f}")
        ax.set_xlabel("search time (s)" if use_time else "evaluation")
        ax.set_ylabel("proxy loss" if loss else "proxy accuracy (%)")
        title = s.name + (f" · {s.model}" if s.model else "") + (f" · {s.dataset}" if s.dataset else "")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Search progress")
    return fig, notes


# ----------------------------------------------------------------------------------------- driver
from .latency import fig_search_latency  # noqa: E402 - accuracy vs measured latency (issue 16)

FIGURES: dict[str, tuple[str, Callable[[Inputs, PlotOptions], tuple[Figure, list[str]]]]] = {
    "end-to-end-performance": ("End-to-end performance (speedup vs accuracy)", fig_end_to_end),
    "accuracy-performance": ("Accuracy vs MACs / latency (Pareto front)", fig_imagenet_performance),
    "case-study": ("Case study: Operator 1 vs convolution per layer", fig_case_study),
    "kernel-performance": ("Kernel performance: per-layer speedups", fig_kernel_performance),
    "gpt-loss": ("Language-model loss curves", fig_gpt_loss),
    "search-progress": ("Search progress", fig_search_progress),
    "search-latency": ("Accuracy vs measured latency (search)", fig_search_latency),
}


def draw(name: str, inputs: Inputs, opts: PlotOptions | None = None, out_dir: str | Path | None = None,
         keep_png: bool = False) -> FigureResult:
    """Draw one figure; writes ``out_dir/<name>.<fmt>`` for each format when ``out_dir`` is given."""
    opts = opts or PlotOptions()
    name = ALIASES.get(name, name)
    title, fn = FIGURES[name]
    res = FigureResult(name=name, title=title)
    fig = None
    try:
        fig, res.notes = fn(inputs, opts)
        if out_dir is not None:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            for fmt in opts.formats:
                p = out / f"{name}.{fmt}"
                fig.savefig(p, dpi=opts.dpi, format=fmt)
                res.files.append(p)
        if keep_png:
            import io

            buf = io.BytesIO()
            fig.savefig(buf, dpi=opts.dpi, format="png")
            res.png = buf.getvalue()
    except MissingInput as exc:
        res.missing = str(exc)
    except Exception as exc:  # noqa: BLE001 - a drawing bug must not lose the other figures
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        res.missing = f"failed to draw ({type(exc).__name__}: {exc} at {Path(tb.filename).name}:{tb.lineno})"
    finally:
        if fig is not None:
            plt.close(fig)
    return res


# Former names, still accepted by ``only``. The Pareto figure was "imagenet-performance" after the
# original's file, but it plots whatever dataset the accuracies come from (digits in the demo).
ALIASES = {"imagenet-performance": "accuracy-performance"}


def plot_all(inputs: Inputs, out_dir: str | Path | None, opts: PlotOptions | None = None,
             only: Sequence[str] | None = None, keep_png: bool = False) -> list[FigureResult]:
    """Every figure (or those in ``only``); see :func:`draw`."""
    names = list(FIGURES) if not only else [ALIASES.get(n, n) for n in only]
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; choose from {list(FIGURES)}")
    return [draw(n, inputs, opts, out_dir, keep_png=keep_png) for n in names]
