"""Resumable training for long post-search runs (reevaluation, custom kernels).

The proxy trainers of :mod:`syno.train` run a kernel start to finish. A reevaluation (90 ImageNet
epochs, 100k GPT-2 steps) must survive being killed, so these loops save the whole training state
(model, optimizer, grad scaler, RNG states, history, best metric, position) with ``torch.save`` to
one checkpoint file, atomically, every ``checkpoint_every`` epochs/steps and when a time budget
runs out, and restart from it with ``torch.load(weights_only=True)`` (no pickled code is executed).
The recipe pieces (LR schedule, decay groups, AMP, evaluation) are those of :mod:`syno.train`, so a
run that is never interrupted follows the same recipe as ``train_classifier``/``train_lm``; a
resumed run continues the same data order (batches depend only on seed and epoch).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from syno.train.common import to_channels_last, amp_context, amp_enabled, decay_groups, lr_at, make_progress, resolve_device, setup_backends
from syno.train.options import LMTrainOptions, TrainResult, VisionTrainOptions

__all__ = ["train_vision_resumable", "train_lm_resumable", "evaluate_vision", "save_checkpoint",
           "load_checkpoint"]

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, then rename: a kill never leaves a torn checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    path = Path(path)
    if not path.is_file():
        return None
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a syno post-search checkpoint (format {CHECKPOINT_FORMAT})")
    return state


def _rng_state() -> dict[str, Any]:
    st = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["cpu"].cpu())  # a checkpoint loaded onto a GPU moved the byte tensors there
    if "cuda" in st and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.cpu() for t in st["cuda"]])


@torch.no_grad()
def evaluate_vision(model: nn.Module, data, *, batch_size: int = 256, device: torch.device | str = "cpu",
                    amp: bool = False, amp_dtype: str = "bfloat16", channels_last: bool = False,
                    tta_flip: bool = False, max_batches: int | None = None) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy on the test split; ``tta_flip`` sums the logits of each
    image and its horizontal mirror (the original's ImageNet evaluation, reference §2.3)."""
    device = torch.device(device)
    was = model.training
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    try:
        for i, (x, y) in enumerate(data.test_batches(batch_size, device=device)):
            if max_batches is not None and i >= max_batches:
                break
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with amp_context(amp, device, amp_dtype):
                out = model(x).float()
                if tta_flip:
                    out = out + model(x.flip(3)).float()
            loss_sum += F.cross_entropy(out, y, reduction="sum").item()
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
    finally:
        model.train(was)
    if seen == 0:
        raise ValueError("empty test split")
    return loss_sum / seen, correct / seen


def train_vision_resumable(model: nn.Module, data, options: VisionTrainOptions, checkpoint: str | Path, *,
                           checkpoint_every: int = 1, tta_flip: bool = False, metric: str = "best",
                           on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train a classifier with a checkpoint after every ``checkpoint_every`` epochs; resumes from
    ``checkpoint`` if it exists. ``metric``: ``"best"`` (max test accuracy over epochs, the CIFAR
    proxy's) or ``"final"`` (after the last epoch, the ImageNet recipe's). ``options.time_budget_s``
    stops the *current* run (status ``timeout``) after saving, so a later call continues."""
    opts = options
    start = time.perf_counter()
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

    history: list[dict[str, Any]] = []
    best: float | None = None
    epoch0 = steps = 0
    status, reason = "ok", ""
    state = load_checkpoint(checkpoint, map_location=device)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        history = list(state["history"])
        best = state["best"]
        epoch0 = int(state["epoch"])
        steps = int(state["steps"])
        if state.get("status") not in (None, "ok", "timeout"):
            status, reason = state["status"], state.get("reason", "")

    def save(epoch: int) -> None:
        save_checkpoint(checkpoint, {
            "format": CHECKPOINT_FORMAT, "kind": "vision", "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": _rng_state(), "history": history, "best": best, "epoch": epoch, "steps": steps,
            "status": status, "reason": reason})

    last_loss = history[-1]["train_loss"] if history else None
    with make_progress(opts.progress) as progress:
        ep_task = progress.add_task("epochs", total=opts.epochs, completed=epoch0, info="")
        step_task = progress.add_task("train", total=spe, info="")
        for epoch in range(epoch0, opts.epochs):
            if status not in ("ok",):
                break
            if opts.time_budget_s is not None and time.perf_counter() - start > opts.time_budget_s:
                status, reason = "timeout", f"time budget {opts.time_budget_s}s spent; resume to continue"
                break
            model.train()
            progress.reset(step_task, total=spe)
            t0 = time.perf_counter()
            loss_sum, seen, lr = 0.0, 0, opts.lr
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
                loss_sum += loss.item() * len(y)
                seen += len(y)
                steps += 1
                progress.advance(step_task)
            last_loss = loss_sum / max(seen, 1)
            train_time = time.perf_counter() - t0
            if not math.isfinite(last_loss):
                status, reason = "nan", f"non-finite training loss in epoch {epoch + 1}"
                history.append({"epoch": epoch + 1, "train_loss": None, "lr": lr, "train_time_s": train_time})
                save(epoch + 1)
                break
            test_loss, test_acc = evaluate_vision(run_model, data, batch_size=eval_bs, device=device, amp=use_amp,
                                                  amp_dtype=opts.amp_dtype, channels_last=channels_last,
                                                  tta_flip=tta_flip)
            rec = {"epoch": epoch + 1, "train_loss": last_loss, "test_loss": test_loss, "test_acc": test_acc,
                   "lr": lr, "train_time_s": train_time}
            history.append(rec)
            best = test_acc if best is None else max(best, test_acc)
            progress.update(ep_task, advance=1, info=f"loss {last_loss:.3f} acc {test_acc:.3f} best {best:.3f}")
            if (epoch + 1) % checkpoint_every == 0 or epoch + 1 == opts.epochs:
                save(epoch + 1)
            if on_epoch is not None:
                on_epoch(rec)
    if status == "timeout":
        save(history[-1]["epoch"] if history else epoch0)
    final = history[-1].get("test_acc") if history else None
    epochs_done = history[-1]["epoch"] if history else 0
    if status == "ok" and epochs_done < opts.epochs:
        status, reason = "timeout", f"stopped after {epochs_done}/{opts.epochs} epochs; resume to continue"
    accuracy = final if metric == "final" else best
    return TrainResult(status=status, accuracy=accuracy, final_accuracy=final, loss=last_loss, history=history,
                       epochs=epochs_done, steps=steps, wall_time_s=time.perf_counter() - start, reason=reason)


def train_lm_resumable(model: nn.Module, data, options: LMTrainOptions, checkpoint: str | Path, *,
                       checkpoint_every: int = 500) -> TrainResult:
    """Train a causal LM for ``options.max_iters`` steps (AdamW, constant LR, the original's recipe),
    logging the mean loss every ``options.log_every_steps`` steps (default 10) and checkpointing every
    ``checkpoint_every`` steps; resumes from ``checkpoint``. ``loss`` = mean of the last 20% of the
    logged losses; ``val_loss`` over ``options.eval_batches`` validation batches if a val split exists."""
    from syno.train.lm import evaluate_lm, tail_mean

    opts = options
    if opts.max_iters <= 0:
        raise ValueError("a resumable LM run needs max_iters > 0")
    start = time.perf_counter()
    device = resolve_device(opts.device)
    setup_backends(device)
    torch.manual_seed(opts.seed)
    seq_len = opts.seq_len or getattr(getattr(model, "config", None), "seq_len", None)
    if seq_len is None:
        raise ValueError("set LMTrainOptions.seq_len")
    use_amp = amp_enabled(opts.amp, device)
    model.to(device)
    run_model = torch.compile(model) if opts.compile else model
    optimizer = torch.optim.AdamW(decay_groups(model, opts.weight_decay, skip_embeddings=True), lr=opts.lr,
                                  betas=opts.betas)
    scaler = torch.amp.GradScaler(device.type) if use_amp and opts.amp_dtype == "float16" else None
    g = torch.Generator().manual_seed(opts.seed)
    every = opts.log_every_steps or 10
    history: list[dict[str, Any]] = []
    step = 0
    status, reason = "ok", ""
    state = load_checkpoint(checkpoint, map_location=device)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        g.set_state(state["data_rng"].cpu())
        history = list(state["history"])
        step = int(state["steps"])

    def save() -> None:
        save_checkpoint(checkpoint, {
            "format": CHECKPOINT_FORMAT, "kind": "lm", "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": _rng_state(), "data_rng": g.get_state(), "history": history, "steps": step, "best": None,
            "epoch": 0, "status": status, "reason": reason})

    model.train()
    window, window_n = 0.0, 0
    with make_progress(opts.progress) as progress:
        task = progress.add_task("steps", total=opts.max_iters, completed=step, info="")
        while step < opts.max_iters:
            if opts.time_budget_s is not None and time.perf_counter() - start > opts.time_budget_s:
                status, reason = "timeout", f"time budget {opts.time_budget_s}s spent; resume to continue"
                break
            x, y = data.get_batch(opts.batch_size, seq_len, generator=g, device=device)
            with amp_context(use_amp, device, opts.amp_dtype):
                logits = run_model(x)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
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
            step += 1
            window += loss.item()
            window_n += 1
            progress.advance(task)
            if step % every == 0 or step == opts.max_iters:
                value = window / window_n
                history.append({"step": step, "time_s": time.perf_counter() - start, "loss": value})
                window, window_n = 0.0, 0
                progress.update(task, info=f"loss {value:.3f}")
                if not math.isfinite(value):
                    status, reason = "nan", f"non-finite loss at step {step}"
                    break
            if step % checkpoint_every == 0:
                save()
    save()
    losses = [h["loss"] for h in history]
    val_loss = None
    if status == "ok" and opts.eval_batches and getattr(data, "val", None) is not None:
        val_loss = evaluate_lm(run_model, data, batches=opts.eval_batches, batch_size=opts.batch_size,
                               seq_len=seq_len, device=device)
    if status == "ok" and step < opts.max_iters:
        status = "timeout"
    return TrainResult(status=status, loss=tail_mean(losses) if losses else None, val_loss=val_loss,
                       history=history, steps=step, wall_time_s=time.perf_counter() - start, reason=reason)
