"""Triton backend on CPU: the generated kernels run under the Triton interpreter
(``TRITON_INTERPRET=1``) and must match the naive reference evaluator, forward and the gradients
of the input and every weight (fp32; tolerance 1e-4 relative to the largest value)."""

import dataclasses
import os
import random
import time

import pytest
import torch

if not torch.cuda.is_available():
    # must be set before triton is imported: it decides how kernels are wrapped
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton")

from syno.codegen import registry  # noqa: E402
from syno.codegen.torch import build_module  # noqa: E402
from syno.codegen.triton import peak_bytes, supports  # noqa: E402
from syno.codegen.triton.runtime import Config, TritonOperator  # noqa: E402
from syno.codegen.triton.stages import build_program  # noqa: E402
from syno.ir import library  # noqa: E402
from syno.ir.evaluate import reference_forward  # noqa: E402
from syno.ir.lowering import plan_for  # noqa: E402

SAMPLED = 50
MAPPING = {"N": 2, "C_in": 16, "C_out": 16, "H": 8}  # a tiny-preset mapping


@pytest.fixture(autouse=True)
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    # The interpreter checks every integer op for overflow in Python; our addresses are bounded
    # by the buffers' sizes (checked < 2**31 before launch), so skip that for speed where the
    # installed Triton exposes the option.
    try:
        from triton.runtime import interpreter
        b = interpreter.interpreter_builder
        monkeypatch.setattr(b, "options", dataclasses.replace(b.options, sanitize_overflow=False))
    except (ImportError, AttributeError, TypeError):
        pass


def run_and_compare(op, mapping, tol=1e-4, seed=0, fuse=None):
    gen = torch.Generator().manual_seed(seed)
    plan = plan_for(op, mapping)
    T = TritonOperator(plan)
    if fuse:
        T.fused = frozenset(T.fusable())
        assert T.fused
    elif fuse is False:
        T.fused = frozenset()
    shapes = [tuple(plan.values[c] for c in t) for t in plan.analysis.tensors]
    ins = [torch.randn(s, generator=gen).requires_grad_(True) for s in shapes]
    ref = reference_forward(op, mapping, ins)
    g = torch.randn(ref.shape, generator=gen)
    want = torch.autograd.grad((ref * g).sum(), ins)
    y, inter = T.forward(ins[0].detach(), [w.detach() for w in ins[1:]])
    assert y.shape == ref.shape
    scale = 1 + ref.abs().max().item()
    assert (y - ref).abs().max().item() <= tol * scale, (op.hash, "forward")
    got = T.backward(g, ins[0].detach(), [w.detach() for w in ins[1:]], inter, [True] * len(ins))
    for k, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= tol * (1 + b.abs().max().item()), (op.hash, f"grad {k}")
    return T


@pytest.mark.parametrize("name", ["conv2d", "operator1", "stacked_conv", "grouped_conv2d", "depthwise_conv2d",
                                  "pointwise_conv2d"])
def test_library_operators(name):
    op = library.HAND_BUILT[name]()
    T = run_and_compare(op, {"N": 2, "C_in": 64, "C_out": 64, "H": 3}, fuse=False)
    assert all(s.kind in ("contract", "sum", "output") for s in T.prog.stages)


@pytest.mark.parametrize("name", ["operator1", "stacked_conv"])
def test_fused_producer(name):
    """The first stage recomputed inside the second's loads: same forward and gradients, and
    no intermediate is returned (the backward recomputes it)."""
    T = run_and_compare(library.HAND_BUILT[name](), {"N": 2, "C_in": 64, "C_out": 64, "H": 3}, fuse=True)
    assert T.materialized == [] and "# fused:" in T.source(torch.bfloat16, backward=False)


@pytest.mark.parametrize("C", [64, 128])
def test_thin_grouped_stage_is_block_diagonal_dots(C):
    """Operator 1's first contraction (2-4 products per element) runs as the grouped kernel:
    one [BM, BK] x block-diagonal [BK, BN] dot per kw tap, each element computed once; forward
    and gradients match the reference, and the flat fallback is gone from its source."""
    T = run_and_compare(library.operator1(), {"N": 2, "C_in": C, "C_out": C, "H": 3}, fuse=False)
    x = torch.zeros(2, C, 3, 3).to(memory_format=torch.channels_last)
    bufs = {"x": x, "y": torch.zeros(2, C, 3, 3)}
    for j, t in enumerate(T.plan.analysis.tensors[1:], start=1):
        bufs[f"w{j}"] = torch.zeros([T.plan.values[c] for c in t])
    bufs[T.prog.stages[0].store.leaf] = T.alloc(T.prog.stages[0].store.leaf, T.class_sizes(x), x)
    _, spec, _ = T.kernel("fwd", 0, torch.float32, bufs)
    assert spec.grouped and not spec.split_ok
    src = T.source(torch.bfloat16, backward=False, fused=())
    stage0 = src[src.index("def stage0"):src.index("def stage1")]
    assert "tl.static_range(3)" in stage0 and "diag" in stage0 and "tl.sum" not in stage0
    # the tuner's alternative: the same stage as the flat kernel, same results
    T.flat_thin = frozenset({0})
    assert not T.kernel("fwd", 0, torch.float32, bufs)[1].grouped
    ws = [torch.randn(bufs[f"w{j}"].shape) for j in range(1, len(T.plan.analysis.tensors))]
    x = torch.randn(2, C, 3, 3)
    y, _ = T.forward(x, ws)
    ref = reference_forward(T.plan.op, {"N": 2, "C_in": C, "C_out": C, "H": 3}, [x, *ws])
    assert (y - ref).abs().max() <= 1e-4 * (1 + ref.abs().max())


def test_sampled_operators():
    """50 operators drawn afresh each run (per-run seed, printed) from the tiny preset's sample."""
    from syno.synth import sample_operators
    seed = int(os.environ.get("SYNO_SAMPLE_SEED", time.time_ns() % 100_000))
    print(f"triton sampled operators: seed {seed}")
    pool = sample_operators("tiny", 400, seed=0, workers=1)
    picked = random.Random(seed).sample(pool, SAMPLED)
    kinds = set()
    for k, (_, op) in enumerate(picked):
        T = run_and_compare(op, MAPPING, seed=k, fuse=None if k % 2 else False)  # default / unfused
        kinds |= {s.kind for s in T.prog.stages}
    assert "contract" in kinds


def test_split_k_and_atomic_scatter_match():
    """Weight gradients split over K (atomic fp32 partial sums) give the same result."""
    op = library.operator1()
    m = {"N": 2, "C_in": 64, "C_out": 64, "H": 3}
    T = TritonOperator(plan_for(op, m))
    x = torch.randn(2, 64, 3, 3)
    ws = [torch.randn(tuple(T.plan.values[c] for c in t)) for t in T.plan.analysis.tensors[1:]]
    y, inter = T.forward(x, ws)
    g = torch.randn_like(y)
    base = T.backward(g, x, ws, inter, [True] * 3)
    vals = T.class_sizes(x)
    for i, st in enumerate(T.bwd):
        T.configs[T.config_key("bwd", i, x.dtype, vals)] = Config(128, 64, 16, 1, 1, split=3)
    split = T.backward(g, x, ws, inter, [True] * 3)
    for a, b in zip(split, base):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_forward_split_k_matches():
    """Forward stages split over K (fp32 partial sums into a zeroed buffer, then cast; what small
    batches on large layers get so the SMs are busy) give the unsplit result, fused or not."""
    op = library.operator1()
    m = {"N": 2, "C_in": 64, "C_out": 64, "H": 3}
    for fused in (False, True):
        T = TritonOperator(plan_for(op, m))
        T.fused = frozenset(T.fusable()) if fused else frozenset()
        x = torch.randn(2, 64, 3, 3)
        ws = [torch.randn(tuple(T.plan.values[c] for c in t)) for t in T.plan.analysis.tensors[1:]]
        base, _ = T.forward(x, ws)
        vals = T.class_sizes(x)
        for i in range(len(T.prog.stages)):
            T.configs[T.config_key("fwd", i, x.dtype, vals)] = Config(16, 16, 16, 1, 1, split=3)
        split, _ = T.forward(x, ws)
        assert split.dtype == base.dtype and split.stride() == base.stride()
        assert torch.allclose(split, base, rtol=1e-4, atol=1e-4)


def test_views_are_folded_into_addressing():
    """Operator 1's Unfolds/Split become index arithmetic: only the contraction results are
    materialised, and the printed source shows the zero-padding masks and tl.dot."""
    m = {"N": 2, "C_in": 64, "C_out": 64, "H": 8}
    plan = plan_for(library.operator1(), m)
    prog = build_program(plan)
    contractions = [s for s in plan.steps if s.kind in ("contract", "sum")]
    assert len(prog.stages) == len(contractions) == 2
    assert supports(plan)
    # nothing but inputs, weights, the stage-1 result and y is ever allocated
    assert peak_bytes(plan, 2) == 2 * sum(
        __import__("math").prod(plan.values[c] for c in axes) for axes in prog.leaves.values())
    src = TritonOperator(plan).source(torch.bfloat16, fused=())
    assert src.count("@triton.jit") == 2 + 4  # 2 forward stages, 4 gradient stages
    assert "tl.dot(" in src and ">= 0)" in src and "tl.atomic_add" in src


def test_module_compile_export_and_dynamic_batch():
    """Custom op: torch.compile(fullgraph=True) traces it (fake kernel), gradients flow through
    register_autograd, another batch size reuses the module, torch.export captures one node."""
    m = {"N": 2, "C_in": 64, "C_out": 64, "H": 3}
    mod = build_module(library.operator1(), m, implementation="triton")
    assert mod.implementation == "triton:min"
    x = torch.randn(2, 64, 3, 3, requires_grad=True)
    ref = mod.reference_forward(x)
    g = torch.randn_like(ref)
    want = torch.autograd.grad((ref * g).sum(), [x] + mod.weights)
    comp = torch.compile(mod, fullgraph=True, backend="aot_eager")
    y = comp(x)
    assert torch.allclose(y, ref, atol=1e-4)
    got = torch.autograd.grad((y * g).sum(), [x] + mod.weights)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-4)
    x3 = torch.randn(3, 64, 3, 3)
    assert torch.allclose(comp(x3), mod.reference_forward(x3), atol=1e-4)
    ep = torch.export.export(mod, (x.detach(),))
    assert "syno.triton_fwd" in ep.graph_module.code
    assert torch.allclose(ep.module()(x.detach()), ref, atol=1e-4)


def test_weights_packed_for_the_kernels_keep_values_and_gradients():
    """Building the Triton implementation stores Operator 1's first weight taps-first with unit-
    stride columns (what its GEMM stage reads best); values, outputs and gradients are unchanged,
    and the einsum path runs on the repacked parameters too."""
    from syno.codegen.triton.runtime import relayout

    m = {"N": 2, "C_in": 64, "C_out": 64, "H": 3}
    mod = build_module(library.operator1(), m, implementation="einsum")
    before = [w.detach().clone() for w in mod.weights]
    x = torch.randn(2, 64, 3, 3)
    ref = mod(x)
    mod.implementation = "triton"
    impl = mod._get_impl("triton:min")
    layouts = impl.operator.weight_layouts()
    assert "w1" in layouts
    assert mod.weight1.stride() == relayout(torch.empty(mod.weight1.shape), layouts["w1"]).stride()
    assert mod.weight1.stride() != torch.empty(mod.weight1.shape).stride()
    assert mod.weight1.stride()[layouts["w1"][-1]] == 1  # output channels contiguous
    for a, b in zip(mod.weights, before):
        assert torch.equal(a.detach(), b)
    y = mod(x)
    assert torch.allclose(y, ref, atol=1e-4)
    y.sum().backward()
    assert mod.weight1.grad.shape == mod.weight1.shape
    mod.implementation = "einsum"
    assert torch.allclose(mod(x), ref, atol=1e-5)


def test_registry_names_and_errors():
    assert registry.normalize("triton") == "triton:min"
    assert registry.parse("fastd:wfirst") == ("fastd", "wfirst")
    with pytest.raises(ValueError, match="unknown implementation 'cudnn:min'"):
        registry.parse("cudnn:min")
    mod = build_module(library.conv2d(), {"N": 1, "C_in": 16, "C_out": 16, "H": 4}, implementation="einsum")
    names = registry.candidates(mod, "cpu", backends=["triton"])
    assert names and all(n.startswith("triton:") for n in names)  # interpreter on: triton runs on CPU


def test_bad_input_shape_names_axis():
    mod = build_module(library.conv2d(), {"N": 1, "C_in": 16, "C_out": 16, "H": 4}, implementation="triton")
    with pytest.raises(ValueError, match="input axis 1 has size 8, expected 16"):
        mod(torch.randn(1, 8, 4, 4))


def test_float64_accumulates_in_float64():
    mod = build_module(library.operator1(), {"N": 2, "C_in": 64, "C_out": 64, "H": 3},
                       implementation="triton").double()
    x = torch.randn(2, 64, 3, 3, dtype=torch.float64, requires_grad=True)
    ref = mod.reference_forward(x)
    y = mod(x)
    assert y.dtype == torch.float64 and (y - ref).abs().max() < 1e-12
    g = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad((y * g).sum(), [x] + mod.weights),
                    torch.autograd.grad((ref * g).sum(), [x] + mod.weights)):
        assert (a - b).abs().max() < 1e-11


def test_tuner_rejects_a_tile_whose_result_differs():
    """Autotuning validates before it times: a candidate whose output differs from the default
    tile's (a miscompiled pipeline was seen on the H100) is never chosen, and a fused forward that
    differs from the unfused one is not picked."""
    from syno.codegen.triton.tune import agrees, stage_output
    plan = plan_for(library.operator1(), {"N": 2, "C_in": 64, "C_out": 64, "H": 3})
    T = TritonOperator(plan)
    T.fused = frozenset()
    shapes = [tuple(plan.values[c] for c in t) for t in plan.analysis.tensors]
    x, *ws = [torch.randn(s) for s in shapes]
    y, inter = T.forward(x, ws)
    bufs = T.inputs(x, ws)
    bufs.update(zip(T.materialized, inter))
    bufs["y"] = y
    vals = T.class_sizes(x)
    want = stage_output(T, "fwd", 1, bufs, vals, x.dtype, None, "ieee")
    assert agrees(stage_output(T, "fwd", 1, bufs, vals, x.dtype, Config(16, 16, 16, 1, 1), "ieee"), want, x.dtype)
    bad = want.clone()
    bad.view(-1)[0] += 1.0 + want.abs().max()
    assert not agrees(bad, want, x.dtype)
    assert not agrees(torch.full_like(want, float("nan")), want, x.dtype)
    # bf16 rounding passes, an error of the output's size does not
    wb = want.to(torch.bfloat16)
    assert agrees(wb.float(), want, torch.bfloat16) and not agrees(torch.zeros_like(want), want, torch.bfloat16)


def test_tune_flow_runs_under_the_interpreter(tmp_path, monkeypatch):
    """The whole tuner (forward and backward tiles, validation, fusion choice, disk cache) on the
    CPU interpreter with a wall-clock timer: every stage gets a validated tile, the choice is
    cached and read back without timing, and the tuned operator still matches the reference."""
    from syno.codegen.triton import tune as tune_mod

    monkeypatch.setenv("SYNO_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tune_mod, "MAX_CANDIDATES", 2)  # two tiles per stage keep the interpreter quick
    timed = []

    def wall_ms(fn):
        t = time.perf_counter()
        fn()
        timed.append(fn)
        return (time.perf_counter() - t) * 1e3

    op, m = library.operator1(), {"N": 2, "C_in": 64, "C_out": 64, "H": 3}
    plan = plan_for(op, m)
    T = TritonOperator(plan)
    shapes = [tuple(plan.values[c] for c in t) for t in plan.analysis.tensors]
    x, *ws = [torch.randn(s) for s in shapes]
    res = tune_mod.tune(T, x, ws, backward=True, budget_s=600, timer=wall_ms, fusion=True)
    n_stages = len(T.prog.stages) + len(T.bwd)
    assert {k for k in res if k != "fuse"} == {f"fwd:{i}" for i in range(len(T.prog.stages))} | \
        {f"bwd:{i}" for i in range(len(T.bwd))}
    assert set(res["fuse"]["ms"]) == {"none", ",".join(T.fusable())}
    assert len(T.configs) == n_stages and timed
    ref = reference_forward(op, m, [x, *ws])
    y, _ = T.forward(x, ws)
    assert (y - ref).abs().max() <= 1e-4 * (1 + ref.abs().max())
    # a second operator reads the cache: same tiles and fusion, nothing timed
    timed.clear()
    T2 = TritonOperator(plan)
    res2 = tune_mod.tune(T2, x, ws, backward=True, budget_s=600, timer=wall_ms, fusion=True)
    assert not timed and T2.configs == T.configs and T2.fused == T.fused and T2.flat_thin == T.flat_thin
    # the thin first stage was timed as the grouped and as the flat kernel; the choice is recorded
    entry = next(iter(__import__("json").loads((tmp_path / "triton_tune.json").read_text()).values()))
    assert entry["fwd:0"]["flat"] == (0 in T.flat_thin)
    assert {k: v[0] for k, v in res2.items() if k != "fuse"} == {k: v[0] for k, v in res.items() if k != "fuse"}
