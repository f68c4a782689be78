"""syno.bench: end-to-end and layer-wise latency, Inductor tuning, optional TVM.

Python API::

    from syno.bench import BenchOptions, bench_model, resolve_operator, write_csv, print_tables
    rows = bench_model("resnet18", [resolve_operator("operator1")],
                       BenchOptions(device="cuda", batches=(1, 128), backends=("eager", "inductor")))
    write_csv(rows, "bench.csv"); print_tables(rows)

Names are imported lazily (so ``syno --help`` does not import torch). See docs/bench.md.
"""

from __future__ import annotations

from syno._lazy import lazy_exports

_EXPORTS = {
    "core": ["BACKENDS", "BenchOptions", "BenchRow", "bench_layers", "bench_model", "build_baseline",
             "build_substituted", "example_input", "layer_sites", "LayerSite"],
    "manual": ["MANUAL_FACTORIES", "Operator1", "StackedConv", "conv2d_module", "manual_factory"],
    "operators": ["BASELINE", "OperatorSpec", "find_kernels", "resolve_operator"],
    "report": ["print_tables", "read_csv", "render_tables", "write_csv"],
    "timing": ["Timing", "TimingOptions", "device_name", "measure"],
    "tune": ["CompileConfig", "TuneCache", "TuneResult", "compile_module", "default_grid", "parse_grid", "tune_inductor"],
    "tvm_backend": ["compile_tvm", "tvm_available"],
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), _EXPORTS)
