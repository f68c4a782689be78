"""Typed training options and results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["VisionTrainOptions", "LMTrainOptions", "TrainResult", "Status"]

Status = Literal["ok", "pruned", "timeout", "nan", "error"]


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    device: str = "auto"                 # "auto" = cuda if available, else cpu
    seed: int = 42
    amp: bool | None = None              # None = on for CUDA, off elsewhere
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"   # float16 adds a GradScaler
    compile: bool = False                # torch.compile the model for training and evaluation
    time_budget_s: float | None = None   # wall-clock limit of the whole run -> status "timeout"
    progress: bool = True                # rich progress bars (on stderr)
    catch_errors: bool = True            # an exception -> status "error" instead of raising
    log_path: str | None = None          # append one JSON line per epoch / log entry here


class VisionTrainOptions(_Common):
    """Classifier training. Defaults: the original's CIFAR-100 search proxy (reference §2.1/2.2)."""

    epochs: int = Field(100, ge=1)
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int | None = None   # default: batch_size
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-3           # not applied to 1-D parameters (biases, norms)
    min_lr: float = 1e-5
    schedule: Literal["cosine", "linear", "constant"] = "cosine"   # per step, over `epochs`
    warmup_epochs: float = 0.0           # linear warmup from 0 to lr (then the schedule)
    grad_clip: float | None = 5.0        # L2 norm
    label_smoothing: float = 0.0
    channels_last: bool | None = None    # None = on for CUDA
    prune_milestones: dict[int, float] = Field(default_factory=dict)  # {epochs done: min best accuracy}
    epoch_time_limit_s: float | None = None   # the original's 60 s inference-time limit (epoch index >= 1)
    max_steps_per_epoch: int | None = None    # cap (quick runs)
    stop_epoch: int | None = Field(None, ge=1)  # stop after this many epochs of an `epochs` schedule (a rung; resumable)
    drop_last: bool = True

    @field_validator("prune_milestones")
    @classmethod
    def _milestones(cls, v: dict[int, float]) -> dict[int, float]:
        for e, acc in v.items():
            if e < 1 or not 0.0 <= acc <= 1.0:
                raise ValueError(f"milestone {e}: {acc} must be epoch >= 1 and accuracy in [0, 1]")
        return dict(sorted(v.items()))

    @classmethod
    def imagenet(cls, **overrides: Any) -> "VisionTrainOptions":
        """The original's ImageNet re-evaluation recipe (reference §2.3), as far as this trainer has it:
        90 epochs, batch 1024, SGD 0.9 (no Nesterov), peak lr 0.5 reached linearly at epoch 2 then linear
        to 0, weight decay 5e-5, label smoothing 0.1, AMP fp16, grad clip 1.0, channels_last."""
        base = dict(epochs=90, batch_size=1024, lr=0.5, nesterov=False, weight_decay=5e-5, min_lr=0.0,
                    schedule="linear", warmup_epochs=2.0, grad_clip=1.0, label_smoothing=0.1, amp=True,
                    amp_dtype="float16", channels_last=True)
        base.update(overrides)
        return cls(**base)


class LMTrainOptions(_Common):
    """Language-model training. Defaults: the original's GPT-2 search setting (reference §2.4)."""

    batch_size: int = Field(1, ge=1)
    seq_len: int | None = None           # default: the model's seq_len
    lr: float = 3e-4                     # constant
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1            # only on >= 2-D weights that are not embeddings
    grad_clip: float | None = 1.0
    max_iters: int = 0                   # 0 = no limit
    time_budget_s: float | None = 1800.0 # the search's 30 minutes
    log_interval_s: float = 10.0         # log the mean training loss every this many seconds ...
    log_every_steps: int | None = None   # ... or every this many steps (deterministic; overrides the above)
    max_loss: float | None = 6.9         # a logged loss above this after the grace period -> "pruned"
    max_loss_grace_s: float = 60.0
    illegal_loss_below: float | None = None   # the original used 3.0 (GPT-2 BPE lm1b): "too good" = leak
    eval_batches: int = 0                # validation batches evaluated at the end (needs a val split)


class TrainResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Status
    accuracy: float | None = None        # vision: max test accuracy over epochs
    final_accuracy: float | None = None  # vision: test accuracy after the last epoch
    loss: float | None = None            # vision: last epoch's mean train loss; LM: mean of last 20% logged
    val_loss: float | None = None        # LM with eval_batches
    history: list[dict[str, Any]] = Field(default_factory=list)
    epochs: int = 0                      # completed (vision)
    steps: int = 0
    wall_time_s: float = 0.0
    reason: str = ""                     # why it stopped early / the error

    def to_json(self, path: str | Path | None = None, indent: int = 2) -> str:
        from .metrics import jsonable, write_json

        data = jsonable(self)  # NaN/inf -> null: strict JSON
        if path is not None:
            write_json(path, data, indent=indent)
        return json.dumps(data, indent=indent, allow_nan=False)
