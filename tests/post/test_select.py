import json

import pytest

from syno.ir.library import conv2d, operator1, pointwise_conv2d, stacked_conv
from syno.post.equivalence import ProbeConfig
from syno.post.select import load_selection, select_kernels, session_baseline_flops
from syno.session import kernel_dir_name, scan_kernel_dirs

from .helpers import conv_scaled, make_kernel_dir

BASE = 1000.0


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    s = tmp_path_factory.mktemp("sess")
    (s / "session.json").write_text(json.dumps({"options": {"model": "tiny", "reference": {"macs": BASE}}}))
    make_kernel_dir(s, conv_scaled(), 0.72, 800)       # best; same family as conv2d
    make_kernel_dir(s, conv2d(), 0.70, 800, operator_in_meta=False)   # near-duplicate of the above
    make_kernel_dir(s, operator1(), 0.69, 400)
    make_kernel_dir(s, stacked_conv(), 0.68, 450)
    make_kernel_dir(s, pointwise_conv2d(), 0.75, 100)  # most accurate but below the FLOPs window
    make_kernel_dir(s, operator1(), 0.65, 400, name_hash="feedbeef")  # same operator, another dir
    make_kernel_dir(s, conv2d(), None, 800, name_hash="0bad")          # ERROR_ dir
    make_kernel_dir(s, operator1(), 0.90, 400, status="error", name_hash="1bad")  # failed status
    (s / "not-a-kernel").mkdir()
    return s


def test_scan_session_reads_both_operator_locations(session):
    recs = {r.name: r for r in scan_kernel_dirs(session, include_errors=True)}
    assert "not-a-kernel" not in recs
    assert any(r.error for r in recs.values())
    usable = [r for r in recs.values() if r.usable]
    assert len(usable) == 6
    for r in usable:
        assert r.operator().hash in {conv2d().hash, conv_scaled().hash, operator1().hash, stacked_conv().hash,
                                     pointwise_conv2d().hash}
    assert session_baseline_flops(session) == BASE


def test_select_window_dedup_and_ranking(session):
    res = select_kernels(session, top=3, min_flops_ratio=0.3, max_flops_ratio=0.9, probe=ProbeConfig(steps=150))
    names = [e["name"] for e in res["selected"]]
    assert names == [kernel_dir_name(conv_scaled().hash, ok=True, accuracy=0.72),
                     kernel_dir_name(operator1().hash, ok=True, accuracy=0.69),
                     kernel_dir_name(stacked_conv().hash, ok=True, accuracy=0.68)]
    for e in res["selected"]:
        assert 0.3 <= e["flops_ratio"] <= 0.9 and 0 < e["accuracy"] < 1
    dups = {d["name"]: d for d in res["duplicates"]}
    assert dups[kernel_dir_name(conv2d().hash, ok=True, accuracy=0.70)]["reason"] == "fit"
    reasons = {r["name"]: r["reason"] for r in res["rejected"]}
    assert reasons[kernel_dir_name(pointwise_conv2d().hash, ok=True, accuracy=0.75)] == "flops-window"
    assert reasons["ERROR_0bad"] == "error"
    assert reasons["09000_1bad"].startswith("unusable")
    written = json.loads((session / "selected.json").read_text())
    assert written["counts"]["selected"] == 3
    assert load_selection(session) == [session / n for n in names]

    # cached verdicts: a second run with a larger top does no new comparison for known pairs
    again = select_kernels(session, top=4, min_flops_ratio=0.3, max_flops_ratio=0.9, probe=ProbeConfig(steps=150))
    assert [e["name"] for e in again["selected"]][:3] == names
    # the 0.65 copy of Operator 1 has the same hash: a duplicate without any fit
    assert {d["name"]: d["reason"] for d in again["duplicates"]}[kernel_dir_name("feedbeef", ok=True, accuracy=0.65)] == "hash"
    assert again["counts"]["comparisons"] < res["counts"]["comparisons"] + 4


def test_window_needs_a_baseline(tmp_path):
    make_kernel_dir(tmp_path, operator1(), 0.5, 10)
    with pytest.raises(ValueError, match="baseline"):
        select_kernels(tmp_path, top=1, max_flops_ratio=0.5)
    res = select_kernels(tmp_path, top=1, dedup=False)
    assert len(res["selected"]) == 1


def test_loss_target_session_ranks_by_lowest_loss(tmp_path):
    import json as _json

    from syno.ir.library import linear

    for acc_name, loss in ((0.52, 5.2), (0.48, 4.8)):
        d = make_kernel_dir(tmp_path, linear(), acc_name, 10, name_hash=f"h{int(loss * 10)}")
        meta = _json.loads((d / "meta.json").read_text())
        meta.update(accuracy=None, loss=loss)
        (d / "meta.json").write_text(_json.dumps(meta))
    res = select_kernels(tmp_path, top=2)
    assert res["target"] == "loss"
    assert [e["loss"] for e in res["selected"]] == [4.8]           # the other is the same operator
    assert res["duplicates"][0]["reason"] == "hash"
