"""syno.report: the five figures of the original artifact and a self-contained HTML report.

Python API::

    from syno.report import collect, plot_all, write_report, PlotOptions
    inputs = collect(["results/tiny-session", "bench.csv", "baseline/baseline.json"])
    for r in plot_all(inputs, "figures"):      # PNG + PDF per figure; never raises for missing data
        print(r.line())                         # one line per figure: its files, or what input is missing
    write_report("results/tiny-session", extra=["bench.csv"])   # -> results/tiny-session/report.html

matplotlib is imported only when a figure module is used. See docs/report.md.
"""

from __future__ import annotations

from syno._lazy import lazy_exports

_EXPORTS = {
    "inputs": ["collect", "load_session", "Inputs", "Session", "KernelDir", "Baseline", "BenchCsvRow", "ReevalEntry",
               "QuantizeResult", "LossCurve"],
    "figures": ["FIGURES", "FigureResult", "MissingInput", "PlotOptions", "draw", "plot_all", "smooth_losses",
                "fig_end_to_end", "fig_imagenet_performance", "fig_case_study", "fig_kernel_performance",
                "fig_gpt_loss", "fig_search_progress"],
    "html": ["write_report", "render_report", "render_dot_svg", "dot_available"],
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), _EXPORTS)
