"""syno.post: what happens after a search.

* :func:`select_kernels` — cherry-pick the most accurate kernels in a FLOPs window without duplicates
  (:func:`compare`: hash, interface, mutual-fit probe) -> ``selected.json``;
* :func:`reevaluate` — retrain chosen kernels on the full task with per-kernel checkpoints and resume
  -> ``reeval.json`` per kernel, ``reeval-<dataset>.{json,csv}``;
* :func:`train_custom` — the paper's hand-written kernels (Operator 1, stacked conv) as kernel dirs;
* :func:`quantize_experiment` / :func:`quantize_fx` / :func:`compare_latency` — int8 post-training
  quantization with and without an operator, accuracy and side-by-side CPU latency.

Kernel directories are read with :mod:`syno.session`; models are built and trained by
:mod:`syno.train.pipeline` (one trainer per task, checkpointed). See docs/post.md. Heavy submodules
are imported lazily.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "select_kernels": "select", "session_baseline_flops": "select", "load_selection": "select",
    "ProbeConfig": "equivalence", "Equivalence": "equivalence", "compare": "equivalence",
    "probe_mapping": "equivalence", "fit_error": "equivalence",
    "write_kernel_dir": "session",
    "reevaluate": "reevaluate", "recipe": "reevaluate", "train_operator": "reevaluate", "pick_kernels": "reevaluate",
    "train_custom": "custom", "CUSTOM_KERNELS": "custom", "custom_operator": "custom",
    "quantize_experiment": "quantize", "quantize_fx": "quantize", "compare_latency": "quantize",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'syno.post' has no attribute {name!r}")
    return getattr(import_module(f"syno.post.{mod}"), name)
