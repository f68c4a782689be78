"""No tuning inside ``forward`` (issue #18): the registry's explicit step (``compile_model``) fixes
every ``"auto"`` module's implementation before a pipeline trains or times it, ``forward`` only runs
what was fixed, and an ``"auto"`` module never compiled follows the miss rule (default variant,
one ``UntunedWarning``, no tuning). ``registry.TUNER_CALLS`` counts the tuner's work, so comparing
it around a forward proves that none happened there.

The CPU half runs by default (the CPU has nothing to time: there the tests check that the step
fixes what ``"auto"`` ran, that every pipeline calls it, and the miss warning's rules); the CUDA
half runs with ``python -m pytest tests/codegen/test_no_tuning_in_forward.py -m gpu``."""

import warnings
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from syno.codegen import registry
from syno.codegen.torch import SynoModule, build_module, operator_factory
from syno.ir import library

C = 64  # operator1's g=32 groups need channels that many


def _filled(op, n: int = 2, batch: int = 2, **factory_kw) -> tuple[nn.Module, list[SynoModule]]:
    """``n`` 3x3 convs at one shape, every one a placeholder filled by ``op`` (modules of one
    operator at one shape: the step tunes them once)."""
    from syno.models.placeholder import build_mappings, fill_placeholders, replace_convs

    model = nn.Sequential(*[m for _ in range(n) for m in (nn.Conv2d(C, C, 3, padding=1), nn.ReLU())])
    assert replace_convs(model, lambda c: True) == n
    build_mappings(model, torch.randn(batch, C, 8, 8))
    mods = fill_placeholders(model, operator_factory(op, **factory_kw))
    assert len(mods) == n and all(isinstance(m, SynoModule) for m in mods)
    return model, mods


def _tuner_calls() -> int:
    return sum(registry.TUNER_CALLS.values())


@contextmanager
def no_tuning():
    """Fails when the block tunes anything or runs an uncompiled "auto" module on CUDA."""
    before = _tuner_calls()
    with warnings.catch_warnings():
        warnings.simplefilter("error", registry.UntunedWarning)
        yield
    assert _tuner_calls() == before, f"tuned inside the block: {dict(registry.TUNER_CALLS)}"


def _train_step(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.train()
    model.zero_grad(set_to_none=True)
    y = model(x)
    y.float().square().mean().backward()
    return y


# ---------------------------------------------------------------------------------------- CPU
def test_compile_model_fixes_what_auto_ran_and_forward_does_no_tuning():
    model, mods = _filled(library.operator1())
    x = torch.randn(2, C, 8, 8)
    with no_tuning():
        before = model(x)  # "auto" off CUDA: cpu_variant, nothing timed, no warning
    compiled = registry.compile_model(model, x, backward=True)
    assert [c.module for c in compiled] == mods
    assert all(m.implementation == m.cpu_variant != "auto" for m in mods)  # compiling changes nothing here
    with no_tuning():
        assert torch.allclose(model(x), before)
        _train_step(model, x)
        with torch.no_grad():
            model.eval()(torch.randn(5, C, 8, 8))  # another batch size: still the fixed choice
    assert all(w.grad is not None for m in mods for w in m.weights)


def test_compile_model_keeps_fixed_implementations_and_does_not_probe():
    model, mods = _filled(library.operator1(), implementation="fast:wfirst")
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    out = registry.compile_model(model, torch.randn(2, C, 8, 8))
    assert calls == []  # nothing to compile: no probe pass
    assert [c.implementation for c in out] == [m.implementation for m in mods] == ["fast:wfirst"] * 2
    mods[1].implementation = "auto"  # one "auto" module: probed and compiled; the fixed one is kept
    out = registry.compile_model(model, torch.randn(2, C, 8, 8))
    assert calls == [1] and mods[0].implementation == "fast:wfirst"
    assert mods[1].implementation == out[1].implementation == mods[1].cpu_variant


def test_the_miss_warning_is_issued_once_per_module_and_never_while_probing():
    mod = build_module(library.operator1(), {"N": 2, "C_in": C, "C_out": C, "H": 8})
    x = torch.randn(2, C, 8, 8)
    with pytest.warns(registry.UntunedWarning, match="never compiled.*'fast:min' untuned.*compile_model"):
        assert registry.warn_untuned(mod, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", registry.UntunedWarning)
        with registry._probing():
            assert not registry.warn_untuned(mod, x)


def test_the_training_pipeline_compiles_before_it_trains():
    from syno.train.options import VisionTrainOptions
    from syno.train.pipeline import build_task_model, load_task_data, train_task_model

    data = load_task_data("digits", image_size=8)
    model, mods = build_task_model("tiny", data, library.conv2d())
    assert mods and all(m.implementation == "auto" for m in mods)
    opts = VisionTrainOptions(device="cpu", epochs=1, max_steps_per_epoch=2, batch_size=16, progress=False,
                              catch_errors=False)
    with no_tuning():
        res = train_task_model(model, data, opts)
    assert res.status == "ok"
    assert all(m.implementation == m.cpu_variant for m in mods)  # fixed by compile_for_training


def test_the_training_pipeline_reports_a_failing_tuning_step_as_an_error():
    from syno.train.options import VisionTrainOptions
    from syno.train.pipeline import build_task_model, load_task_data, train_task_model

    data = load_task_data("digits", image_size=8)
    model, mods = build_task_model("tiny", data, library.conv2d())
    opts = VisionTrainOptions(device="cpu", epochs=1, max_steps_per_epoch=2, batch_size=16, progress=False)
    model.input_spec = ((3, 8, 8), torch.float32)  # digits are 1-channel: the probe pass fails
    res = train_task_model(model, data, opts)
    assert res.status == "error" and res.reason.startswith("operator tuning failed")


def test_the_benchmark_compiles_before_it_times():
    from syno.bench.tune import CompileConfig, compile_module

    model, mods = _filled(library.operator1())
    with no_tuning():
        compiled = compile_module(model, torch.randn(2, C, 8, 8), CompileConfig(), backend="eager")
        compiled.run()
    assert all(m.implementation == m.cpu_variant for m in mods)


# --------------------------------------------------------------------------------------- CUDA
@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty registry and tile cache: the step must time."""
    monkeypatch.setenv("SYNO_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.gpu
def test_gpu_uncompiled_auto_runs_the_default_with_one_warning_and_no_tuning(fresh_cache):
    mod = build_module(library.operator1(), {"N": 4, "C_in": C, "C_out": C, "H": 8}).cuda()
    x = torch.randn(4, C, 8, 8, device="cuda")
    before = _tuner_calls()
    with pytest.warns(registry.UntunedWarning):
        y = mod(x)
    with no_tuning():
        y2 = mod(x)  # once per module
        default = mod._impls[mod._default](x, *mod.weights)
    assert _tuner_calls() == before and mod.implementation == "auto"
    assert torch.allclose(y, y2) and torch.allclose(y, default)
    assert not (fresh_cache / "registry.json").exists()  # nothing was chosen, nothing cached


@pytest.mark.gpu
@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16-channels-last"])
def test_gpu_compile_model_then_train_and_eval_do_no_tuning(fresh_cache, amp):
    model, mods = _filled(library.operator1(), batch=4)
    model.cuda()
    x = torch.randn(4, C, 8, 8, device="cuda")
    if amp:
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else torch.enable_grad
    before = registry.TUNER_CALLS["measure"]
    with ctx():
        compiled = registry.compile_model(model, x, backward=True, budget_s=5)
    assert registry.TUNER_CALLS["measure"] > before  # timed here, in the step
    names = registry.candidates(mods[0], "cuda")
    assert [c.module for c in compiled] == mods and all(m.implementation in names for m in mods)
    with no_tuning():
        with ctx():
            _train_step(model, x)
            model.eval()
            with torch.no_grad():
                model(x)
                model(torch.randn(2, C, 8, 8, device="cuda"))  # another key: the fixed choice still
    assert all(w.grad is not None for m in mods for w in m.weights)


@pytest.mark.gpu
def test_gpu_second_compile_reads_the_choice_cache(fresh_cache):
    m = {"N": 4, "C_in": C, "C_out": C, "H": 8}
    x = torch.randn(4, C, 8, 8, device="cuda")
    # tiles untuned: a choice timed after the tile budget ran out is not cached, and this test is
    # about the choice cache (test_triton_gpu.py tunes tiles)
    first = registry.compile_operator(build_module(library.operator1(), m).cuda(), x, tune_tiles=False)
    assert not first.cached
    before = registry.TUNER_CALLS["measure"]
    again = registry.compile_operator(build_module(library.operator1(), m).cuda(), x, tune_tiles=False)
    assert again.cached and again.implementation == first.implementation
    assert registry.TUNER_CALLS["measure"] == before  # not timed again


@pytest.mark.gpu
def test_gpu_training_pipeline_compiles_then_trains_without_tuning(fresh_cache):
    from syno.train.classifier import train_classifier
    from syno.train.options import VisionTrainOptions
    from syno.train.pipeline import build_task_model, compile_for_training, load_task_data

    data = load_task_data("digits", image_size=8)
    model, mods = build_task_model("tiny", data, library.conv2d())
    opts = VisionTrainOptions(device="cuda", epochs=1, max_steps_per_epoch=3, batch_size=16, progress=False,
                              catch_errors=False)  # AMP bf16 and channels_last: the CUDA defaults
    compiled = compile_for_training(model, data, opts, budget_s=0)  # candidates timed, tiles not tuned
    assert len(compiled) == len(mods) and all(m.implementation != "auto" for m in mods)
    with no_tuning():
        res = train_classifier(model, data, opts)
    assert res.status == "ok"
