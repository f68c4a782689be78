"""Hand-written PyTorch implementations of the paper's operators (cf. the original's ``manual_kernels.py``).

They are the counterpart of the original's ``ManualImpl`` kernels: each computes exactly the
function of its IR operator in :mod:`syno.ir.library` (tested against
:func:`syno.ir.evaluate.reference_forward`), with the parameters stored in the IR's weight layout,
but lowered by hand to two cuDNN/oneDNN convolutions instead of generic einsum/unfold code:

* **Operator 1** ``Y = sum X[c, h+kh-1, w+kw-1] * W1[g(c), kh, kw, o, j] * W2[c, kw, j]``:
  stage 1 is a grouped ``(1, k)`` conv (groups ``g``) whose output channel ``(g, kw, j)`` reads only
  tap ``kw`` (the weight is ``W2`` scattered onto a diagonal), giving ``T[n, (g, kw, j), h, w]``;
  stage 2 is a dense ``(k, 1)`` conv over those ``g*k*j`` channels with ``W1``.
* **Stacked conv** ``Y = sum X[c, h+kh-1, w+kw2+kw1-2] * W1[o, g(c), kh, kw2, j] * W2[c, kw1, j]``:
  stage 1 is a grouped ``(1, k)`` conv (groups ``g``) with ``W2``, giving ``T[n, (g, j), h, w]``;
  stage 2 is a dense ``k x k`` conv over those ``g*j`` channels with ``W1``.
* **conv2d**: ``nn.Conv2d(C_in, C_out, k, padding=k//2, bias=False)`` (the IR's weight layout).

Coefficients default to the vision search space's ``k_1=3, s=2, g=32``; ``j = C_out / (g*s)``.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Operator1", "StackedConv", "conv2d_module", "MANUAL_FACTORIES", "manual_factory"]

DEFAULT_COEFFICIENTS = {"k_1": 3, "s": 2, "g": 32}


def _sizes(mapping: Mapping[str, int], coefficients: Mapping[str, int] | None):
    c = {**DEFAULT_COEFFICIENTS, **(coefficients or {})}
    k, s, g = int(c["k_1"]), int(c["s"]), int(c["g"])
    c_in, c_out = int(mapping["C_in"]), int(mapping["C_out"])
    if c_in % g or c_out % (g * s):
        raise ValueError(f"need C_in % g == 0 and C_out % (g*s) == 0; got C_in={c_in}, C_out={c_out}, g={g}, s={s}")
    return c_in, c_out, k, g, c_out // (g * s)


class Operator1(nn.Module):
    """The paper's Operator 1 (:func:`syno.ir.library.operator1`) as two convolutions.

    Parameters (IR layout): ``w1 [g, k, k, C_out, j]``, ``w2 [C_in, k, j]``.
    """

    def __init__(self, mapping: Mapping[str, int], coefficients: Mapping[str, int] | None = None):
        super().__init__()
        self.c_in, self.c_out, self.k, self.g, self.j = _sizes(mapping, coefficients)
        k, g, j = self.k, self.g, self.j
        self.w1 = nn.Parameter(torch.randn(g, k, k, self.c_out, j) * math.sqrt(2.0 / (g * k * k * j)))
        self.w2 = nn.Parameter(torch.randn(self.c_in, k, j) * math.sqrt(1.0 / (self.c_in // g)))
        self.register_buffer("eye", torch.eye(k), persistent=False)

    def conv_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        k, g, j, cg = self.k, self.g, self.j, self.c_in // self.g
        # stage 1: [g*k*j, C_in/g, 1, k]; output channel (g, kw, j) has tap t = kw only.
        w2 = self.w2.reshape(g, cg, k, j)
        s1 = torch.einsum("gckj,kt->gkjct", w2, self.eye).reshape(g * k * j, cg, 1, k)
        # stage 2: [C_out, g*k*j, k, 1] with input channel order (g, kw, j), tap kh.
        s2 = self.w1.permute(3, 0, 2, 4, 1).reshape(self.c_out, g * k * j, k, 1)
        return s1, s2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1, s2 = self.conv_weights()
        p = self.k // 2
        t = F.conv2d(x, s1.to(x.dtype), padding=(0, p), groups=self.g)
        return F.conv2d(t, s2.to(x.dtype), padding=(p, 0))

    def count_macs(self, input: torch.Tensor, output: torch.Tensor | None = None) -> int:
        """MACs as executed (the zoo's FLOPs protocol): stage 1 includes its zero taps (k x the useful ones)."""
        pix = input.shape[0] * input.shape[2] * input.shape[3]
        k, g, j, cg = self.k, self.g, self.j, self.c_in // self.g
        return pix * (g * k * j * cg * k + self.c_out * g * k * j * k)

    def extra_repr(self) -> str:
        return f"C_in={self.c_in}, C_out={self.c_out}, k={self.k}, g={self.g}, j={self.j}"


class StackedConv(nn.Module):
    """The paper's stacked Conv1d -> Conv2d kernel (:func:`syno.ir.library.stacked_conv`) as two convolutions.

    Parameters (IR layout): ``w1 [C_out, g, k, k, j]``, ``w2 [C_in, k, j]``.
    """

    def __init__(self, mapping: Mapping[str, int], coefficients: Mapping[str, int] | None = None):
        super().__init__()
        self.c_in, self.c_out, self.k, self.g, self.j = _sizes(mapping, coefficients)
        k, g, j = self.k, self.g, self.j
        self.w1 = nn.Parameter(torch.randn(self.c_out, g, k, k, j) * math.sqrt(2.0 / (g * k * k * j)))
        self.w2 = nn.Parameter(torch.randn(self.c_in, k, j) * math.sqrt(1.0 / (self.c_in // g * k)))

    def conv_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        k, g, j, cg = self.k, self.g, self.j, self.c_in // self.g
        s1 = self.w2.reshape(g, cg, k, j).permute(0, 3, 1, 2).reshape(g * j, cg, 1, k)
        s2 = self.w1.permute(0, 1, 4, 2, 3).reshape(self.c_out, g * j, k, k)
        return s1, s2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1, s2 = self.conv_weights()
        p = self.k // 2
        t = F.conv2d(x, s1.to(x.dtype), padding=(0, p), groups=self.g)
        return F.conv2d(t, s2.to(x.dtype), padding=p)

    def count_macs(self, input: torch.Tensor, output: torch.Tensor | None = None) -> int:
        """MACs as executed (the zoo's FLOPs protocol)."""
        pix = input.shape[0] * input.shape[2] * input.shape[3]
        k, g, j, cg = self.k, self.g, self.j, self.c_in // self.g
        return pix * (g * j * cg * k + self.c_out * g * j * k * k)

    def extra_repr(self) -> str:
        return f"C_in={self.c_in}, C_out={self.c_out}, k={self.k}, g={self.g}, j={self.j}"


def conv2d_module(mapping: Mapping[str, int], coefficients: Mapping[str, int] | None = None) -> nn.Conv2d:
    """The "conv-equal operator": a dense ``k x k`` same-padded conv without bias (weight = the IR's)."""
    k = int({**DEFAULT_COEFFICIENTS, **(coefficients or {})}["k_1"])
    return nn.Conv2d(int(mapping["C_in"]), int(mapping["C_out"]), k, padding=k // 2, bias=False)


#: Hand-built operator name -> module class/factory taking ``(mapping, coefficients=None)``.
MANUAL_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "conv2d": conv2d_module,
    "operator1": Operator1,
    "stacked_conv": StackedConv,
}


def manual_factory(name: str, coefficients: Mapping[str, int] | None = None) -> Callable[[Mapping[str, int]], nn.Module]:
    """``mapping -> nn.Module`` for a hand-built operator with a hand-written implementation."""
    if name not in MANUAL_FACTORIES:
        raise KeyError(f"no hand-written implementation of {name!r}; have {sorted(MANUAL_FACTORIES)}")
    impl = MANUAL_FACTORIES[name]
    return lambda mapping: impl(dict(mapping), coefficients)
