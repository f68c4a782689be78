"""Hand-built operators: classic layers as points of the search space, and the paper's kernels.

All vision operators map ``[N, C_in, H, H] -> [N, C_out, H, H]`` in :func:`conv_space` (square
images, like the original's CNN search space).
"""

from __future__ import annotations

from .builder import Builder
from .graph import Operator
from .sizes import SizeSpace

CONV_PRIMARY = ("N: 0", "C_in: 2", "C_out: 4", "H: 0")
CONV_COEFFICIENT = ("k_1=3: 2", "k_2=7: 2", "s=2: 2", "g=32: 3")
CONV_INPUT = "[N, C_in: unordered, H, H]"
CONV_OUTPUT = "[N, C_out: unordered, H, H]"


def conv_space() -> SizeSpace:
    """The original's CNN spec: primaries N, C_in, C_out, H; coefficients k_1=3, k_2=7, s=2, g=32."""
    return SizeSpace.from_specs(CONV_PRIMARY, CONV_COEFFICIENT)


def linear_space() -> SizeSpace:
    return SizeSpace.from_specs(("N: 0", "seq_len: 0", "H_in: 4", "H_out: 4"),
                                ("k_1=2: 3", "k_2=5: 2", "t=3: 3", "g=32: 3"))


def conv2d(space: SizeSpace | None = None, k: str = "k_1") -> Operator:
    """Dense KxK convolution with "same" zero padding; weight ``[C_out, C_in, k, k]``."""
    b = Builder(space or conv_space(), CONV_OUTPUT, name="conv2d")
    n, co, h, w = b.outputs
    ci, kh, kw = b.reduce("C_in"), b.reduce(k), b.reduce(k)
    co_x, co_w = b.share(co, 1)
    b.expand(co_x)
    ci_x, ci_w = b.share(ci, 1)
    kh_x, kh_w = b.share(kh, 1)
    kw_x, kw_w = b.share(kw, 1)
    return b.build([n, ci_x, b.unfold(h, kh_x), b.unfold(w, kw_x)], [[co_w, ci_w, kh_w, kw_w]])


def grouped_conv2d(space: SizeSpace | None = None, groups: str = "g", k: str = "k_1") -> Operator:
    """Grouped KxK conv; weight ``[C_out, C_in/g, k, k]``; output channel o reads group o // (C_out/g)."""
    b = Builder(space or conv_space(), CONV_OUTPUT, name="grouped_conv2d")
    n, co, h, w = b.outputs
    ci, kh, kw = b.reduce(f"C_in/{groups}"), b.reduce(k), b.reduce(k)
    co_x, co_w = b.share(co, 1)
    group, within = b.merge(co_x, f"C_out/{groups}")
    b.expand(within)
    ci_x, ci_w = b.share(ci, 1)
    kh_x, kh_w = b.share(kh, 1)
    kw_x, kw_w = b.share(kw, 1)
    return b.build([n, b.split(group, ci_x), b.unfold(h, kh_x), b.unfold(w, kw_x)],
                   [[co_w, ci_w, kh_w, kw_w]])


def depthwise_conv2d(space: SizeSpace | None = None, k: str = "k_1") -> Operator:
    """Depthwise KxK conv ``[N, C_in, H, H] -> [N, C_in, H, H]``; weight ``[C_in, k, k]``."""
    b = Builder(space or conv_space(), "[N, C_in: unordered, H, H]", name="depthwise_conv2d")
    n, c, h, w = b.outputs
    kh, kw = b.reduce(k), b.reduce(k)
    c_x, c_w = b.share(c, 1)
    kh_x, kh_w = b.share(kh, 1)
    kw_x, kw_w = b.share(kw, 1)
    return b.build([n, c_x, b.unfold(h, kh_x), b.unfold(w, kw_x)], [[c_w, kh_w, kw_w]])


def pointwise_conv2d(space: SizeSpace | None = None) -> Operator:
    """1x1 conv; weight ``[C_out, C_in]``."""
    b = Builder(space or conv_space(), CONV_OUTPUT, name="pointwise_conv2d")
    n, co, h, w = b.outputs
    ci = b.reduce("C_in")
    co_x, co_w = b.share(co, 1)
    b.expand(co_x)
    ci_x, ci_w = b.share(ci, 1)
    return b.build([n, ci_x, h, w], [[co_w, ci_w]])


def linear(space: SizeSpace | None = None) -> Operator:
    """``[N, seq_len, H_in] -> [N, seq_len, H_out]``; weight ``[H_out, H_in]`` (like nn.Linear)."""
    b = Builder(space or linear_space(), "[N, seq_len, H_out: unordered]", name="linear")
    n, t, o = b.outputs
    i = b.reduce("H_in")
    o_x, o_w = b.share(o, 1)
    b.expand(o_x)
    i_x, i_w = b.share(i, 1)
    return b.build([n, t, i_x], [[o_w, i_w]])


def operator1(space: SizeSpace | None = None) -> Operator:
    """The paper's "Operator 1" (found for ResNet-18 on CIFAR-100; ``operator1.loop.txt``).

    ``Y[n,o,h,w] = sum X[n, c, h+kh-1, w+kw-1] * W1[c//(C_in/g), kh, kw, o, j] * W2[c, kw, j]``
    with ``j < C_out/(g*s)``: a 3x3 conv factorized through a rank-``C_out/(g*s)`` bottleneck whose
    kw window is shared by both weights.
    """
    b = Builder(space or conv_space(), CONV_OUTPUT, name="operator1")
    n, co, h, w = b.outputs
    r_g, r_kh, r_kw = b.reduce("g"), b.reduce("k_1"), b.reduce("k_1")
    r_j, r_c = b.reduce("C_out/g/s"), b.reduce("C_in/g")
    g_x, g_w1 = b.share(r_g, 1)
    kh_x, kh_w1 = b.share(r_kh, 1)
    kw_x1, kw_w1 = b.share(r_kw, 1)
    kw_x, kw_w2 = b.share(kw_x1, 2)
    co_x, co_w1 = b.share(co, 1)
    b.expand(co_x)
    j_x1, j_w1 = b.share(r_j, 1)
    j_x, j_w2 = b.share(j_x1, 2)
    b.expand(j_x)
    cin_x, cin_w2 = b.share(b.split(g_x, r_c), 2)
    return b.build([n, cin_x, b.unfold(h, kh_x), b.unfold(w, kw_x)],
                   [[g_w1, kh_w1, kw_w1, co_w1, j_w1], [cin_w2, kw_w2, j_w2]])


def stacked_conv(space: SizeSpace | None = None) -> Operator:
    """The paper's hand-written stacked Conv2d->Conv1d kernel (``stacked_conv.loop.txt``).

    A 1-D conv along W (window kw1, weight W2) feeds a grouped-bottleneck 2-D conv (kh, kw2, W1):
    ``Y = sum X[c, h+kh-1, w+kw2-1+kw1-1] * W1[o, c//(C_in/g), kh, kw2, j] * W2[c, kw1, j]``.
    """
    b = Builder(space or conv_space(), CONV_OUTPUT, name="stacked_conv")
    n, co, h, w = b.outputs
    r_kw1 = b.reduce("k_1")
    r_g, r_kh, r_kw2 = b.reduce("g"), b.reduce("k_1"), b.reduce("k_1")
    r_j, r_c = b.reduce("C_out/g/s"), b.reduce("C_in/g")
    co_x, co_w1 = b.share(co, 1)
    b.expand(co_x)
    g_x, g_w1 = b.share(r_g, 1)
    kh_x, kh_w1 = b.share(r_kh, 1)
    kw2_x, kw2_w1 = b.share(r_kw2, 1)
    j_x1, j_w1 = b.share(r_j, 1)
    j_x, j_w2 = b.share(j_x1, 2)
    b.expand(j_x)
    kw1_x, kw1_w2 = b.share(r_kw1, 2)
    cin_x, cin_w2 = b.share(b.split(g_x, r_c), 2)
    w_in = b.unfold(b.unfold(w, kw2_x), kw1_x)
    return b.build([n, cin_x, b.unfold(h, kh_x), w_in],
                   [[co_w1, g_w1, kh_w1, kw2_w1, j_w1], [cin_w2, kw1_w2, j_w2]])


HAND_BUILT = {
    "conv2d": conv2d,
    "grouped_conv2d": grouped_conv2d,
    "depthwise_conv2d": depthwise_conv2d,
    "pointwise_conv2d": pointwise_conv2d,
    "linear": linear,
    "operator1": operator1,
    "stacked_conv": stacked_conv,
}
