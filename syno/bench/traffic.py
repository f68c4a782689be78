"""What one forward asks of the memory system and the arithmetic units, counted per ATen op.

Eager PyTorch runs one kernel per ATen op, and every non-view op reads its inputs from and writes
its outputs to device memory. Counting, for each op of a forward, the FLOPs (PyTorch's own
formulas: :data:`torch.utils.flop_counter.flop_registry`) and the bytes it reads and writes gives
a roofline estimate of the forward's GPU time without a GPU::

    time ~= sum over ops of max(flops / peak_flops, bytes / bandwidth) + launch per kernel

The forward runs on the ``meta`` device, so nothing is allocated and an N=128 ResNet-18 is
counted on a laptop in a second. The estimate says *why* a model is slow (bytes moved by copies
vs arithmetic), which MACs alone do not: benchmarks/space_speed.py reports the rank correlation
of measured time with MACs and with this estimate side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

#: H100 SXM, dense: TF32 tensor cores (fp32 inputs with allow_tf32) and HBM3 bandwidth; the
#: launch cost is that of a kernel in a CUDA-graph replay. Round numbers: the estimate ranks
#: forwards, it does not predict microseconds.
H100 = {"flops": 400e12, "bandwidth": 3.0e12, "launch": 2e-6}

_VIEW_OPS = {"view", "_unsafe_view", "reshape", "permute", "transpose", "t", "expand", "unsqueeze",
             "squeeze", "select", "slice", "as_strided", "alias", "detach", "unfold", "diagonal",
             "split", "chunk", "narrow", "unbind", "view_as", "expand_as", "split_with_sizes",
             "lift_fresh", "_reshape_alias", "movedim", "flatten", "unflatten", "lift_fresh_copy"}
#: ops that make no kernel of their own on a GPU (metadata, scalars)
_FREE_OPS = {"empty", "empty_like", "empty_strided", "sym_size", "sym_stride", "sym_numel", "is_same_size",
             "_local_scalar_dense", "_to_copy_meta"}


@dataclass
class OpCount:
    name: str
    flops: int
    bytes: int

    def seconds(self, device: dict) -> float:
        return max(self.flops / device["flops"], self.bytes / device["bandwidth"]) + device["launch"]


@dataclass
class Traffic:
    ops: list[OpCount] = field(default_factory=list)

    @property
    def flops(self) -> int:
        return sum(o.flops for o in self.ops)

    @property
    def bytes(self) -> int:
        return sum(o.bytes for o in self.ops)

    @property
    def kernels(self) -> int:
        return len(self.ops)

    def seconds(self, device: dict = H100) -> float:
        """Roofline estimate of the forward's GPU time (see the module docstring)."""
        return sum(o.seconds(device) for o in self.ops)

    def by_op(self) -> dict[str, tuple[int, int, int]]:
        """name -> (calls, flops, bytes), largest byte count first."""
        acc: dict[str, list[int]] = {}
        for o in self.ops:
            a = acc.setdefault(o.name, [0, 0, 0])
            a[0] += 1
            a[1] += o.flops
            a[2] += o.bytes
        return {k: tuple(v) for k, v in sorted(acc.items(), key=lambda kv: -kv[1][2])}


def _tensor_bytes(t: torch.Tensor) -> int:
    # the elements a kernel touches: a view's own extent, not its base storage's (an expanded
    # tensor is read once per distinct element at best: count its storage when that is smaller)
    full = t.numel() * t.element_size()
    try:
        return min(full, t.untyped_storage().nbytes())
    except (RuntimeError, NotImplementedError):
        return full


class _CountMode(TorchDispatchMode):
    def __init__(self, traffic: Traffic):
        super().__init__()
        self.traffic = traffic

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__.rstrip("_")
        if name in _VIEW_OPS or name in _FREE_OPS:
            return out
        flops = 0
        if func.overloadpacket in flop_registry:
            flops = int(flop_registry[func.overloadpacket](*args, **kwargs, out_val=out))
        moved = sum(_tensor_bytes(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor))
        moved += sum(_tensor_bytes(t) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        if name in ("copy", "clone", "contiguous", "_to_copy") and moved == 0:
            return out
        self.traffic.ops.append(OpCount(name, flops, moved))
        return out


def count_forward(model: torch.nn.Module, x: torch.Tensor) -> Traffic:
    """Per-op FLOPs and bytes of one no-grad forward of ``model`` (moved to ``meta``; the caller's
    model is not modified: pass a copy if it must stay on its device)."""
    model, x = model.to("meta"), x.to("meta")
    with torch.no_grad():
        model(x)  # weights prepared once at inference (syno.codegen.hoist) are not counted per call
    traffic = Traffic()
    with torch.no_grad(), _CountMode(traffic):
        model(x)
    return traffic


__all__ = ["H100", "OpCount", "Traffic", "count_forward"]
