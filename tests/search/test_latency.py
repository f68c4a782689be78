"""Latency in the loop (issue 16): every kernel timed before training, the speed objective, the
``slow`` pre-filter, and selection by measured speedup. Real digits searches on the CPU (the tiny
preset), a few seconds each."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from syno.cli import app
from syno.report.figures import plot_all
from syno.report.inputs import collect
from syno.search import problem as problem_mod
from syno.search.base import EvalResult, RewardConfig
from syno.search.latency import BASELINE_FILE, KernelTimer, LatencyOptions, headline_speedup
from syno.search.objective import Objective, ObjectiveOptions, slow_reason
from syno.search.options import SearchOptions, build_options
from syno.search.run import run_search
from syno.search.session import SessionStore
from syno.session import STATUSES, is_ok

# a fraction of an epoch per kernel (as tests/search/test_digits_search.py)
FAST = {"train.max_steps_per_epoch": 8, "train.eval_batch_size": 360, "run.kernel_timeout": 240, "run.workers": 0,
        # a short timing budget: these tests check the plumbing, benchmarks/ measures
        "latency.budget_ms": 40, "latency.warmup_ms": 10}
if "fidelity" in SearchOptions.model_fields:  # one training budget per kernel: no promotions to wait for
    FAST["fidelity.enabled"] = False

runner = CliRunner()


def _count_trainings(monkeypatch) -> list[str]:
    """Record the hash of every operator the search actually trains."""
    trained: list[str] = []
    real = problem_mod.evaluate_operator

    def spy(options, op, *args, **kwargs):
        trained.append(op.hash)
        return real(options, op, *args, **kwargs)

    monkeypatch.setattr(problem_mod, "evaluate_operator", spy)
    return trained


def _check_latency_block(meta: dict) -> None:
    recs = meta["latency"]
    model = [r for r in recs if r["scope"] == "model" and r["mode"] == "forward"]
    assert len(model) == 1
    r = model[0]
    assert r["ms"] > 0 and r["baseline_ms"] > 0 and r["session_baseline_ms"] > 0
    assert r["speedup"] == pytest.approx(r["baseline_ms"] / r["ms"])  # side by side, same rounds
    assert r["implementation"] in ("fast:min", "einsum:min")
    assert r["dtype"] == "float32" and r["batch"] == 32 and r["threads"] == 1
    assert r["device"].startswith("cpu") and r["timer"] == "cpu-wall"
    assert r["versions"]["torch"] == torch.__version__ and "syno" in r["versions"]
    layers = [r for r in recs if r["scope"] == "layer"]
    assert layers and all(x["ms"] > 0 and x["speedup"] > 0 and x["layer"] for x in layers)
    total = next(r for r in recs if r["scope"] == "layers")
    assert total["ms"] == pytest.approx(sum(x["ms"] * x["count"] for x in layers))
    assert meta["result"]["extra"]["speedup"] == pytest.approx(r["speedup"])  # the headline: end to end


def test_speed_search_writes_latency_and_select_filters_by_it(tmp_path, monkeypatch):
    root = tmp_path / "speed"
    trained = _count_trainings(monkeypatch)
    opts = build_options("tiny", {**FAST, "session_dir": str(root), "run.max_evaluations": 2,
                                  "objective.kind": "speed"})
    run_search(opts)
    recs = SessionStore(root).kernels()
    assert len(recs) == 2
    assert set(trained) == {r.hash for r in recs}  # no --min-speedup: every kernel is trained
    objective = Objective(opts.reward, opts.objective)
    speedups = []
    for rec in recs:
        meta = json.loads((rec.dir / "meta.json").read_text())
        _check_latency_block(meta)
        s = headline_speedup(meta)
        speedups.append(s)
        if rec.result.ok:  # the speed reward: accuracy reward x min(1, s / target)
            acc_r = opts.reward(rec.result)
            assert rec.reward == pytest.approx(acc_r * min(1.0, s / opts.objective.speedup_target))
            assert rec.reward == pytest.approx(objective(rec.result))
    # the baseline was measured once for the session and cached there
    cache = json.loads((root / BASELINE_FILE).read_text())
    assert len(cache) == 1 and next(iter(cache.values()))["model"] > 0

    # selection by measured speedup: a threshold that keeps the fastest kernel(s) and drops the others
    cut = max(speedups)
    res = runner.invoke(app, ["select", str(root), "--min-speedup", str(cut), "--no-dedup", "-q"])
    assert res.exit_code == 0, res.output
    sel = json.loads((root / "selected.json").read_text())
    ok_speedups = {r.name: headline_speedup(r.meta) for r in recs if r.result.ok}
    expect = {n for n, s in ok_speedups.items() if s >= cut}
    assert {e["name"] for e in sel["selected"]} == expect
    assert all(e["speedup"] >= cut for e in sel["selected"])
    # --min-speedup 1.0: only kernels measured faster than the original model
    res = runner.invoke(app, ["select", str(root), "--min-speedup", "1.0", "--no-dedup", "-q"])
    assert res.exit_code == 0, res.output
    sel = json.loads((root / "selected.json").read_text())
    assert {e["name"] for e in sel["selected"]} == {n for n, s in ok_speedups.items() if s >= 1.0}
    assert all(e["speedup"] >= 1.0 for e in sel["selected"])
    # syno show ranks by measured speedup and filters by it too
    res = runner.invoke(app, ["show", str(root), "--json", "--sort", "speedup"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    ranked = [r["speedup"] for r in rows if r["rank"] is not None]
    assert ranked == sorted(ranked, reverse=True)
    fig = plot_all(collect([root]), tmp_path / "fig", only=["search-latency"])[0]
    assert fig.drawn, fig.missing
    assert (tmp_path / "fig" / "search-latency.png").stat().st_size > 0


def test_slow_kernels_are_timed_but_not_trained(tmp_path, monkeypatch):
    root = tmp_path / "slow"
    trained = _count_trainings(monkeypatch)
    # no kernel is a million times faster than the tiny CNN: every one is rejected before training
    opts = build_options("tiny", {**FAST, "session_dir": str(root), "run.max_evaluations": 3,
                                  "objective.kind": "speed", "objective.min_speedup": 1e6})
    summary = run_search(opts)
    recs = SessionStore(root).kernels()
    assert len(recs) == summary.evaluated == 3
    assert trained == []
    for rec in recs:
        meta = json.loads((rec.dir / "meta.json").read_text())
        assert meta["status"] == "slow" and rec.reward is None and rec.dir.name.startswith("ERROR_")
        assert "--min-speedup" in meta["message"]
        assert "epochs" not in meta["result"]["extra"]  # the trainer never ran
        _check_latency_block(meta)
        assert meta["flops"] > 0 and meta["params"] > 0
    assert "slow" in STATUSES and not is_ok("slow")
    res = runner.invoke(app, ["show", str(root), "--failed"])
    assert res.exit_code == 0 and "slow" in res.output
    # the report's accuracy-vs-latency figure places the rejected kernels at their measured latency
    fig = plot_all(collect([root]), None, only=["search-latency"])[0]
    assert fig.drawn, fig.missing


def test_timer_baseline_is_cached_per_settings(tmp_path, monkeypatch):
    from syno.ir.library import HAND_BUILT
    from syno.search import latency

    opts = build_options("tiny", {"latency.budget_ms": 20, "latency.warmup_ms": 5})
    prepared = []
    real = latency.forward_fn
    monkeypatch.setattr(latency, "forward_fn", lambda *a, **k: prepared.append(1) or real(*a, **k))
    t1 = KernelTimer(opts, "cpu", session_dir=tmp_path)
    lat = t1.measure(HAND_BUILT["conv2d"]())
    n_base = 1 + 3  # the vanilla model and its three distinct placeholder sites, prepared once per worker
    assert len(prepared) == n_base + 1 + 3
    model = lat.records[0]
    assert lat.speedup == pytest.approx(model["speedup"]) and lat.flops > 0 and lat.params > 0
    assert model["session_baseline_ms"] == t1.baseline()["model"] and model["rounds"] == 3
    # the same operator as the original convolution: its side-by-side speedup is about 1 (loose: a shared CPU)
    assert 0.3 < model["speedup"] < 3.0
    t1.measure(HAND_BUILT["conv2d"]())
    assert len(prepared) == n_base + 2 * (1 + 3)  # the original's modules are reused, not rebuilt
    # a second worker of the session reuses the session baseline measured by the first
    prepared.clear()
    t2 = KernelTimer(opts, "cpu", session_dir=tmp_path)
    assert t2.baseline() == t1.baseline() and prepared == []
    # other settings (batch) are another baseline
    t3 = KernelTimer(build_options("tiny", {"latency.batch": 4, "latency.budget_ms": 20}), "cpu", session_dir=tmp_path)
    t3.baseline()
    assert len(prepared) == n_base and len(json.loads((tmp_path / BASELINE_FILE).read_text())) == 2


def test_objective_reward():
    base = RewardConfig(acc_lower=0.0, acc_upper=1.0, power=1.0)
    acc = Objective(base, ObjectiveOptions(kind="accuracy"))
    speed = Objective(base, ObjectiveOptions(kind="speed", speedup_target=2.0, speed_weight=1.0))
    r = EvalResult(accuracy=0.8, extra={"speedup": 1.0})
    assert acc(r) == pytest.approx(0.8)
    assert speed(r) == pytest.approx(0.4)
    assert speed(EvalResult(accuracy=0.8, extra={"speedup": 3.0})) == pytest.approx(0.8)  # capped at the target
    assert speed(EvalResult(accuracy=0.8, extra={"speedup": 1.5})) > speed(r)  # faster at equal accuracy: higher
    assert speed(EvalResult(accuracy=0.8)) is None  # not measured: cannot be ranked by speed
    assert speed(EvalResult(status="slow", accuracy=math.nan, extra={"speedup": 0.5})) is None
    assert speed.target == "accuracy"  # RewardConfig's attributes show through
    assert slow_reason(0.9, 1.0) and slow_reason(1.1, 1.0) is None and slow_reason(0.1, None) is None


def test_options_and_cli_flags(tmp_path):
    with pytest.raises(ValueError, match="latency.sites"):
        LatencyOptions(scope="layers", sites=False)
    res = runner.invoke(app, ["search", "tiny", "--objective", "speed", "--min-speedup", "1.2", "--show-options",
                              "--session", str(tmp_path / "x")])
    assert res.exit_code == 0, res.output
    o = json.loads(res.output)
    assert o["objective"]["kind"] == "speed" and o["objective"]["min_speedup"] == 1.2
    assert o["latency"]["enabled"] is True
    res = runner.invoke(app, ["search", "tiny", "--objective", "fast", "--show-options"])
    assert res.exit_code == 2 and "objective" in res.output
    res = runner.invoke(app, ["search", "tiny", "--min-speedup", "0", "--show-options"])
    assert res.exit_code == 2 and "min_speedup" in res.output
    # nothing would measure the speed: refused before a session directory exists
    res = runner.invoke(app, ["search", "tiny", "--objective", "speed", "--set", "latency.enabled=false",
                              "--session", str(tmp_path / "off"), "-n", "1"])
    assert res.exit_code == 2 and "latency.enabled" in res.output and not (tmp_path / "off").exists()
    res = runner.invoke(app, ["search", "synthetic", "--min-speedup", "1", "--session", str(tmp_path / "m"), "-n", "1"])
    assert res.exit_code == 2 and "synthetic" in res.output and not (tmp_path / "m").exists()


@pytest.mark.gpu
def test_cuda_timer_replays_a_cuda_graph():
    from syno.ir.library import HAND_BUILT

    opts = build_options("tiny", {"train.device": "cuda", "latency.budget_ms": 20})
    lat = KernelTimer(opts, "cuda:0").measure(HAND_BUILT["conv2d"]())
    model = lat.records[0]
    assert model["timer"] == "cuda-graph" and model["ms"] > 0 and model["speedup"] > 0
    assert model["device"].startswith("cuda:0 ") and "cuda" in model["versions"]


@pytest.mark.gpu
def test_cuda_graph_replay_keeps_its_module_and_input_alive():
    # The search caches the baseline's replay across kernels and calls empty_cache() in between:
    # the replay must own what the graph reads (it once read freed memory: an illegal memory
    # access in every kernel of a ResNet-18 search on an H100).
    import gc

    import torch

    from syno.search.latency import LatencyOptions, forward_fn

    module = torch.nn.Linear(4096, 4096).cuda()          # 64 MB of weights: its own cudaMalloc segment
    x = torch.randn(4096, 4096, device="cuda")
    expected = module(x).detach().clone()
    replay, timer = forward_fn(module, x, LatencyOptions())
    assert timer == "cuda-graph"
    del module, x
    gc.collect()
    torch.cuda.empty_cache()
    scratch = torch.zeros(64 << 20, device="cuda")       # reuse whatever memory was given back
    replay()
    torch.cuda.synchronize()
    del scratch
    assert expected.abs().sum().item() > 0
