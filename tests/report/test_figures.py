"""Figures from a real digits session, a real baseline, bench CSV and LM logs; partial inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from syno.cli import app
from syno.report import FIGURES, PlotOptions, collect, draw, plot_all, smooth_losses
from syno.report.figures import _pareto

FIVE = ["end-to-end-performance", "accuracy-performance", "case-study", "kernel-performance", "gpt-loss"]


def assert_real_png(path: Path, min_bytes: int = 5000) -> None:
    assert path.is_file(), path
    assert path.stat().st_size > min_bytes, f"{path}: only {path.stat().st_size} bytes"
    with Image.open(path) as im:
        im.load()
        a = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert a.shape[0] > 200 and a.shape[1] > 300
    assert a.var() > 0, f"{path} is blank"
    # not just a frame: a good share of the pixels are not background
    assert (a.min(axis=2) < 230).mean() > 0.01


def test_fixture_is_real(report_inputs):
    inputs = collect([report_inputs["session"]])
    (s,) = inputs.sessions
    ok = [k for k in s.kernels if k.ok]
    assert len(ok) >= 2, [(k.name, k.status, k.message[:80]) for k in s.kernels]
    for k in ok:
        assert 0 <= k.accuracy <= 1 and k.flops > 0 and k.params > 0 and k.time > 0
        assert k.loop_text and "for (int" in k.loop_text
        assert k.dot and k.dot.lstrip().startswith("digraph")
        assert k.operator() is not None and k.operator().hash == k.hash
        assert k.name == f"{int(k.accuracy * 10000):05d}_{k.hash}"
    assert s.model == "tiny" and s.dataset == "digits" and s.target == "accuracy"
    assert s.algorithm == "mcts" and s.baseline_flops > 0 and s.baseline_params > 0


@pytest.mark.parametrize("name", list(FIGURES))
def test_every_figure_drawn(plotted, name):
    out, results = plotted
    r = results[name]
    assert r.drawn, r.line()
    assert_real_png(out / f"{name}.png")
    pdf = out / f"{name}.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 2000
    assert [p.name for p in r.files] == [f"{name}.png", f"{name}.pdf"]


def test_figure_contents(all_paths, plotted):
    _, results = plotted
    inputs = collect(all_paths)
    # end to end: tiny has accuracies (filtered against the baseline), resnet18 only hand-built operators
    assert any("resnet18" in n and "unfiltered" in n for n in results["end-to-end-performance"].notes)
    # the case study needs Operator 1 layer rows: they are there, in two implementations
    assert {r.variant for r in inputs.bench if r.scope == "layer" and r.ok} >= {"operator1", "operator1[codegen]",
                                                                                 "stacked_conv"}
    from syno.report.figures import fig_case_study

    fig, _ = fig_case_study(inputs)
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["original conv", "Operator 1", "Operator 1 [codegen]", "Stacked conv"]
    assert "Operator 1: " in ax.get_title() and "Operator 1 [codegen]: " in ax.get_title()
    assert {c.role for c in inputs.loss_curves} == {"baseline", "kernel"}


def test_reevaluation_outputs(report_inputs, all_paths):
    from syno.report.figures import _accuracy_points, fig_imagenet_performance

    inputs = collect(all_paths)
    # each kernel's reeval.json and the reeval-digits.json summary hold the same entries: read once
    assert len(inputs.reevals) == 2 and {e.dataset for e in inputs.reevals} == {"digits"}
    assert all(inputs.find_kernel(name=e.name, op_hash=e.hash) is not None for e in inputs.reevals)
    pts = _accuracy_points(inputs)["tiny"]
    assert len(pts) == 2 and all(p.reevaluated and p.dataset == "digits" for p in pts)
    fig, _ = fig_imagenet_performance(inputs)
    assert "(reevaluated)" in fig.axes[0].get_title()


def test_quantize_in_case_study(report_inputs, all_paths):
    from syno.report.figures import fig_case_study

    inputs = collect(all_paths)
    (q,) = inputs.quantize
    assert set(q.variants) == {"original", "operator"}
    fig, _ = fig_case_study(inputs)
    titles = [a.get_title() for a in fig.axes]
    assert sum("fp32 vs int8" in t for t in titles) == 1
    # the quantization result alone is enough for the case study
    r = draw("case-study", collect([report_inputs["quantize"]]), PlotOptions(formats=("png",)),
             report_inputs["quantize"].parent / "figs")
    assert r.drawn and any("no layer-wise bench rows" in n for n in r.notes), r.line()
    assert_real_png(r.files[0])


def test_missing_inputs_one_line_each(report_inputs, tmp_path):
    out = tmp_path / "figs"
    results = plot_all(collect([report_inputs["session"]]), out)
    by = {r.name: r for r in results}
    assert by["search-progress"].drawn and by["accuracy-performance"].drawn
    for name in ("end-to-end-performance", "case-study", "kernel-performance", "gpt-loss"):
        r = by[name]
        assert not r.drawn and "\n" not in r.line() and r.line().startswith(f"{name}: not drawn: ")
        assert not (out / f"{name}.png").exists()
    assert "bench" in by["end-to-end-performance"].missing
    assert "operator1" in by["case-study"].missing and "quantize.json" in by["case-study"].missing
    assert "loss log" in by["gpt-loss"].missing


def _damage(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    kernels = sorted(p for p in dst.iterdir() if p.is_dir() and not p.name.startswith("ERROR"))
    (kernels[0] / "meta.json").write_text("{ not json")           # damaged meta
    (kernels[1] / "meta.json").unlink()                           # missing meta: the dir name still says the accuracy
    (kernels[1] / "loop.txt").unlink()
    (dst / "session.json").write_text("[1, 2")                    # damaged session file
    (dst / "00000_deadbeef").mkdir()                              # empty kernel dir
    (dst / "stray.csv").write_text("a,b\n1,2\n")                  # unrelated CSV
    (dst / "broken.csv").write_bytes(b"scope,variant,backend,median_ms\nmodel,\xff\xfe,eager,x\n")
    (dst / "loss.log").write_text("[(1.0, 2.0), oops")           # unparsable loss log
    return dst


def test_partial_and_damaged_session_never_crashes(report_inputs, tmp_path):
    s = _damage(report_inputs["session"], tmp_path / "damaged-session")
    inputs = collect([s, report_inputs["bench"]])
    assert inputs.problems  # reported, not raised
    assert any("meta.json" in p for p in inputs.problems)
    results = plot_all(inputs, tmp_path / "figs", PlotOptions(formats=("png",), dpi=60))
    assert {r.name for r in results} == set(FIGURES)
    for r in results:
        assert r.drawn or (r.missing and "failed to draw" not in r.missing), r.line()
    assert sum(r.drawn for r in results) >= 4


def test_empty_and_odd_inputs(tmp_path):
    (tmp_path / "empty-session").mkdir()
    (tmp_path / "empty-session" / "session.json").write_text(json.dumps({"options": {"model": "tiny"}}))
    (tmp_path / "s2").mkdir()
    (tmp_path / "s2" / "ERROR_0123abcd").mkdir()
    (tmp_path / "s2" / "ERROR_0123abcd" / "meta.json").write_text(json.dumps(
        {"status": "error", "accuracy": 0, "message": "boom"}))
    bench = tmp_path / "failed.csv"  # every measurement failed
    bench.write_text("scope,model,variant,op_hash,backend,device,device_name,batch,median_ms,speedup,layer,count,"
                     "status\nmodel,tiny,baseline,baseline,eager,cpu,x,1,,,,1,error: boom\n"
                     "layer,tiny,k,abc,eager,cpu,x,1,,,conv,1,error: boom\n")
    results = plot_all(collect([tmp_path / "empty-session", tmp_path / "s2", bench, tmp_path / "nope"]),
                       tmp_path / "figs", PlotOptions(formats=("png",), dpi=60))
    for r in results:
        if r.name == "search-progress":  # one failed kernel is still progress to show
            assert r.drawn, r.line()
            continue
        assert r.missing and "failed to draw" not in r.missing, r.line()


def test_original_formats_and_reevaluation(report_inputs, tmp_path):
    """The original's keyed baseline.json and loss.log, and a reevaluation JSON: the accuracy figure
    switches to reevaluated accuracies."""
    inputs0 = collect([report_inputs["session"]])
    ok = [k for k in inputs0.sessions[0].kernels if k.ok]
    (tmp_path / "baseline.json").write_text(json.dumps({
        "tiny": {"accuracy": 0.5, "flops": 1.0e6, "params": 1e4},
        "tiny-imagenet": {"accuracy": 0.6, "flops": 1.2e6, "params": 1e4},
        "gpt": {"loss": 5.85, "flops": 2.5e11, "params": 1.2e8}}))
    (tmp_path / "reeval.json").write_text(json.dumps({"model": "tiny", "dataset": "imagenet", "kernels": [
        {"name": k.name, "accuracy": 0.55 + 0.01 * i, "flops": k.flops, "status": "ok"} for i, k in enumerate(ok)]}))
    curve = [(6.0 - 0.001 * i, 1.7e9 + 3 * i) for i in range(1500)]
    (tmp_path / "gpt_orig_losses.log").write_text(repr(curve))
    inputs = collect([report_inputs["session"], tmp_path])
    assert {(b.model, b.dataset) for b in inputs.baselines} >= {("tiny", None), ("tiny", "imagenet"), ("gpt2", "lm1b")}
    assert len(inputs.reevals) == len(ok)
    (c,) = [c for c in inputs.loss_curves if c.label.startswith("gpt_orig")]
    assert c.role == "baseline" and len(c.losses) == 1500 and c.losses[0] == pytest.approx(6.0)
    r = draw("accuracy-performance", inputs, PlotOptions(), tmp_path / "figs")
    assert r.drawn, r.line()
    assert_real_png(tmp_path / "figs" / "accuracy-performance.png")
    from syno.report.figures import _accuracy_points

    pts = _accuracy_points(inputs)["tiny"]
    assert all(p.reevaluated and p.dataset == "imagenet" for p in pts)
    assert draw("gpt-loss", inputs, PlotOptions(), tmp_path / "figs").drawn


def test_smoothing_and_pareto():
    # long logs: the original's processing (drop 1000 points, 50-point moving average)
    xs, ys = smooth_losses([float(i) for i in range(20000)])
    assert len(ys) == 20000 - 1000 - 49 and ys[0] == pytest.approx(sum(range(1000, 1050)) / 50)
    assert xs[0] == 1050
    # short logs: scaled down (drop n // 10, window n // 20)
    xs, ys = smooth_losses([float(i) for i in range(200)], steps=list(range(10, 2010, 10)))
    assert len(ys) == 200 - 20 - 9 and xs[0] == 10 * (20 + 10)
    xs, ys = smooth_losses([3.0, 2.0])
    assert ys == [3.0, 2.0]
    assert _pareto([(1, 50), (2, 40), (2, 60), (3, 55), (0.5, 30)]) == [(0.5, 30), (1, 50), (2, 60)]


def test_cli_plot(all_paths, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["plot", *map(str, all_paths), "--out", str(tmp_path / "f"), "--format", "png",
                              "--only", ",".join(FIVE)])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.split(":")[0] in FIVE]
    assert len(lines) == 5
    for n in FIVE:
        assert_real_png(tmp_path / "f" / f"{n}.png")
        assert not (tmp_path / "f" / f"{n}.pdf").exists()
    res = runner.invoke(app, ["plot", str(tmp_path / "missing"), "--out", str(tmp_path / "g")])
    assert res.exit_code == 1
    assert "0 of 7 figure(s)" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["plot", str(all_paths[0]), "--only", "nope"])
    assert res.exit_code == 2
