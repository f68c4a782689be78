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


def test_spearman():
    bench = _load()
    assert bench.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert bench.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
