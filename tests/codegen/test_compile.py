"""torch.compile(fullgraph=True) on CPU (Inductor); one test per operator, ~10-20 s each."""

import pytest
import torch

from syno.codegen.torch import build_module
from syno.ir import library

M = {"N": 2, "C_in": 64, "C_out": 64, "H": 8}


@pytest.mark.parametrize("name,impl", [("conv2d", "einsum:min"), ("operator1", "fast:nodiag")])
def test_compile_fullgraph_cpu(name, impl):
    torch._dynamo.reset()
    mod = build_module(library.HAND_BUILT[name](), M, implementation=impl)
    compiled = torch.compile(mod, fullgraph=True)
    x = torch.randn(2, 64, 8, 8, requires_grad=True)
    ref = mod.reference_forward(x)
    y = compiled(x)
    assert torch.allclose(y, ref, atol=1e-4, rtol=1e-4)
    y.square().sum().backward()
    gx = x.grad.clone()
    x.grad = None
    ref.square().sum().backward()
    assert torch.allclose(gx, x.grad, atol=1e-4, rtol=1e-3)
    # another batch size: no graph break, still right
    x2 = torch.randn(5, 64, 8, 8)
    assert torch.allclose(compiled(x2), mod.reference_forward(x2), atol=1e-4, rtol=1e-4)
