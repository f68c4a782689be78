"""Zoo models build, run, and report MACs/params equal to independent references."""

import copy

import pytest
import torch
import torchvision.models as tvm
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from syno.models import MODEL_NAMES, build_model, model_mappings, placeholders, profile, sample_input

SMALL_GPT = dict(n_layer=2, n_head=2, n_embd=32, vocab_size=128, seq_len=16)


def independent_macs(model, x) -> float:
    """torch's own FLOP counter (2 FLOPs per MAC for conv/linear/matmul/attention), run on the meta
    device (on CPU the fused attention kernel has no FLOP formula registered)."""
    model = copy.deepcopy(model).to("meta").eval()
    x = x.to("meta")
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x)
    return fc.get_total_flops() / 2 / x.shape[0]


# (weights enum, resolution of its documented _ops)
TORCHVISION_REFS = {
    "resnet18": (tvm.ResNet18_Weights.IMAGENET1K_V1, 224),
    "resnet34": (tvm.ResNet34_Weights.IMAGENET1K_V1, 224),
    "densenet121": (tvm.DenseNet121_Weights.IMAGENET1K_V1, 224),
    "efficientnet_v2_s": (tvm.EfficientNet_V2_S_Weights.IMAGENET1K_V1, 384),
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_REFS))
def test_vanilla_imagenet_macs_params_match_torchvision_docs(name):
    weights, res = TORCHVISION_REFS[name]
    m = build_model(name, num_classes=1000, image_size=res, placeholders=False)
    p = profile(m, sample_input(m, 1, device="meta"))
    assert p.params == weights.meta["num_params"]
    assert p.macs == pytest.approx(weights.meta["_ops"] * 1e9, rel=0.01)


def test_grouped_conv_counting_matches_torchvision_resnext50():
    w = tvm.ResNeXt50_32X4D_Weights.IMAGENET1K_V1
    m = tvm.resnext50_32x4d()
    p = profile(m, torch.zeros(1, 3, 224, 224, device="meta"))
    assert p.params == w.meta["num_params"]
    assert p.macs == pytest.approx(w.meta["_ops"] * 1e9, rel=0.01)


def test_original_reference_numbers():
    # reference §1.5 (thop at 224, per sample); thop also counts BN/pooling, so we are slightly lower
    m = build_model("resnet18", num_classes=1000, image_size=224)
    assert profile(m, sample_input(m, 1, "meta")).macs == pytest.approx(1.8240e9, rel=0.01)
    m = build_model("resnet34", num_classes=100, image_size=224)
    assert profile(m, sample_input(m, 1, "meta")).macs == pytest.approx(3.678e9, rel=0.01)
    m = build_model("densenet121", num_classes=100, image_size=224)
    assert profile(m, sample_input(m, 1, "meta")).macs == pytest.approx(2.896e9, rel=0.025)


def test_full_gpt2_macs_match_reference_on_meta():
    # GPT-2 small at seq 2048: thop (linear layers only) gave 2.532e11 per sample.
    with torch.device("meta"):  # no memory, no init cost
        m = build_model("gpt2", seq_len=2048, mapping_batch=1)
    p = profile(m, sample_input(m, 1, "meta"))
    cfg = m.config
    attention = cfg.n_layer * 2 * 2048 * 2048 * cfg.n_embd
    assert p.macs - attention == pytest.approx(2.532e11, rel=0.01)
    assert len(placeholders(m)) == 12
    assert model_mappings(m)[0] == {"N": 1, "seq_len": 2048, "H_in": 768, "H_out": 2304}
    assert p.macs == pytest.approx(independent_macs(m, sample_input(m, 1, "meta")), rel=1e-6)


EXPECTED_PLACEHOLDERS = {"tiny": 3, "resnet18": 19, "resnet34": 35, "resnext29_2x64d": 9,
                         "efficientnet_v2_s": 10, "densenet121": 58, "gpt2": 2}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_builds_runs_and_profile_matches_independent_count(name):
    torch.manual_seed(0)
    kw = SMALL_GPT if name == "gpt2" else {}
    m = build_model(name, **kw)
    assert len(placeholders(m)) == EXPECTED_PLACEHOLDERS[name]
    vanilla = build_model(name, placeholders=False, **kw)
    x = sample_input(m, 2)
    if name == "gpt2":
        x = torch.randint(0, 128, (2, 16))
    else:
        x = torch.randn_like(x)
    with torch.no_grad():
        y = m.eval()(x)
        yv = vanilla.eval()(x)
    assert y.shape == yv.shape
    assert torch.isfinite(y).all()
    p, pv = profile(m, x), profile(vanilla, x)
    # stride-2 convs -> AvgPool + stride-1 placeholder keeps conv MACs and params
    assert p.macs == pv.macs
    # (gpt2's QKV placeholders are bias-free, like the original's LinearPlaceholder)
    dropped_bias = 2 * 3 * 32 if name == "gpt2" else 0
    assert p.params == pv.params - dropped_bias
    assert p.params == sum(t.numel() for t in m.parameters())
    assert pv.macs == pytest.approx(independent_macs(vanilla, x), rel=1e-6)
    assert sum(p.placeholder_macs) > 0 and len(p.placeholder_macs) == EXPECTED_PLACEHOLDERS[name]


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnext29_2x64d", "efficientnet_v2_s", "densenet121"])
def test_imagenet_size_forward(name):
    torch.manual_seed(0)
    m = build_model(name, num_classes=10, image_size=224).eval()
    with torch.no_grad():
        y = m(torch.randn(1, 3, 224, 224))
    assert y.shape == (1, 10) and torch.isfinite(y).all()


def test_imagenet_placeholder_shapes_follow_reference():
    shapes = lambda m: sorted({(d["C_in"], d["C_out"], d["H"]) for d in model_mappings(m)})  # noqa: E731
    assert shapes(build_model("resnet18", image_size=224)) == [
        (64, 64, 56), (64, 128, 28), (128, 128, 28), (128, 256, 14), (256, 256, 14), (256, 512, 7), (512, 512, 7)]
    assert shapes(build_model("efficientnet_v2_s", image_size=224)) == [
        (24, 24, 112), (24, 96, 56), (48, 192, 28), (48, 192, 56), (64, 256, 28)]
    assert shapes(build_model("densenet121", image_size=224)) == [(128, 32, h) for h in (7, 14, 28, 56)]
    assert shapes(build_model("resnext29_2x64d", image_size=224)) == [(128, 128, 56), (256, 256, 28), (512, 512, 14)]


def test_efficientnet_imagenet_stem_excluded_and_restored():
    m = build_model("efficientnet_v2_s", image_size=224)
    stem = m.features[0][0]
    assert type(stem) is nn.Conv2d and stem.stride == (2, 2) and stem.in_channels == 3


def test_in_channels_and_unknown_model():
    m = build_model("resnet18", num_classes=10, image_size=16, in_channels=1)
    assert m(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg11")
    with pytest.raises(TypeError, match="unknown gpt2 options"):
        build_model("gpt2", n_layers=3)


class CountedBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x)

    def count_macs(self, inp, out):
        return 1000 * inp.shape[0]


def test_count_macs_protocol_overrides_and_does_not_descend():
    model = nn.Sequential(CountedBlock(), nn.Conv2d(4, 2, 1))
    p = profile(model, torch.zeros(3, 4, 5, 5))
    assert p.macs == 1000 + 2 * 4 * 5 * 5
    assert p.params == sum(t.numel() for t in model.parameters())
