import json

import pytest
import torch
from typer.testing import CliRunner

from syno.cli import app
from syno.data import TokenData, load_tokens, tokenize_texts
from syno.models import build_model
from syno.train import LMTrainOptions, VisionTrainOptions, run_baseline, tail_mean, train_lm

TEXT = "the quick brown fox jumps over the lazy dog. " * 100
GPT = dict(n_layer=1, n_head=2, n_embd=32, seq_len=16, dropout=0.0)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    tokenize_texts([TEXT], d, val_docs=[TEXT[:500]], tokenizer="byte")
    return load_tokens(d)


def lm_opts(**kw):
    base = dict(max_iters=60, batch_size=8, lr=3e-3, log_every_steps=5, progress=False, time_budget_s=None,
                max_loss=None)
    base.update(kw)
    return LMTrainOptions(**base)


def test_lm_defaults_are_the_original_search_setting():
    o = LMTrainOptions()
    assert (o.lr, o.betas, o.weight_decay, o.batch_size, o.grad_clip) == (3e-4, (0.9, 0.95), 0.1, 1, 1.0)
    assert (o.time_budget_s, o.max_loss, o.log_interval_s, o.max_iters) == (1800.0, 6.9, 10.0, 0)


def test_tail_mean_matches_original_slice():
    assert tail_mean([]) is None
    assert tail_mean([5.0]) == 5.0
    assert tail_mean([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) == pytest.approx(sum([8, 9, 10]) / 3)  # from index 7


def test_lm_learns_and_is_deterministic(tokens):
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        m = build_model("gpt2", vocab_size=tokens.vocab_size, **GPT)
        results.append(train_lm(m, tokens, lm_opts(eval_batches=2)))
    a, b = results
    assert a.status == "ok" and a.steps == 60 and len(a.history) == 12
    assert a.history[-1]["loss"] < a.history[0]["loss"] - 1.0
    assert a.loss == pytest.approx(tail_mean([h["loss"] for h in a.history]))
    assert a.val_loss is not None and a.val_loss < 4.0
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


def test_lm_stop_conditions(tokens):
    def model():
        torch.manual_seed(0)
        return build_model("gpt2", vocab_size=tokens.vocab_size, **GPT)

    r = train_lm(model(), tokens, lm_opts(max_loss=0.5, max_loss_grace_s=0.0))
    assert r.status == "pruned" and r.steps == 5 and "max_loss" in r.reason
    r = train_lm(model(), tokens, lm_opts(illegal_loss_below=100.0))
    assert r.status == "pruned" and "leak" in r.reason
    r = train_lm(model(), tokens, lm_opts(max_iters=0, time_budget_s=0.5))
    assert r.status == "timeout" and r.loss is not None and r.wall_time_s < 10
    r = train_lm(model(), tokens, lm_opts(seq_len=10_000))
    assert r.status == "error"


def test_lm_time_based_logging_and_raw_tensor():
    data = torch.arange(2000) % 13
    torch.manual_seed(0)
    m = build_model("gpt2", placeholders=False, vocab_size=13, **GPT)
    r = train_lm(m, data, lm_opts(max_iters=5, log_every_steps=None, log_interval_s=3600.0))
    assert r.status == "ok" and len(r.history) == 1 and r.history[0]["step"] == 5  # flushed at the end


def test_baseline_digits(tmp_path):
    rec = run_baseline("tiny", "digits", tmp_path, VisionTrainOptions(epochs=1, batch_size=64, progress=False))
    saved = json.loads((tmp_path / "baseline.json").read_text())
    assert saved == rec
    assert rec["model"] == "tiny" and rec["dataset"] == "digits" and rec["status"] == "ok"
    assert 0 <= rec["accuracy"] <= 1 and rec["flops"] == 1_511_744 and rec["params"] == 16_794
    assert rec["options"]["epochs"] == 1 and rec["time_s"] > 0 and rec["image_size"] == 16
    assert (tmp_path / "metrics.jsonl").is_file()


def test_baseline_gpt2_on_token_dir(tmp_path, tokens):
    lm1b = tmp_path / "lm1b"
    tokenize_texts([TEXT], lm1b, tokenizer="byte")
    rec = run_baseline("gpt2", "lm1b", tmp_path / "out", lm_opts(max_iters=10), data_dir=tmp_path,
                       model_kwargs=dict(n_layer=1, n_head=2, n_embd=32, seq_len=16))
    assert rec["status"] == "ok" and rec["loss"] > 0 and "accuracy" not in rec
    assert rec["model_kwargs"]["vocab_size"] == 257 and rec["params"] > 0 and rec["flops"] > 0


def test_baseline_rejects_mismatches(tmp_path):
    with pytest.raises(ValueError, match="gpt2 goes with lm1b"):
        run_baseline("resnet18", "lm1b", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        run_baseline("tiny", "mnist", tmp_path)
    with pytest.raises(TypeError):
        run_baseline("tiny", "digits", tmp_path, LMTrainOptions())


def test_cli_baseline_writes_baseline_json(tmp_path):
    out = tmp_path / "bl"
    result = CliRunner().invoke(app, ["baseline", "tiny", "digits", "--epochs", "1", "--out", str(out),
                                      "--no-progress", "--batch-size", "64"])
    assert result.exit_code == 0, result.output
    rec = json.loads((out / "baseline.json").read_text())
    assert rec["model"] == "tiny" and rec["dataset"] == "digits" and rec["status"] == "ok"
    assert {"accuracy", "flops", "params", "time_s", "options"} <= rec.keys()
    assert json.loads(result.output.strip().splitlines()[-1])["flops"] == rec["flops"]


def test_cli_missing_dataset_dir_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["baseline", "resnet18", "cifar100", "--data-dir",
                                      str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "cifar-100-python" in result.output and str(tmp_path / "none") in result.output


def test_token_data_is_used_directly(tokens):
    assert isinstance(tokens, TokenData) and tokens.vocab_size == 257
