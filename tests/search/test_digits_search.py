"""A real search: the tiny preset's synthesis space, the tiny CNN trained on digits (CPU, a fraction
of an epoch per kernel), kernel directories, SIGKILL mid-run and resume."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from syno.ir.graph import Operator
from syno.search.options import build_options
from syno.search.run import run_search
from syno.search.session import SessionStore
from syno.session import kernel_dir_name

# a fraction of an epoch per kernel: both tests take about 20 s on an idle 2-core machine (minutes on a busy one)
# single fidelity: these tests check the session mechanics (rungs: tests/search/test_fidelity*.py)
FAST = {"train.max_steps_per_epoch": 8, "train.eval_batch_size": 360, "run.kernel_timeout": 240,
        "fidelity.enabled": False}


def check_kernel_dir(rec) -> None:
    d = rec.dir
    meta = json.loads((d / "meta.json").read_text())
    for key in ("path", "accuracy", "flops", "params", "time", "loss", "status", "operator", "hash", "reward"):
        assert key in meta, key
    assert d.name == kernel_dir_name(rec.hash, ok=rec.result.ok, accuracy=rec.result.accuracy)
    op = Operator.from_json((d / "operator.json").read_text())
    assert op.hash == rec.hash == meta["hash"]
    assert Operator.from_dict(meta["operator"]).hash == op.hash
    assert (d / "loop.txt").read_text().strip()
    assert (d / "graph.dot").read_text().lstrip().startswith("digraph")
    if rec.result.ok:
        assert 0.0 <= rec.result.accuracy <= 1.0
        assert rec.result.flops > 0 and rec.result.params > 0
    # the standalone module runs (loaded here for the test; the search itself never imports it)
    src = d / "kernel_0.py"
    assert src.exists()
    spec = importlib.util.spec_from_file_location(f"kernel_{rec.hash}", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    m = meta["mappings"][0]
    x = torch.randn(2, m["C_in"], m["H"], m["H"])
    y = mod.Module(implementation="einsum")(x)
    assert tuple(y.shape) == (2, m["C_out"], m["H"], m["H"])


def test_digits_search_writes_valid_kernel_dirs(tmp_path):
    root = tmp_path / "s"
    opts = build_options("tiny", {**FAST, "session_dir": str(root), "run.max_evaluations": 5, "run.workers": 0})
    summary = run_search(opts)
    recs = SessionStore(root).kernels()
    assert summary.evaluated == len(recs) == 5
    assert len({r.hash for r in recs}) == 5
    assert any(r.result.ok for r in recs)
    for r in recs:
        check_kernel_dir(r)
    # every kernel respects the FLOPs-ratio window of the preset
    lo, hi = opts.flops_ratio
    for r in recs:
        if r.result.ok:
            assert lo * opts.reference["macs"] * 0.999 <= r.result.flops <= hi * opts.reference["macs"] * 1.001


def _syno(*args: str, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from syno.cli import app; app()", *args]
    return subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kw)


def _sets() -> list[str]:
    out = []
    for k, v in FAST.items():
        out += ["--set", f"{k}={v}"]
    return out


def test_digits_search_survives_sigkill_and_resumes(tmp_path):
    root = tmp_path / "s"
    n = 6
    # inline evaluation (-w 0): the kill lands in the middle of a training run of the search process
    proc = _syno("search", "tiny", "--session", str(root), "-n", str(n), "-w", "0", "-q", *_sets())
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None:
            if root.exists() and len(SessionStore(root).kernel_dirs()) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read()
        os.killpg(proc.pid, signal.SIGKILL)  # driver and its worker, mid-run, no cleanup
    finally:
        proc.wait(timeout=60)
    store = SessionStore(root)
    before = {r.hash: r.dir.name for r in store.kernels()}
    assert 2 <= len(before) < n
    res = subprocess.run([sys.executable, "-c", "from syno.cli import app; app()", "search", "tiny", "--session",
                          str(root), "--resume", "-n", str(n), "-w", "1", "-q"],  # resumed with a worker pool
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    recs = store.kernels()
    assert len(recs) == n
    assert len({r.hash for r in recs}) == n  # no kernel evaluated twice
    after = {r.hash: r.dir.name for r in recs}
    assert all(after.get(h) == name for h, name in before.items())  # none lost or rewritten
    for r in recs:
        check_kernel_dir(r)
    state = json.loads((root / "state.json").read_text())
    assert state["evaluated"] == n
    assert json.loads((root / "inflight.json").read_text()) == {"paths": []}
