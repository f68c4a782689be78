"""One real search session read back through every consumer (show, select, reevaluate, bench, plot,
report), all through :mod:`syno.session`; plus the format's own guarantees (old sessions, damage)."""

from __future__ import annotations

import json

import pytest

from syno.session import (KernelMeta, read_kernel_dir, register_status, scan_kernel_dirs, session_target,
                          write_json_atomic)

# a real tiny search, kept cheap: 3 kernels, 3 training steps each, einsum (no fast-path probe)
FAST = {"train.max_steps_per_epoch": 3, "train.eval_batch_size": 360, "run.workers": 0, "run.max_evaluations": 3,
        "implementation": "einsum"}


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from syno.search.options import build_options
    from syno.search.run import run_search

    root = tmp_path_factory.mktemp("s") / "tiny-session"
    run_search(build_options("tiny", {**FAST, "session_dir": str(root)}))
    return root


def test_every_consumer_reads_the_search_session(session, tmp_path):
    from syno.bench.operators import find_kernels, resolve_operator
    from syno.post.reevaluate import reevaluate
    from syno.post.select import select_kernels
    from syno.report.figures import plot_all
    from syno.report.html import write_report
    from syno.report.inputs import collect
    from syno.search.leaderboard import leaderboard_rows
    from syno.search.session import SessionStore

    kernels = scan_kernel_dirs(session)
    assert len(kernels) == 3 and all(k.record is not None and k.record.schema_ == 1 for k in kernels)
    good = [k for k in kernels if k.usable]
    assert good, [k.status for k in kernels]
    assert session_target(json.loads((session / "session.json").read_text()), kernels) == "accuracy"

    rows = leaderboard_rows(SessionStore(session), include_failed=True)  # show
    assert {r["dir"] for r in rows} == {k.name for k in kernels}

    sel = select_kernels(session, top=2, dedup=False)  # select
    assert len(sel["selected"]) == min(2, len(good))
    assert sel["selected"][0]["accuracy"] == max(k.accuracy for k in good)

    best = sel["selected"][0]["name"]
    found = find_kernels(session)  # bench
    top_acc = max(k.accuracy for k in good)
    assert read_kernel_dir(found[0]).accuracy == top_acc and len(found) == len(good)
    assert resolve_operator(kernel_dir=found[0]).op_hash == found[0].name.split("_")[1]

    summary = reevaluate("digits", session=session, top=1, out=tmp_path / "re",  # reevaluate (selected.json)
                         overrides={"epochs": 1, "max_steps_per_epoch": 2, "progress": False, "device": "cpu"})
    assert [r["name"] for r in summary["kernels"]] == [best] and summary["kernels"][0]["status"] == "ok"

    inputs = collect([session, tmp_path / "re"])  # plot
    assert not inputs.problems and len(inputs.kernels) == 3 and inputs.reevals
    drawn = [r for r in plot_all(inputs, tmp_path / "fig", only=["search-progress"]) if r.drawn]
    assert drawn
    path, _ = write_report(session, top=3, use_dot=False)  # report
    assert all(k.name in path.read_text() for k in good)


def test_old_sessions_and_extension_blocks_read():
    old = KernelMeta.model_validate({"path": "p", "accuracy": 0.5, "status": "ok", "unknown_key": 1})
    assert old.schema_ == 0 and old.latency == [] and old.model_extra == {"unknown_key": 1}
    new = KernelMeta.model_validate({"schema": 1, "loss": None, "latency": [{"ms": 1.5, "speedup": 2.0,
                                     "implementation": "triton", "dtype": "float16", "batch": 8, "device": "cuda:0",
                                     "versions": {"torch": "2"}}],
                                     "rungs": [{"budget": 1, "accuracy": 0.3, "curve": [{"epoch": 1}]}]})
    assert new.latency[0].speedup == 2.0 and new.rungs[0].curve == [{"epoch": 1}]
    assert new.dump()["schema"] == 1
    # a malformed extension block never makes the kernel unreadable
    odd = KernelMeta.model_validate({"accuracy": 0.4, "latency": [{"ms": "n/a", "batch": "x"}, 7], "rungs": {"x": 1}})
    assert odd.accuracy == 0.4 and len(odd.latency) == 1 and odd.rungs == []


def test_tolerant_reader_reports_instead_of_raising(tmp_path):
    d = tmp_path / "05000_abc"
    d.mkdir()
    (d / "meta.json").write_text("{broken")
    k = read_kernel_dir(d)
    assert "damaged meta.json" in k.problem and not k.ok and k.status == "unknown"
    write_json_atomic(d / "meta.json", {"accuracy": "not a number"})
    assert read_kernel_dir(d).problem.startswith("invalid meta.json: accuracy")
    (d / "meta.json").unlink()
    k = read_kernel_dir(d, target="loss")  # no meta.json: the prefix is read with the session's target
    assert k.loss == 5.0 and k.accuracy is None


def test_status_registry_is_extensible():
    register_status("unit_test_ok", ok=True, meaning="test")
    from syno.search.base import EvalResult

    assert EvalResult(status="unit_test_ok").ok and not EvalResult(status="too_costly").ok
    with pytest.raises(ValueError):
        register_status("unit_test_ok", ok=False, meaning="flip")
