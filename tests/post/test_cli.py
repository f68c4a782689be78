"""Each post-search command's full path through the CLI, on small real data (digits, a generated ImageFolder)."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from syno.cli import app
from syno.ir.library import conv2d, operator1

from .helpers import conv_scaled, make_kernel_dir

runner = CliRunner()
FAST_TRAIN = ["--set", "max_steps_per_epoch=3", "--batch-size", "32", "--epochs", "1", "--no-progress", "-q",
              "--device", "cpu"]


def _ok(res):
    assert res.exit_code == 0, res.output + str(res.exception)
    return res


def _in01(x):
    return isinstance(x, float) and math.isfinite(x) and 0.0 <= x <= 1.0


@pytest.fixture()
def tiny_session(tmp_path):
    s = tmp_path / "tiny-session"
    s.mkdir()
    (s / "session.json").write_text(json.dumps({"options": {"model": "tiny", "reference": {"macs": 2.0e6}}}))
    make_kernel_dir(s, conv_scaled(), 0.61, 1.5e6)
    make_kernel_dir(s, conv2d(), 0.60, 1.5e6)       # near-duplicate of conv_scaled
    make_kernel_dir(s, operator1(), 0.55, 0.2e6)    # outside the window
    return s


def test_select_cli(tiny_session):
    res = _ok(runner.invoke(app, ["select", str(tiny_session), "--top", "2", "--min-flops-ratio", "0.5",
                                  "--max-flops-ratio", "0.9", "--probe-steps", "150", "-q"]))
    assert "selected 1 of 3" in res.output
    data = json.loads((tiny_session / "selected.json").read_text())
    assert [e["hash"] for e in data["selected"]] == [conv_scaled().hash]
    assert data["duplicates"][0]["duplicate_of"] == data["selected"][0]["name"]
    assert data["selected"][0]["flops_ratio"] == pytest.approx(0.75)


def test_reevaluate_cli_with_resume(tiny_session):
    args = ["reevaluate", str(tiny_session), "--dataset", "digits", "--top", "2", *FAST_TRAIN]
    _ok(runner.invoke(app, args))
    summary = json.loads((tiny_session / "reeval-digits.json").read_text())
    assert len(summary["kernels"]) == 2
    csv_lines = (tiny_session / "reeval-digits.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith("name,hash,model,dataset,status")
    for row in summary["kernels"]:
        assert row["status"] == "ok" and _in01(row["accuracy"]) and row["flops"] > 0 and row["params"] > 0
        kdir = tiny_session / row["name"]
        entry = json.loads((kdir / "reeval.json").read_text())["kernels"][0]
        assert entry["dataset"] == "digits" and entry["model"] == "tiny" and entry["search_accuracy"] > 0.5
        assert (kdir / "reeval-digits" / "checkpoint.pt").is_file()
        assert entry["history"] and math.isfinite(entry["loss"])
    mtime = (tiny_session / summary["kernels"][0]["name"] / "reeval.json").stat().st_mtime_ns
    res = _ok(runner.invoke(app, args + ["--resume"]))
    assert (tiny_session / summary["kernels"][0]["name"] / "reeval.json").stat().st_mtime_ns == mtime
    assert "ok" in res.output


def _image_folder(root, classes=2, train=6, val=3, size=20):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                img[..., c % 3] = 255 if c else 0  # a learnable colour cue
                Image.fromarray(img).save(d / f"{i}.png")
    return root


def test_train_custom_cli_on_generated_imagefolder(tmp_path):
    data_dir = _image_folder(tmp_path / "imagenet")
    out = tmp_path / "custom"
    res = _ok(runner.invoke(app, ["train-custom", "resnet18", "--kernel", "operator1", "--dataset", "imagenet",
                                  "--data-dir", str(data_dir), "--image-size", "16", "--out", str(out),
                                  "--batch-size", "4", "--epochs", "1", "--set", "amp=false",
                                  "--set", "channels_last=false", "--no-progress", "-q", "--device", "cpu"]))
    meta = json.loads(res.output.strip().splitlines()[-1])
    assert meta["kernel"] == "operator1" and meta["status"] == "ok" and _in01(meta["accuracy"])
    dirs = [d for d in out.iterdir() if d.is_dir() and not d.name.startswith(".")]
    assert len(dirs) == 1 and dirs[0].name.endswith("_" + operator1().hash)
    kdir = dirs[0]
    for f in ("meta.json", "operator.json", "loop.txt", "graph.dot", "reeval.json", "kernel_0.py"):
        assert (kdir / f).is_file(), f
    assert "unavailable" not in (kdir / "kernel_0.py").read_text()  # a real standalone module
    from syno.ir.graph import Operator

    assert Operator.from_json((kdir / "operator.json").read_text()).hash == operator1().hash
    full = json.loads((kdir / "meta.json").read_text())
    assert full["flops"] > 0 and full["params"] > 0 and full["custom"]
    # resume: nothing is retrained, the same directory is reported
    again = _ok(runner.invoke(app, ["train-custom", "resnet18", "--kernel", "operator1", "--dataset", "imagenet",
                                    "--data-dir", str(data_dir), "--image-size", "16", "--out", str(out),
                                    "--resume", "-q"]))
    assert json.loads(again.output.strip().splitlines()[-1])["accuracy"] == meta["accuracy"]


def test_quantize_cli_with_kernel_dir(tiny_session, tmp_path):
    kdir = next(d for d in tiny_session.iterdir() if d.name.endswith(conv_scaled().hash))
    out = tmp_path / "q"
    res = _ok(runner.invoke(app, ["quantize", "tiny", "--dataset", "digits", "--kernel", str(kdir), "--out", str(out),
                                  "--epochs", "2", "--batch-size", "32", "--set", "max_steps_per_epoch=10",
                                  "--rounds", "3", "--calib-batches", "2", "--no-progress", "-q",
                                  "--device", "cpu"]))
    rep = json.loads((out / "quantize.json").read_text())
    assert set(rep["variants"]) == {"original", "operator"}
    for v in rep["variants"].values():
        assert _in01(v["fp32_accuracy"]) and _in01(v["int8_accuracy"])
        assert v["fp32_ms"] > 0 and v["int8_ms"] > 0 and v["int8_over_fp32"] > 0
    assert rep["operator_hash"] == conv_scaled().hash
    assert "int8/fp32" in res.output


def test_cli_input_errors(tmp_path):
    res = runner.invoke(app, ["select", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "error:" in res.output
    res = runner.invoke(app, ["train-custom", "resnet18", "--kernel", "nope", "--dataset", "digits"])
    assert res.exit_code == 2 and "operator1" in res.output
    res = runner.invoke(app, ["reevaluate", "--dataset", "digits"])
    assert res.exit_code == 2


@pytest.mark.slow
def test_quantized_resnet18_on_digits_within_one_point(tmp_path):
    """The must-show claim at CPU scale: int8 ResNet-18 (digits upsampled to 16x16) within 1 point of fp32."""
    from syno.post.quantize import quantize_experiment

    rep = quantize_experiment("resnet18", "digits", tmp_path, operator="operator1", image_size=16,
                              overrides=dict(epochs=4, batch_size=64, progress=False, device="cpu"),
                              calib_batches=4, latency_rounds=5)
    for v in rep["variants"].values():
        assert v["fp32_accuracy"] > 0.8
        assert v["accuracy_drop"] <= 0.01


@pytest.mark.slow
def test_select_and_reevaluate_a_real_search_session(tmp_path):
    """Integration with the search engineer's sessions: a real MCTS digits search, then select and reevaluate."""
    from syno.search.options import build_options
    from syno.search.run import run_search

    sess = tmp_path / "real"
    run_search(build_options("tiny", {"run.max_evaluations": 4, "run.workers": 0, "train.epochs": 1,
                                      "train.max_steps_per_epoch": 6, "session_dir": str(sess)}))
    _ok(runner.invoke(app, ["select", str(sess), "--top", "2", "--max-flops-ratio", "1.0", "-q"]))
    sel = json.loads((sess / "selected.json").read_text())
    assert 1 <= len(sel["selected"]) <= 2
    _ok(runner.invoke(app, ["reevaluate", str(sess), "--dataset", "digits", *FAST_TRAIN]))
    summary = json.loads((sess / "reeval-digits.json").read_text())
    assert [r["name"] for r in summary["kernels"]] == [e["name"] for e in sel["selected"]]
    for r in summary["kernels"]:
        assert r["status"] == "ok" and _in01(r["accuracy"])
        meta = json.loads((sess / r["name"] / "meta.json").read_text())
        assert r["flops"] == meta["flops"]  # the same model and operator as the search evaluated


def test_reevaluate_cli_gpt2_on_token_files(tmp_path):
    from syno.data import write_tokens
    from syno.ir.library import linear

    tok = tmp_path / "lm1b"
    tok.mkdir()
    rng = np.random.default_rng(0)
    write_tokens(rng.integers(0, 64, 6000), tok / "train.bin", vocab_size=64)
    write_tokens(rng.integers(0, 64, 1000), tok / "val.bin", vocab_size=64)
    (tok / "meta.json").write_text(json.dumps({"vocab_size": 64, "dtype": "uint16", "tokenizer": "custom"}))
    sess = tmp_path / "gpt-session"
    sess.mkdir()
    kdir = make_kernel_dir(sess, linear(), 0.42, 1.0)  # "04200_<hash>": a loss-target name, int(4.2 * 1000)
    meta = json.loads((kdir / "meta.json").read_text())
    meta.update(accuracy=None, loss=4.2, status="ok", model="gpt2")
    (kdir / "meta.json").write_text(json.dumps(meta))
    args = ["reevaluate", "--kernels", str(kdir), "--dataset", "lm1b", "--data-dir", str(tok), "--max-iters", "12",
            "--model-opt", "n_layer=1", "--model-opt", "n_head=2", "--model-opt", "n_embd=16",
            "--model-opt", "seq_len=16", "--set", "log_every_steps=4", "--set", "eval_batches=2",
            "--batch-size", "4", "--device", "cpu", "--no-progress", "-q"]
    _ok(runner.invoke(app, args))
    entry = json.loads((kdir / "reeval.json").read_text())["kernels"][0]
    assert entry["dataset"] == "lm1b" and entry["model"] == "gpt2" and entry["status"] == "ok"
    assert entry["steps"] == 12 and len(entry["history"]) == 3
    assert 0 < entry["loss"] < 10 and 0 < entry["val_loss"] < 10
    assert (kdir / "reeval-lm1b" / "checkpoint.pt").is_file()
    assert json.loads((sess / "reeval-lm1b.json").read_text())["kernels"][0]["loss"] == entry["loss"]


def test_select_without_window_prints_the_ratio_show_knows(tiny_session):
    """Issue #19 item 6: `select` printed flops_ratio=- although session.json has the reference MACs;
    selected.json was written 0600."""
    import os
    import stat

    res = _ok(runner.invoke(app, ["select", str(tiny_session), "-k", "3", "--no-dedup", "-q"]))
    ratios = [ln.split("flops_ratio=")[1] for ln in res.stdout.splitlines() if "flops_ratio=" in ln]
    assert sorted(ratios) == ["0.100", "0.750", "0.750"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tiny_session / "selected.json").stat().st_mode) == 0o666 & ~umask
