"""The registry's explicit tuning step, and the bounds of codegen's caches (the registry's disk
cache, generated sources in linecache), on the CPU (GPU timing: test_gpu.py, test_triton_gpu.py)."""

import json

import pytest
import torch

from syno.codegen import registry
from syno.codegen.torch import SynoModule, build_module, operator_factory
from syno.ir import library

M = {"N": 2, "C_in": 64, "C_out": 64, "H": 8}


def test_compile_operator_returns_the_compiled_operator():
    mod = build_module(library.operator1(), M)
    x = torch.randn(2, 64, 8, 8)
    with pytest.raises(ValueError, match="no implementation"):  # operator1's nodiag plan is its min plan
        registry.compile_operator(mod, x, backends=["fast"], plans=["nodiag"])
    compiled = registry.compile_operator(mod, x, backends=["fast"], plans=["wfirst"])
    assert isinstance(compiled, registry.CompiledOperator)
    assert compiled.module is mod and compiled.implementation == mod.implementation == "fast:wfirst"
    assert set(compiled.ms) == {"fast:wfirst"} and compiled.tiles == {}  # nothing to time or tune on a CPU
    y = compiled(x)
    assert torch.allclose(y, mod(x)) and torch.allclose(y, mod.reference_forward(x), atol=1e-4, rtol=1e-4)
    assert mod.tune(x, backends=["einsum"]).implementation == mod.implementation == "einsum:min"


def test_compile_model_tunes_every_generated_module_once_per_shape(monkeypatch):
    from syno.models.placeholder import build_mappings, fill_placeholders, replace_convs

    model = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(64, 64, 3, padding=1))
    assert replace_convs(model, lambda c: True) == 2
    build_mappings(model, torch.randn(2, 64, 8, 8))
    mods = fill_placeholders(model, operator_factory(library.operator1()))
    assert len(mods) == 2 and all(isinstance(m, SynoModule) for m in mods)
    tuned = []
    real = registry.compile_operator
    monkeypatch.setattr(registry, "compile_operator", lambda module, x, **kw: tuned.append(module) or real(module, x, **kw))
    out = registry.compile_model(model, torch.randn(2, 64, 8, 8), backends=["fast"])
    assert [c.module for c in out] == mods and tuned == mods[:1]  # one operator at one shape: one tuning
    assert out[1].implementation == mods[1].implementation == out[0].implementation and out[1].ms is out[0].ms
    x = torch.randn(2, 64, 8, 8)
    assert torch.allclose(out[1](x), mods[1](x))


def test_choice_cache_keeps_the_newest_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNO_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(registry, "MAX_CACHE_ENTRIES", 3)
    mod = build_module(library.operator1(), M)
    names = registry.candidates(mod, "cpu")
    monkeypatch.setattr(registry, "measure", lambda module, x, ns, backward: {n: float(i) for i, n in enumerate(ns)})
    for n in range(1, 6):  # each batch size is its own key
        assert registry.choose(mod, torch.randn(n, 64, 8, 8)) == names[0]
    data = json.loads((tmp_path / "registry.json").read_text())
    assert len(data) == 3
    assert [n for n in range(1, 6) if any(f'["N", {n}]' in k for k in data)] == [3, 4, 5]  # the oldest went


def test_generated_sources_leave_linecache_with_their_module():
    import gc
    import inspect
    import linecache

    def generated():
        return {k for k in linecache.cache if "-generated-" in k}

    gc.collect()
    before = generated()
    mod = build_module(library.operator1(), M, implementation="fast:wfirst")
    plain = getattr(mod._reference, "forward", mod._reference)  # a PreparedForward keeps the plain forward
    assert "v_N = x.shape[0]" in inspect.getsource(plain)  # tracebacks and inspect see the source
    if plain is not mod._reference:
        assert "v_N = x.shape[0]" in inspect.getsource(mod._reference.main)
    del plain
    assert generated() - before
    del mod
    gc.collect()
    assert generated() <= before
