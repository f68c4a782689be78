"""The paper's hand-written kernels (Operator 1, stacked conv) trained like any found kernel.

:func:`train_custom` builds the operator from :mod:`syno.ir.library`, trains the zoo model with it
in every placeholder on a dataset's reevaluation recipe (:func:`syno.post.reevaluate.recipe`), and
writes a kernel directory exactly like a search session's, ``<out>/<acc5>_<hash>/`` (meta.json with
the operator, operator.json, loop.txt, graph.dot, kernel_<j>.py), plus ``reeval.json`` so reports
pick it up with the reevaluated kernels. Training checkpoints live in ``<out>/.custom/<kernel>-<model>-
<dataset>/`` and a killed run continues with ``resume=True``; a finished one is not retrained.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

from syno.ir import library
from syno.ir.graph import Operator

from syno.session import SessionError, read_json, write_json_atomic
from syno.train.pipeline import load_task_data

from .reevaluate import REEVAL_FILE, recipe, train_operator, upsert_entry
from .session import write_kernel_dir

__all__ = ["CUSTOM_KERNELS", "custom_operator", "train_custom"]

#: Hand-written kernels of the paper (reference §4 item 6).
CUSTOM_KERNELS: dict[str, Callable[[], Operator]] = {
    "operator1": library.operator1,
    "stacked_conv": library.stacked_conv,
}


def custom_operator(name: str) -> Operator:
    if name not in CUSTOM_KERNELS:
        raise ValueError(f"unknown custom kernel {name!r}; choose from {sorted(CUSTOM_KERNELS)}")
    return CUSTOM_KERNELS[name]()


def train_custom(model: str, kernel: str, dataset: str, out: str | Path, *, data_dir: str | Path | None = None,
                 image_size: int | None = None, model_kwargs: dict[str, Any] | None = None,
                 overrides: dict[str, Any] | None = None, resume: bool = False, data=None, factory=None,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``model`` with the custom ``kernel`` on ``dataset``; returns the kernel dir's meta.json."""
    say = log or (lambda _m: None)
    op = custom_operator(kernel)
    out = Path(out)
    marker = out / ".custom" / f"{kernel}-{model}-{dataset}"
    done_path = marker / "done.json"
    if resume and done_path.is_file():
        done = read_json(done_path)
        d = Path(done["kernel_dir"])
        if (d / "meta.json").is_file():
            say(f"{kernel}: already trained ({d.name}), skipped")
            return read_json(d / "meta.json")
    options, extra = recipe(dataset, **(overrides or {}))
    if data is None:
        data = load_task_data(dataset, data_dir, image_size)
    say(f"{kernel}: training {model} on {dataset}")
    _, fields, _ = train_operator(op, model, dataset, data, marker, options=options, extra=extra, resume=resume,
                                model_kwargs=model_kwargs, factory=factory)
    from syno.models import build_model, model_mappings

    mappings = None
    try:
        probe = build_model(model, num_classes=data.num_classes, image_size=data.image_size,
                            in_channels=data.in_channels, mapping_batch=1, **(model_kwargs or {})) \
            if model != "gpt2" else None
        if probe is not None:
            uniq: list[dict[str, int]] = []
            for m in model_mappings(probe):
                if m not in uniq:
                    uniq.append(m)
            mappings = uniq
    except Exception:  # noqa: BLE001 - standalone modules are optional artefacts
        mappings = None
    accuracy = fields.get("accuracy")
    if dataset == "lm1b":
        accuracy = None
    meta = {"path": f"custom:{kernel}", "kernel": kernel, "model": model, "dataset": dataset,
            "status": fields["status"], "accuracy": accuracy, "loss": fields.get("loss"),
            "flops": fields.get("flops"), "params": fields.get("params"), "time": fields.get("wall_time_s"),
            "reason": fields.get("reason", ""), "custom": True,
            "result": {k: fields.get(k) for k in ("status", "accuracy", "best_accuracy", "final_accuracy", "loss",
                                                  "val_loss", "flops", "params", "epochs", "steps", "wall_time_s")},
            "history": fields.get("history", [])}
    if fields["status"] not in ("ok",):
        if fields["status"] == "timeout":
            say(f"{kernel}: stopped early ({fields.get('reason')}); run again with resume to continue")
            return meta
    if dataset == "lm1b":  # loss target: the directory name carries int(loss * 1000)
        loss = fields.get("loss")
        kdir = write_kernel_dir(out, op, meta, ok=loss is not None, target="loss",
                                loss=loss, mappings=mappings)
    else:
        kdir = write_kernel_dir(out, op, meta, ok=fields["status"] == "ok" and accuracy is not None,
                                accuracy=accuracy, mappings=mappings)
    entry = {"name": kdir.name, "hash": op.hash, "operator_hash": op.hash, "kernel": kernel, "model": model,
             "dataset": dataset, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields}
    upsert_entry(kdir / REEVAL_FILE, entry)
    write_json_atomic(done_path, {"kernel_dir": str(kdir)})
    for stale in out.iterdir():  # an earlier finished run of the same kernel with another accuracy
        if stale.is_dir() and stale != kdir and stale.name.endswith("_" + op.hash):
            try:
                m = read_json(stale / "meta.json")
            except SessionError:
                continue
            if m.get("custom") and m.get("model") == model and m.get("dataset") == dataset:
                shutil.rmtree(stale)
    say(f"{kernel}: {fields['status']} accuracy={accuracy} -> {kdir}")
    return read_json(kdir / "meta.json")
