import json

import pytest
import torch
from torch import nn

from syno.bench.tune import CompileConfig, TuneCache, compile_module, default_grid, parse_grid, tune


def test_config_label_and_roundtrip():
    c = CompileConfig(mode="max-autotune", channels_last=True, dtype="bf16")
    assert c.dtype == "bfloat16" and c.label() == "max-autotune+cl+bf16"
    assert CompileConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.inductor_options()["max_autotune"] is True and c.inductor_options()["freezing"] is True
    with pytest.raises(ValueError):
        CompileConfig(mode="fastest")
    with pytest.raises(ValueError):
        CompileConfig(dtype="int8")


def test_default_grids():
    cpu = default_grid("cpu")
    assert {c.dtype for c in cpu} == {"float32"} and {c.channels_last for c in cpu} == {False, True}
    assert len(cpu) == len(set(cpu))
    cuda = default_grid("cuda")
    assert {c.dtype for c in cuda} == {"float32", "bfloat16", "float16"}
    assert {c.mode for c in cuda} == {"default", "reduce-overhead", "max-autotune"}
    # coordinate descent is varied only where the mode does not imply it
    assert not any(c.coordinate_descent_tuning for c in cuda if c.mode == "max-autotune")
    assert any(c.coordinate_descent_tuning for c in cuda if c.mode == "default")


def test_parse_grid():
    g = parse_grid("mode=default;cl=0;cdt=0", "cpu")
    assert g == [CompileConfig()]
    g = parse_grid("mode=default,max-autotune;dtype=fp32,bf16;cl=1;cdt=1", "cuda")
    assert {c.label() for c in g} == {"default+cdt+cl+fp32", "default+cdt+cl+bf16", "max-autotune+cl+fp32",
                                      "max-autotune+cl+bf16"}
    with pytest.raises(ValueError):
        parse_grid("speed=1", "cpu")


def _small():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())


def test_compile_module_eager_and_inductor():
    x = torch.randn(1, 8, 8, 8)
    ref = _small().eval()(x)
    for backend in ("eager", "inductor"):
        c = compile_module(_small(), x, CompileConfig(channels_last=True), backend=backend)
        assert c.compile_s > 0
        assert torch.allclose(c.run(), ref, atol=1e-4)
    torch._dynamo.reset()


def test_tune_picks_best_and_reuses_cache(tmp_path):
    x = torch.randn(1, 8, 8, 8)
    grid = [CompileConfig(), CompileConfig(channels_last=True)]
    cache = TuneCache(tmp_path / "c.json")
    opts = dict(kernel_hash="abc", model_name="small", grid=grid)
    from syno.bench.timing import TimingOptions

    timing = TimingOptions(warmup_ms=1, budget_ms=5, min_repeat=3, max_repeat=20)
    r1 = tune(_small, x, cache=cache, timing=timing, **opts)
    assert r1.measured == 2 and r1.cached == 0 and r1.best in grid
    assert r1.best_ms == min(v["median_ms"] for v in r1.results.values()) > 0
    data = json.loads((tmp_path / "c.json").read_text())
    assert r1.key in data and data[r1.key]["best"] == r1.best.label()
    assert r1.key.startswith("abc|small|1x8x8x8|")
    # second call: nothing measured, same answer (fresh cache object reads the file)
    r2 = tune(_small, x, cache=TuneCache(tmp_path / "c.json"), timing=timing, **opts)
    assert r2.measured == 0 and r2.cached == 2 and r2.best == r1.best
    # a grid with one new config measures only that one
    r3 = tune(_small, x, cache=TuneCache(tmp_path / "c.json"), timing=timing,
              kernel_hash="abc", model_name="small", grid=grid + [CompileConfig(freezing=False)])
    assert r3.measured == 1 and r3.cached == 2


def test_tune_records_failures(tmp_path):
    class Bad(nn.Module):
        def forward(self, x):
            if x.sum().item() > -1e30:   # data-dependent python branch: fullgraph compile fails
                return x * 2
            return x

    x = torch.randn(1, 4)
    with pytest.raises(RuntimeError, match="every configuration failed"):
        tune(Bad, x, kernel_hash="bad", model_name="bad", grid=[CompileConfig()],
             cache=TuneCache(tmp_path / "c.json"))
    data = json.loads((tmp_path / "c.json").read_text())
    (entry,) = data.values()
    assert "error" in entry["results"]["default+fp32"]


def test_channels_last_with_5d_weights():
    from syno.bench.manual import Operator1

    x = torch.randn(1, 64, 6, 6)
    m = Operator1({"C_in": 64, "C_out": 64})
    ref = m(x)
    c = compile_module(m, x, CompileConfig(channels_last=True), backend="eager")
    assert torch.allclose(c.run(), ref, atol=1e-5)
