"""Vision models of the zoo (torchvision definitions) and the tiny CNN of the embedded digits task.

Every builder returns the *vanilla* network; :func:`mark_placeholders` applies the per-model
replacement rule (see docs/models.md). Stems:

* ``image_size <= 64`` ("CIFAR stem"): the first conv becomes a 3x3 stride-1 conv and the stem
  max-pool is dropped (ResNet/ResNeXt/DenseNet); EfficientNet's 3x3 stride-2 stem conv gets stride 1.
  The network then sees 32x32 CIFAR images at their native size.
* otherwise the unchanged ImageNet stem (224x224). The original trained CIFAR-100 at 224x224 by
  upsampling every batch; that is still possible with ``image_size=224`` plus the loader's ``resize``.

``in_channels != 3`` swaps the stem conv for one with that many input channels.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .placeholder import replace_convs

__all__ = ["CIFAR_STEM_MAX_SIZE", "build_vision_model", "mark_placeholders", "TinyCNN", "VISION_MODELS"]

#: Inputs at most this large get the CIFAR stem.
CIFAR_STEM_MAX_SIZE = 64


def _conv_like(old: nn.Conv2d, *, in_channels: int, kernel_size: int, stride: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, old.out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                     bias=old.bias is not None)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # torchvision's conv init
    return conv


def _tvm():
    # torchvision is imported where a torchvision model is built, not with this module: it costs
    # ~2.5 s per process (5.8 s for `import torchvision` vs 3.3 s for torch on the 2-core VM), which
    # every search worker of the tiny CNN (`syno demo`) paid at start without using it
    from torchvision import models
    return models


def _adapt_resnet(model: nn.Module, image_size: int, in_channels: int) -> nn.Module:
    if image_size <= CIFAR_STEM_MAX_SIZE:
        model.conv1 = _conv_like(model.conv1, in_channels=in_channels, kernel_size=3, stride=1)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = _conv_like(model.conv1, in_channels=in_channels, kernel_size=7, stride=2)
    return model


def resnet18(num_classes: int, image_size: int, in_channels: int = 3) -> nn.Module:
    return _adapt_resnet(_tvm().resnet18(num_classes=num_classes), image_size, in_channels)


def resnet34(num_classes: int, image_size: int, in_channels: int = 3) -> nn.Module:
    return _adapt_resnet(_tvm().resnet34(num_classes=num_classes), image_size, in_channels)


def resnext29_2x64d(num_classes: int, image_size: int, in_channels: int = 3) -> nn.Module:
    """ResNeXt-29 (2x64d): 3 stages x 3 bottlenecks, cardinality 2, width 64, outputs 256/512/1024.

    Built from torchvision's ``ResNet(Bottleneck, groups=2, width_per_group=64)`` with ``layer4``
    removed. (The original passed ``[3, 3, 3, 0]``, which makes torchvision build one 2048-channel
    ``layer4`` block anyway, and ignored ``num_classes``; see docs/models.md.)
    """
    from torchvision.models.resnet import Bottleneck, ResNet

    model = ResNet(Bottleneck, [3, 3, 3, 1], num_classes=num_classes, groups=2, width_per_group=64)
    model.layer4 = nn.Identity()
    model.fc = nn.Linear(256 * Bottleneck.expansion, num_classes)
    nn.init.zeros_(model.fc.bias)
    return _adapt_resnet(model, image_size, in_channels)


def densenet121(num_classes: int, image_size: int, in_channels: int = 3) -> nn.Module:
    model = _tvm().densenet121(num_classes=num_classes)
    f = model.features
    if image_size <= CIFAR_STEM_MAX_SIZE:
        f.conv0 = _conv_like(f.conv0, in_channels=in_channels, kernel_size=3, stride=1)
        f.pool0 = nn.Identity()
    elif in_channels != 3:
        f.conv0 = _conv_like(f.conv0, in_channels=in_channels, kernel_size=7, stride=2)
    return model


def efficientnet_v2_s(num_classes: int, image_size: int, in_channels: int = 3) -> nn.Module:
    model = _tvm().efficientnet_v2_s(num_classes=num_classes)
    stem: nn.Conv2d = model.features[0][0]
    stride = 1 if image_size <= CIFAR_STEM_MAX_SIZE else 2
    if stride != 2 or in_channels != 3:
        model.features[0][0] = _conv_like(stem, in_channels=in_channels, kernel_size=3, stride=stride)
    return model


class TinyCNN(nn.Module):
    """Small CNN for the embedded digits task: stem, 3 replaceable 3x3 convs (one stride 2), linear head.

    At 16x16 input its placeholders are ``(C_in, C_out, H)`` = (w, w, 16), (w, 2w, 8), (2w, 2w, 8).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16):
        super().__init__()

        def block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                                 nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

        self.stem = block(in_channels, width)
        self.layer1 = block(width, width)
        self.layer2 = block(width, 2 * width, stride=2)
        self.layer3 = block(2 * width, 2 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny(num_classes: int, image_size: int, in_channels: int = 1, width: int = 16) -> nn.Module:
    return TinyCNN(num_classes=num_classes, in_channels=in_channels, width=width)


# ----------------------------------------------------------------------------- replacement rules
def _k(conv: nn.Conv2d) -> tuple[int, int]:
    return tuple(conv.kernel_size)


#: Per-model filter on a same-padded stride-1/2 Conv2d (reference §1.1). True = becomes a placeholder.
FILTERS: dict[str, Callable[[nn.Conv2d], bool]] = {
    "resnet": lambda c: _k(c) in ((1, 1), (3, 3)) and c.groups == 1,
    "resnext": lambda c: _k(c) == (3, 3),              # grouped 3x3 convs; groups not checked
    "densenet": lambda c: _k(c) == (3, 3),
    "efficientnet": lambda c: _k(c) == (3, 3) and c.groups == 1,  # excludes depthwise convs
    "tiny": lambda c: _k(c) == (3, 3) and c.groups == 1,
}

VISION_MODELS: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "tiny": (tiny, "tiny"),
    "resnet18": (resnet18, "resnet"),
    "resnet34": (resnet34, "resnet"),
    "resnext29_2x64d": (resnext29_2x64d, "resnext"),
    "efficientnet_v2_s": (efficientnet_v2_s, "efficientnet"),
    "densenet121": (densenet121, "densenet"),
}


def build_vision_model(name: str, num_classes: int, image_size: int, in_channels: int = 3, **kwargs) -> nn.Module:
    if name not in VISION_MODELS:
        raise ValueError(f"unknown vision model {name!r}; choose from {sorted(VISION_MODELS)}")
    builder, _ = VISION_MODELS[name]
    return builder(num_classes=num_classes, image_size=image_size, in_channels=in_channels, **kwargs)


def mark_placeholders(model: nn.Module, name: str) -> int:
    """Apply the replacement rule of model ``name``; returns the number of convs replaced (before exclusion)."""
    _, rule = VISION_MODELS[name]
    return replace_convs(model, FILTERS[rule])
