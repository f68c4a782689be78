"""Count MACs ("FLOPs" in Syno's and thop's sense) and parameters of a model for one sample.

What is counted (per forward pass, then divided by the batch size N of the sample input):

* ``nn.Conv1d/2d/3d``: ``output.numel() * (C_in / groups) * prod(kernel_size)`` (bias adds not counted);
* ``nn.ConvTranspose1d/2d/3d``: ``input.numel() * (C_out / groups) * prod(kernel_size)``;
* ``nn.Linear``: ``output.numel() * in_features`` (bias adds not counted);
* any module with a method ``count_macs(input, output) -> int`` (the protocol for generated
  operators and for functional code such as attention matmuls): its return value, for the whole
  batch; its children are **not** visited.

Nothing else is counted: normalization, activations, pooling, residual adds, embeddings, softmax.
This equals torchvision's documented ``_ops`` (GMACs) and thop's conv/linear counts; thop also adds
BN/pooling terms, which is why the original's resnet18 number (1.8236e9) is 0.5% above ours.

Parameters: ``sum(p.numel() for p in model.parameters())`` (shared parameters once). A filled
placeholder's original layer is not part of the module tree, so it is not counted.
"""

from __future__ import annotations

import copy
import math
from functools import partial
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .placeholder import OperatorFactory, fill_placeholders, placeholders

__all__ = ["ModelProfile", "FillReport", "profile", "profile_fill", "module_macs", "probe_forward"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass
class ModelProfile:
    """MACs per sample and parameter counts of a model (and of each placeholder)."""

    macs: int                     # whole model, per sample
    params: int                   # whole model
    batch_size: int               # N of the sample input the counts were divided by
    placeholder_macs: list[int] = field(default_factory=list)    # per placeholder, per sample
    placeholder_params: list[int] = field(default_factory=list)  # per placeholder

    @property
    def flops(self) -> int:
        """Alias of :attr:`macs` (Syno calls MACs "FLOPs")."""
        return self.macs

    @property
    def non_placeholder_macs(self) -> int:
        return self.macs - sum(self.placeholder_macs)

    @property
    def non_placeholder_params(self) -> int:
        return self.params - sum(self.placeholder_params)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["non_placeholder_macs"] = self.non_placeholder_macs
        return d


@dataclass
class FillReport:
    before: ModelProfile
    after: ModelProfile

    @property
    def macs_ratio(self) -> float:
        return self.after.macs / self.before.macs if self.before.macs else math.inf

    @property
    def params_ratio(self) -> float:
        return self.after.params / self.before.params if self.before.params else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {"before": self.before.to_dict(), "after": self.after.to_dict(),
                "macs_ratio": self.macs_ratio, "params_ratio": self.params_ratio}


def _first_tensor(obj) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (tuple, list)):
        for o in obj:
            t = _first_tensor(o)
            if t is not None:
                return t
    if isinstance(obj, dict):
        for o in obj.values():
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


def module_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int | None:
    """MACs of one forward call of ``module`` (whole batch), or None if the module is not a counted kind."""
    counter = getattr(module, "count_macs", None)
    if callable(counter):
        return int(counter(inp, out))
    if isinstance(module, _CONV):
        return out.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, _CONVT):
        return inp.numel() * (module.out_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    return None


def _is_counted_kind(module: nn.Module) -> bool:
    return callable(getattr(module, "count_macs", None)) or isinstance(module, _CONV + _CONVT + (nn.Linear,))


def probe_forward(model: nn.Module, sample_input, hooks) -> None:
    """One forward pass of ``sample_input`` for the ``hooks`` to watch, in eval mode (a probe must
    not move batch-norm statistics) and without grad; then the hooks are removed and the model's
    mode restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(sample_input)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


def _run(model: nn.Module, sample_input) -> ModelProfile:
    phs = placeholders(model)
    ph_index = {id(p): i for i, p in enumerate(phs)}
    ph_macs = [0] * len(phs)
    total = 0
    stack: list[int] = []
    handles = []

    def count_hook(module, args, output):
        nonlocal total
        macs = module_macs(module, _first_tensor(args), _first_tensor(output))
        total += macs
        if stack:
            ph_macs[stack[-1]] += macs

    def enter(i, module, args) -> None:  # hooks must return None (a value would replace the input/output)
        stack.append(i)

    def leave(module, args, output) -> None:
        stack.pop()

    def visit(module: nn.Module) -> None:
        if id(module) in ph_index:
            i = ph_index[id(module)]
            handles.append(module.register_forward_pre_hook(partial(enter, i)))
            handles.append(module.register_forward_hook(leave))
        if _is_counted_kind(module):
            handles.append(module.register_forward_hook(count_hook))
            return  # counted as a whole: do not descend
        for child in module.children():
            visit(child)

    visit(model)
    probe_forward(model, sample_input, handles)

    n = int(sample_input.shape[0]) if isinstance(sample_input, torch.Tensor) else 1
    per = lambda v: int(round(v / n))  # noqa: E731
    params = sum(p.numel() for p in model.parameters())
    ph_params = [sum(t.numel() for t in p.active_layer.parameters()) for p in phs]
    return ModelProfile(macs=per(total), params=params, batch_size=n,
                        placeholder_macs=[per(v) for v in ph_macs], placeholder_params=ph_params)


def profile(model: nn.Module, sample_input: torch.Tensor) -> ModelProfile:
    """Count MACs (per sample) and parameters with one forward pass of ``sample_input`` (eval, no grad).

    A ``sample_input`` on the ``meta`` device profiles a meta-device copy of the model: no compute,
    so full-size models and batches cost nothing (generated operators must then support meta tensors).
    """
    if isinstance(sample_input, torch.Tensor) and sample_input.device.type == "meta":
        return _run(copy.deepcopy(model).to("meta"), sample_input)
    return _run(model, sample_input)


def profile_fill(model: nn.Module, sample_input: torch.Tensor, factory: OperatorFactory) -> FillReport:
    """Profile, fill every placeholder with ``factory(mapping)``, profile again. The model stays filled."""
    before = profile(model, sample_input)
    fill_placeholders(model, factory)
    after = profile(model, sample_input)
    return FillReport(before=before, after=after)
