"""CUDA paths of the trainers (AMP, GradScaler, channels_last, torch.compile). Skipped without a GPU."""

import pytest
import torch
from torch import nn

from syno.data import TensorClassificationData, TokenData
from syno.models import build_model, fill_placeholders, placeholders, profile, reset_placeholders
from syno.train import LMTrainOptions, VisionTrainOptions, train_classifier, train_lm

pytestmark = pytest.mark.gpu


def toy_images(n=512, c=3, size=32, classes=10):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % classes
    # learnable: class-dependent mean brightness
    x = (torch.rand(n, c, size, size, generator=g) * 128 + y.view(-1, 1, 1, 1) * 12).to(torch.uint8)
    return TensorClassificationData("toy", x, y, x[:128], y[:128], num_classes=classes)


@pytest.mark.parametrize("amp_dtype", ["bfloat16", "float16"])
def test_classifier_cuda_amp_channels_last(amp_dtype):
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=10, image_size=32)
    r = train_classifier(model, toy_images(), VisionTrainOptions(epochs=3, batch_size=64, amp_dtype=amp_dtype,
                                                                 progress=False, catch_errors=False))
    assert r.status == "ok" and r.loss is not None
    assert next(model.parameters()).is_cuda
    assert r.accuracy > 0.2, r.history


def test_classifier_cuda_compile_with_filled_placeholders():
    torch.manual_seed(0)
    model = build_model("tiny", num_classes=10, in_channels=3, image_size=32)
    fill_placeholders(model, lambda m: nn.Conv2d(m["C_in"], m["C_out"], 3, padding=1, bias=False))
    r = train_classifier(model, toy_images(), VisionTrainOptions(epochs=2, batch_size=64, compile=True,
                                                                 progress=False, catch_errors=False))
    assert r.status == "ok"
    reset_placeholders(model)  # the stashed originals followed model.to("cuda")
    assert all(p.referred_layer.weight.is_cuda for p in placeholders(model))
    x = torch.zeros(2, 3, 32, 32, device="cuda")
    assert profile(model, x).macs > 0


def test_lm_cuda_amp():
    torch.manual_seed(0)
    data = TokenData.from_tensor(torch.arange(20000) % 97, vocab_size=97)
    model = build_model("gpt2", vocab_size=97, n_layer=2, n_head=2, n_embd=64, seq_len=64, dropout=0.0)
    r = train_lm(model, data, LMTrainOptions(max_iters=100, batch_size=16, lr=1e-3, log_every_steps=10,
                                             time_budget_s=None, progress=False, catch_errors=False))
    assert r.status == "ok" and r.history[-1]["loss"] < r.history[0]["loss"]
