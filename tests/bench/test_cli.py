"""``syno bench`` through typer's CliRunner: runs, writes a sane CSV (structure and sanity only, no timing claims)."""

import csv
import math

import pytest
from typer.testing import CliRunner

from syno.cli import app

runner = CliRunner()
FAST = ["--warmup-ms", "5", "--budget-ms", "30", "--min-repeat", "3", "--max-repeat", "30", "--quiet"]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _sane(rows):
    for r in rows:
        assert r["status"] == "ok", r
        for k in ("median_ms", "mean_ms", "min_ms", "speedup", "compile_s"):
            v = float(r[k])
            assert math.isfinite(v) and v > 0, (k, r)
        assert float(r["min_ms"]) <= float(r["median_ms"])
        assert int(r["repeats"]) >= 3


@pytest.mark.slow   # two Inductor compiles of ResNet-18: ~50 s with a warm cache, ~4 min cold on 2 busy cores
def test_bench_resnet18_conv2d_eager_inductor(tmp_path):
    out = tmp_path / "bench.csv"
    res = runner.invoke(app, ["bench", "resnet18", "--operator", "conv2d", "--batch", "1", "--device", "cpu",
                              "--backend", "eager,inductor", "--image-size", "32", "--num-classes", "10",
                              "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    assert "speedup" in res.output and "end-to-end" in res.output
    rows = _rows(out)
    assert [(r["variant"], r["backend"]) for r in rows] == [
        ("baseline", "eager"), ("conv2d", "eager"), ("baseline", "inductor"), ("conv2d", "inductor")]
    _sane(rows)
    assert {r["scope"] for r in rows} == {"model"} and {r["batch"] for r in rows} == {"1"}
    assert {r["input_shape"] for r in rows} == {"1x3x32x32"}
    assert all(float(r["speedup"]) == 1.0 for r in rows if r["variant"] == "baseline")
    assert rows[1]["op_hash"] == rows[3]["op_hash"] != "baseline"
    assert rows[2]["config"] == "default+fp32"


def test_bench_tiny_conv2d_eager_inductor(tmp_path):
    """The fast stand-in of the ResNet-18 test above: same command path, the tiny CNN."""
    out = tmp_path / "bench.csv"
    res = runner.invoke(app, ["bench", "tiny", "--operator", "conv2d", "--batch", "1", "--device", "cpu",
                              "--backend", "eager,inductor", "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    rows = _rows(out)
    assert [(r["variant"], r["backend"]) for r in rows] == [
        ("baseline", "eager"), ("conv2d", "eager"), ("baseline", "inductor"), ("conv2d", "inductor")]
    _sane(rows)
    assert {r["input_shape"] for r in rows} == {"1x1x16x16"} and rows[2]["config"] == "default+fp32"


def test_bench_tiny_layers_and_tvm_message(tmp_path):
    out = tmp_path / "layers.csv"
    res = runner.invoke(app, ["bench", "tiny", "--operator", "conv2d", "--backend", "eager,tvm", "--layers",
                              "--batch", "1,2", "--out", str(out), *FAST[:-1]])
    assert res.exit_code == 0, res.output
    try:
        import tvm  # noqa: F401
        has_tvm = True
    except ImportError:
        has_tvm = False
    if not has_tvm:
        assert "backend tvm skipped" in res.output
    rows = _rows(out)
    _sane(rows)
    layer = [r for r in rows if r["scope"] == "layer"]
    assert len(layer) == 2 * 3 * 2 * (2 if has_tvm else 1)   # batches x sites x (orig, op) x backends
    assert "layer-wise" in res.output


def test_bench_bad_arguments():
    res = runner.invoke(app, ["bench", "tiny", "--operator", "nope"])
    assert res.exit_code == 2 and "unknown operator" in res.output
    res = runner.invoke(app, ["bench", "tiny", "--backend", "onnx", "--quiet"])
    assert res.exit_code == 2 and "unknown backend" in res.output


def test_failed_measurement_exit_code(tmp_path):
    res = runner.invoke(app, ["bench", "tiny", "--operator", "operator1", "--impl", "manual", "--backend", "eager",
                              *FAST])
    assert res.exit_code == 1 and "failed" in res.output
