"""Files from disk are data, never code: every ``torch.load`` in the package passes
``weights_only=True`` (issue #19 item 10: bench/tvm_backend.py used weights_only=False)."""

import ast
from pathlib import Path

import syno

PKG = Path(syno.__file__).parent


def _torch_load_calls():
    for path in sorted(PKG.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                yield path.relative_to(PKG.parent), node


def test_every_torch_load_is_weights_only():
    calls = list(_torch_load_calls())
    assert calls, "the scan found no torch.load at all: it is not looking at the package"
    bad = []
    for where, node in calls:
        kw = {k.arg: k.value for k in node.keywords}
        v = kw.get("weights_only")
        if not (isinstance(v, ast.Constant) and v.value is True):
            bad.append(f"{where}:{node.lineno}")
    assert not bad, f"torch.load without weights_only=True: {bad}"


def test_no_pickle_load_of_files():
    """pickle.load/loads appear only in the restricted CIFAR unpickler (syno/data/vision.py)."""
    hits = []
    for path in sorted(PKG.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("load", "loads") and isinstance(node.func.value, ast.Name) \
                    and node.func.value.id in ("pickle", "cPickle", "dill"):
                hits.append(f"{path.relative_to(PKG.parent)}:{node.lineno}")
    assert not hits, hits
