"""Hand-built members of the convolution family in the resnet18 space (``[N, C_in, H, H] ->
[N, C_out, H, H]``) for issue #17 item 1: Shifts above and below Unfolds and on output spatial dims,
Merge-Split channel groups, and (outside the preset, with the reason) Strides and spatial Merges.
``tests/synth/test_bound_real.py`` checks the shape-distance bound along their canonical paths."""

from __future__ import annotations

from syno.ir.builder import Builder
from syno.ir.library import CONV_OUTPUT
from syno.ir.sizes import SizeSpace


def _conv(b: Builder, ci_size: str = "C_in", k: str = "k_1", co_outer: bool = True):
    """The pieces of a dense conv: (n, co, h, w), shared C_in / window reductions, weight dims."""
    n, co, h, w = b.outputs
    ci, kh, kw = b.reduce(ci_size), b.reduce(k), b.reduce(k)
    co_x, co_w = b.share(co, 1)
    if co_outer:
        b.expand(co_x)
    ci_x, ci_w = b.share(ci, 1)
    kh_x, kh_w = b.share(kh, 1)
    kw_x, kw_w = b.share(kw, 1)
    return (n, co_x, h, w), (ci_x, kh_x, kw_x), [co_w, ci_w, kh_w, kw_w]


def shifted_unfold_h(space: SizeSpace):
    """conv2d whose H window is shifted by one (Shift above an Unfold)."""
    b = Builder(space, CONV_OUTPUT, "shifted_unfold_h")
    (n, _, h, w), (ci, kh, kw), wt = _conv(b)
    return b.build([n, ci, b.shift(b.unfold(h, kh)), b.unfold(w, kw)], [wt])


def shifted_unfold_hw(space: SizeSpace):
    """conv2d with both windows shifted (two Shifts above Unfolds)."""
    b = Builder(space, CONV_OUTPUT, "shifted_unfold_hw")
    (n, _, h, w), (ci, kh, kw), wt = _conv(b)
    return b.build([n, ci, b.shift(b.unfold(h, kh)), b.shift(b.unfold(w, kw))], [wt])


def shift_only(space: SizeSpace):
    """A 1xk conv whose rows read the next row (Shift of an output spatial dim, no window)."""
    b = Builder(space, CONV_OUTPUT, "shift_only")
    n, co, h, w = b.outputs
    ci, kw = b.reduce("C_in"), b.reduce("k_1")
    co_x, co_w = b.share(co, 1)
    b.expand(co_x)
    ci_x, ci_w = b.share(ci, 1)
    kw_x, kw_w = b.share(kw, 1)
    return b.build([n, ci_x, b.shift(h), b.unfold(w, kw_x)], [[co_w, ci_w, kw_w]])


def split_shift_merge_h(space: SizeSpace):
    """H cut into (H/s, s) blocks by a Merge, the block index shifted, re-joined by a Split, then a
    1xk conv: a block-shifted conv (Split of an output spatial dim with Shift and Merge)."""
    b = Builder(space, CONV_OUTPUT, "split_shift_merge_h")
    n, co, h, w = b.outputs
    ci, kw = b.reduce("C_in"), b.reduce("k_1")
    co_x, co_w = b.share(co, 1)
    b.expand(co_x)
    ci_x, ci_w = b.share(ci, 1)
    kw_x, kw_w = b.share(kw, 1)
    major, minor = b.merge(h, "s")
    return b.build([n, ci_x, b.split(b.shift(major), minor), b.unfold(w, kw_x)], [[co_w, ci_w, kw_w]])


def split_shift_merge_unfold(space: SizeSpace):
    """As :func:`split_shift_merge_h` with a kxk window on W and a k window on the shifted H."""
    b = Builder(space, CONV_OUTPUT, "split_shift_merge_unfold")
    (n, _, h, w), (ci, kh, kw), wt = _conv(b)
    major, minor = b.merge(h, "s")
    hh = b.split(b.shift(major), minor)
    return b.build([n, ci, b.unfold(hh, kh), b.unfold(w, kw)], [wt])


def grouped_by_merge_major(space: SizeSpace):
    """The library's grouped conv built the other way: the group is the Merge's major part."""
    b = Builder(space, CONV_OUTPUT, "grouped_by_merge_major")
    n, co, h, w = b.outputs
    ci, kh, kw = b.reduce("C_in/g"), b.reduce("k_1"), b.reduce("k_1")
    co_x, co_w = b.share(co, 1)
    major, minor = b.merge(co_x, "C_out/g")
    b.expand(minor)
    ci_x, ci_w = b.share(ci, 1)
    kh_x, kh_w = b.share(kh, 1)
    kw_x, kw_w = b.share(kw, 1)
    return b.build([n, b.split(major, ci_x), b.unfold(h, kh_x), b.unfold(w, kw_x)], [[co_w, ci_w, kh_w, kw_w]])


def dilated_like(space: SizeSpace):
    """A k_1 window on H whose rows are blocks of s: Merge of H into (H/s, s), window on H/s, Split
    back (a dilated conv along H)."""
    b = Builder(space, CONV_OUTPUT, "dilated_like")
    (n, _, h, w), (ci, kh, kw), wt = _conv(b)
    major, minor = b.merge(h, "s")
    return b.build([n, ci, b.split(b.unfold(major, kh), minor), b.unfold(w, kw)], [wt])


def k2_window(space: SizeSpace):
    """A k_2 x k_1 conv (the larger window on H)."""
    b = Builder(space, CONV_OUTPUT, "k2_window")
    n, co, h, w = b.outputs
    ci, kh, kw = b.reduce("C_in"), b.reduce("k_2"), b.reduce("k_1")
    co_x, co_w = b.share(co, 1)
    b.expand(co_x)
    ci_x, ci_w = b.share(ci, 1)
    kh_x, kh_w = b.share(kh, 1)
    kw_x, kw_w = b.share(kw, 1)
    return b.build([n, ci_x, b.unfold(h, kh_x), b.unfold(w, kw_x)], [[co_w, ci_w, kh_w, kw_w]])


def stride_window(space: SizeSpace):
    """A 1 x k conv whose H rows are read with a stride... as a Stride of the window (dilation s)."""
    b = Builder(space, CONV_OUTPUT, "stride_window")
    (n, _, h, w), (ci, kh, kw), wt = _conv(b)
    return b.build([n, ci, b.unfold(h, b.stride(kh, "s")), b.unfold(w, kw)], [wt])


def _grouped(b: Builder, k: str = "k_1"):
    """Pieces of the library's grouped conv (group = the Merge's major part of C_out)."""
    n, co, h, w = b.outputs
    ci, kh, kw = b.reduce("C_in/g"), b.reduce(k), b.reduce(k)
    co_x, co_w = b.share(co, 1)
    major, minor = b.merge(co_x, "C_out/g")
    b.expand(minor)
    ci_x, ci_w = b.share(ci, 1)
    kh_x, kh_w = b.share(kh, 1)
    kw_x, kw_w = b.share(kw, 1)
    return (n, b.split(major, ci_x), h, w), (kh_x, kw_x), [co_w, ci_w, kh_w, kw_w]


def grouped_shifted_major(space: SizeSpace):
    """The grouped conv with a shifted H window (Shift above an Unfold, Merge-Split for the group)."""
    b = Builder(space, CONV_OUTPUT, "grouped_shifted_major")
    (n, c, h, w), (kh, kw), wt = _grouped(b)
    return b.build([n, c, b.shift(b.unfold(h, kh)), b.unfold(w, kw)], [wt])


def grouped_shifted_both(space: SizeSpace):
    b = Builder(space, CONV_OUTPUT, "grouped_shifted_both")
    (n, c, h, w), (kh, kw), wt = _grouped(b)
    return b.build([n, c, b.shift(b.unfold(h, kh)), b.shift(b.unfold(w, kw))], [wt])


def grouped_shift_only(space: SizeSpace):
    """A grouped 1 x k conv reading the next row (Shift of an output spatial dim)."""
    b = Builder(space, CONV_OUTPUT, "grouped_shift_only")
    n, co, h, w = b.outputs
    ci, kw = b.reduce("C_in/g"), b.reduce("k_1")
    co_x, co_w = b.share(co, 1)
    major, minor = b.merge(co_x, "C_out/g")
    b.expand(minor)
    ci_x, ci_w = b.share(ci, 1)
    kw_x, kw_w = b.share(kw, 1)
    return b.build([n, b.split(major, ci_x), b.shift(h), b.unfold(w, kw_x)], [[co_w, ci_w, kw_w]])


def shifted_unfold_w(space: SizeSpace):
    b = Builder(space, CONV_OUTPUT, "shifted_unfold_w")
    (n, _, h, w), (ci, kh, kw), wt = _conv(b)
    return b.build([n, ci, b.unfold(h, kh), b.shift(b.unfold(w, kw))], [wt])


def shift_only_w(space: SizeSpace):
    """A k x 1 conv reading the next column."""
    b = Builder(space, CONV_OUTPUT, "shift_only_w")
    n, co, h, w = b.outputs
    ci, kh = b.reduce("C_in"), b.reduce("k_1")
    co_x, co_w = b.share(co, 1)
    b.expand(co_x)
    ci_x, ci_w = b.share(ci, 1)
    kh_x, kh_w = b.share(kh, 1)
    return b.build([n, ci_x, b.unfold(h, kh_x), b.shift(w)], [[co_w, ci_w, kh_w]])


def shift_both_pointwise(space: SizeSpace):
    """A pointwise conv reading the diagonal neighbour (two Shifts of output spatial dims)."""
    b = Builder(space, CONV_OUTPUT, "shift_both_pointwise")
    n, co, h, w = b.outputs
    ci = b.reduce("C_in")
    co_x, co_w = b.share(co, 1)
    b.expand(co_x)
    ci_x, ci_w = b.share(ci, 1)
    return b.build([n, ci_x, b.shift(h), b.shift(w)], [[co_w, ci_w]])


# in the resnet18 preset (every rule and limit on; checked by tests/synth/test_bound_real.py)
CONV_FAMILY = {f.__name__: f for f in (
    shifted_unfold_h, shifted_unfold_hw, shifted_unfold_w, shift_only, shift_only_w, shift_both_pointwise,
    grouped_by_merge_major, grouped_shifted_major, grouped_shifted_both, grouped_shift_only)}

# not in the resnet18 preset, for the reason given (the test checks path_of refuses them)
OUTSIDE_RESNET18 = {
    "stride_window": (stride_window, "max_strides = 0"),
    "k2_window": (k2_window, "H / k_2 = 1 < min_unfold_ratio 2.3 at H = 7"),
    "dilated_like": (dilated_like, "s does not divide H = 7"),
    "split_shift_merge_h": (split_shift_merge_h, "s does not divide H = 7"),
    "split_shift_merge_unfold": (split_shift_merge_unfold, "s does not divide H = 7"),
}
