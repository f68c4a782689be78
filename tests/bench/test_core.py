import math

import torch

from syno.bench.core import BenchOptions, bench_layers, bench_model, layer_sites
from syno.bench.operators import resolve_operator
from syno.bench.timing import TimingOptions
from syno.models import build_model

FAST = TimingOptions(warmup_ms=1, budget_ms=5, min_repeat=3, max_repeat=20, min_warmup=1)


def test_layer_sites_resnet18():
    m = build_model("resnet18", image_size=224, num_classes=1000, mapping_batch=2)
    sites = layer_sites(m, 2)
    assert sorted(i for s in sites for i in s.indices) == list(range(19))
    down = [s for s in sites if s.downsample]
    # 3 stride-2 3x3 convs + 3 stride-2 1x1 downsample convs, full-resolution inputs
    assert len(down) == 6
    assert {s.input_shape for s in down} == {(2, 64, 56, 56), (2, 128, 28, 28), (2, 256, 14, 14)}
    assert all(s.original.stride == (2, 2) for s in down)
    first = next(s for s in sites if 0 in s.indices)
    assert first.input_shape == (2, 64, 56, 56) and len(first.indices) == 4 and first.original.stride == (1, 1)
    # replacement keeps the original output shape
    x = torch.randn(*down[0].input_shape)
    spec = resolve_operator("conv2d", impl="manual")
    assert down[0].replacement(spec.factory)(x).shape == down[0].original(x).shape


def test_bench_model_tiny_eager():
    opts = BenchOptions(backends=("eager",), batches=(1, 2), timing=FAST, log=None)
    rows = bench_model("tiny", [resolve_operator("conv2d", impl="manual")], opts)
    assert [(r.variant, r.batch) for r in rows] == [("baseline", 1), ("conv2d", 1), ("baseline", 2), ("conv2d", 2)]
    for r in rows:
        assert r.status == "ok" and r.scope == "model" and r.backend == "eager"
        assert 0 < r.median_ms < math.inf and r.repeats >= 3 and math.isfinite(r.speedup)
    assert rows[0].speedup == 1.0 and rows[0].input_shape == "1x1x16x16"


def test_bench_layers_tiny():
    opts = BenchOptions(backends=("eager",), timing=FAST, log=None)
    rows = bench_layers("tiny", resolve_operator("conv2d", impl="manual"), 1, opts)
    assert len(rows) == 2 * 3          # 3 distinct sites x (original, operator)
    assert {r.scope for r in rows} == {"layer"}
    assert all(r.median_ms > 0 and math.isfinite(r.speedup) for r in rows)


def test_failures_are_rows_not_crashes():
    # Operator 1 needs C_in % 32 == 0; the tiny CNN has 16 channels: a row with an error status.
    opts = BenchOptions(backends=("eager",), timing=FAST, log=None)
    rows = bench_model("tiny", [resolve_operator("operator1", impl="manual")], opts)
    assert rows[0].status == "ok" and rows[1].status.startswith("error:")
    assert math.isnan(rows[1].median_ms)


def test_tvm_missing_is_skipped(monkeypatch):
    import syno.bench.tvm_backend as tb

    monkeypatch.setattr(tb, "tvm_available", lambda: (False, "not installed"))
    msgs = []
    opts = BenchOptions(backends=("eager", "tvm"), timing=FAST, log=msgs.append)
    rows = bench_model("tiny", [], opts)
    assert [r.backend for r in rows] == ["eager"]
    assert any("tvm skipped" in m for m in msgs)
