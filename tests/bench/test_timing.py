import math

import pytest
import torch

from syno.bench.timing import Timing, TimingOptions, device_name, measure


def test_measure_counts_and_sanity():
    calls = []
    t = measure(lambda: calls.append(1), "cpu", warmup=3, repeat=7)
    assert len(calls) == 10 and t.repeats == 7 and t.warmup == 3
    assert t.min_ms <= t.median_ms <= t.max_ms and math.isfinite(t.mean_ms) and t.std_ms >= 0


def test_measure_adaptive():
    x = torch.randn(64, 64)
    t = measure(lambda: x @ x, "cpu", options=TimingOptions(warmup_ms=1, budget_ms=5, min_repeat=3, max_repeat=50))
    assert 3 <= t.repeats <= 50 and t.median_ms > 0


def test_from_samples():
    t = Timing.from_samples([3.0, 1.0, 2.0], warmup=0)
    assert t.median_ms == 2.0 and t.min_ms == 1.0 and t.max_ms == 3.0
    with pytest.raises(ValueError):
        Timing.from_samples([], 0)


def test_device_name_cpu():
    assert "threads" in device_name("cpu")


@pytest.mark.gpu
def test_measure_cuda():
    x = torch.randn(1024, 1024, device="cuda")
    t = measure(lambda: x @ x, "cuda", warmup=2, repeat=5)
    assert t.median_ms > 0 and t.repeats == 5
