"""channels_last must not trip over generated operators' non-4-D weights."""

import torch
from torch import nn

from syno.train.common import to_channels_last


def test_channels_last_skips_non_4d_weights():
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    model.op_weight = nn.Parameter(torch.randn(2, 3, 4, 5, 6))  # like operator1's 5-D weight
    to_channels_last(model)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert model.op_weight.dim() == 5 and model.op_weight.is_contiguous()
