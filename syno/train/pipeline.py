"""One kernel-evaluation pipeline: data -> model with placeholders filled -> compile -> train -> result.

The search's proxy evaluation, ``reevaluate``, ``train-custom`` and ``baseline`` all go through these
functions, so the dataset keyword rules (image size), the model construction (same initial weights
for every kernel), the operator tuning step and the trainer choice exist once.

Before training, :func:`compile_for_training` runs the codegen registry's explicit tuning step
(:func:`syno.codegen.registry.compile_model`) on the generated operator modules under the settings
the trainer will use (device, TF32 flags, AMP autocast dtype, channels_last, forward+backward, the
training batch size), so the modules' ``forward`` never tunes during training.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .classifier import train_classifier
from .lm import train_lm
from .options import LMTrainOptions, TrainResult, VisionTrainOptions

__all__ = ["dataset_kwargs", "load_task_data", "build_task_model", "compile_for_training", "train_task_model",
           "count_macs"]


def dataset_kwargs(dataset: str, image_size: int | None = None, **kw: Any) -> dict[str, Any]:
    """Loader keywords for ``dataset`` at ``image_size`` (None: the dataset's own size): digits and
    ImageNet are rendered at that size, CIFAR-100 (32 px) is resized per batch (e.g. to 224 as the
    original did); an ImageNet loader gets no more workers than CPUs. Explicit ``kw`` win."""
    kw = dict(kw)
    if dataset == "imagenet":
        kw.setdefault("num_workers", min(4, os.cpu_count() or 1))
    if image_size is not None:
        if dataset in ("digits", "imagenet"):
            kw.setdefault("image_size", image_size)
        elif dataset == "cifar100" and image_size != 32:
            kw.setdefault("resize", image_size)
    return kw


def load_task_data(dataset: str, data_dir: str | Path | None = None, image_size: int | None = None, **kw: Any):
    """The dataset (see :func:`dataset_kwargs`); a missing dataset raises
    :class:`~syno.data.DatasetNotFoundError` naming the directory."""
    from syno.data import load_dataset

    return load_dataset(dataset, data_dir, **dataset_kwargs(dataset, image_size, **kw))


def build_task_model(model_name: str, data, op=None, *, seed: int = 42, model_kwargs: dict[str, Any] | None = None,
                     factory: Callable[[Any], Callable] | None = None) -> tuple[nn.Module, list[nn.Module]]:
    """The zoo model shaped for ``data`` with every placeholder filled by ``op`` (``None``: the vanilla
    model, whose stride-2 convolutions stay convolutions). Returns the model and the filled modules.

    ``factory`` maps an operator to a ``mapping -> nn.Module`` factory (default
    :func:`syno.codegen.torch.operator_factory`). Weights outside the kernels are initialized after
    ``torch.manual_seed(seed)``, so every kernel starts from the same model."""
    from syno.models import build_model, fill_placeholders

    kwargs = dict(model_kwargs or {})
    torch.manual_seed(seed)
    ph = op is not None
    if model_name == "gpt2":
        kwargs.setdefault("vocab_size", getattr(data, "vocab_size", 50257))
        model = build_model("gpt2", mapping_batch=1, placeholders=ph, **kwargs)
    else:
        model = build_model(model_name, num_classes=data.num_classes, image_size=data.image_size,
                            in_channels=data.in_channels, mapping_batch=1, placeholders=ph, **kwargs)
    modules: list[nn.Module] = []
    if op is not None:
        if factory is None:
            from syno.codegen.torch import operator_factory as factory
        modules = fill_placeholders(model, factory(op))
    return model, modules


def _example_batch(model: nn.Module, data, options, device: torch.device) -> torch.Tensor:
    """A random batch shaped like the trainer's (training batch size; token ids for an LM), from its
    own generator so the global RNG the trainer seeds is untouched."""
    g = torch.Generator().manual_seed(0)
    spec = getattr(model, "input_spec", None)
    if isinstance(options, LMTrainOptions):
        vocab = getattr(data, "vocab_size", None) or getattr(getattr(model, "config", None), "vocab_size", 2)
        seq_len = options.seq_len or (spec[0][0] if spec is not None else None)
        if seq_len is None:
            raise ValueError("no seq_len: set LMTrainOptions.seq_len (the model has no config.seq_len)")
        return torch.randint(0, int(vocab), (options.batch_size, int(seq_len)), generator=g).to(device)
    shape = tuple(spec[0]) if spec is not None else (data.in_channels, data.image_size, data.image_size)
    return torch.randn((options.batch_size, *shape), generator=g).to(device)


#: seconds of Triton tile tuning per distinct (operator, input shape) in :func:`compile_for_training`
#: (the tile and choice caches make a repeat free); a search trains many short proxies, so this is
#: kept well under the registry's 120 s default
TUNE_BUDGET_S = 30.0


def compile_for_training(model: nn.Module, data, options: VisionTrainOptions | LMTrainOptions, *,
                         budget_s: float = TUNE_BUDGET_S) -> list:
    """The registry's tuning step (:func:`~syno.codegen.registry.compile_model`) for ``model``'s
    generated operator modules, under what the trainer will run: ``options``' device (moved there,
    channels_last parameters and input where the trainer uses them, TF32 flags as the trainer sets
    them), AMP autocast dtype, forward+backward, the training batch size. Returns the
    :class:`~syno.codegen.registry.CompiledOperator` list ([] for a model without generated modules:
    nothing is moved or run then)."""
    from syno.codegen.registry import compile_model
    from syno.codegen.torch import SynoModule

    from .common import amp_context, amp_enabled, resolve_device, setup_backends, to_channels_last

    if not any(isinstance(m, SynoModule) for m in model.modules()):
        return []
    device = resolve_device(options.device)
    setup_backends(device)
    model.to(device)
    x = _example_batch(model, data, options, device)
    if isinstance(options, VisionTrainOptions):
        channels_last = options.channels_last if options.channels_last is not None else device.type == "cuda"
        if channels_last:
            to_channels_last(model)
            x = x.contiguous(memory_format=torch.channels_last)
    with amp_context(amp_enabled(options.amp, device), device, options.amp_dtype):
        return compile_model(model, x, backward=True, budget_s=budget_s)


def train_task_model(model: nn.Module, data, options: VisionTrainOptions | LMTrainOptions, *,
                     checkpoint: str | Path | None = None, checkpoint_every: int | None = None,
                     tta_flip: bool = False, metric: str = "best") -> TrainResult:
    """Compile the generated operators (:func:`compile_for_training`), then train with the trainer of
    the task (LM options: :func:`~syno.train.lm.train_lm`, else
    :func:`~syno.train.classifier.train_classifier`), optionally checkpointed and resumable. A
    failing tuning step is an ``error`` result when ``options.catch_errors`` (as a failing training)."""
    if isinstance(options, LMTrainOptions) and options.seq_len is None:
        seq_len = getattr(getattr(model, "config", None), "seq_len", None)
        options = options.model_copy(update={"seq_len": seq_len})
    try:
        compile_for_training(model, data, options)
    except Exception as exc:  # noqa: BLE001 - judged like a training error
        if not options.catch_errors:
            raise
        from .common import error_reason

        return TrainResult(status="error", reason="operator tuning failed: " + error_reason(exc))
    if isinstance(options, LMTrainOptions):
        return train_lm(model, data, options, checkpoint=checkpoint, checkpoint_every=checkpoint_every or 500)
    return train_classifier(model, data, options, checkpoint=checkpoint, checkpoint_every=checkpoint_every or 1,
                            tta_flip=tta_flip, metric=metric)


def count_macs(model: nn.Module) -> tuple[int | None, int]:
    """(MACs per sample, parameters) of ``model``; MACs None when it cannot be profiled."""
    from syno.models import profile, sample_input

    params = sum(p.numel() for p in model.parameters())
    try:
        return profile(model, sample_input(model, 1, device="meta")).macs, params
    except Exception:  # noqa: BLE001 - a module without meta support: count on a real sample
        try:
            return profile(model, sample_input(model, 1)).macs, params
        except Exception:  # noqa: BLE001
            return None, params
