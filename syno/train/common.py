"""Pieces shared by the trainers: device/AMP setup, parameter groups, progress bars, errors."""

from __future__ import annotations

import contextlib
import math
import traceback

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

__all__ = ["resolve_device", "amp_context", "decay_groups", "make_progress", "error_reason", "lr_at"]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def amp_enabled(amp: bool | None, device: torch.device) -> bool:
    return device.type == "cuda" if amp is None else bool(amp)


def amp_context(enabled: bool, device: torch.device, dtype: str):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))


def setup_backends(device: torch.device) -> None:
    if device.type == "cuda":  # the original trained in TF32 with cudnn.benchmark
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def to_channels_last(model: nn.Module) -> None:
    """channels_last for the 4-D parameters and buffers only: ``model.to(memory_format=...)`` fails on
    the 5-D (or 3-D) weights of generated operators. Only tensors in the default (contiguous) layout
    change: a weight the codegen registry packed for its kernel (``TritonImpl.pack``, run by the
    tuning step before the trainer) keeps that layout."""
    for m in model.modules():
        for _, p in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            if p is not None and p.dim() == 4 and p.is_contiguous():
                p.data = p.data.contiguous(memory_format=torch.channels_last)


def decay_groups(model: nn.Module, weight_decay: float, *, skip_embeddings: bool = False) -> list[dict]:
    """Two optimizer groups: weight decay on >= 2-D parameters, none on 1-D ones (biases, norms; timm's rule).
    With ``skip_embeddings`` the weights of ``nn.Embedding`` modules get no decay either."""
    no_decay_ids = set()
    if skip_embeddings:
        for m in model.modules():
            if isinstance(m, nn.Embedding):
                no_decay_ids.update(id(p) for p in m.parameters())
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or id(p) in no_decay_ids else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def lr_at(epoch_f: float, *, lr: float, min_lr: float, epochs: int, schedule: str, warmup_epochs: float) -> float:
    """Learning rate at fractional epoch ``epoch_f`` (0 = start of training)."""
    if warmup_epochs > 0 and epoch_f < warmup_epochs:
        return lr * epoch_f / warmup_epochs
    if schedule == "constant":
        return lr
    span = max(epochs - warmup_epochs, 1e-12)
    t = min(max((epoch_f - warmup_epochs) / span, 0.0), 1.0)
    if schedule == "cosine":
        return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * t))
    if schedule == "linear":
        return lr + (min_lr - lr) * t
    raise ValueError(f"unknown schedule {schedule!r}")


def optimizer_step(loss: torch.Tensor, model: nn.Module, optimizer: torch.optim.Optimizer,
                   scaler: "torch.amp.GradScaler | None", grad_clip: float | None) -> None:
    """One backward + update, shared by every trainer: fp16 loss scaling (unscaled before clipping, so
    the clip threshold means the same with and without AMP) and optional gradient-norm clipping."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def make_progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                    console=Console(stderr=True), disable=not enabled, transient=True)


def error_reason(exc: BaseException) -> str:
    tail = traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:]
    return f"{type(exc).__name__}: {exc}\n" + "".join(tail)
