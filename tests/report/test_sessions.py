"""Reports of other kinds of sessions: a real synthetic-space MCTS search (no operators), a loss target."""

from __future__ import annotations

import json
import math

import pytest

from syno.report import collect, plot_all, write_report

from .test_html import parse

SECTIONS = ["summary", "leaderboard", "figures", "kernels", "failures", "inputs"]


@pytest.fixture(scope="module")
def synthetic_session(tmp_path_factory):
    from syno.search.options import build_options
    from syno.search.run import run_search

    root = tmp_path_factory.mktemp("synthetic") / "synthetic-session"
    run_search(build_options("synthetic", {"session_dir": str(root), "run.max_evaluations": 25, "run.workers": 0}))
    return root


def test_synthetic_search_session(synthetic_session, tmp_path):
    inputs = collect([synthetic_session])
    (s,) = inputs.sessions
    assert len(s.kernels) == 25 and s.algorithm == "mcts" and s.model == "synthetic"
    results = {r.name: r for r in plot_all(inputs, tmp_path)}
    assert results["search-progress"].drawn and results["accuracy-performance"].drawn
    assert not results["gpt-loss"].drawn
    path, _ = write_report(synthetic_session, top=5)
    page = parse(path)
    assert page.sections == SECTIONS
    text = path.read_text()
    assert text.count("no loop.txt") == 5 and text.count("no graph.dot") == 5  # synthetic kernels have no operator
    for k in s.kernels:
        assert k.name in text
    more = len(s.ranked()) - 5
    assert more > 0 and f"{more} more kernel(s) in the leaderboard only" in text


def _write_loss_session(root):
    """Kernel dirs of a loss-target session, written by the session writer."""
    from syno.search.base import EvalResult, RewardConfig
    from syno.search.session import SessionStore
    from syno.session import kernel_dir_name

    reward = RewardConfig(target="loss", max_loss=6.9, power=4)
    store = SessionStore(root)
    store.create({"options": {"model": "gpt2", "dataset": "lm1b", "reward": reward.model_dump(),
                              "reference": {"macs": 2.5e11, "params": 1.2e8}}})
    results = [EvalResult(loss=5.6756, flops=int(2.3e11), params=int(1.08e8), time=1800.0),
               EvalResult(loss=5.9, flops=int(2.0e11), params=int(1.0e8), time=1800.0),
               EvalResult(status="nan", message="non-finite loss at step 12")]
    for i, r in enumerate(results):
        h = f"{i:016x}"
        meta = {"path": f"Finalize:{h}", "hash": h, "status": r.status,
                "loss": r.loss if math.isfinite(r.loss) else None, "accuracy": None, "flops": r.flops,
                "params": r.params, "time": 100.0 * (i + 1), "eval_time": r.time, "reward": reward(r),
                "message": r.message, "result": r.to_dict()}
        store.write_kernel(kernel_dir_name(h, ok=r.ok, target="loss", loss=r.loss), meta, {})
    return root


def test_loss_target_session(tmp_path):
    root = _write_loss_session(tmp_path / "gpt2-session")
    (tmp_path / "baseline.json").write_text(json.dumps({"gpt": {"loss": 5.8516, "flops": 2.53e11,
                                                                "params": 1.2363e8}}))
    inputs = collect([root, tmp_path / "baseline.json"])
    (s,) = inputs.sessions
    assert s.target == "loss" and s.model == "gpt2" and s.dataset == "lm1b"
    assert [k.name for k in s.ranked()] == ["05675_0000000000000000", "05900_0000000000000001"]
    results = {r.name: r for r in plot_all(inputs, tmp_path / "figs")}
    assert results["search-progress"].drawn
    assert not results["accuracy-performance"].drawn  # no accuracies in a loss session
    path, _ = write_report(root, extra=[tmp_path / "baseline.json"])
    text = path.read_text()
    assert parse(path).sections == SECTIONS
    assert "-0.1760" in text  # Δ loss vs the GPT baseline
    assert "non-finite loss at step 12" in text
