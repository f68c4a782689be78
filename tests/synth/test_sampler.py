"""Sampled operators are valid (shapes, reference evaluation, FLOPs/params window), distinct, and
their paths replay to the same operator here and in another process."""

import itertools
import json
import random
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syno.ir.evaluate import output_shape, reference_forward, tensor_shapes
from syno.synth.flops import operator_flops
from syno.synth.options import SynthOptions
from syno.synth.protocol import path_from_str
from syno.synth.sampler import sample, sample_operators
from syno.synth.space import SynthSpace

_SPACES: dict[str, SynthSpace] = {}


def space_of(preset: str) -> SynthSpace:
    if preset not in _SPACES:
        _SPACES[preset] = SynthSpace(getattr(SynthOptions, preset)())
    return _SPACES[preset]


def small_mapping(op, space):
    """A small concrete mapping under which every size of ``op`` is a positive integer."""
    names = {v.name for v in space.size_space.variables}
    cands = []
    if "C_in" in names:  # conv spaces
        for c_in, c_out, h, g, k2 in itertools.product((4, 8, 16), (4, 8, 16), (5, 7, 8), (2, 4), (3, 5)):
            m = {"N": 1, "C_in": c_in, "C_out": c_out, "H": h, "s": 2, "k_1": 3}
            if "g" in names:
                m["g"] = g
            if "k_2" in names:
                m["k_2"] = k2
            cands.append(m)
    cands.sort(key=lambda m: m["C_in"] * m["C_out"] * m["H"] ** 2)
    for m in cands:
        b = space.size_space.bind({k: v for k, v in m.items() if k in names})
        try:
            sizes = [b.int(d.size) for d in op.all_dims]
        except Exception:
            continue
        if min(sizes) < 1:
            continue
        numel = 1
        for d in list(op.outputs) + list(op.reductions):
            numel *= b.int(d.size)
        if numel <= 4_000_000:
            return {k: v for k, v in m.items() if k in names}
    return None


def check_valid(space: SynthSpace, op) -> None:
    p = space.problem
    assert [str(s) for s in op.input_shape.sizes] == [str(s) for s in p.input_shape.sizes]
    assert [str(s) for s in op.output_shape.sizes] == [str(s) for s in p.output_shape.sizes]
    assert op.weights, "synthesis always produces at least one weight"
    lo, hi = p.flops_window
    flops = p.total(operator_flops(op, p.bindings))
    assert lo <= flops <= hi
    params = p.total(op.params(p.bindings))
    o = space.options
    assert params >= o.min_weight_params and (o.max_weight_params is None or params <= o.max_weight_params)
    m = small_mapping(op, space)
    assert m is not None, f"no small mapping for {op!r}"
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(s, dtype=torch.float64, generator=gen) for s in tensor_shapes(op, m)]
    out = reference_forward(op, m, inputs)
    want = tuple(space.size_space.bind(m).int(s) for s in p.output_shape.sizes)
    assert tuple(out.shape) == want == output_shape(op, m)
    assert torch.isfinite(out).all()


def test_sampled_tiny_operators_are_valid_and_distinct():
    space = space_of("tiny")
    got = sample(space, 12, seed=1)
    assert len(got) == 12
    assert len({op.hash for _, op in got}) == 12
    for path, op in got:
        check_valid(space, op)
        assert space.node_from_path(path_from_str(path)).operator().hash == op.hash


def test_paths_replay_in_another_process():
    got = sample_operators("tiny", 6, seed=5)
    script = (
        "import json, sys\n"
        "from syno.synth.options import SynthOptions\n"
        "from syno.synth.space import SynthSpace\n"
        "sp = SynthSpace(SynthOptions.tiny())\n"
        "print(json.dumps([sp.node_from_path(p).operator().hash for p in json.load(sys.stdin)]))\n")
    res = subprocess.run([sys.executable, "-c", script], input=json.dumps([p for p, _ in got]),
                         capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(res.stdout) == [op.hash for _, op in got]


def test_sample_operators_multiprocess_is_deterministic():
    a = sample_operators(SynthOptions.tiny(), 8, seed=11, workers=2, use_cache=False)
    b = sample_operators(SynthOptions.tiny(), 8, seed=11, workers=2, use_cache=False)
    assert [p for p, _ in a] == [p for p, _ in b] and len(a) == 8
    assert len({op.hash for _, op in a}) == 8
    space = space_of("tiny")
    for p, op in a:
        assert space.node_from_path(p).operator().hash == op.hash


def test_unknown_path_raises():
    space = space_of("tiny")
    with pytest.raises(ValueError):
        space.node_from_path("Reduce:0000000000000000")
    with pytest.raises(ValueError):
        path_from_str("Bogus:12")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2 ** 32 - 1))
def test_random_walks_tiny_property(seed):
    space = space_of("tiny")
    rng = random.Random(seed)
    for _ in range(30):
        node = space.random_final(space.root(), rng, max_tries=16)
        if node is not None:
            check_valid(space, node.operator())
            return
    raise AssertionError("30 random walks found no operator")


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2 ** 32 - 1))
def test_random_walks_resnet18_property(seed):
    space = space_of("resnet18")
    rng = random.Random(seed)
    for _ in range(200):
        node = space.random_final(space.root(), rng, max_tries=8)
        if node is not None:
            check_valid(space, node.operator())
            return
    raise AssertionError("200 random walks found no operator")


@pytest.mark.parametrize("preset, walks", [("tiny", 30), ("resnet18", 60)])
def test_flops_bounds_hold_along_paths(preset, walks):
    """Every ancestor's FLOPs lower bound is at most the final's planned FLOPs, and after the
    reduction phase its upper bound is at least that (reference §5.6 test invariant)."""
    space = space_of(preset)
    rng = random.Random(7)
    checked = 0
    for _ in range(walks):
        got = space.random_walk(space.root(), rng, max_tries=8)
        if got is None:
            continue
        path, final = got
        flops = space.problem.total(operator_flops(final.operator(), space.bindings))
        node = space.root()
        for nxt in path[:-1]:
            node = node.child(nxt)
            if node.state.n_weights:
                assert space.flops_lower_bound(node.state) <= flops * (1 + 1e-9)
                checked += 1
            if not node.state.in_reduction_phase:
                assert space.flops_upper_bound(node.state) >= flops * (1 - 1e-9)
    assert checked > 0


def test_precomputed_tiny_samples_are_fast_and_replay():
    """Codegen tests draw hundreds of tiny operators per run: the shipped sample serves them in
    well under a second, and its paths still replay to the stored operators (else regenerate it
    with ``python -m syno.synth.sampler tiny --count 400``)."""
    import time

    from syno.synth.sampler import precomputed_path

    opts = SynthOptions.tiny()
    assert precomputed_path(opts, 0).exists()
    t = time.perf_counter()
    got = sample_operators(opts, 200, seed=0)
    assert time.perf_counter() - t < 5.0
    assert len(got) == 200 and len({op.hash for _, op in got}) == 200
    fresh = SynthSpace(opts)
    for p, op in got[::25]:
        assert fresh.node_from_path(p).operator().hash == op.hash


def test_sampling_covers_the_micro_space(micro):
    """Random walks find only operators of the exhaustive enumeration, and nearly all of them
    (a few sit at the end of paths of probability ~1e-5 per walk), then stop on their own."""
    from syno.synth.space import iterate_finals

    exhaustive = {f.operator().hash for f in iterate_finals(SynthSpace(micro))}
    sampled = {op.hash for _, op in sample(SynthSpace(micro), 10 * len(exhaustive), seed=3, patience=1000)}
    assert sampled <= exhaustive
    assert len(sampled) >= 0.97 * len(exhaustive)


def test_finalize_candidates_share_one_window_check():
    """The Finalize candidates of one state only permute equal-size dims among input axes, so
    the space checks the window once per state (one FLOPs plan, when a Finalize edge is first
    taken) for all; each candidate's own check agrees."""
    space = space_of("tiny")
    rng = random.Random(3)
    seen = 0
    for _ in range(40):
        got = space.random_walk(space.root(), rng, max_tries=8)
        if got is None:
            continue
        node = space.node_from_path(got[0][:-1])
        for m in node.moves().get("Finalize", ()):
            _, op = m.payload
            child = node.child(m.next)
            good, fresh = space.final_check(op)
            assert good == (child is not None)
            if child is not None:
                assert fresh == child.final_info
            seen += 1
    assert seen >= 5
