"""The hand-written operator modules compute exactly their IR operators (reference evaluator)."""

import pytest
import torch

from syno.bench.manual import MANUAL_FACTORIES, Operator1, StackedConv, conv2d_module, manual_factory
from syno.ir.evaluate import random_inputs, reference_forward
from syno.ir.library import HAND_BUILT

WEIGHTS = {"operator1": ("w1", "w2"), "stacked_conv": ("w1", "w2"), "conv2d": ("weight",)}
MAPPINGS = [{"N": 2, "C_in": 64, "C_out": 64, "H": 5}, {"N": 1, "C_in": 64, "C_out": 128, "H": 4},
            {"N": 1, "C_in": 128, "C_out": 64, "H": 3}]


@pytest.mark.parametrize("name", sorted(MANUAL_FACTORIES))
@pytest.mark.parametrize("mapping", MAPPINGS, ids=lambda m: f"{m['C_in']}-{m['C_out']}-{m['H']}")
def test_matches_reference(name, mapping):
    op = HAND_BUILT[name]()
    g = torch.Generator().manual_seed(0)
    inputs = random_inputs(op, mapping, generator=g)
    ref = reference_forward(op, mapping, inputs)
    module = manual_factory(name)(mapping).double()
    with torch.no_grad():
        for attr, w in zip(WEIGHTS[name], inputs[1:], strict=True):
            assert getattr(module, attr).shape == w.shape
            getattr(module, attr).copy_(w)
        out = module(inputs[0])
    assert out.shape == ref.shape
    assert torch.linalg.norm(out - ref) / torch.linalg.norm(ref) < 1e-12
    # parameter count = the IR's
    assert sum(p.numel() for p in module.parameters()) == sum(op.params(op.bind([mapping])))


def test_gradients_flow_to_ir_weights():
    m = Operator1({"C_in": 64, "C_out": 64})
    m(torch.randn(1, 64, 6, 6)).square().mean().backward()
    assert m.w1.grad is not None and m.w2.grad is not None and m.w2.grad.abs().sum() > 0


def test_bad_channels_raise():
    with pytest.raises(ValueError):
        StackedConv({"C_in": 16, "C_out": 64})      # C_in < g
    with pytest.raises(ValueError):
        Operator1({"C_in": 64, "C_out": 96})        # C_out % (g*s) != 0
    with pytest.raises(KeyError):
        manual_factory("depthwise_conv2d")


def test_conv2d_module_is_plain_conv():
    m = conv2d_module({"C_in": 3, "C_out": 8})
    assert isinstance(m, torch.nn.Conv2d) and m.bias is None and m.padding == (1, 1)


@pytest.mark.parametrize("cls", [Operator1, StackedConv])
def test_count_macs_matches_torch_flop_counter(cls):
    from torch.utils.flop_counter import FlopCounterMode

    m = cls({"C_in": 64, "C_out": 128})
    x = torch.randn(2, 64, 7, 7)
    with FlopCounterMode(display=False) as fc:
        m(x)
    conv_flops = sum(v for k, v in fc.get_flop_counts()["Global"].items() if "convolution" in str(k))
    assert m.count_macs(x) == conv_flops // 2
