"""Checkpointed training: the one trainer per task saves and resumes (reevaluation's long runs)."""

import pytest
import torch

from syno.post.reevaluate import recipe
from syno.train.checkpoint import load_checkpoint
from syno.train.classifier import train_classifier
from syno.train.lm import train_lm
from syno.train.pipeline import build_task_model, count_macs, load_task_data


def build_filled_model(*args, **kw):
    return build_task_model(*args, **kw)[0]


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def digits():
    return load_task_data("digits", image_size=8)


def _opts(**kw):
    o, _ = recipe("digits", epochs=3, max_steps_per_epoch=4, batch_size=32, progress=False, device="cpu", **kw)
    return o


def test_vision_resume_matches_an_uninterrupted_run(digits, tmp_path):
    ref = build_filled_model("tiny", digits, None, seed=3)
    full = train_classifier(ref, digits, _opts(seed=3), checkpoint=tmp_path / "full.pt")
    assert full.status == "ok" and full.epochs == 3 and 0.0 <= full.accuracy <= 1.0

    model = build_filled_model("tiny", digits, None, seed=3)

    def kill(rec):
        if rec["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        train_classifier(model, digits, _opts(seed=3), checkpoint=tmp_path / "run.pt", on_epoch=kill)
    state = load_checkpoint(tmp_path / "run.pt")
    assert state["epoch"] == 2 and len(state["history"]) == 2
    fresh = build_filled_model("tiny", digits, None, seed=99)  # different init: everything comes from the file
    resumed = train_classifier(fresh, digits, _opts(seed=3), checkpoint=tmp_path / "run.pt")
    assert resumed.status == "ok" and [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.accuracy == pytest.approx(full.accuracy)
    for a, b in zip(ref.state_dict().values(), fresh.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def test_vision_time_budget_stops_and_resumes(digits, tmp_path):
    model = build_filled_model("tiny", digits, None)
    part = train_classifier(model, digits, _opts(time_budget_s=0.0), checkpoint=tmp_path / "c.pt")
    assert part.status == "timeout" and "resume" in part.reason
    assert load_checkpoint(tmp_path / "c.pt") is not None
    done = train_classifier(build_filled_model("tiny", digits, None), digits, _opts(), checkpoint=tmp_path / "c.pt")
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
    full = train_lm(build_model("gpt2", **cfg), tokens, opts, checkpoint=tmp_path / "a.pt", checkpoint_every=10)
    assert full.status == "ok" and full.steps == 20 and len(full.history) == 4
    assert 0 < full.loss < 10 and full.val_loss is not None
    torch.manual_seed(0)
    half = train_lm(build_model("gpt2", **cfg), tokens, opts.model_copy(update={"max_iters": 10}),
                    checkpoint=tmp_path / "b.pt", checkpoint_every=10)
    assert half.steps == 10
    rest = train_lm(build_model("gpt2", **cfg), tokens, opts, checkpoint=tmp_path / "b.pt", checkpoint_every=10)
    assert rest.steps == 20
    assert [h["loss"] for h in rest.history] == pytest.approx([h["loss"] for h in full.history], rel=1e-4)


@pytest.mark.parametrize("kernel", ["operator1", "stacked_conv"])
def test_custom_kernels_fill_resnet18(digits, kernel):
    from syno.post.custom import custom_operator

    data = load_task_data("digits", image_size=16)
    base_flops, base_params = count_macs(build_filled_model("resnet18", data, None))
    model = build_filled_model("resnet18", data, custom_operator(kernel))
    flops, params = count_macs(model)
    assert 0 < flops < base_flops and 0 < params < base_params  # both kernels are cheaper than the convs
    with torch.no_grad():
        out = model(torch.randn(2, 1, 16, 16))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_checkpointed_run_honours_prune_milestones_and_keeps_the_verdict(digits, tmp_path):
    """The trainer that checkpoints is the search's trainer: prune milestones, log paths and the
    epoch time limit apply (the forked post-search trainer ignored them), and a verdict is final."""
    log = tmp_path / "m.jsonl"
    opts = _opts(prune_milestones={1: 1.0}, log_path=str(log))
    res = train_classifier(build_filled_model("tiny", digits, None), digits, opts, checkpoint=tmp_path / "p.pt")
    assert res.status == "pruned" and res.epochs == 1 and len(log.read_text().splitlines()) == 1
    again = train_classifier(build_filled_model("tiny", digits, None), digits, opts, checkpoint=tmp_path / "p.pt")
    assert again.status == "pruned" and again.epochs == 1  # not trained further
    slow = _opts(epoch_time_limit_s=0.0)
    res = train_classifier(build_filled_model("tiny", digits, None), digits, slow, checkpoint=tmp_path / "t.pt")
    assert res.status == "timeout" and "epoch_time_limit_s" in res.reason and res.epochs == 2


def test_lm_recipe_logs_by_time_and_errors_are_caught(tmp_path):
    from syno.data import TokenData
    from syno.models import build_model

    opts, _ = recipe("lm1b", max_iters=3, batch_size=2, seq_len=8, progress=False, device="cpu")
    assert opts.log_every_steps is None and opts.log_interval_s == 10.0  # every 10 s, as in the search
    tokens = TokenData.from_tensor(torch.randint(0, 20, (500,)), vocab_size=20)
    model = build_model("gpt2", vocab_size=20, seq_len=8, n_layer=1, n_head=2, n_embd=8)
    res = train_lm(model, tokens, opts.model_copy(update={"seq_len": 64}), checkpoint=tmp_path / "e.pt")
    assert res.status == "error" and res.reason  # caught and reported, like the search's runs


def test_foreign_checkpoint_is_refused_with_its_name(tmp_path):
    bad = tmp_path / "ck.pt"
    torch.save({"format": 99}, bad)
    with pytest.raises(ValueError, match="ck.pt"):
        load_checkpoint(bad)
