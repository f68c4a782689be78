"""Training checkpoints: the whole state of a run in one file, written atomically, read as data.

A long run (90 ImageNet epochs, 100k GPT-2 steps) must survive being killed. The trainers save the
model, optimizer, grad scaler, RNG states, history and position with ``torch.save`` to a temporary
file renamed into place (a kill never leaves a torn checkpoint) and read it back with
``torch.load(weights_only=True)``: a checkpoint is data, no pickled code is executed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["CHECKPOINT_FORMAT", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when there is none; a foreign file raises ``ValueError`` naming it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling refused or a torn/foreign file
        raise ValueError(f"{path}: not a readable syno training checkpoint ({type(exc).__name__}); move it away "
                         f"to train from the start") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a syno training checkpoint (format {CHECKPOINT_FORMAT}); move it away to "
                         f"train from the start")
    return state


def rng_state() -> dict[str, Any]:
    st = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["cpu"].cpu())  # a checkpoint loaded onto a GPU moved the byte tensors there
    if "cuda" in st and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.cpu() for t in st["cuda"]])


def restore_training_state(state: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                           scaler: "torch.amp.GradScaler | None") -> None:
    """Load what every trainer checkpoints (model, optimizer, fp16 loss scaler, RNG streams) from
    ``state``; trainer-specific entries (history, data RNG) stay with the trainer."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
