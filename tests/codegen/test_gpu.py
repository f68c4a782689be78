"""CUDA: fast path == reference, AMP, autotuner cache, torch.compile (run with -m gpu)."""

import json

import pytest
import torch

from syno.codegen import fast
from syno.codegen.torch import build_module
from syno.ir import library

pytestmark = pytest.mark.gpu

M = {"N": 4, "C_in": 64, "C_out": 64, "H": 8}


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("name", list(library.HAND_BUILT))
def test_cuda_variants_match_reference(name):
    m = {"N": 2, "seq_len": 5, "H_in": 64, "H_out": 32} if name == "linear" else M
    mod = build_module(library.HAND_BUILT[name](), m).cuda()
    shape = [mod.plan.values[c] for c in mod.plan.analysis.tensors[0]]
    x = torch.randn(shape, device="cuda", requires_grad=True)
    ref = mod.reference_forward(x)
    gref = torch.autograd.grad(ref.square().sum(), [x] + mod.weights)
    for v in fast.candidate_variants(mod):
        mod.implementation = v
        y = mod(x)
        assert (y - ref).norm() / ref.norm() < 1e-5, v
        g = torch.autograd.grad(y.square().sum(), [x] + mod.weights)
        for a, b in zip(g, gref):
            assert (a - b).norm() / b.norm() < 1e-4, v


@pytest.mark.parametrize("name", ["operator1", "stacked_conv", "conv2d"])
def test_cuda_autocast_bf16_channels_last(name):
    mod = build_module(library.HAND_BUILT[name](), M, implementation="fast").cuda()
    x = torch.randn(4, 64, 8, 8, device="cuda").to(memory_format=torch.channels_last)
    ref = mod.reference_forward(x.float().contiguous())
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = mod(x)
    assert y.dtype == torch.bfloat16
    assert (y.float() - ref).norm() / ref.norm() < 2e-2
    y.float().sum().backward()
    assert all(w.grad is not None and torch.isfinite(w.grad).all() for w in mod.weights)


def test_autotune_picks_and_caches(tmp_path, monkeypatch):
    """The explicit step (compile_operator) times every registry candidate (cuDNN variants and
    Triton) by GPU time once, caches the winner on disk, and a second module with the same key
    reads the cache; forward itself never tunes (test_no_tuning_in_forward.py)."""
    from syno.codegen import registry
    monkeypatch.setenv("SYNO_CACHE_DIR", str(tmp_path))
    mod = build_module(library.operator1(), M).cuda()
    x = torch.randn(4, 64, 8, 8, device="cuda")
    choice = registry.compile_operator(mod, x, tune_tiles=False).implementation  # tiles: test_triton_gpu.py
    y = mod(x)
    names = registry.candidates(mod, "cuda")
    assert choice == mod.implementation and choice in names and any(n.startswith("triton") for n in names)
    data = json.loads((tmp_path / "registry.json").read_text())
    (entry,) = data.values()
    assert entry["choice"] == choice and set(entry["ms"]) == set(names)
    monkeypatch.setattr(registry, "measure", lambda *a, **k: pytest.fail("measured again"))
    mod2 = build_module(library.operator1(), M).cuda()
    assert registry.compile_operator(mod2, x, tune_tiles=False).cached and mod2.implementation == choice
    assert torch.allclose(mod2(x).float().std(), y.float().std(), rtol=0.5)


def test_cuda_compile_fullgraph():
    torch._dynamo.reset()
    mod = build_module(library.operator1(), M, implementation="fast:nodiag").cuda()
    x = torch.randn(4, 64, 8, 8, device="cuda", requires_grad=True)
    ref = mod(x)
    y = torch.compile(mod, fullgraph=True)(x)
    assert (y - ref).norm() / ref.norm() < 1e-5
    y.sum().backward()
