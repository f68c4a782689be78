"""Language-model proxy trainer (the original's GPT-2 / lm1b evaluator, reference §2.4)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..data.text import TokenData
from .common import optimizer_step, amp_context, amp_enabled, decay_groups, error_reason, make_progress, resolve_device, setup_backends
from .checkpoint import load_checkpoint, restore_training_state, rng_state, save_checkpoint
from .metrics import append_jsonl
from .options import LMTrainOptions, TrainResult

__all__ = ["train_lm", "tail_mean", "evaluate_lm"]


def tail_mean(losses: list[float]) -> float | None:
    """Mean of the last ~20% of logged losses (the original's slice ``[max(int(0.8 n), 1) - 1:]``)."""
    if not losses:
        return None
    return float(np.mean(losses[max(int(0.8 * len(losses)), 1) - 1:]))


@torch.no_grad()
def evaluate_lm(model: nn.Module, data: TokenData, *, batches: int, batch_size: int, seq_len: int,
                device: torch.device, seed: int = 0, amp: bool = False, amp_dtype: str = "bfloat16") -> float:
    """Mean validation cross-entropy over ``batches`` random windows of the val split."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    try:
        for _ in range(batches):
            x, y = data.get_batch(batch_size, seq_len, generator=g, split="val", device=device)
            with amp_context(amp, device, amp_dtype):
                logits = model(x)
            total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten()).item()
    finally:
        model.train(was_training)
    return total / batches


def _model_seq_len(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "seq_len", None)


def train_lm(model: nn.Module, tokens: TokenData | torch.Tensor, options: LMTrainOptions | None = None, *,
             checkpoint: str | Path | None = None, checkpoint_every: int = 500) -> TrainResult:
    """Train a causal LM (``model(idx[N, T]) -> logits[N, T, V]``) on random windows of ``tokens``.

    Stops at ``max_iters`` steps (if > 0), at ``time_budget_s`` (status ``timeout``), on a non-finite
    loss (``nan``), when a logged loss exceeds ``max_loss`` after ``max_loss_grace_s`` seconds
    (``pruned``), or when a logged loss is below ``illegal_loss_below`` (``pruned``: presumed
    information leak across positions). The training loss is logged as the mean since the previous
    entry, every ``log_interval_s`` seconds (or ``log_every_steps`` steps); ``loss`` = mean of the
    last 20% of the entries. A run that reaches neither a logging point nor the end is logged once
    at the end. ``history`` holds ``{"step", "time_s", "loss"}`` entries.

    With ``checkpoint`` (a file) the whole training state (model, optimizer, scaler, RNG and data-order
    generator, history) is saved there every ``checkpoint_every`` steps and when the run stops, and a
    later call with the same file continues from it (a run stopped by ``time_budget_s`` continues; a
    verdict such as ``nan`` or ``pruned`` stays). ``time_s`` continues across resumed runs.
    """
    opts = options or LMTrainOptions()
    start = time.perf_counter()
    history: list[dict] = []
    logged: list[float] = []
    status, reason = "ok", ""
    steps = 0
    val_loss = None
    t_offset = 0.0  # time_s of a resumed run continues the checkpointed one

    def elapsed() -> float:
        return time.perf_counter() - start

    try:
        data = tokens if isinstance(tokens, TokenData) else TokenData.from_tensor(
            tokens, vocab_size=int(tokens.max()) + 1)
        device = resolve_device(opts.device)
        setup_backends(device)
        torch.manual_seed(opts.seed)
        g = torch.Generator().manual_seed(opts.seed)
        seq_len = opts.seq_len or _model_seq_len(model)
        if seq_len is None:
            raise ValueError("set LMTrainOptions.seq_len (the model has no config.seq_len)")
        use_amp = amp_enabled(opts.amp, device)
        model.to(device)
        run_model = torch.compile(model) if opts.compile else model
        optimizer = torch.optim.AdamW(decay_groups(model, opts.weight_decay, skip_embeddings=True), lr=opts.lr,
                                      betas=opts.betas)
        scaler = torch.amp.GradScaler(device.type) if use_amp and opts.amp_dtype == "float16" else None
        state = load_checkpoint(checkpoint, map_location=device) if checkpoint is not None else None
        if state is not None:
            restore_training_state(state, model, optimizer, scaler)
            g.set_state(state["data_rng"].cpu())
            history.extend(state["history"])
            logged.extend(h["loss"] if h["loss"] is not None else math.nan for h in history)
            steps = int(state["steps"])
            t_offset = history[-1]["time_s"] if history else 0.0
            if not state.get("resumable", True):
                status, reason = state["status"], state.get("reason", "")

        def save() -> None:
            if checkpoint is not None:
                save_checkpoint(checkpoint, {
                    "kind": "lm", "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_state(),
                    "data_rng": g.get_state(), "history": history, "steps": steps, "status": status,
                    "reason": reason, "resumable": status in ("ok", "timeout")})

        model.train()
        window_sum = torch.zeros((), device=device, dtype=torch.float64)
        window_n = 0
        last_log_t = elapsed()
        total = opts.max_iters if opts.max_iters > 0 else None

        def log_entry() -> float:
            nonlocal window_sum, window_n, last_log_t
            value = window_sum.item() / window_n
            rec = {"step": steps, "time_s": t_offset + elapsed(), "loss": value}
            history.append(rec)
            logged.append(value)
            if opts.log_path:
                append_jsonl(opts.log_path, rec)
            window_sum = torch.zeros((), device=device, dtype=torch.float64)
            window_n = 0
            last_log_t = elapsed()
            return value

        with make_progress(opts.progress) as progress:
            task = progress.add_task("lm", total=total, info="")
            progress.update(task, completed=steps)
            while status == "ok":
                if total is not None and steps >= total:
                    break
                if opts.time_budget_s is not None and elapsed() > opts.time_budget_s:
                    status, reason = "timeout", f"time budget {opts.time_budget_s}s spent after {steps} steps"
                    break
                x, y = data.get_batch(opts.batch_size, seq_len, generator=g, device=device)
                with amp_context(use_amp, device, opts.amp_dtype):
                    logits = run_model(x)
                loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
                optimizer_step(loss, model, optimizer, scaler, opts.grad_clip)
                steps += 1
                window_sum += loss.detach().double()
                window_n += 1
                progress.advance(task)
                ckpt_due = checkpoint is not None and steps % checkpoint_every == 0
                due = (steps % opts.log_every_steps == 0 if opts.log_every_steps
                       else elapsed() - last_log_t >= opts.log_interval_s)
                if not due:
                    if ckpt_due:
                        save()
                    continue
                value = log_entry()
                progress.update(task, info=f"loss {value:.3f}")
                if not math.isfinite(value):
                    status, reason = "nan", f"non-finite loss at step {steps}"
                    break
                if opts.illegal_loss_below is not None and value < opts.illegal_loss_below:
                    status, reason = "pruned", f"loss {value:.3f} < {opts.illegal_loss_below}: presumed leak"
                    break
                if opts.max_loss is not None and elapsed() > opts.max_loss_grace_s and value > opts.max_loss:
                    status, reason = "pruned", f"loss {value:.3f} > max_loss {opts.max_loss} at step {steps}"
                    break
                if ckpt_due:
                    save()
            if window_n and (status in ("ok", "timeout") or not logged):  # flush the last partial window
                value = log_entry()
                if not math.isfinite(value):
                    status, reason = "nan", f"non-finite loss at step {steps}"
        if status == "timeout" and checkpoint is not None:
            reason += "; resume to continue"
        save()
        if opts.eval_batches and data.val is not None and status in ("ok", "timeout"):
            val_loss = evaluate_lm(run_model, data, batches=opts.eval_batches, batch_size=opts.batch_size,
                                   seq_len=seq_len, device=device, seed=opts.seed, amp=use_amp,
                                   amp_dtype=opts.amp_dtype)
    except Exception as e:  # noqa: BLE001 - reported as status "error"
        if not opts.catch_errors:
            raise
        status, reason = "error", error_reason(e)

    finite = [v for v in logged if math.isfinite(v)]
    metric = tail_mean(logged) if logged else None
    if metric is not None and not math.isfinite(metric):
        metric = tail_mean(finite)
    return TrainResult(status=status, loss=metric, val_loss=val_loss, history=history, steps=steps,
                       wall_time_s=time.perf_counter() - start, reason=reason)
