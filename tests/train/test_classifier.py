import json
import math

import pytest
import torch
from torch import nn

from syno.data import TensorClassificationData, load_digits
from syno.models import build_model, fill_placeholders, placeholders
from syno.train import TrainResult, VisionTrainOptions, read_jsonl, train_classifier
from syno.train.common import decay_groups, lr_at


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def quick(**kw):
    base = dict(batch_size=32, progress=False, seed=0)
    base.update(kw)
    return VisionTrainOptions(**base)


def test_defaults_are_the_original_cifar_setting():
    o = VisionTrainOptions()
    assert (o.lr, o.momentum, o.nesterov, o.weight_decay, o.min_lr, o.batch_size, o.epochs, o.grad_clip) == \
        (0.1, 0.9, True, 1e-3, 1e-5, 128, 100, 5.0)
    assert o.schedule == "cosine" and o.prune_milestones == {} and o.label_smoothing == 0.0
    # JSON milestone files have string keys
    o = VisionTrainOptions.model_validate({"prune_milestones": {"3": 0.2, "1": 0.1}})
    assert o.prune_milestones == {1: 0.1, 3: 0.2}
    with pytest.raises(ValueError):
        VisionTrainOptions(prune_milestones={0: 0.5})
    with pytest.raises(ValueError):
        VisionTrainOptions(epoch=3)  # typo -> rejected, not ignored
    im = VisionTrainOptions.imagenet(epochs=2)
    assert im.epochs == 2 and im.label_smoothing == 0.1 and not im.nesterov


def test_lr_schedule():
    kw = dict(lr=0.1, min_lr=1e-5, epochs=10, schedule="cosine", warmup_epochs=0.0)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(5, **kw) == pytest.approx((0.1 + 1e-5) / 2)
    assert lr_at(10, **kw) == pytest.approx(1e-5)
    kw.update(schedule="linear", warmup_epochs=2.0, min_lr=0.0)
    assert lr_at(1, **kw) == pytest.approx(0.05) and lr_at(2, **kw) == pytest.approx(0.1)
    assert lr_at(6, **kw) == pytest.approx(0.05)


def test_no_weight_decay_on_1d_params():
    m = build_model("tiny")
    groups = decay_groups(m, 1e-3)
    assert all(p.ndim > 1 for p in groups[0]["params"]) and groups[0]["weight_decay"] == 1e-3
    assert all(p.ndim == 1 for p in groups[1]["params"]) and groups[1]["weight_decay"] == 0.0


def test_tiny_cnn_learns_digits(digits):
    torch.manual_seed(0)
    r = train_classifier(build_model("tiny"), digits, quick(epochs=3))
    assert r.status == "ok", r.reason
    assert r.accuracy > 0.5, r.history  # chance is 0.1
    assert r.accuracy == max(h["test_acc"] for h in r.history) and r.epochs == 3 and len(r.history) == 3
    assert r.steps == 3 * (1437 // 32) and r.loss == r.history[-1]["train_loss"]


def test_deterministic_with_seed(digits):
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        m = build_model("tiny")
        r = train_classifier(m, digits, quick(epochs=2, max_steps_per_epoch=8))
        runs.append((r, m.state_dict()))
    (a, sa), (b, sb) = runs
    strip = lambda h: [{k: v for k, v in e.items() if not k.endswith("time_s")} for e in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    torch.manual_seed(1)
    c = train_classifier(build_model("tiny"), digits, quick(epochs=2, max_steps_per_epoch=8, seed=5))
    assert strip(c.history) != strip(a.history)


def test_prune_milestones_abort_early(digits):
    torch.manual_seed(0)
    r = train_classifier(build_model("tiny"), digits, quick(epochs=10, max_steps_per_epoch=3,
                                                            prune_milestones={1: 0.0, 2: 0.999}))
    assert r.status == "pruned" and r.epochs == 2 and len(r.history) == 2
    assert "0.999" in r.reason and r.accuracy is not None


def test_time_budget(digits):
    torch.manual_seed(0)
    r = train_classifier(build_model("tiny"), digits, quick(epochs=1000, time_budget_s=0.5))
    assert r.status == "timeout" and "time budget" in r.reason
    assert r.epochs < 1000 and r.wall_time_s < 15
    assert r.history and r.accuracy is not None  # the interrupted epoch is still evaluated
    r0 = train_classifier(build_model("tiny"), digits, quick(epochs=5, time_budget_s=0.0))
    assert r0.status == "timeout" and r0.steps <= 1


def test_epoch_time_limit_applies_from_second_epoch(digits):
    torch.manual_seed(0)
    r = train_classifier(build_model("tiny"), digits, quick(epochs=5, max_steps_per_epoch=2, epoch_time_limit_s=0.0))
    assert r.status == "timeout" and r.epochs == 2 and "epoch_time_limit_s" in r.reason


class NaNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)) * float("nan")


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 10)

    def forward(self, x):
        return self.fc(x)  # wrong input size -> RuntimeError


def test_nan_and_error_statuses(digits):
    r = train_classifier(NaNNet(), digits, quick(epochs=3))
    assert r.status == "nan" and r.accuracy is None
    r = train_classifier(Broken(), digits, quick(epochs=1))
    assert r.status == "error" and "RuntimeError" in r.reason
    with pytest.raises(RuntimeError):
        train_classifier(Broken(), digits, quick(epochs=1, catch_errors=False))


def test_result_json_and_log(tmp_path, digits):
    torch.manual_seed(0)
    log = tmp_path / "log.jsonl"
    r = train_classifier(build_model("tiny"), digits, quick(epochs=2, max_steps_per_epoch=2, log_path=str(log)))
    d = json.loads(r.to_json(tmp_path / "r.json"))
    assert d == json.loads((tmp_path / "r.json").read_text())
    assert TrainResult.model_validate(d) == r
    assert [e["epoch"] for e in read_jsonl(log)] == [1, 2]
    nan = TrainResult(status="nan", loss=math.nan)
    assert json.loads(nan.to_json())["loss"] is None  # strict JSON


def test_trains_with_filled_placeholders(digits):
    torch.manual_seed(0)
    m = build_model("tiny")
    fill_placeholders(m, lambda mp: nn.Sequential(
        nn.Conv2d(mp["C_in"], mp["C_out"], (1, 3), padding=(0, 1), bias=False),
        nn.Conv2d(mp["C_out"], mp["C_out"], (3, 1), padding=(1, 0), bias=False)))
    r = train_classifier(m, digits, quick(epochs=1, max_steps_per_epoch=5))
    assert r.status == "ok" and all(p.is_filled for p in placeholders(m))


def test_resize_and_generic_tensor_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.arange(64) % 4
    data = TensorClassificationData("toy", x, y, x[:16], y[:16], num_classes=4, resize=16)
    m = build_model("resnet18", num_classes=4, image_size=16)
    r = train_classifier(m, data, quick(epochs=1, batch_size=16, max_steps_per_epoch=2))
    assert r.status == "ok", r.reason
