import pytest
from pydantic import ValidationError

from syno.synth.options import SynthOptions


@pytest.mark.parametrize("preset", ["tiny", "resnet18", "gpt2", "gpt2_linears"])
def test_presets_build(preset):
    o = getattr(SynthOptions, preset)()
    p = o.problem()
    lo, hi = p.flops_window
    assert 0 < lo < hi < float("inf")
    assert SynthOptions.model_validate(o.model_dump()) == o
    assert o.digest() == SynthOptions.model_validate_json(o.model_dump_json()).digest()


def test_resnet18_preset_is_the_paper_run():
    o = SynthOptions.resnet18()
    assert (o.depth, o.max_reductions, o.max_merges, o.max_splits, o.max_shifts, o.max_strides) == (12, 5, 1, 3, 2, 0)
    assert (o.max_size_multiplier, o.max_variables_in_size, o.max_chain_length, o.max_shift_rhs) == (4, 3, 6, 2)
    assert (o.max_expansion_merge_multiplier, o.min_weight_share_dim, o.max_weight_share_dim) == (2048, 8, 8)
    assert (o.min_unfold_ratio, o.flops_ratio, o.reference_operator) == (2.3, (0.15, 0.9), "conv2d")
    p = o.problem()
    assert [str(s) for s in p.desired] == ["C_in", "H", "H"]
    assert len(o.mappings) == 19 and len(p.bindings) == 7 and sum(p.repeats) == 19


def test_defaults_follow_the_original_cli():
    o = SynthOptions(input_shape="[N, C]", output_shape="[N, C]", primary_specs=("N: 0", "C: 2"),
                     fixed_io_pairs=((0, 0),), mappings=({"N": 1, "C": 8},))
    assert (o.depth, o.max_chain_length, o.max_tensors, o.max_reductions) == (12, 10, 3, 4)
    assert (o.max_size_multiplier, o.min_unfold_ratio, o.max_shift_rhs, o.max_expansion_repeat_multiplier) == (1, 1.5, 5, 1)
    assert (o.max_expansion_merge_multiplier, o.max_finalizations, o.min_single_weight_params) == (512, 5, 100)
    assert o.exact_division and o.odd_unfold_kernels and not o.allow_tile and o.seed == 42


@pytest.mark.parametrize("change, field", [
    (dict(flops_ratio=(0.5, 0.1)), "flops_ratio"),
    (dict(min_flops=10.0, max_flops=5.0, flops_ratio=None, reference_operator=None), "min_flops/max_flops"),
    (dict(min_weight_share_dim=9, max_weight_share_dim=8), "min_weight_share_dim"),
    (dict(input_shape="[N, C_in, H, Q]"), "input_shape"),
    (dict(input_shape="N, C_in"), "input_shape"),
    (dict(output_shape="[N, C_out, H, H^]"), "output_shape"),
    (dict(mappings=({"N": 1, "C_in": 8, "C_out": 8, "H": 8, "Z": 3},)), "mappings"),
    (dict(mappings=()), "mappings"),
    (dict(mappings=({"N": 1, "C_in": 8, "C_out": 8},),), "mappings"),
    (dict(fixed_io_pairs=((0, 7),)), "fixed_io_pairs"),
    (dict(fixed_io_pairs=((1, 0),)), "fixed_io_pairs"),
    (dict(primary_specs=("N: 0", "C_in: x")), "primary_specs"),
    (dict(reference_operator="nope"), "reference_operator"),
    (dict(flops_ratio=(0.1, 0.5), reference_operator=None), "flops_ratio"),
    (dict(input_shape="[N, C_in*H, H, H]"), "input_shape"),
    (dict(depth=0), "depth"),
    (dict(disallow_stride_above_merge_r=True), "disallow_merge_with_large_block_above_stride"),
    (dict(surprise=1), "surprise"),
])
def test_bad_options_name_the_field(change, field):
    with pytest.raises(ValidationError) as info:
        SynthOptions.tiny(**change)
    assert field in str(info.value)
