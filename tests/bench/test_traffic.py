"""The per-op traffic counter behind the roofline column of benchmarks/space_speed.py."""

import torch
from torch import nn

from syno.bench.traffic import H100, count_forward


class RollThenConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv(torch.roll(x, 1, 2).permute(0, 1, 3, 2))  # a view between: no kernel of its own


def test_counts_flops_and_bytes_per_kernel_and_skips_views():
    x = torch.randn(2, 8, 10, 10)
    traffic = count_forward(RollThenConv(), x)
    names = [o.name for o in traffic.ops]
    assert names == ["roll", "convolution"], names
    roll, conv = traffic.ops
    x_bytes = x.numel() * 4
    assert roll.flops == 0 and roll.bytes == 2 * x_bytes  # read once, written once
    assert conv.flops == 2 * 2 * 16 * 10 * 10 * 8 * 9     # PyTorch's formula: 2 x MACs
    assert conv.bytes == x_bytes + 16 * 8 * 9 * 4 + 2 * 16 * 10 * 10 * 4
    # roofline: each kernel at the slower of its arithmetic and its memory time, plus a launch
    want = sum(max(o.flops / H100["flops"], o.bytes / H100["bandwidth"]) + H100["launch"] for o in traffic.ops)
    assert abs(traffic.seconds() - want) < 1e-15 and traffic.kernels == 2


def test_prepared_weights_are_not_counted_per_call():
    from syno.codegen import build_module
    from syno.ir import library

    mod = build_module(library.conv2d(), {"N": 2, "C_in": 4, "C_out": 4, "H": 6}, implementation="fast:min")
    nn.init.normal_(mod.weight1)
    traffic = count_forward(mod, torch.randn(2, 4, 6, 6))
    # the inference forward of a conv is the conv: the weight's layout copy is prepared once
    assert [o.name for o in traffic.ops] == ["convolution"], traffic.by_op()
