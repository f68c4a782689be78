"""CUDA runs of the benchmark (skipped without a GPU)."""

import math

import pytest
import torch

from syno.bench import BenchOptions, CompileConfig, TimingOptions, bench_model, resolve_operator

pytestmark = pytest.mark.gpu
FAST = TimingOptions(warmup_ms=5, budget_ms=20, min_repeat=3, max_repeat=50)


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_cuda_eager_inductor(mode):
    specs = [resolve_operator("operator1", impl="manual")]
    opts = BenchOptions(device="cuda", backends=("eager", "inductor"), image_size=32, num_classes=10,
                        config=CompileConfig(mode=mode), timing=FAST, log=None)
    rows = bench_model("resnet18", specs, opts)
    assert len(rows) == 4
    for r in rows:
        assert r.status == "ok", r.status
        assert r.device == "cuda" and 0 < r.median_ms < math.inf and math.isfinite(r.speedup)


def test_cuda_bf16_channels_last_codegen():
    spec = resolve_operator("stacked_conv")
    opts = BenchOptions(device="cuda", backends=("eager", "inductor"), image_size=32, num_classes=10,
                        config=CompileConfig(dtype="bf16", channels_last=True), timing=FAST, log=None)
    rows = bench_model("resnet18", [spec], opts)
    assert all(r.status == "ok" for r in rows), [r.status for r in rows]
    assert {r.config for r in rows if r.backend == "inductor"} == {"default+cl+bf16"}
    torch.cuda.synchronize()
