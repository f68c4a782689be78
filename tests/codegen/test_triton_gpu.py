"""CUDA: generated Triton kernels vs the reference evaluator (run with -m gpu).

Sampled operators (tiny preset) in fp32 (no TF32: tolerance 1e-4 relative) and bf16 (inputs
rounded to bf16, fp32 accumulation: tolerance 3e-2 relative), forward and the gradients of the
input and every weight; the library operators at ResNet-like sizes, channels_last, through the
module API. ``SYNO_TRITON_GPU_COUNT`` (default 200) sets the number of sampled operators.
"""

import os

import pytest
import torch

from syno.codegen.torch import build_module
from syno.codegen.triton.runtime import TritonOperator
from syno.ir import library
from syno.ir.evaluate import reference_forward
from syno.ir.lowering import plan_for

pytestmark = pytest.mark.gpu

COUNT = int(os.environ.get("SYNO_TRITON_GPU_COUNT", "200"))
MAPPING = {"N": 2, "C_in": 16, "C_out": 16, "H": 8}
TOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2}


@pytest.fixture(scope="module")
def sampled():
    from syno.synth import sample_operators
    seed = int(os.environ.get("SYNO_SAMPLE_SEED", "7"))
    return [op for _, op in sample_operators("tiny", COUNT, seed=seed, workers=1)]


def _rel(a, b):
    return ((a.float() - b.float()).norm() / (b.float().norm() + 1e-12)).item()


def check(op, mapping, dtype):
    plan = plan_for(op, mapping)
    T = TritonOperator(plan)
    shapes = [tuple(plan.values[c] for c in t) for t in plan.analysis.tensors]
    ins = [torch.randn(s, device="cuda").to(dtype).float().requires_grad_(True) for s in shapes]
    ref = reference_forward(op, mapping, ins)
    g = torch.randn_like(ref)
    want = torch.autograd.grad((ref * g).sum(), ins)
    y, inter = T.forward(ins[0].detach().to(dtype), [w.detach().to(dtype) for w in ins[1:]])
    assert _rel(y, ref) < TOL[dtype], (op.hash, "forward", dtype)
    got = T.backward(g.to(dtype), ins[0].detach().to(dtype), [w.detach().to(dtype) for w in ins[1:]],
                     inter, [True] * len(ins))
    for k, (a, b) in enumerate(zip(got, want)):
        assert _rel(a, b) < TOL[dtype], (op.hash, f"grad {k}", dtype)


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sampled_operators_cuda(sampled, dtype):
    assert len(sampled) == COUNT
    for op in sampled:
        check(op, MAPPING, dtype)


@pytest.mark.parametrize("name", ["conv2d", "operator1", "stacked_conv", "grouped_conv2d", "depthwise_conv2d"])
def test_library_channels_last_module(name):
    m = {"N": 3, "C_in": 64, "C_out": 64, "H": 7}
    mod = build_module(library.HAND_BUILT[name](), m, implementation="triton").cuda()
    x = torch.randn(3, 64, 7, 7, device="cuda").to(memory_format=torch.channels_last).requires_grad_(True)
    ref = mod.reference_forward(x)
    gref = torch.autograd.grad(ref.square().sum(), [x] + mod.weights)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = mod(x)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    assert _rel(y, ref) < 3e-2
    g = torch.autograd.grad(y.float().square().sum(), [x] + mod.weights)
    for a, b in zip(g, gref):
        assert _rel(a, b) < 5e-2


def test_compile_cudagraphs_and_tune(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNO_CACHE_DIR", str(tmp_path))
    m = {"N": 8, "C_in": 64, "C_out": 64, "H": 14}
    mod = build_module(library.operator1(), m, implementation="triton").cuda()
    x = torch.randn(8, 64, 14, 14, device="cuda").to(memory_format=torch.channels_last)
    res = mod.tune(x, budget_s=30, backends=["triton"], plans=["min"])
    assert res.implementation == mod.implementation == "triton:min" and res.tiles["triton:min"]
    assert (tmp_path / "triton_tune.json").exists()
    ref = mod.reference_forward(x)
    comp = torch.compile(mod, fullgraph=True, mode="reduce-overhead")
    for _ in range(3):
        y = comp(x)
    assert _rel(y, ref) < 1e-4
