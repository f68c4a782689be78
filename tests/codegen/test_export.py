"""Standalone export: the .py file runs without syno and matches build_module."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from syno.codegen.export import export_operator
from syno.codegen.torch import build_module
from syno.ir import library

M = {"N": 2, "C_in": 64, "C_out": 64, "H": 6}

RUNNER = textwrap.dedent("""
    import importlib.util, sys, torch
    assert not any(m == "syno" or m.startswith("syno.") for m in sys.modules)
    spec = importlib.util.spec_from_file_location("exported", sys.argv[1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    blob = torch.load(sys.argv[2])
    out = {}
    for impl in ("fast", "einsum"):
        m = mod.Module(implementation=impl).double()
        m.load_state_dict(blob["state"])
        out[impl] = m(blob["x"])
    out["macs"] = m.count_macs(blob["x"], out["fast"])
    assert not any(k == "syno" or k.startswith("syno.") for k in sys.modules), "syno was imported"
    torch.save(out, sys.argv[3])
""")


@pytest.mark.parametrize("name", ["operator1", "stacked_conv", "grouped_conv2d"])
def test_exported_module_runs_without_syno(tmp_path, name):
    op = library.HAND_BUILT[name]()
    paths = export_operator(op, M, tmp_path / "out", name=name)
    assert paths["py"].exists()
    src = paths["py"].read_text()
    assert "syno" not in "".join(l for l in src.splitlines() if l.startswith(("import", "from")))
    mod = build_module(op, M).double()
    x = torch.randn(3, 64, 6, 6, dtype=torch.float64)  # another batch size than the mapping
    torch.save({"state": mod.state_dict(), "x": x}, tmp_path / "in.pt")
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # run from an empty directory with an isolated sys.path entry: syno must not be importable
    # through the repo (it is installed editable, so hide it with -I and a path filter)
    code = ("import sys; sys.path = [p for p in sys.path if 'work/main' not in p and not p.endswith('.egg-link')]; "
            "import importlib.abc, importlib.machinery\n"
            "class _Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name == 'syno' or name.startswith('syno.'): raise ImportError('syno blocked')\n"
            "sys.meta_path.insert(0, _Block())\n"
            f"sys.argv = {[str(runner), str(paths['py']), str(tmp_path / 'in.pt'), str(tmp_path / 'res.pt')]!r}\n"
            f"exec(open({str(runner)!r}).read())")
    res = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = torch.load(tmp_path / "res.pt")
    ref = mod(x)
    assert torch.allclose(out["fast"], ref, atol=1e-10)
    assert torch.allclose(out["einsum"], ref, atol=1e-10)
    assert out["macs"] == mod.count_macs(x, ref)
    if "loop" in paths:
        assert paths["loop"].read_text().startswith("/* Loops")
    if "dot" in paths:
        assert paths["dot"].read_text().startswith("digraph")


def test_export_source_documents_plan(tmp_path):
    paths = export_operator(library.operator1(), M, tmp_path)
    src = paths["py"].read_text()
    assert "MACS = " in src and "def _forward_fast" in src and "def _forward_einsum" in src
    compile(src, str(paths["py"]), "exec")
