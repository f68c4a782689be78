"""Image-classifier trainer: the original's CIFAR-100 search proxy (reference §2.1-2.2) and, with a
checkpoint file, the long resumable reevaluation runs (ImageNet, reference §2.3). One loop for both."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..data.common import ClassificationData
from .common import (optimizer_step, to_channels_last, amp_context, amp_enabled, decay_groups, error_reason, lr_at, make_progress, resolve_device,
                     setup_backends)
from .checkpoint import load_checkpoint, restore_training_state, rng_state, save_checkpoint
from .metrics import append_jsonl
from .options import TrainResult, VisionTrainOptions

__all__ = ["train_classifier", "evaluate_classifier"]


@torch.no_grad()
def evaluate_classifier(model: nn.Module, data: ClassificationData, *, batch_size: int = 256,
                        device: torch.device | str = "cpu", amp: bool = False, amp_dtype: str = "bfloat16",
                        channels_last: bool = False, tta_flip: bool = False) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy on the whole test split (no image dropped). ``tta_flip`` sums
    the logits of each image and its horizontal mirror (the original's ImageNet evaluation, §2.3)."""
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
                out = model(x).float()
                if tta_flip:
                    out = out + model(x.flip(3)).float()
            loss_sum += F.cross_entropy(out, y, reduction="sum").double()
            correct += (out.argmax(1) == y).sum()
            seen += len(y)
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("empty test split")
    return loss_sum.item() / seen, correct.item() / seen


class _CallbackError(Exception):
    """An exception raised by ``on_epoch``: the caller's, so it is re-raised, never reported as a training error."""


def train_classifier(model: nn.Module, data: ClassificationData, options: VisionTrainOptions | None = None, *,
                     checkpoint: str | Path | None = None, checkpoint_every: int = 1, tta_flip: bool = False,
                     metric: str = "best", on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``model`` on ``data`` and evaluate on its test split after every epoch.

    Returns a :class:`TrainResult` with ``accuracy`` = max test accuracy over epochs (``metric="best"``,
    the search proxy's) or after the last epoch (``"final"``, the ImageNet recipe's), and ``status``:
    ``ok``; ``pruned`` (a milestone's accuracy bound missed); ``timeout`` (``time_budget_s`` spent, or
    an epoch (index >= 1) slower than ``epoch_time_limit_s``); ``nan`` (non-finite training loss);
    ``error`` (an exception, with ``catch_errors``). The model is trained in place (moved to the
    device). ``torch.manual_seed(options.seed)`` is called first; data order and augmentation depend
    only on the seed and the epoch, so with the same initial weights a CPU run is reproducible.

    With ``checkpoint`` (a file) the whole training state is saved there every ``checkpoint_every``
    epochs and when the run stops, and a later call with the same file continues where it stopped
    (a finished run returns at once). The time budget is then checked between epochs, so the saved
    state is always at an epoch boundary; a run stopped by it has status ``timeout`` and a reason
    saying to resume. ``on_epoch(record)`` is called after each epoch (its exceptions propagate).
    """
    opts = options or VisionTrainOptions()
    if metric not in ("best", "final"):
        raise ValueError(f"metric {metric!r}: best or final")
    start = time.perf_counter()
    history: list[dict] = []
    status, reason = "ok", ""
    steps = epochs_done = epoch0 = 0
    budget_stop = False  # stopped by time_budget_s: a later call with the checkpoint continues
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

        state = load_checkpoint(checkpoint, map_location=device) if checkpoint is not None else None
        if state is not None:
            restore_training_state(state, model, optimizer, scaler)
            history, best = list(state["history"]), state["best"]
            epoch0 = epochs_done = int(state["epoch"])
            steps = int(state["steps"])
            last_loss = history[-1].get("train_loss") if history else None
            if not state.get("resumable", True):  # a verdict (nan, pruned, too slow) stays
                status, reason = state["status"], state.get("reason", "")

        def save(epoch: int) -> None:
            if checkpoint is not None:
                save_checkpoint(checkpoint, {
                    "kind": "vision", "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_state(),
                    "history": history, "best": best, "epoch": epoch, "steps": steps, "status": status,
                    "reason": reason, "resumable": status == "ok" or budget_stop})

        with make_progress(opts.progress) as progress:
            ep_task = progress.add_task("epochs", total=opts.epochs, completed=epoch0, info="")
            step_task = progress.add_task("train", total=spe, info="")
            end = min(opts.epochs, opts.stop_epoch or opts.epochs)  # a rung stops early, same schedule
            for epoch in range(epoch0, end):
                if status != "ok":
                    break
                if opts.time_budget_s is not None and elapsed() > opts.time_budget_s:
                    status, reason = "timeout", f"time budget {opts.time_budget_s}s spent after {epoch} epochs"
                    if checkpoint is not None:
                        reason += "; resume to continue"
                        budget_stop = True
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
                    optimizer_step(loss, model, optimizer, scaler, opts.grad_clip)
                    loss_sum += loss.detach().double() * len(y)
                    correct += (out.detach().argmax(1) == y).sum()
                    seen += len(y)
                    n_steps += 1
                    steps += 1
                    progress.advance(step_task)
                    if (n_steps % 10 == 0 or n_steps == spe) and not torch.isfinite(loss_sum):
                        stop = "nan"
                        break
                    # a checkpointed run stops between epochs only, so its saved state is resumable
                    if checkpoint is None and opts.time_budget_s is not None and elapsed() > opts.time_budget_s:
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
                    save(epoch + 1)
                    break
                t1 = time.perf_counter()
                test_loss, test_acc = evaluate_classifier(run_model, data, batch_size=eval_bs, device=device,
                                                          amp=use_amp, amp_dtype=opts.amp_dtype,
                                                          channels_last=channels_last, tta_flip=tta_flip)
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
                elif (opts.epoch_time_limit_s is not None and epoch >= 1 and train_time > opts.epoch_time_limit_s
                        and epoch + 1 < opts.epochs):
                    status, reason = "timeout", (f"epoch {epoch + 1} trained in {train_time:.1f}s > "
                                                 f"epoch_time_limit_s {opts.epoch_time_limit_s}")
                if status != "ok" or (epoch + 1) % checkpoint_every == 0 or epoch + 1 in (opts.epochs, end):
                    save(epoch + 1)
                if on_epoch is not None:
                    try:
                        on_epoch(rec)
                    except Exception as exc:  # noqa: BLE001 - the caller's exception, re-raised below
                        raise _CallbackError() from exc
        if budget_stop:
            save(epochs_done)
    except _CallbackError as e:
        raise e.__cause__ from None
    except Exception as e:  # noqa: BLE001 - reported as status "error"
        if not opts.catch_errors:
            raise
        status, reason = "error", error_reason(e)

    if status == "ok" and epochs_done < min(opts.epochs, opts.stop_epoch or opts.epochs):
        status, reason = "timeout", f"stopped after {epochs_done}/{opts.epochs} epochs; resume to continue"
    final = history[-1].get("test_acc") if history else None
    accuracy = final if metric == "final" else best
    return TrainResult(status=status, accuracy=accuracy, final_accuracy=final, loss=last_loss, history=history,
                       epochs=epochs_done, steps=steps, wall_time_s=time.perf_counter() - start, reason=reason)
