"""Weight preparation hoisted out of inference forwards (syno.codegen.hoist)."""

import os
import time
from pathlib import Path

import pytest
import torch

from syno.codegen.cost import measure_peak_bytes
from syno.codegen.fast import variant_source
from syno.codegen.hoist import PreparedForward, split_prepare
from syno.codegen.torch import build_module
from syno.ir.evaluate import reference_forward
from syno.ir.graph import Operator
from syno.synth import sampler as synth

MAPPING = {"N": 2, "C_in": 16, "C_out": 16, "H": 8}  # a tiny-preset mapping
VARIANTS = ("einsum:min", "fast:min", "fastd:min")
# resnet18-preset operator 82e390d2 (space-speed sample, seed 0): at 512@7 its forward rolls a
# 56 MB weight (a Shift on the weight side) -- the slowest operator at N=1 on the H100 (0.265x)
WEIGHT_ROLL = Path(__file__).parent / "data" / "weight_roll_resnet18.json"


@pytest.fixture(scope="module")
def sampled():
    seed = int(os.environ.get("SYNO_SAMPLE_SEED", time.time_ns() % 100_000))
    print(f"sampled operators: seed {seed}")
    return [op for _, op in synth.sample_operators("tiny", 40, seed=seed, workers=1, use_cache=False)]


def _inputs(mod):
    shape = tuple(mod.plan.values[c] for c in mod.plan.analysis.tensors[0])
    x = torch.randn(shape, dtype=torch.float64)
    return [x] + ([x.contiguous(memory_format=torch.channels_last)] if x.dim() == 4 else [])


def test_prepared_forwards_match_the_reference_and_follow_weight_updates(sampled):
    torch.manual_seed(0)
    prepared = 0
    for op in sampled:
        mod = build_module(op, MAPPING).double()
        for v in VARIANTS:
            mod.implementation = v
            fn = mod._select(torch.empty(0))
            prepared += isinstance(fn, PreparedForward)
            for x in _inputs(mod):
                with torch.no_grad():
                    ref = reference_forward(op, MAPPING, [x] + list(mod.weights))
                    tol = 1e-9 * (1 + ref.abs().max())
                    first, second = mod(x), mod(x)
                    assert (first - ref).abs().max() <= tol, (op.hash, v)
                    assert torch.equal(first, second), (op.hash, v)
                    mod.weights[0].mul_(-0.5)  # in place: the version counter moves, the cache must too
                    ref2 = reference_forward(op, MAPPING, [x] + list(mod.weights))
                    assert (mod(x) - ref2).abs().max() <= tol, (op.hash, v, "after a weight update")
    assert prepared >= len(sampled)  # most sampled operators have weight-only work to hoist


def _prepared_module(sampled):
    """The first sampled operator whose fast:min forward has weight preparation: (op, module, its
    PreparedForward, an input)."""
    op = next(op for op in sampled
              if isinstance(build_module(op, MAPPING, implementation="fast:min")._select(torch.empty(0)),
                            PreparedForward))
    mod = build_module(op, MAPPING, implementation="fast:min").double()
    return op, mod, mod._select(torch.empty(0)), _inputs(mod)[0]


def test_training_runs_the_original_forward_and_drops_the_cache(sampled):
    op, mod, fn, x = _prepared_module(sampled)
    with torch.no_grad():
        mod(x), mod(x)
    assert (fn.misses, fn.hits) == (1, 1)
    y = mod(x)  # grad mode, weights require grad: the plain forward, gradients flow
    assert (fn.misses, fn.hits) == (1, 1) and fn._key is None
    y.square().sum().backward()
    assert all(w.grad is not None for w in mod.weights)
    ref = reference_forward(op, MAPPING, [x] + [w.detach() for w in mod.weights])
    assert (y.detach() - ref).abs().max() <= 1e-9 * (1 + ref.abs().max())


def test_rolled_weight_is_prepared_once():
    op = Operator.from_json(WEIGHT_ROLL.read_text())
    mapping = {"N": 1, "C_in": 512, "C_out": 512, "H": 7}
    mod = build_module(op, mapping, implementation="fast:min")
    fn = mod._select(torch.empty(0))
    assert isinstance(fn, PreparedForward)
    split = split_prepare(variant_source(mod, "fast:min"))
    assert "torch.roll(w1" in split.prepare and "torch.roll(w1" not in split.main
    x = torch.randn(1, 512, 7, 7)
    with torch.no_grad():
        want = fn.forward(x, *mod.weights)
        first = measure_peak_bytes(lambda t: mod(t), x)
        again = measure_peak_bytes(lambda t: mod(t), x)
        got = mod(x)
    assert torch.equal(got, want)
    weight_bytes = sum(w.numel() * w.element_size() for w in mod.weights)
    # the first call builds the rolled copy of the 56 MB weight; later calls allocate activations only
    assert first - again >= 0.9 * mod.weights[0].numel() * 4 and again < 0.1 * weight_bytes, (first, again)


def test_split_keeps_a_forward_whose_prepared_name_is_reassigned_from_the_data():
    src = ("def forward(x, w1):\n"
           "    t1 = w1.t()\n"
           "    t2 = x @ t1\n"
           "    t1 = t2 + 1\n"
           "    return t1\n")
    assert split_prepare(src) is None
    ok = ("def forward(x, w1):\n"
          "    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()\n"
          "    t1 = w1.t()\n"
          "    if cl:\n"
          "        t1 = t1.contiguous()\n"
          "    t2 = x @ t1\n"
          "    del t1\n"
          "    return t2\n")
    split = split_prepare(ok)
    assert split.outputs == ("t1",) and split.prepare.startswith("def prepare(cl, x_device, x_dtype, w1)")
    assert "if cl:" in split.prepare and "del" not in split.main


def test_constants_built_on_the_data_device_are_prepared_once():
    # a selection tensor reads only x.device / x.dtype: hoisted with the weight it is folded into,
    # so an inference forward is the data statements alone
    src = ("def forward(x, w1):\n"
           "    e1 = (torch.arange(4, device=x.device)[:, None] == torch.arange(4, device=x.device)[None, :]).to(x.dtype)\n"
           "    t2 = torch.einsum('ab,bc->ac', w1, e1)\n"
           "    del e1\n"
           "    t3 = x @ t2\n"
           "    return t3\n")
    split = split_prepare(src)
    assert split.outputs == ("t2",) and "arange" in split.prepare and "arange" not in split.main
    assert "x_device" in split.prepare and "x.device" not in split.prepare
    from syno.codegen.torch import compile_forward
    fwd = compile_forward(src)
    w = torch.randn(4, 4)
    with torch.no_grad():
        for dtype in (torch.float32, torch.float64):  # the dtype is part of the key
            x, wd = torch.randn(3, 4, dtype=dtype), w.to(dtype)
            assert torch.allclose(fwd(x, wd), x @ wd)
            assert fwd(x, wd).dtype == dtype
    assert fwd.misses == 2


def test_new_weight_tensors_are_never_mistaken_for_the_cached_ones(sampled):
    # functional use: fresh weight tensors each call (same shapes, possibly the same memory)
    op, mod, fn, x = _prepared_module(sampled)
    with torch.no_grad():
        for k in range(3):
            ws = [torch.randn_like(w) for w in mod.weights]
            ref = reference_forward(op, MAPPING, [x] + ws)
            assert (fn(x, *ws) - ref).abs().max() <= 1e-9 * (1 + ref.abs().max()), k
            del ws
    assert fn.misses == 3


def test_inference_mode_and_inference_tensor_weights(sampled):
    op, mod, fn, x = _prepared_module(sampled)
    ref = reference_forward(op, MAPPING, [x] + [w.detach() for w in mod.weights])
    tol = 1e-9 * (1 + ref.abs().max())
    with torch.inference_mode():
        assert (mod(x) - ref).abs().max() <= tol and (mod(x) - ref).abs().max() <= tol
        assert fn.hits >= 1
        frozen = [w.detach().clone() for w in mod.weights]  # inference tensors: no version counter
        assert (fn(x, *frozen) - ref).abs().max() <= tol


def test_a_layout_flag_that_reads_more_than_the_input_is_not_hoisted_around():
    src = ("def forward(x, w1):\n"
           "    v_N = x.shape[0]\n"
           "    cl = v_N > 1\n"
           "    t1 = w1.t()\n"
           "    if cl:\n"
           "        t1 = t1.contiguous()\n"
           "    return x @ t1\n")
    # cl is not recomputable from x alone, so `if cl:` stays in the forward; it reassigns the prepared
    # t1 there, so nothing is hoisted at all (the forward runs as written)
    assert split_prepare(src) is None
    assert split_prepare(src.replace("    cl = v_N > 1\n", "    cl = x.is_contiguous()\n")).layout
