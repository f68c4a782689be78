import pytest
import torch

from syno.post.reevaluate import build_filled_model, load_data, recipe
from syno.post.training import load_checkpoint, train_lm_resumable, train_vision_resumable


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", image_size=8)


def _opts(**kw):
    o, _ = recipe("digits", epochs=3, max_steps_per_epoch=4, batch_size=32, progress=False, device="cpu", **kw)
    return o


def test_vision_resume_matches_an_uninterrupted_run(digits, tmp_path):
    ref = build_filled_model("tiny", digits, None, seed=3)
    full = train_vision_resumable(ref, digits, _opts(seed=3), tmp_path / "full.pt")
    assert full.status == "ok" and full.epochs == 3 and 0.0 <= full.accuracy <= 1.0

    model = build_filled_model("tiny", digits, None, seed=3)

    def kill(rec):
        if rec["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        train_vision_resumable(model, digits, _opts(seed=3), tmp_path / "run.pt", on_epoch=kill)
    state = load_checkpoint(tmp_path / "run.pt")
    assert state["epoch"] == 2 and len(state["history"]) == 2
    fresh = build_filled_model("tiny", digits, None, seed=99)  # different init: everything comes from the file
    resumed = train_vision_resumable(fresh, digits, _opts(seed=3), tmp_path / "run.pt")
    assert resumed.status == "ok" and [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.accuracy == pytest.approx(full.accuracy)
    for a, b in zip(ref.state_dict().values(), fresh.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def test_vision_time_budget_stops_and_resumes(digits, tmp_path):
    model = build_filled_model("tiny", digits, None)
    part = train_vision_resumable(model, digits, _opts(time_budget_s=0.0), tmp_path / "c.pt")
    assert part.status == "timeout" and "resume" in part.reason
    assert load_checkpoint(tmp_path / "c.pt") is not None
    done = train_vision_resumable(build_filled_model("tiny", digits, None), digits, _opts(), tmp_path / "c.pt")
    assert done.status == "ok" and done.epochs == 3


def test_lm_resume(tmp_path):
    from syno.data import TokenData
    from syno.models import build_model

    tokens = TokenData.from_tensor(torch.randint(0, 50, (4000,)), vocab_size=50,
                                   val=torch.randint(0, 50, (500,)))
    cfg = dict(vocab_size=50, seq_len=16, n_layer=1, n_head=2, n_embd=16)
    opts, _ = recipe("lm1b", max_iters=20, log_every_steps=5, batch_size=4, seq_len=16, progress=False,
                     device="cpu", eval_batches=2)
    torch.manual_seed(0)
    full = train_lm_resumable(build_model("gpt2", **cfg), tokens, opts, tmp_path / "a.pt", checkpoint_every=10)
    assert full.status == "ok" and full.steps == 20 and len(full.history) == 4
    assert 0 < full.loss < 10 and full.val_loss is not None
    torch.manual_seed(0)
    half = train_lm_resumable(build_model("gpt2", **cfg), tokens, opts.model_copy(update={"max_iters": 10}),
                              tmp_path / "b.pt", checkpoint_every=10)
    assert half.steps == 10
    rest = train_lm_resumable(build_model("gpt2", **cfg), tokens, opts, tmp_path / "b.pt", checkpoint_every=10)
    assert rest.steps == 20
    assert [h["loss"] for h in rest.history] == pytest.approx([h["loss"] for h in full.history], rel=1e-4)


@pytest.mark.parametrize("kernel", ["operator1", "stacked_conv"])
def test_custom_kernels_fill_resnet18(digits, kernel):
    from syno.post.custom import custom_operator
    from syno.post.reevaluate import _count

    data = load_data("digits", image_size=16)
    base_flops, base_params = _count(build_filled_model("resnet18", data, None))
    model = build_filled_model("resnet18", data, custom_operator(kernel))
    flops, params = _count(model)
    assert 0 < flops < base_flops and 0 < params < base_params  # both kernels are cheaper than the convs
    with torch.no_grad():
        out = model(torch.randn(2, 1, 16, 16))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
