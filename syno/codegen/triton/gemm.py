"""The K loop of a two-operand stage as a *tap-structured* implicit GEMM.

A flat K index decomposed with div/mod into every summed class costs integer work on each of the
``BM x BK`` and ``BK x BN`` elements of every iteration, and it hides contiguity from the
compiler. A convolution's implicit GEMM instead loops over its window taps as scalars and takes
``BK`` contiguous channels per step. This module finds that structure in any stage:

* **inner** summed classes appear in the operands' index expressions and masks only alongside
  other summed classes or scalars (never next to a row/column class): e.g. the channel or group
  classes of an NHWC read. They form the vectorised ``BK`` block (div/mod over ``BK`` values only);
* **outer** summed classes (everything else, e.g. ``kh`` in ``h + kh - 1``) become scalars of the
  same loop: one flat iteration counter ``it = tap * n_blocks + block`` that the software pipeliner
  can overlap.

Every address then splits into a row part (``[BM]``/``[BN]`` vector, recomputed per tap), a K part
(``[BK]`` vector) and scalars, combined by one broadcast add; masks split the same way. An
operand with no row part (a weight read inside a fused producer) loads a ``[BK]`` vector once
instead of a ``[BM, BK]`` tile.
"""

from __future__ import annotations

from dataclasses import dataclass

from .stages import Access, mentions, substitute


@dataclass(frozen=True)
class TapSplit:
    outer: list[int]      # scalar tap classes, slowest first
    inner: list[int]      # vectorised classes, slowest first


def choose_split(k_cls: list[int], row_accesses: list[tuple[Access, set[int]]], values,
                 dynamic: set[int], min_inner: int = 16, max_outer: int = 256) -> TapSplit | None:
    """``row_accesses``: (access, its row/column classes). None when the structure does not pay:
    no inner block of at least ``min_inner`` values, or more than ``max_outer`` taps (e.g. a weight
    gradient summing over pixels: its flat K loop with split-K is better)."""
    inner = set(k_cls)
    for acc, rows in row_accesses:
        for e in acc.index + acc.masks:
            cls = mentions(e)
            if cls & rows and cls & inner:
                inner -= cls
    outer = [c for c in k_cls if c not in inner]
    inner_l = [c for c in k_cls if c in inner]
    if not inner_l:
        return None
    if all(c not in dynamic for c in inner_l) and _static(inner_l, values) < min_inner:
        return None
    if any(c in dynamic for c in outer) or _static(outer, values) > max_outer:
        return None
    return TapSplit(outer, inner_l)


@dataclass
class Parts:
    """One access's address and mask terms, by what they vary with."""

    vec: list[str]        # row (or column) vector terms
    k: list[str]          # K-block vector terms
    scalar: list[str]
    vec_mask: list[str]
    k_mask: list[str]
    scalar_mask: list[str]


def linear_axis(acc: Access, run: list[int], strides: tuple[int, ...] | None, values) -> int | None:
    """The axis whose stride steps a flat index over the ``run`` classes (slowest first) when the
    run is one evenly strided stretch of ``acc``'s buffer: then that part of the address is
    ``offs * stride`` and the compiler sees the contiguity (a div/mod decomposition hides it and
    costs vectorised loads). Checked numerically on every value of the run, so merged axes
    (``g * 2 + c`` of a Split) count as well as nested plain axes. None otherwise."""
    size = _static(run, values)
    if strides is None or size is None or size > 1 << 16:
        return None
    run_set = set(run)
    axes = [k for k, e in enumerate(acc.index) if mentions(e) & run_set]
    if any(mentions(acc.index[k]) - run_set for k in axes) or any(mentions(m) & run_set for m in acc.masks):
        return None
    codes = [compile(acc.index[k], "<index>", "eval") for k in axes]
    offsets = []
    for flat in range(size):
        env, rest = {}, flat
        for c in reversed(run):
            env[f"c{c}"], rest = rest % values[c], rest // values[c]
        offsets.append(sum(eval(code, {}, env) * strides[k] for code, k in zip(codes, axes)))
    step = offsets[1] - offsets[0] if size > 1 else 1
    if offsets[0] != 0 or any(o != f * step for f, o in enumerate(offsets)):
        return None
    for k, st in enumerate(strides):
        if st == step:
            return k
    return None


def split_access(acc: Access, ptr: str, mp: dict[int, str], vec: set[int], inner: set[int],
                 linear: int | None = None, offs: str = "offs_k") -> Parts:
    p = Parts([], [], [], [], [], [])
    if linear is not None:
        p.k.append(f"{offs} * s_{acc.leaf}_{linear}")
    for k, e in enumerate(acc.index):
        cls = mentions(e)
        if linear is not None and cls & inner:
            continue
        term = f"({substitute(e, mp)}) * s_{acc.leaf}_{k}"
        (p.vec if cls & vec else p.k if cls & inner else p.scalar).append(term)
    for m in acc.masks:
        cls = mentions(m)
        (p.vec_mask if cls & vec else p.k_mask if cls & inner else p.scalar_mask).append(substitute(m, mp))
    return p


def tile_address(parts: Parts, ptr: str, vec_first: bool, vec_mask: str, k_mask: str,
                 offs: str = "offs_k") -> tuple[str, str]:
    """(address, mask) of a 2-D tile: rows x K block (``vec_first``, an A operand or a store) or
    K block x columns (a B operand)."""
    def join(terms):
        return " + ".join(terms) if terms else "0"

    kmask = " & ".join([k_mask] + [f"({m})" for m in parts.k_mask + parts.scalar_mask])
    vmask = " & ".join([vec_mask] + [f"({m})" for m in parts.vec_mask])
    # an empty side still needs a vector to broadcast against: its offsets times zero
    v = f"({join(parts.vec + parts.scalar)})" if parts.vec else f"({vec_mask.replace('mask', 'offs')} * 0 + {join(parts.scalar)})"
    k = f"({join(parts.k)})" if parts.k else f"({offs} * 0)"
    if vec_first:
        return f"{ptr} + {v}[:, None] + {k}[None, :]", f"({vmask})[:, None] & ({kmask})[None, :]"
    return f"{ptr} + {k}[:, None] + {v}[None, :]", f"({kmask})[:, None] & ({vmask})[None, :]"


def load_expr(parts: Parts, ptr: str, vec_first: bool, vec_mask: str, k_mask: str, offs: str = "offs_k") -> str:
    """``tl.load`` of one operand tile. ``vec_first``: rows are the vector classes ([BM, BK], an
    A operand) rather than columns ([BK, BN], a B operand)."""
    if not parts.vec and not parts.vec_mask:
        # no row dependence: one [BK] vector, broadcast by the caller's arithmetic
        kmask = " & ".join([k_mask] + [f"({m})" for m in parts.k_mask + parts.scalar_mask])
        addr = f"{ptr} + {' + '.join(parts.scalar + parts.k) or '0'}"
        tile = f"tl.load({addr}, mask={kmask}, other=0.0)"
        return f"{tile}[None, :]" if vec_first else f"{tile}[:, None]"
    addr, mask = tile_address(parts, ptr, vec_first, vec_mask, k_mask, offs)
    return f"tl.load({addr},\n                    mask={mask}, other=0.0)"


def where_masks(acc: Access, mp: dict[int, str], vec: set[int], inner: set[int], vec_first: bool,
                vec_mask: str, k_mask: str) -> str | None:
    """The consumer-side masks of a fused operand (e.g. an Unfold's padding of the intermediate),
    as one broadcastable condition; None when there are none."""
    if not acc.masks:
        return None
    vm, km = [vec_mask], [k_mask]
    for m in acc.masks:
        cls = mentions(m)
        (vm if cls & vec or not cls & inner else km).append(f"({substitute(m, mp)})")
    conds = []
    if vm:
        conds.append(f"({' & '.join(vm)})" + ("[:, None]" if vec_first else "[None, :]"))
    if km:
        conds.append(f"({' & '.join(km)})" + ("[None, :]" if vec_first else "[:, None]"))
    return " & ".join(conds)


def fused_views(acc: Access, producer) -> list[Access]:
    """The producer's operand views addressed by the consumer's index expressions: the elements
    a consumer tile of a fused intermediate needs, read straight from the producer's operands."""
    sub = {o: f"({acc.index[j]})" for j, o in enumerate(producer.out)}
    return [Access(p.leaf, tuple(substitute(e, sub) for e in p.index), p.classes,
                   tuple(substitute(m, sub) for m in p.masks)) for p in producer.operands]


def structured_loop(ops, fused, m_cls, n_cls, batch, split: TapSplit, values, dyn_names, ptr,
                    acc_t: str, dot: str, strides: dict[str, tuple[int, ...]],
                    producer_dot: str | None = None) -> list[str]:
    """Lines (function-body indentation) of the K loop accumulating ``acc``; ``dot``: the
    accumulate statement over tiles ``a`` and ``b``. ``producer_dot``: the tensor-core dtype
    (e.g. ``tl.bfloat16``) for fused producers computed as a block-diagonal ``tl.dot``
    (:func:`dot_producer`) where they fit; None: fused producers use FMA loops."""
    from .kernel import _decompose, _size  # shared mixed-radix helpers

    inner = set(split.inner)
    mp = {c: f"b_c{c}" for c in batch}
    mp.update({c: f"m_c{c}" for c in m_cls})
    mp.update({c: f"n_c{c}" for c in n_cls})
    mp.update({c: f"o_c{c}" for c in split.outer})
    mp.update({c: f"k_c{c}" for c in split.inner})
    L = [f"    KO = {_size(split.outer, values, dyn_names)}  # taps: scalar loop",
         f"    KI = {_size(split.inner, values, dyn_names)}  # vectorised block",
         "    n_kb = tl.cdiv(KI, BK)",
         "    pid_k = tl.program_id(1)",
         "    total = KO * n_kb",
         "    chunk = tl.cdiv(total, SPLIT)",
         "    for it in range(pid_k * chunk, tl.minimum(total, (pid_k + 1) * chunk)):"]
    body = ["tap = it // n_kb", "offs_k = (it % n_kb) * BK + tl.arange(0, BK)", "mask_k = offs_k < KI"]
    body += _decompose("tap", split.outer, "o_", values, dyn_names, "") if split.outer else []
    body += _decompose("offs_k", split.inner, "k_", values, dyn_names, "")

    def operand(var: str, acc: Access, vec: set[int], vec_first: bool, vec_mask: str) -> None:
        if acc.leaf not in fused:
            linear = linear_axis(acc, split.inner, strides.get(acc.leaf), values)
            parts = split_access(acc, ptr[acc.leaf], mp, vec, inner, linear)
            tile = load_expr(parts, ptr[acc.leaf], vec_first, vec_mask, 'mask_k')
            if not parts.vec and not parts.vec_mask:  # tl.dot needs the whole tile
                tile = f"tl.broadcast_to({tile}, {'(BM, BK)' if vec_first else '(BK, BN)'})"
            body.append(f"{var} = {tile}")
            return
        prod = fused[acc.leaf]
        if vec_first and producer_dot:
            lines = dot_producer(var, acc, prod, split, mp, set(m_cls), values, strides, ptr, producer_dot)
            if lines is not None:
                body.extend(lines)
                return
        r_cls = list(prod.summed)
        fmp = dict(mp)
        fmp.update({c: f"f_c{c}" for c in r_cls})
        shape = "(BM, BK)" if vec_first else "(BK, BN)"
        body.append(f"{var} = tl.zeros({shape}, dtype={acc_t})  # fused: {acc.leaf} = stage {prod.name}")
        body.append(f"for fr in tl.static_range({_size(r_cls, values, dyn_names)}):")
        body.extend("    " + line for line in _decompose("fr", r_cls, "f_", values, dyn_names, ""))
        terms = []
        for q, view in enumerate(fused_views(acc, prod)):
            parts = split_access(view, ptr[view.leaf], fmp, vec, inner)
            body.append(f"    f{q} = {load_expr(parts, ptr[view.leaf], vec_first, vec_mask, 'mask_k')}"
                        f".to({acc_t})")
            terms.append(f"f{q}")
        body.append(f"    {var} += {' * '.join(terms)}")
        cond = where_masks(acc, mp, vec, inner, vec_first, vec_mask, "mask_k")
        if cond:
            body.append(f"{var} = tl.where({cond}, {var}, 0.0)")

    operand("a", ops[0], set(m_cls), True, "mask_m")
    operand("b", ops[1], set(n_cls), False, "mask_n")
    body.append(dot)
    return L + ["        " + line.replace("\n", "\n        ") for line in body]


def _static(classes, values) -> int | None:
    size = 1
    for c in classes:
        if not isinstance(values[c], int):
            return None
        size *= values[c]
    return size


def _pow2(n: int | None) -> bool:
    return n is not None and n > 0 and n & (n - 1) == 0


def dot_producer(var: str, acc: Access, prod, split: TapSplit, mp: dict[int, str], rows: set[int], values,
                 strides, ptr, dot_t: str) -> list[str] | None:
    """A fused producer ``t[.., g, j] = sum_c x[.., g*C + c] * w[g*C + c, j]`` (a grouped
    contraction: the consumer's K block holds whole groups) computed on tensor cores: for the
    ``BK`` values of the consumer's block, ``x`` is loaded as one ``[BM, BK/J*C]`` tile over
    (groups of the block, c) and multiplied by the block-diagonal ``[BK/J*C, BK]`` tile of ``w``
    (zero across groups). The zeros cost ``BK/J`` times the producer's MACs, still far below an FMA
    recompute per tap, and the intermediate never leaves registers. None when the shapes do not
    fit (then the FMA loop runs)."""
    from .kernel import _decompose

    views = fused_views(acc, prod)
    if len(views) != 2:
        return None
    data = [v for v in views if v.used & rows]
    weight = [v for v in views if not v.used & rows]
    if len(data) != 1 or len(weight) != 1:
        return None
    data, weight = data[0], weight[0]
    f_cls = list(prod.summed)
    ix = [c for c in split.inner if c in data.used]
    iw = [c for c in split.inner if c not in data.used]
    if not ix or not f_cls or split.inner != ix + iw:
        return None  # the block must hold whole groups: group classes slower than the rest
    s_iw, s_f, s_ix = _static(iw, values), _static(f_cls, values), _static(ix, values)
    if not (_pow2(s_iw) and _pow2(s_f)) or s_ix is None or s_iw > 16:
        return None
    run = ix + f_cls
    run_set, iw_set = set(run), set(iw)
    for e in data.index + data.masks:
        if mentions(e) & run_set and mentions(e) & rows:
            return None
    for e in weight.index + weight.masks:
        if mentions(e) & run_set and mentions(e) & iw_set:
            return None
    kx = f"BK // {s_iw} * {s_f}"
    xmp = dict(mp)
    xmp.update({c: f"x_c{c}" for c in run})
    lines = [f"# fused: {acc.leaf} = stage {prod.name} on tensor cores, block-diagonal over "
             f"{[c for c in ix]}",
             f"offs_x = ((it % n_kb) * BK) // {s_iw} * {s_f} + tl.arange(0, {kx})",
             f"mask_x = offs_x < {s_ix * s_f}"]
    lines += _decompose("offs_x", run, "x_", values, {}, "")
    linear = linear_axis(data, run, strides.get(data.leaf), values)
    parts = split_access(data, ptr[data.leaf], xmp, rows, run_set, linear, offs="offs_x")
    lines.append(f"xa = {load_expr(parts, ptr[data.leaf], True, 'mask_m', 'mask_x', offs='offs_x')}")
    parts = split_access(weight, ptr[weight.leaf], xmp, iw_set, run_set, None, offs="offs_x")
    lines.append(f"xw = {load_expr(parts, ptr[weight.leaf], False, 'mask_k', 'mask_x', offs='offs_x')}")
    diag = " & ".join(f"(x_c{c}[:, None] == k_c{c}[None, :])" for c in ix)
    lines.append(f"xw = tl.where({diag}, xw, 0.0)")
    prec = ", input_precision=PREC" if dot_t == "tl.float32" else ""
    lines.append(f"{var} = tl.dot(xa.to({dot_t}), xw.to({dot_t}){prec})")
    cond = where_masks(acc, mp, rows, set(split.inner), True, "mask_m", "mask_k")
    if cond:
        lines.append(f"{var} = tl.where({cond}, {var}, 0.0)")
    return lines


__all__ = ["dot_producer", "TapSplit", "choose_split", "split_access", "load_expr", "tile_address", "where_masks", "fused_views",
           "structured_loop"]
