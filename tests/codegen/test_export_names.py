"""A hostile operator name (it comes from operator.json, i.e. from disk) must not inject code into
the exported standalone module (issue #19, item 10)."""

import dataclasses
import importlib.util
import json

import pytest

from syno.codegen.export import export_operator
from syno.ir import library
from syno.ir.graph import Operator

M = {"N": 1, "C_in": 4, "C_out": 4, "H": 4}
HOSTILE = [
    'x"""\nraise SystemExit("injected")\n"""',  # closes the module docstring, then code
    "a\\\"\"\"; import os; os.environ['SYNO_PWNED'] = '1' #",  # backslash + triple quote
    'trailing quote"',  # a docstring may not end in a quote right before its closing quotes
    "line\nbreak\r\x00nul '''single''' \\N{BULLET}",
    "../../escape/dir",
]


@pytest.mark.parametrize("bad", HOSTILE)
def test_hostile_name_exports_and_imports_inertly(tmp_path, bad, monkeypatch):
    monkeypatch.delenv("SYNO_PWNED", raising=False)
    op = dataclasses.replace(library.HAND_BUILT["conv2d"](), name=bad)
    op = Operator.from_json(op.to_json())  # as read from disk
    assert op.name == bad
    paths = export_operator(op, M, tmp_path / "out")
    py = paths["py"]
    assert py.parent == tmp_path / "out"  # the name cannot pick the directory either
    spec = importlib.util.spec_from_file_location("exported_hostile", py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # SyntaxError / SystemExit here = injection
    assert "SYNO_PWNED" not in __import__("os").environ
    # the name survives, readable, in the docstrings (newlines escaped in the one-line slots)
    shown = json.dumps(bad)[1:-1] if "\n" in bad or "\x00" in bad else bad
    assert op.hash in mod.__doc__ and op.hash in mod.Module.__doc__
    assert bad.split("\n")[0] in mod.__doc__ or shown[:10] in mod.__doc__
    m = mod.Module(implementation="einsum")
    assert sum(p.numel() for p in m.parameters()) > 0
