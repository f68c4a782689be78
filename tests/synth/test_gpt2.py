"""The gpt2 preset is the original's GPT-2 space (issue #17 item 2), and it can express a c_attn
replacement that uses every coefficient the original declares for it (t, k_1, k_2)."""

from __future__ import annotations

from syno.ir.builder import Builder
from syno.synth.canon import canonical_form
from syno.synth.options import SynthOptions
from syno.synth.pathfind import path_of
from syno.synth.space import SynthSpace

from .test_bound_real import check_bound_along

OUTPUT = "[N, seq_len, t*H_in]"


def c_attn_linear(space):
    """The replaced layer itself: 768 -> 2304 = t * H_in."""
    b = Builder(space, OUTPUT, "c_attn_linear")
    n, s, o = b.outputs
    ci = b.reduce("H_in")
    o_x, o_w = b.share(o, 1)
    b.expand(o_x)
    ci_x, ci_w = b.share(ci, 1)
    return b.build([n, s, ci_x], [[o_w, ci_w]])


def c_attn_grouped_window(space):
    """A grouped linear with t * k_1 groups (the output's t*H_in cut by a Merge into (t*k_1, H_in/k_1),
    the group index joined by a Split with H_in/(t*k_1) input channels) that also mixes a window of
    k_2 positions along the sequence (Unfold): t, k_1 and k_2 all appear; 5/6 of the Linear's MACs."""
    b = Builder(space, OUTPUT, "c_attn_grouped_window")
    n, s, o = b.outputs
    ci, kw = b.reduce("H_in*t^-1*k_1^-1"), b.reduce("k_2")
    major, minor = b.merge(o, "H_in*k_1^-1")
    maj_x, maj_w = b.share(major, 1)
    min_x, min_w = b.share(minor, 1)
    b.expand(min_x)
    ci_x, ci_w = b.share(ci, 1)
    kw_x, kw_w = b.share(kw, 1)
    return b.build([n, b.unfold(s, kw_x), b.split(maj_x, ci_x)], [[maj_w, min_w, ci_w, kw_w]])


def test_gpt2_preset_is_the_original_space():
    o = SynthOptions.gpt2()
    assert (o.input_shape, o.output_shape) == ("[N, seq_len, H_in: unordered]", OUTPUT)
    assert o.primary_specs == ("N: 0", "seq_len: 0", "H_in: 4")
    assert o.coefficient_specs == ("k_1=2: 3", "k_2=5: 2", "t=3: 3", "g=32: 3")
    assert o.fixed_io_pairs == ((0, 0),)
    assert len(o.mappings) == 12 and all(m == {"N": 1, "seq_len": 2048, "H_in": 768} for m in o.mappings)
    assert (o.max_merges, o.max_splits, o.depth, o.max_chain_length) == (2, 2, 7, 5)
    assert (o.max_expansion_merge_multiplier, o.max_expansion_repeat_multiplier, o.allow_tile) == (6144, 5, True)
    assert o.min_single_weight_params == 100000
    p = o.problem()
    assert [int(p.space.bind(dict(o.mappings[0])).int(s)) for s in p.output_shape.sizes] == [1, 2048, 2304]
    # the former four-layer preset stays available under its own name
    assert "H_out" in SynthOptions.gpt2_linears().output_shape


def test_c_attn_replacement_with_t_k1_k2_is_in_the_strict_preset():
    opts = SynthOptions.gpt2()
    space = SynthSpace(opts)  # every rule, limit, the FLOPs window and the bound on
    op = c_attn_grouped_window(space.size_space)
    names = {v.name for d in op.all_dims for v in space.size_space.variables if d.size.exps[
        space.size_space.variables.index(v)]}
    assert {"t", "k_1", "k_2"} <= names
    path = path_of(space, op)
    final = SynthSpace(opts).node_from_path(path)  # replays in a fresh space
    assert final.operator().hash == canonical_form(op, space.problem.fixed_inputs).hash
    lo, hi = space.problem.flops_window
    assert lo <= final.final_info["flops"] <= hi


def test_bound_is_a_lower_bound_on_gpt2_operators():
    opts = SynthOptions.gpt2()
    off = SynthSpace(opts, use_distance=False, enforce_flops=False)
    on = SynthSpace(opts, enforce_flops=False)
    for build in (c_attn_linear, c_attn_grouped_window):
        check_bound_along(off, on, path_of(off, build(off.size_space)))
