import copy

import pytest
import torch
from torch import nn

from syno.models import (ConvPlaceholder, LinearPlaceholder, PooledPlaceholder, build_mappings, build_model,
                         fill_placeholders, model_mappings, placeholders, profile, profile_fill,
                         reset_placeholders, sample_input)
from syno.models.placeholder import replace_convs


def conv3x3_factory(mapping):
    return nn.Conv2d(mapping["C_in"], mapping["C_out"], 3, padding=1, bias=False)


def _copy_original_weights(model):
    for p in placeholders(model):
        with torch.no_grad():
            p.kernel.weight.copy_(p.original_layer.weight)


def test_tiny_mappings_and_types():
    m = build_model("tiny")
    phs = placeholders(m)
    assert [type(p) for p in phs] == [ConvPlaceholder] * 3
    assert model_mappings(m) == [
        {"N": 1, "C_in": 16, "C_out": 16, "H": 16},
        {"N": 1, "C_in": 16, "C_out": 32, "H": 8},
        {"N": 1, "C_in": 32, "C_out": 32, "H": 8},
    ]
    # the stride-2 conv became AvgPool + stride-1 placeholder; the 1-channel stem was excluded
    assert isinstance(m.layer2[0], PooledPlaceholder)
    assert isinstance(m.stem[0], nn.Conv2d) and not isinstance(m.stem[0], ConvPlaceholder)
    assert m(torch.randn(2, 1, 16, 16)).shape == (2, 10)


def test_mapping_batch_and_meta_equal_real_pass():
    m = build_model("tiny", mapping_batch=7)
    assert {mp["N"] for mp in model_mappings(m)} == {7}
    real = build_mappings(m, torch.zeros(3, 1, 16, 16))
    meta = build_mappings(m, torch.zeros(3, 1, 16, 16, device="meta"))
    assert real == meta and real[0]["N"] == 3


def test_fill_conv_equal_operator_keeps_outputs_and_flops_and_reset_restores():
    torch.manual_seed(0)
    m = build_model("tiny").eval()
    x = torch.randn(4, 1, 16, 16)
    before_out = m(x)
    before_params = {k: v.clone() for k, v in m.state_dict().items()}
    original_ids = [id(p.original_layer) for p in placeholders(m)]

    report = profile_fill(m, x, conv3x3_factory)
    assert all(p.is_filled and p.referred_layer is None for p in placeholders(m))
    _copy_original_weights(m)
    assert torch.equal(m(x), before_out)
    assert report.after.macs == report.before.macs and report.after.params == report.before.params
    assert report.after.placeholder_macs == report.before.placeholder_macs
    # the stashed originals are not parameters of the model while filled
    n_params_filled = sum(p.numel() for p in m.parameters())
    assert n_params_filled == report.before.params

    # a different operator changes outputs; reset brings the original layers (same objects) back
    for p in placeholders(m):
        nn.init.zeros_(p.kernel.weight)
    assert not torch.allclose(m(x), before_out)
    reset_placeholders(m)
    assert [id(p.referred_layer) for p in placeholders(m)] == original_ids
    assert not any(p.is_filled for p in placeholders(m))
    assert torch.equal(m(x), before_out)
    after = m.state_dict()
    assert after.keys() == before_params.keys()
    assert all(torch.equal(after[k], before_params[k]) for k in after)


def test_resnet18_fill_with_own_layers_identical_and_flops_of_3x3_factory():
    torch.manual_seed(0)
    m = build_model("resnet18", image_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    ref = m(x)
    base = profile(m, x)
    for p in placeholders(m):
        p.fill(copy.deepcopy(p.original_layer))
    assert torch.equal(m(x), ref)
    assert profile(m, x).macs == base.macs
    reset_placeholders(m)

    # a 3x3 operator everywhere: the three 1x1 downsample placeholders cost 9x as much
    kernels = [p.kernel_size for p in placeholders(m)]
    one_by_one = sum(mac for mac, k in zip(base.placeholder_macs, kernels) if k == (1, 1))
    assert kernels.count((1, 1)) == 3
    report = profile_fill(m, x, conv3x3_factory)
    assert report.after.macs == base.macs + 8 * one_by_one
    assert report.before.macs == base.macs
    assert m(x).shape == (2, 100)


def test_filled_model_moves_with_to_and_reset_keeps_dtype():
    m = build_model("tiny")
    fill_placeholders(m, conv3x3_factory)
    m.to(torch.float64)
    reset_placeholders(m)
    assert all(p.referred_layer.weight.dtype == torch.float64 for p in placeholders(m))
    assert m(torch.randn(1, 1, 16, 16, dtype=torch.float64)).dtype == torch.float64


def test_fill_before_mapping_raises():
    m = build_model("tiny", placeholders=False)
    replace_convs(m, lambda c: True)
    with pytest.raises(RuntimeError, match="build_mappings"):
        fill_placeholders(m, conv3x3_factory)
    with pytest.raises(RuntimeError, match="build_mappings"):
        model_mappings(m)


def test_exclusion_of_tiny_layers_restores_stride2_conv():
    torch.manual_seed(0)
    # at 6x6 input the stride-2 placeholder sees H=3 < 4: excluded, original stride-2 conv restored
    m = build_model("tiny", image_size=6)
    assert len(placeholders(m)) == 1 and model_mappings(m)[0]["H"] == 6
    assert not any(isinstance(mod, PooledPlaceholder) for mod in m.modules())
    conv = m.layer2[0]
    assert type(conv) is nn.Conv2d and conv.stride == (2, 2)
    assert m(torch.randn(1, 1, 6, 6)).shape == (1, 10)
    keep_all = build_model("tiny", image_size=6, exclude_small=False)
    assert len(placeholders(keep_all)) == 4  # stem (C_in=1) and the H=3 layer kept


def test_excluded_stride2_placeholder_gives_back_same_function():
    torch.manual_seed(0)
    vanilla = build_model("tiny", placeholders=False, image_size=6).eval()
    m = copy.deepcopy(vanilla)
    replace_convs(m, lambda c: True)
    build_mappings(m, torch.zeros(1, 1, 6, 6))
    x = torch.randn(2, 1, 6, 6)
    assert torch.equal(m.eval()(x), vanilla(x))  # stem and layer2 restored exactly, others unchanged


def test_odd_spatial_size_downsample_matches_conv_shape():
    # AvgPool with ceil_mode keeps the stride-2 conv's output size for odd H (7 -> 4)
    m = build_model("resnet18", image_size=224, exclude_small=False)
    shapes = {tuple(mp.values())[1:] for mp in model_mappings(m)}
    assert (256, 512, 7) in shapes
    vanilla = build_model("resnet18", image_size=63, placeholders=False)
    m = build_model("resnet18", image_size=63)
    x = torch.randn(1, 3, 63, 63)
    assert m(x).shape == vanilla(x).shape


def test_gpt2_linear_placeholders_fill_identical():
    torch.manual_seed(0)
    m = build_model("gpt2", n_layer=2, n_head=2, n_embd=32, vocab_size=64, seq_len=8, dropout=0.0).eval()
    phs = placeholders(m)
    assert [type(p) for p in phs] == [LinearPlaceholder] * 2
    assert model_mappings(m) == [{"N": 1, "seq_len": 8, "H_in": 32, "H_out": 96}] * 2
    assert all(p.original_layer.bias is None for p in phs)  # bias-free like the original
    idx = torch.randint(0, 64, (3, 8))
    ref = m(idx)
    fill_placeholders(m, lambda mp: nn.Linear(mp["H_in"], mp["H_out"], bias=False))
    for p in phs:
        with torch.no_grad():
            p.kernel.weight.copy_(p.original_layer.weight)
    assert torch.equal(m(idx), ref)
    reset_placeholders(m)
    assert torch.equal(m(idx), ref)


def test_sample_input_shapes():
    m = build_model("gpt2", n_layer=1, n_head=1, n_embd=8, vocab_size=16, seq_len=4)
    s = sample_input(m, 2)
    assert s.shape == (2, 4) and s.dtype == torch.long
    assert sample_input(build_model("tiny"), 3).shape == (3, 1, 16, 16)
