"""Generated modules agree with the reference evaluator (forward and gradients) on CPU."""

import copy
import io
import pickle

import pytest
import torch

from syno.codegen.fast import candidate_variants
from syno.codegen.torch import SynoModule, build_module, operator_factory
from syno.ir import library
from syno.ir.evaluate import reference_forward

CONV = {"N": 2, "C_in": 16, "C_out": 16, "H": 6, "g": 4}
LIN = {"N": 2, "seq_len": 3, "H_in": 8, "H_out": 6}
NAMES = list(library.HAND_BUILT)


def mapping_of(name):
    return LIN if name == "linear" else CONV


def input_for(mod, n=None, dtype=torch.float64):
    shape = [mod.plan.values[c] for c in mod.plan.analysis.tensors[0]]
    if n is not None:
        shape[0] = n
    return torch.randn(shape, dtype=dtype)


def assert_close(a, b, tol=1e-10):
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= tol * (1 + b.abs().max().item())


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_grads_match_reference_all_variants(name):
    op = library.HAND_BUILT[name]()
    m = mapping_of(name)
    mod = build_module(op, m).double()
    x = input_for(mod).requires_grad_(True)
    ws = [w.detach().clone().requires_grad_(True) for w in mod.weights]
    ref = reference_forward(op, m, [x] + ws)
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad((ref * g).sum(), [x] + ws)
    for variant in candidate_variants(mod):
        mod.implementation = variant
        y = mod._select(x)(x, *ws)
        assert_close(y, ref)
        grads = torch.autograd.grad((y * g).sum(), [x] + ws)
        for a, b in zip(grads, ref_grads):
            assert_close(a, b)


@pytest.mark.parametrize("name,impl", [(n, "fast:min") for n in ("conv2d", "operator1", "stacked_conv",
                                                                   "grouped_conv2d", "linear")]
                         + [("conv2d", "einsum:min"), ("linear", "einsum:min"), ("operator1", "fastd:nodiag")])
def test_gradcheck(name, impl):
    op = library.HAND_BUILT[name]()
    m = ({"N": 1, "C_in": 4, "C_out": 4, "H": 3, "g": 2} if name != "linear"
         else {"N": 1, "seq_len": 2, "H_in": 3, "H_out": 2})
    mod = build_module(op, m, implementation=impl).double()
    x = input_for(mod).requires_grad_(True)
    ws = [w.detach().clone().requires_grad_(True) for w in mod.weights]
    fn = mod._select(x)
    assert torch.autograd.gradcheck(lambda *a: fn(*a), (x, *ws), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["conv2d", "operator1", "linear"])
def test_any_batch_size(name):
    op = library.HAND_BUILT[name]()
    m = mapping_of(name)
    mod = build_module(op, m).double()
    for n in (1, 5):
        x = input_for(mod, n)
        ref = reference_forward(op, {**m, "N": n}, [x] + list(mod.weights))
        assert_close(mod(x), ref)
        assert mod.count_macs(x, None) == mod.plan.macs_for(N=n)


def test_wrong_static_shape_is_a_clear_error():
    mod = build_module(library.conv2d(), CONV)
    with pytest.raises(ValueError, match="input must have shape"):
        mod(torch.randn(2, 8, 6, 6))


@pytest.mark.parametrize("name", ["conv2d", "operator1", "stacked_conv", "grouped_conv2d"])
def test_channels_last_input(name):
    mod = build_module(library.HAND_BUILT[name](), CONV)
    x = torch.randn(2, 16, 6, 6)
    ref = mod.reference_forward(x)
    xc = x.to(memory_format=torch.channels_last)
    for impl in ("einsum:min", "fast:min", "fast:nodiag"):
        mod.implementation = impl
        assert torch.allclose(mod(xc), ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["conv2d", "operator1"])
def test_autocast_bf16_cpu(name):
    mod = build_module(library.HAND_BUILT[name](), CONV)
    x = torch.randn(2, 16, 6, 6)
    ref = mod.reference_forward(x)
    for impl in ("einsum:min", "fast:min"):
        mod.implementation = impl
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = mod(x)
        assert y.dtype == torch.bfloat16
        rel = (y.float() - ref).norm() / ref.norm()
        assert rel < 2e-2
        y.float().sum().backward()
        assert all(w.grad is not None for w in mod.weights)
        mod.zero_grad()


def test_init_matches_conv_default_scale():
    torch.manual_seed(0)
    m = {"N": 16, "C_in": 64, "C_out": 64, "H": 8}
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False)
    x = torch.randn(16, 64, 8, 8)
    ref_std = conv(x).std().item()
    for name in ("conv2d", "operator1", "stacked_conv"):
        y = build_module(library.HAND_BUILT[name](), m)(x)
        assert 0.7 < y.std().item() / ref_std < 1.4, name
    conv_mod = build_module(library.conv2d(), m)
    bound = 1 / (64 * 9) ** 0.5
    assert conv_mod.weight1.abs().max() <= bound
    assert conv_mod.weight1.abs().max() > 0.9 * bound


def test_module_api_and_pickling():
    op = library.operator1()
    mod = build_module(op, CONV)
    assert mod.plan.flops > 0
    names = [n for n, _ in mod.named_parameters()]
    assert names == ["weight1", "weight2"]
    assert tuple(mod.weight1.shape) == (4, 3, 3, 16, 2)
    x = torch.randn(2, 16, 6, 6)
    y = mod(x)
    for clone in (copy.deepcopy(mod), pickle.loads(pickle.dumps(mod))):
        assert isinstance(clone, SynoModule)
        assert torch.equal(clone(x), y)
    buf = io.BytesIO()
    torch.save(mod, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert torch.equal(loaded(x), y)
    assert "operator1" in repr(mod)


def test_operator_factory_fills_placeholders():
    from syno.models.placeholder import build_mappings, fill_placeholders, replace_convs
    from syno.models.profile import module_macs

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(32, 64, 3, padding=1, bias=False), torch.nn.ReLU())
    assert replace_convs(model, lambda c: c.in_channels >= 16) == 1
    mappings = build_mappings(model, torch.randn(4, 3, 8, 8))
    assert mappings == [{"N": 4, "C_in": 32, "C_out": 64, "H": 8}]
    factory = operator_factory(library.operator1())
    assert factory.operator.name == "operator1"
    (mod,) = fill_placeholders(model, factory)
    assert isinstance(mod, SynoModule)
    x = torch.randn(3, 3, 8, 8)
    y = model(x)
    assert y.shape == (3, 64, 8, 8)
    inner = torch.randn(3, 32, 8, 8)
    assert module_macs(mod, inner, mod(inner)) == mod.plan.macs_for(N=3)
