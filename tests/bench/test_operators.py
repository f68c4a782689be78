import json

import pytest
from torch import nn

from syno.bench.operators import find_kernels, resolve_operator
from syno.ir.library import HAND_BUILT, operator1, stacked_conv


def test_resolve_hand_built_manual():
    for name in ("conv2d", "operator1", "stacked_conv"):
        s = resolve_operator(name, impl="manual")
        assert s.impl == "manual" and s.label == name and s.op_hash == HAND_BUILT[name]().hash
        m = s.factory({"N": 1, "C_in": 64, "C_out": 128, "H": 8})
        assert isinstance(m, nn.Module)


def test_resolve_auto_is_codegen():
    s = resolve_operator("operator1")
    assert s.impl == "codegen" and isinstance(s.factory({"N": 1, "C_in": 64, "C_out": 128, "H": 8}), nn.Module)


def test_resolve_errors():
    with pytest.raises(ValueError, match="unknown operator"):
        resolve_operator("nope")
    with pytest.raises(ValueError):
        resolve_operator()
    with pytest.raises(ValueError):
        resolve_operator("conv2d", impl="fastest")
    with pytest.raises(RuntimeError, match="no hand-written"):
        resolve_operator("depthwise_conv2d", impl="manual")


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
    b = resolve_operator("conv2d", impl="codegen", codegen_options={"implementation": "einsum"})
    assert b.cache_key != a.cache_key and "implementation=einsum" in b.cache_key


def test_find_kernels_ranks_a_loss_target_session_by_lowest_loss(tmp_path):
    """#18: the directory prefix of a loss-target (GPT-2) session is int(loss * 1000); ranking it as an
    accuracy put the worst kernels first. The session's target decides."""
    from syno.search.base import EvalResult, RewardConfig
    from syno.search.session import SessionStore
    from syno.session import kernel_dir_name

    store = SessionStore(tmp_path / "gpt2-session")
    store.create({"options": {"model": "gpt2", "reward": RewardConfig(target="loss").model_dump()}})
    for loss, op in ((5.2, operator1()), (6.1, stacked_conv()), (4.9, HAND_BUILT["conv2d"]())):
        r = EvalResult(loss=loss, accuracy=float("nan"))
        meta = {"path": "", "hash": op.hash, "status": "ok", "loss": loss, "accuracy": None, "time": 1.0,
                "result": r.to_dict()}
        store.write_kernel(kernel_dir_name(op.hash, ok=True, target="loss", loss=loss), meta,
                           {"operator.json": op.to_json()})
    found = find_kernels(store.root)
    assert [d.name[:5] for d in found] == ["04900", "05200", "06100"]  # lowest loss first
    assert find_kernels(store.root, top=1)[0].name.endswith(HAND_BUILT["conv2d"]().hash)
