"""CUDA paths of the post-search trainers (fp16 AMP + GradScaler, channels_last, flip TTA, resume)."""

import math

import pytest
import torch

from syno.ir.library import operator1
from syno.post.reevaluate import recipe
from syno.train.checkpoint import load_checkpoint
from syno.train.classifier import train_classifier
from syno.train.lm import train_lm
from syno.train.pipeline import build_task_model, load_task_data

from .test_cli import _image_folder

pytestmark = pytest.mark.gpu


class Killed(Exception):
    pass


def test_imagenet_recipe_with_operator_on_cuda_resumes(tmp_path):
    data = load_task_data("imagenet", _image_folder(tmp_path / "imagenet", train=16, val=8, size=40), image_size=32)
    opts, extra = recipe("imagenet", epochs=3, batch_size=8, progress=False, device="cuda")
    assert extra == {"metric": "final", "tta_flip": True}

    def kill(rec):
        if rec["epoch"] == 2:
            raise Killed

    model = build_task_model("resnet18", data, operator1(), seed=0)[0]
    with pytest.raises(Killed):
        train_classifier(model, data, opts, checkpoint=tmp_path / "ck.pt", tta_flip=True, metric="final", on_epoch=kill)
    state = load_checkpoint(tmp_path / "ck.pt", map_location="cuda")
    assert state["epoch"] == 2 and state["scaler"] is not None  # fp16 AMP on CUDA uses a GradScaler
    model = build_task_model("resnet18", data, operator1(), seed=1)[0]
    res = train_classifier(model, data, opts, checkpoint=tmp_path / "ck.pt", tta_flip=True, metric="final")
    assert res.status == "ok" and res.epochs == 3 and len(res.history) == 3
    assert 0.0 <= res.accuracy <= 1.0 and res.accuracy == res.final_accuracy
    assert math.isfinite(res.loss)


def test_lm_on_cuda_resumes(tmp_path):
    from syno.data import TokenData
    from syno.models import build_model

    tokens = TokenData.from_tensor(torch.randint(0, 64, (8000,)), vocab_size=64)
    opts, _ = recipe("lm1b", max_iters=30, batch_size=4, seq_len=32, progress=False, device="cuda",
                     log_every_steps=5, eval_batches=0)
    cfg = dict(vocab_size=64, seq_len=32, n_layer=2, n_head=2, n_embd=32)
    half = train_lm(build_model("gpt2", **cfg), tokens, opts.model_copy(update={"max_iters": 15}),
                    checkpoint=tmp_path / "lm.pt", checkpoint_every=5)
    assert half.steps == 15
    done = train_lm(build_model("gpt2", **cfg), tokens, opts, checkpoint=tmp_path / "lm.pt", checkpoint_every=5)
    assert done.status == "ok" and done.steps == 30 and len(done.history) == 6 and math.isfinite(done.loss)
