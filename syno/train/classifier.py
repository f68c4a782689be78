"""Image-classifier proxy trainer (the original's CIFAR-100 search evaluator, reference §2.1-2.2)."""

from __future__ import annotations

import math
import time

import torch
from torch import nn
from torch.nn import functional as F

from ..data.common import ClassificationData
from .common import (to_channels_last, amp_context, amp_enabled, decay_groups, error_reason, lr_at, make_progress, resolve_device,
                     setup_backends)
from .metrics import append_jsonl
from .options import TrainResult, VisionTrainOptions

__all__ = ["train_classifier", "evaluate_classifier"]


@torch.no_grad()
def evaluate_classifier(model: nn.Module, data: ClassificationData, *, batch_size: int = 256,
                        device: torch.device | str = "cpu", amp: bool = False, amp_dtype: str = "bfloat16",
                        channels_last: bool = False) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy on the whole test split (no image dropped)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    try:
        for x, y in data.test_batches(batch_size, device=device):
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with amp_context(amp, device, amp_dtype):
                out = model(x)
            loss_sum += F.cross_entropy(out.float(), y, reduction="sum").double()
            correct += (out.argmax(1) == y).sum()
            seen += len(y)
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("empty test split")
    return loss_sum.item() / seen, correct.item() / seen


def train_classifier(model: nn.Module, data: ClassificationData,
                     options: VisionTrainOptions | None = None) -> TrainResult:
    """Train ``model`` on ``data`` and evaluate on its test split after every epoch.

    Returns a :class:`TrainResult` with ``accuracy`` = max test accuracy over epochs (the original's
    metric) and ``status``: ``ok``; ``pruned`` (a milestone's accuracy bound missed); ``timeout``
    (``time_budget_s`` spent, or an epoch (index >= 1) slower than ``epoch_time_limit_s``); ``nan``
    (non-finite training loss); ``error`` (an exception, with ``catch_errors``). The model is trained
    in place (moved to the device). ``torch.manual_seed(options.seed)`` is called first; data order and
    augmentation depend only on the seed and the epoch, so with the same initial weights a CPU run
    is reproducible.
    """
    opts = options or VisionTrainOptions()
    start = time.perf_counter()
    history: list[dict] = []
    status, reason = "ok", ""
    steps = epochs_done = 0
    best: float | None = None
    last_loss: float | None = None

    def elapsed() -> float:
        return time.perf_counter() - start

    try:
        device = resolve_device(opts.device)
        setup_backends(device)
        torch.manual_seed(opts.seed)
        use_amp = amp_enabled(opts.amp, device)
        channels_last = opts.channels_last if opts.channels_last is not None else device.type == "cuda"
        model.to(device)
        if channels_last:
            to_channels_last(model)
        run_model = torch.compile(model) if opts.compile else model
        optimizer = torch.optim.SGD(decay_groups(model, opts.weight_decay), lr=opts.lr, momentum=opts.momentum,
                                    nesterov=opts.nesterov and opts.momentum > 0)
        scaler = torch.amp.GradScaler(device.type) if use_amp and opts.amp_dtype == "float16" else None
        spe = data.num_train_batches(opts.batch_size, opts.drop_last)
        if opts.max_steps_per_epoch:
            spe = min(spe, opts.max_steps_per_epoch)
        if spe == 0:
            raise ValueError(f"{data.num_train} training samples make no batch of {opts.batch_size}")
        eval_bs = opts.eval_batch_size or opts.batch_size

        with make_progress(opts.progress) as progress:
            ep_task = progress.add_task("epochs", total=opts.epochs, info="")
            step_task = progress.add_task("train", total=spe, info="")
            for epoch in range(opts.epochs):
                if opts.time_budget_s is not None and elapsed() > opts.time_budget_s:
                    status, reason = "timeout", f"time budget {opts.time_budget_s}s spent after {epoch} epochs"
                    break
                model.train()
                progress.reset(step_task, total=spe)
                t0 = time.perf_counter()
                loss_sum = torch.zeros((), device=device, dtype=torch.float64)
                correct = torch.zeros((), device=device, dtype=torch.int64)
                seen = n_steps = 0
                lr = opts.lr
                stop = None
                batches = data.train_batches(opts.batch_size, seed=opts.seed, epoch=epoch, device=device,
                                             drop_last=opts.drop_last)
                for i, (x, y) in enumerate(batches):
                    if i >= spe:
                        break
                    lr = lr_at(epoch + i / spe, lr=opts.lr, min_lr=opts.min_lr, epochs=opts.epochs,
                               schedule=opts.schedule, warmup_epochs=opts.warmup_epochs)
                    for g in optimizer.param_groups:
                        g["lr"] = lr
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    with amp_context(use_amp, device, opts.amp_dtype):
                        out = run_model(x)
                    loss = F.cross_entropy(out.float(), y, label_smoothing=opts.label_smoothing)
                    optimizer.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.unscale_(optimizer)
                    else:
                        loss.backward()
                    if opts.grad_clip:
                        nn.utils.clip_grad_norm_(model.parameters(), opts.grad_clip)
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    loss_sum += loss.detach().double() * len(y)
                    correct += (out.detach().argmax(1) == y).sum()
                    seen += len(y)
                    n_steps += 1
                    steps += 1
                    progress.advance(step_task)
                    if (n_steps % 10 == 0 or n_steps == spe) and not torch.isfinite(loss_sum):
                        stop = "nan"
                        break
                    if opts.time_budget_s is not None and elapsed() > opts.time_budget_s:
                        stop = "timeout"
                        break
                train_time = time.perf_counter() - t0
                if n_steps == 0:
                    raise ValueError("the training split yielded no batch")
                last_loss = loss_sum.item() / seen
                if stop == "nan" or not math.isfinite(last_loss):
                    status, reason = "nan", f"non-finite training loss in epoch {epoch + 1}"
                    history.append({"epoch": epoch + 1, "train_loss": None, "steps": n_steps, "lr": lr,
                                    "train_time_s": train_time})
                    break
                t1 = time.perf_counter()
                test_loss, test_acc = evaluate_classifier(run_model, data, batch_size=eval_bs, device=device,
                                                          amp=use_amp, amp_dtype=opts.amp_dtype,
                                                          channels_last=channels_last)
                partial = n_steps < spe
                rec = {"epoch": epoch + 1, "train_loss": last_loss, "train_acc": correct.item() / seen,
                       "test_loss": test_loss, "test_acc": test_acc, "lr": lr, "steps": n_steps,
                       "train_time_s": train_time, "eval_time_s": time.perf_counter() - t1, "partial": partial}
                history.append(rec)
                if opts.log_path:
                    append_jsonl(opts.log_path, rec)
                if not partial:
                    epochs_done = epoch + 1
                best = test_acc if best is None else max(best, test_acc)
                progress.update(ep_task, advance=1, info=f"loss {last_loss:.3f} acc {test_acc:.3f} best {best:.3f}")
                if stop == "timeout":
                    status, reason = "timeout", f"time budget {opts.time_budget_s}s spent in epoch {epoch + 1}"
                    break
                bound = opts.prune_milestones.get(epoch + 1)
                if bound is not None and best < bound:
                    status, reason = "pruned", f"best accuracy {best:.4f} < {bound} at epoch {epoch + 1}"
                    break
                if (opts.epoch_time_limit_s is not None and epoch >= 1 and train_time > opts.epoch_time_limit_s
                        and epoch + 1 < opts.epochs):
                    status, reason = "timeout", (f"epoch {epoch + 1} trained in {train_time:.1f}s > "
                                                 f"epoch_time_limit_s {opts.epoch_time_limit_s}")
                    break
    except Exception as e:  # noqa: BLE001 - reported as status "error"
        if not opts.catch_errors:
            raise
        status, reason = "error", error_reason(e)

    final = history[-1].get("test_acc") if history else None
    return TrainResult(status=status, accuracy=best, final_accuracy=final, loss=last_loss, history=history,
                       epochs=epochs_done, steps=steps, wall_time_s=time.perf_counter() - start, reason=reason)
