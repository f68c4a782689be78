"""Smoke test of benchmarks/space_speed.py --cpu: runs, records every operator, resumes."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "space_speed.py"


def _load():
    spec = importlib.util.spec_from_file_location("space_speed", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_space_speed_cpu_smoke_and_resume(tmp_path):
    bench = _load()
    out = tmp_path / "ss"
    assert bench.main(["--cpu", "--out", str(out), "--count", "2", "--reps", "1"]) == 0
    rows = [json.loads(l) for l in (out / "rows.jsonl").read_text().splitlines()]
    ops = [r for r in rows if r["kind"] == "operator"]
    assert len(ops) == 2 and sum(r["kind"] == "baseline" for r in rows) == 1
    for r in ops:
        assert r["status"] in ("ok", "too_costly", "error")
        if r["status"] == "ok":
            assert r["speedup"] > 0 and r["macs_ratio"] > 0 and r["peak_ratio"] > 0
    assert "Spearman" in (out / "summary.md").read_text()
    # a rerun measures nothing again
    assert bench.main(["--cpu", "--out", str(out), "--count", "2", "--reps", "1"]) == 0
    assert len((out / "rows.jsonl").read_text().splitlines()) == len(rows)
    # traffic counted with the timing (--cpu), and the same numbers by --add-traffic afterwards
    # (how rows measured on a GPU without it get them)
    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    assert all(r["kernels"] > 0 and r["bytes_moved"] > 0 and r["roofline_ms"] > 0 for r in ok)
    stripped = [{k: v for k, v in r.items() if k not in ("kernels", "bytes_moved", "roofline_ms")} for r in rows]
    (out / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stripped))
    assert bench.main(["--cpu", "--out", str(out), "--count", "2", "--add-traffic"]) == 0
    again = [json.loads(l) for l in (out / "rows.jsonl").read_text().splitlines()]
    assert [(r.get("kernels"), r.get("bytes_moved")) for r in again] == [(r.get("kernels"), r.get("bytes_moved")) for r in rows]
    assert "Spearman(roofline, time)" in (out / "summary.md").read_text()


def test_spearman():
    bench = _load()
    assert bench.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert bench.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
