"""A thin *grouped* stage on tensor cores, computed once per output element.

Stages like Operator 1's first contraction ``t[p, g, kw, j] = sum_r x[p + kw - 1, g*Cg + r] *
w[g*Cg + r, kw, j]`` sum over a handful of values (``Cg`` = 2-16) per output, too few for the
implicit GEMM of :mod:`.gemm`. The flat fallback (one output element per lane, every class
recovered with div/mod, ``[BM, BK]`` gathers for 2 products) runs far below memory bandwidth.
Here the output tile is ``[BM rows, BN columns]`` with

* **rows**: the output classes the weight does not hold (pixels);
* **taps**: output classes the data operand reads next to a row class (``kw`` in ``w + kw - 1``):
  an unrolled scalar loop, one sub-tile each;
* **groups**: output classes the data operand reads next to the summed classes (``g`` in
  ``g*Cg + r``), and **free** classes only the weight holds (``j``): the ``BN`` columns.

Per tap, the data tile ``[BM, BK]`` over the block's (groups, r) (``BK``: the block's data
columns, a power of two >= 16) is one contiguous run of the data operand (coalesced,
vectorised), the weight tile ``[BK, BN]`` is block-diagonal (zero across groups) and one ``tl.dot`` gives the sub-tile: the zeros cost ``BN/J`` times the stage's MACs,
which are tiny, while every input byte is read once per tap and every output written once.
"""

from __future__ import annotations

from dataclasses import dataclass

from .gemm import _static as _prod, linear_axis, load_expr, split_access, tile_address
from .stages import Stage, mentions


@dataclass(frozen=True)
class GroupedSplit:
    data: int             # operand index of the data operand (reads the row classes)
    rows: list[int]       # output classes the weight lacks, slowest first
    taps: list[int]       # scalar loop classes, slowest first
    groups: list[int]     # column classes shared with the summed run, slowest first
    free: list[int]       # column classes of the weight alone, slowest first
    reduce: list[int]     # the summed classes, slowest first
    width: int            # values of one group's run (prod of reduce)
    per_group: int        # columns per group (prod of free): BN is a multiple of it
    linear: int           # the data operand's axis whose stride steps the (groups, reduce) run


def grouped_split(stage: Stage, values, dynamic: set[int], strides: dict[str, tuple[int, ...]], order,
                  max_taps: int = 27, max_per_group: int = 16) -> GroupedSplit | None:
    """The grouped structure of a thin two-operand stage, or None when it is not one. ``order``
    sorts a class list slowest first (by the store's strides)."""
    if len(stage.operands) != 2 or stage.atomic or not stage.summed:
        return None
    k_cls = order(list(stage.summed))
    for d in (0, 1):
        data, weight = stage.operands[d], stage.operands[1 - d]
        m_cls = order([c for c in stage.out if c not in weight.used])
        n_cls = order([c for c in stage.out if c in weight.used])
        if not m_cls or not n_cls:
            continue
        rows, red = set(m_cls), set(k_cls)
        if not data.used & rows:
            continue
        taps, groups, free = [], [], []
        ok = True
        for c in n_cls:
            if c not in data.used:
                free.append(c)
                continue
            with_rows = any(c in mentions(e) and mentions(e) & rows for e in data.index + data.masks)
            with_red = any(c in mentions(e) and mentions(e) & red for e in data.index + data.masks)
            if with_rows and with_red:
                ok = False
                break
            (groups if with_red else taps).append(c)
        if not ok or not groups:
            continue
        n_taps, width, per_group = _prod(taps, values), _prod(k_cls, values), _prod(free, values)
        if any(c in dynamic for c in taps + groups + free + k_cls) or n_taps is None or n_taps > max_taps:
            continue
        if per_group is None or per_group > max_per_group or per_group & (per_group - 1):
            continue
        run = groups + k_cls
        run_set = set(run)
        # the block's data columns must be one evenly strided run (contiguous channels)
        linear = linear_axis(data, run, strides.get(data.leaf), values)
        if linear is None:
            continue
        if any(mentions(e) & rows and mentions(e) & run_set for e in data.index + data.masks):
            continue
        # the weight's (groups, reduce) part must not mix with its free part in one axis
        if any(mentions(e) & run_set and mentions(e) & set(free) for e in weight.index + weight.masks):
            continue
        # each store axis varies with rows or with columns, not both (one broadcast add)
        if any(mentions(e) & rows and mentions(e) & set(n_cls) for e in stage.store.index):
            continue
        return GroupedSplit(d, m_cls, taps, groups, free, list(k_cls), width, per_group, linear)
    return None


def grouped_body(stage: Stage, split: GroupedSplit, m_cls: list[int], batch: list[int], values,
                 strides: dict[str, tuple[int, ...]], ptr: dict[str, str], dot: str) -> list[str]:
    """Kernel body lines (function indentation) after the row decomposition: columns, the
    unrolled tap loop of block-diagonal dots, and the store of each tap's sub-tile. ``dot``: the
    expression (over the tiles ``a`` and ``b``) that gives a tap's sub-tile."""
    from .kernel import _decompose, _size  # shared mixed-radix helpers

    data, weight = stage.operands[split.data], stage.operands[1 - split.data]
    cols = split.groups + split.free
    run = split.groups + split.reduce
    run_set = set(run)
    kx_expr = f"BN // {split.per_group} * {split.width}"
    n_groups = _size(split.groups, values, {})
    L = ["    offs_n = pid_n * BN + tl.arange(0, BN)",
         "    mask_n = offs_n < N  # columns: groups x free classes",
         *_decompose("offs_n", cols, "n_", values, {}, "    "),
         "    # data columns of the block's groups: (groups, summed) is one contiguous run",
         f"    offs_x = (pid_n * BN) // {split.per_group} * {split.width} + tl.arange(0, BK)",
         f"    mask_x = (offs_x < {n_groups} * {split.width}) & "
         f"(offs_x < (pid_n * BN) // {split.per_group} * {split.width} + {kx_expr})",
         *_decompose("offs_x", run, "x_", values, {}, "    "),
         f"    diag = {' & '.join(f'(x_c{c}[:, None] == n_c{c}[None, :])' for c in split.groups)}"]
    mp = {c: f"b_c{c}" for c in batch}
    mp.update({c: f"m_c{c}" for c in m_cls})
    mp.update({c: f"o_c{c}" for c in split.taps})
    xmp = dict(mp)
    xmp.update({c: f"x_c{c}" for c in run})
    a_parts = split_access(data, ptr[data.leaf], xmp, set(m_cls), run_set, split.linear, offs="offs_x")
    wmp = dict(xmp)
    wmp.update({c: f"n_c{c}" for c in split.free})
    b_parts = split_access(weight, ptr[weight.leaf], wmp, set(split.free), run_set, None, offs="offs_x")
    n_taps = _size(split.taps, values, {}) if split.taps else "1"
    L.append(f"    for tap in tl.static_range({n_taps}):  # taps: {len(split.taps)} class(es)")
    body = _decompose("tap", split.taps, "o_", values, {}, "") if split.taps else []
    body.append(f"a = {load_expr(a_parts, ptr[data.leaf], True, 'mask_m', 'mask_x', offs='offs_x')}")
    b = load_expr(b_parts, ptr[weight.leaf], False, "mask_n", "mask_x", offs="offs_x")
    if not b_parts.vec and not b_parts.vec_mask:
        b = f"tl.broadcast_to({b}, (BK, BN))"
    body.append(f"b = tl.where(diag, {b}, 0.0)")
    body.append(f"acc = {dot}")
    # store this tap's sub-tile: rows x (groups, free) columns, taps as scalars
    st = stage.store
    omp = dict(mp)
    omp.update({c: f"n_c{c}" for c in cols})
    o_parts = split_access(st, ptr[st.leaf], omp, set(m_cls), set(cols), None)
    o_addr, o_mask = tile_address(o_parts, ptr[st.leaf], True, "mask_m", "mask_n", offs="offs_n")
    if stage.scale != 1.0:
        body.append(f"acc = acc * {stage.scale!r}")
    body.append(f"tl.store({o_addr}, acc.to({ptr[st.leaf]}.dtype.element_ty),\n"
                f"         mask={o_mask})")
    return L + ["        " + line.replace("\n", "\n        ") for line in body]


def block_width(per_group: int, width: int, bn: int) -> int:
    """``BK`` of a grouped tile: the data columns of the ``BN // per_group`` groups of a block,
    rounded up to a power of two of at least 16 (tl.dot's smallest K)."""
    need = max(1, bn // per_group) * width
    return max(16, 1 << (need - 1).bit_length())


__all__ = ["GroupedSplit", "grouped_split", "grouped_body", "block_width"]
