import json

import pytest
from torch import nn

from syno.bench.operators import codegen_available, find_kernels, resolve_operator
from syno.ir.library import HAND_BUILT, operator1, stacked_conv


def test_resolve_hand_built_manual():
    for name in ("conv2d", "operator1", "stacked_conv"):
        s = resolve_operator(name, impl="manual")
        assert s.impl == "manual" and s.label == name and s.op_hash == HAND_BUILT[name]().hash
        m = s.factory({"N": 1, "C_in": 64, "C_out": 128, "H": 8})
        assert isinstance(m, nn.Module)


def test_resolve_auto_prefers_codegen_when_present():
    s = resolve_operator("operator1")
    assert s.impl == ("codegen" if codegen_available() else "manual")


def test_resolve_errors():
    with pytest.raises(ValueError, match="unknown operator"):
        resolve_operator("nope")
    with pytest.raises(ValueError):
        resolve_operator()
    with pytest.raises(ValueError):
        resolve_operator("conv2d", impl="fastest")
    if not codegen_available():
        with pytest.raises(RuntimeError, match="codegen"):
            resolve_operator("operator1", impl="codegen")
        with pytest.raises(RuntimeError, match="no hand-written"):
            resolve_operator("depthwise_conv2d")


def _kernel_dir(root, name, op, meta):
    d = root / name
    d.mkdir(parents=True)
    (d / "operator.json").write_text(op.to_json())
    (d / "meta.json").write_text(json.dumps(meta))
    return d


def test_kernel_dir_and_find_kernels(tmp_path):
    a = _kernel_dir(tmp_path / "kernels", "07889_aaaa", operator1(), {"accuracy": 0.7889, "status": "ok"})
    b = _kernel_dir(tmp_path / "kernels", "07900_bbbb", stacked_conv(), {"accuracy": 0.79, "status": "ok"})
    _kernel_dir(tmp_path / "kernels", "00000_cccc", operator1(), {"accuracy": 0.0, "status": "error"})
    assert find_kernels(tmp_path) == [b, a]
    assert find_kernels(tmp_path, top=1) == [b]
    s = resolve_operator(kernel_dir=a, impl="manual")   # same hash as operator1 -> hand-written version
    assert s.label == "07889_aaaa" and s.op_hash == operator1().hash and s.impl == "manual"
    assert s.meta["accuracy"] == 0.7889
    with pytest.raises(FileNotFoundError):
        resolve_operator(kernel_dir=tmp_path)


def test_cache_key_separates_implementations():
    a = resolve_operator("conv2d", impl="manual")
    assert a.cache_key == f"{a.op_hash}/manual"
    if codegen_available():
        b = resolve_operator("conv2d", impl="codegen", codegen_options={"implementation": "einsum"})
        assert b.cache_key != a.cache_key and "implementation=einsum" in b.cache_key
