"""Baselines: train an unmodified zoo model on a dataset and record accuracy/loss, MACs, params, time."""

from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..data import DATASET_NAMES
from ..models import MODEL_NAMES, profile, sample_input
from .common import resolve_device
from .metrics import write_json
from .options import LMTrainOptions, VisionTrainOptions
from .pipeline import build_task_model, load_task_data, train_task_model

__all__ = ["run_baseline"]


def run_baseline(model_name: str, dataset_name: str, out_dir: str | Path,
                 options: VisionTrainOptions | LMTrainOptions | None = None, *, data_dir: str | Path | None = None,
                 image_size: int | None = None, model_kwargs: dict[str, Any] | None = None,
                 dataset_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the vanilla model (no placeholders) and write ``out_dir/baseline.json``; returns its content.

    Datasets: ``digits`` (embedded), ``cifar100``, ``imagenet`` (with a vision model), ``lm1b``
    (with ``gpt2``). ``image_size`` other than the dataset's native size resizes every batch (e.g.
    224 for the original's CIFAR setting) and selects the model stem accordingly. ``flops`` is MACs
    per sample (:mod:`syno.models.profile`). The model is initialized after ``torch.manual_seed(seed)``.
    The per-epoch history also goes to ``out_dir/metrics.jsonl`` unless ``options.log_path`` is set.
    """
    if model_name not in MODEL_NAMES:
        raise ValueError(f"unknown model {model_name!r}; choose from {list(MODEL_NAMES)}")
    if dataset_name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {dataset_name!r}; choose from {list(DATASET_NAMES)}")
    is_lm = dataset_name == "lm1b"
    if is_lm != (model_name == "gpt2"):
        raise ValueError(f"model {model_name!r} cannot train on {dataset_name!r}: gpt2 goes with lm1b, "
                         "vision models with digits/cifar100/imagenet")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_kwargs = dict(model_kwargs or {})
    dataset_kwargs = dict(dataset_kwargs or {})
    if options is None:
        options = LMTrainOptions() if is_lm else VisionTrainOptions()
    if is_lm != isinstance(options, LMTrainOptions):
        raise TypeError(f"{type(options).__name__} does not fit dataset {dataset_name!r}")
    if options.log_path is None:
        options = options.model_copy(update={"log_path": str(out / "metrics.jsonl")})
        (out / "metrics.jsonl").unlink(missing_ok=True)

    data = load_task_data(dataset_name, data_dir, None if is_lm else image_size, **dataset_kwargs)
    if is_lm:
        seq_len = options.seq_len or model_kwargs.get("seq_len", 2048)
        model_kwargs.update(vocab_size=data.vocab_size, seq_len=seq_len)
        options = options.model_copy(update={"seq_len": seq_len})
    model, _ = build_task_model(model_name, data, None, seed=options.seed, model_kwargs=model_kwargs)

    prof = profile(model, sample_input(model, 1, device="meta"))
    result = train_task_model(model, data, options)
    metric = {"loss": result.loss} if is_lm else {"accuracy": result.accuracy}
    record: dict[str, Any] = {
        "model": model_name,
        "dataset": dataset_name,
        **metric,
        "flops": prof.macs,
        "params": prof.params,
        "time_s": result.wall_time_s,
        "status": result.status,
        "reason": result.reason,
        "final_loss": result.loss,
        "epochs": result.epochs,
        "steps": result.steps,
        "image_size": None if is_lm else data.image_size,
        "num_classes": None if is_lm else data.num_classes,
        "model_kwargs": model_kwargs,
        "options": options.model_dump(mode="json"),
        "history": result.history,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"syno": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "device": str(resolve_device(options.device)),
    }
    write_json(out / "baseline.json", record)
    return record
