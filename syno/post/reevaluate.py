"""Retrain chosen kernels on the full task (ImageNet, CIFAR-100, digits, or GPT-2 on lm1b tokens).

For each kernel directory: rebuild the zoo model for the dataset, fill every placeholder with the
kernel's operator (loaded from its serialized IR, built by :func:`syno.codegen.torch.operator_factory`),
train with the dataset's recipe (:func:`recipe`), and write ``reeval.json`` into the kernel's
output directory. Training state is checkpointed (``reeval-<dataset>/checkpoint.pt``) so a killed
run continues with ``resume=True``; kernels already done for the dataset are skipped. A summary
``reeval-<dataset>.json`` (+ ``.csv``) lists every kernel.

``reeval.json`` holds ``{"kernels": [entry, ...]}``, one entry per dataset, each with ``name``,
``hash``, ``model``, ``dataset``, ``status``, ``accuracy`` (the recipe's metric: final-epoch for
ImageNet, best epoch otherwise), ``best_accuracy``, ``final_accuracy``, ``loss``, ``flops``,
``params``, ``search_accuracy``, ``epochs``/``steps``, ``wall_time_s`` and the options used.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from syno.ir.graph import Operator
from syno.session import (KernelDir, SessionError, read_json, read_kernel_dir, read_session_info, scan_kernel_dirs,
                          session_target, write_json_atomic)
from syno.train.options import LMTrainOptions, TrainResult, VisionTrainOptions
from syno.train.pipeline import build_task_model, count_macs, load_task_data, train_task_model

from .select import SELECTED_FILE, load_selection

__all__ = ["DATASETS", "recipe", "reevaluate", "train_operator", "pick_kernels", "REEVAL_FILE"]

DATASETS = ("imagenet", "cifar100", "digits", "lm1b")
REEVAL_FILE = "reeval.json"


def recipe(dataset: str, **overrides: Any) -> tuple[VisionTrainOptions | LMTrainOptions, dict[str, Any]]:
    """Training options and evaluation settings of a full-task reevaluation.

    * ``imagenet``: the original's recipe (reference §2.3): 90 epochs, batch 1024, SGD 0.9, linear
      warm-up to lr 0.5 at epoch 2 then linear to 0, wd 5e-5, label smoothing 0.1, fp16 AMP, clip 1,
      channels_last; metric = top-1 after the **final** epoch with horizontal-flip TTA.
    * ``cifar100``: the search proxy's recipe (§2.1) for the full 100 epochs without the 60 s epoch
      cutoff; metric = best epoch.
    * ``digits``: 15 epochs, batch 64, lr 0.05 (CPU-sized); metric = best epoch.
    * ``lm1b``: GPT-2, 100,000 AdamW steps at 3e-4, max-loss check 10, no time limit (§2.4), the loss
      logged every 10 s as in the search; metric = mean of the last 20% of the logged training losses
      (+ validation loss if available).

    ``overrides`` replace option fields (``epochs``, ``batch_size``, ``lr``, ``max_iters``,
    ``device``, ``time_budget_s``...).
    """
    if dataset == "imagenet":
        # AMP (fp16 + GradScaler) and channels_last as in the original on CUDA; left to the device
        # (None = on for CUDA only) so the same recipe also runs, slowly, on a CPU
        opts: VisionTrainOptions | LMTrainOptions = VisionTrainOptions.imagenet(progress=True, amp=None,
                                                                                 channels_last=None)
        extra = {"metric": "final", "tta_flip": True}
    elif dataset == "cifar100":
        opts = VisionTrainOptions(epoch_time_limit_s=None)
        extra = {"metric": "best", "tta_flip": False}
    elif dataset == "digits":
        opts = VisionTrainOptions(epochs=15, batch_size=64, lr=0.05, epoch_time_limit_s=None)
        extra = {"metric": "best", "tta_flip": False}
    elif dataset == "lm1b":
        opts = LMTrainOptions(max_iters=100_000, max_loss=10.0, time_budget_s=None, eval_batches=20)
        extra = {"metric": "tail-loss"}
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {list(DATASETS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    if given:
        opts = opts.model_copy(update=given)
        opts = type(opts).model_validate(opts.model_dump())  # validate the overrides
    return opts, extra


def train_operator(op: Operator | None, model_name: str, dataset: str, data, work_dir: str | Path, *,
                   options: VisionTrainOptions | LMTrainOptions, extra: dict[str, Any], resume: bool = True,
                   model_kwargs: dict[str, Any] | None = None, factory=None,
                   checkpoint_every: int | None = None) -> tuple[TrainResult, dict[str, Any], nn.Module]:
    """Train ``model_name`` with ``op`` filled in on ``data``; checkpoint in ``work_dir``.

    Returns the training result, the entry fields (metric, counts) for ``reeval.json`` and the
    trained model."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "checkpoint.pt"
    if not resume:
        ckpt.unlink(missing_ok=True)
    model, _ = build_task_model(model_name, data, op, seed=options.seed, model_kwargs=model_kwargs, factory=factory)
    flops, params = count_macs(model)
    if dataset == "lm1b":
        seq_len = options.seq_len or getattr(model.config, "seq_len", None)
        options = options.model_copy(update={"seq_len": seq_len})
    tr = train_task_model(model, data, options, checkpoint=ckpt, checkpoint_every=checkpoint_every,
                          tta_flip=bool(extra.get("tta_flip")), metric=extra.get("metric", "best"))
    history = tr.history
    best = max((h["test_acc"] for h in history if h.get("test_acc") is not None), default=None)
    fields = {
        "status": tr.status, "reason": tr.reason,
        "accuracy": tr.accuracy, "best_accuracy": best, "final_accuracy": tr.final_accuracy,
        "loss": tr.loss, "val_loss": tr.val_loss, "flops": flops, "params": params,
        "epochs": tr.epochs, "steps": tr.steps, "wall_time_s": tr.wall_time_s, "metric": extra.get("metric"),
        "options": options.model_dump(), "history": history,
    }
    return tr, fields, model


def pick_kernels(session: str | Path | None = None, kernels: Sequence[str | Path] = (), top: int | None = None
                 ) -> list[KernelDir]:
    """Kernels to reevaluate: the given directories, else the session's ``selected.json`` (first
    ``top``), else the session's ``top`` best usable kernels (most accurate, or lowest loss for a
    loss-target session)."""
    if kernels:
        recs = [read_kernel_dir(k) for k in kernels]
    else:
        if session is None:
            raise ValueError("give a session or kernel directories")
        root = Path(session)
        if (root / SELECTED_FILE).is_file():
            recs = [read_kernel_dir(d if d.is_absolute() else root / d.name) for d in load_selection(root)]
        else:
            all_recs = scan_kernel_dirs(root, include_errors=False)
            recs = [r for r in all_recs if r.usable]
            if session_target(read_session_info(root)[0], all_recs) == "accuracy":
                recs.sort(key=lambda r: (-(r.accuracy if r.accuracy is not None else -1), r.name))
            else:
                recs.sort(key=lambda r: (r.loss if r.loss is not None else math.inf, r.name))
        if top is not None:
            recs = recs[:top]
    for r in recs:
        if not r.has_operator:
            raise ValueError(f"{r.dir}: no serialized operator (meta.json 'operator' or operator.json)")
    return recs


def _session_info(kernel_dir: Path) -> dict[str, Any]:
    data, _ = read_session_info(kernel_dir.parent)
    opts = data.get("options")
    return opts if isinstance(opts, dict) else {}


def _model_for(rec: KernelDir, model: str | None) -> str:
    if model:
        return model
    m = rec.model or _session_info(rec.dir).get("model")
    if not isinstance(m, str) or not m:
        raise ValueError(f"{rec.dir}: the kernel does not record its model; pass model= (--model)")
    return m


def read_entries(path: Path) -> list[dict[str, Any]]:
    try:
        data = read_json(path)
    except SessionError:
        return []
    items = data.get("kernels") if isinstance(data, dict) else None
    return [e for e in items if isinstance(e, dict)] if isinstance(items, list) else []


def upsert_entry(path: Path, entry: dict[str, Any]) -> None:
    """Put ``entry`` into ``path``'s ``kernels`` list, replacing the one for the same dataset."""
    entries = [e for e in read_entries(path) if e.get("dataset") != entry.get("dataset")]
    entries.append(entry)
    write_json_atomic(path, {"format": "syno.reeval/1", "kernels": entries})


SUMMARY_COLUMNS = ("name", "hash", "model", "dataset", "status", "accuracy", "best_accuracy", "final_accuracy",
                   "loss", "val_loss", "search_accuracy", "flops", "params", "epochs", "steps", "wall_time_s",
                   "out_dir")


def reevaluate(dataset: str, *, session: str | Path | None = None, kernels: Sequence[str | Path] = (),
               top: int | None = None, model: str | None = None, out: str | Path | None = None,
               data_dir: str | Path | None = None, image_size: int | None = None,
               model_kwargs: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
               resume: bool = False, data=None, factory=None, checkpoint_every: int | None = None,
               log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Reevaluate kernels on ``dataset``; returns (and writes) the summary.

    Results go into each kernel directory (``reeval.json``, ``reeval-<dataset>/``) or, with ``out``,
    into ``out/<kernel name>/`` (the session stays untouched). The summary goes to
    ``<out or session or the first kernel's parent>/reeval-<dataset>.{json,csv}``. With ``resume``
    kernels that already have an ``ok`` entry for ``dataset`` are skipped and interrupted ones
    continue from their checkpoint; without it every kernel is trained from scratch."""
    say = log or (lambda _m: None)
    recs = pick_kernels(session, kernels, top)
    if not recs:
        raise ValueError("no kernel to reevaluate")
    options, extra = recipe(dataset, **(overrides or {}))
    if data is None:
        data = load_task_data(dataset, data_dir, image_size)
    root = Path(out) if out is not None else (Path(session) if session is not None else recs[0].dir.parent)
    rows: list[dict[str, Any]] = []
    for i, rec in enumerate(recs, 1):
        kdir = (Path(out) / rec.name) if out is not None else rec.dir
        reeval_path = kdir / REEVAL_FILE
        done = [e for e in read_entries(reeval_path) if e.get("dataset") == dataset and e.get("status") == "ok"]
        if resume and done:
            say(f"[{i}/{len(recs)}] {rec.name}: already reevaluated on {dataset}, skipped")
            rows.append({**{k: done[-1].get(k) for k in SUMMARY_COLUMNS}, "out_dir": str(kdir)})
            continue
        op = rec.operator()
        model_name = _model_for(rec, model)
        kwargs = model_kwargs
        if kwargs is None:  # the search's model options (e.g. a smaller GPT), so the mappings match
            recorded = _session_info(rec.dir).get("model_kwargs")
            kwargs = dict(recorded) if isinstance(recorded, dict) and not model else None
        say(f"[{i}/{len(recs)}] {rec.name}: training {model_name} on {dataset}")
        t0 = time.time()
        try:
            _, fields, _ = train_operator(op, model_name, dataset, data, kdir / f"reeval-{dataset}", options=options,
                                        extra=extra, resume=resume, model_kwargs=kwargs, factory=factory,
                                        checkpoint_every=checkpoint_every)
        except Exception as exc:  # noqa: BLE001 - one broken kernel does not stop the others
            fields = {"status": "error", "reason": f"{type(exc).__name__}: {exc}", "accuracy": None,
                      "loss": None, "wall_time_s": time.time() - t0}
        entry = {"name": rec.name, "hash": op.hash, "operator_hash": op.hash, "source_dir": str(rec.dir),
                 "model": model_name, "dataset": dataset, "search_accuracy": rec.accuracy,
                 "search_loss": rec.loss, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields}
        upsert_entry(reeval_path, entry)
        say(f"[{i}/{len(recs)}] {rec.name}: {entry['status']} accuracy={entry.get('accuracy')} "
            f"loss={entry.get('loss')}")
        rows.append({**{k: entry.get(k) for k in SUMMARY_COLUMNS}, "out_dir": str(kdir)})
    summary = {"format": "syno.reeval-summary/1", "dataset": dataset, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
               "options": options.model_dump(), "kernels": rows}
    write_json_atomic(root / f"reeval-{dataset}.json", summary)
    with open(root / f"reeval-{dataset}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(SUMMARY_COLUMNS))
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in SUMMARY_COLUMNS})
    return summary
