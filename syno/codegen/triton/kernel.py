"""Stage -> Triton source: one implicit-GEMM kernel per stage.

The result tile is ``[BM, BN]`` over the stage's output classes split into

* batch classes (held by both operands and kept): one program per value (scalars),
* M classes (kept, not held by B) and N classes (kept, held by B only): flattened row/column
  indices decomposed with div/mod into class values,

and the K loop walks the summed classes in ``BK`` blocks. Loads compute each buffer axis's index
expression (the plan's views) from the class values, with masks for Unfold's zero padding, and
``tl.dot`` accumulates in fp32 on tensor cores. One-operand stages (sums, output copies) reduce
with ``tl.sum``. The store goes through the stage's store view (plain, or ``tl.atomic_add`` for a
gradient scattered through a non-injective view).

Class orders inside M, N and K follow the buffers' strides (largest stride slowest), so a block
of consecutive indices touches memory that is as contiguous as the layouts allow.
"""

from __future__ import annotations

from dataclasses import dataclass

from .gemm import TapSplit, choose_split, fused_views, structured_loop
from .grouped import GroupedSplit, grouped_body, grouped_split
from .stages import Access, Program, Stage, mentions, substitute

DOT_DTYPES = {"float32": "tl.float32", "bfloat16": "tl.bfloat16", "float16": "tl.float16",
              "float64": "tl.float64"}


@dataclass(frozen=True)
class KernelSpec:
    """Everything the launcher needs besides the source."""

    name: str
    leaves: tuple[str, ...]          # pointer arguments, in order
    ranks: tuple[int, ...]           # stride arguments per leaf
    dynamic: tuple[str, ...]         # runtime size arguments (e.g. v_N)
    m_size: str
    n_size: str
    batch_size: str
    k_size: str
    two: bool                        # tl.dot tile (else one flat row index and tl.sum)
    atomic: bool
    split_ok: bool = True            # may split K (store is accumulate-safe)
    #: a thin grouped stage (:mod:`.grouped`): BK is derived from BN (block_width), no split-K
    grouped: bool = False
    per_group: int = 1
    width: int = 1


def _eff_strides(acc: Access, strides: dict[str, tuple[int, ...]]) -> dict[int, int]:
    """How far (in elements) a class moves the address of ``acc``, summed over axes naming it."""
    out: dict[int, int] = {}
    st = strides.get(acc.leaf)
    for k, e in enumerate(acc.index):
        for c in mentions(e):
            out[c] = out.get(c, 0) + (st[k] if st else 1)
    return out


def _order(classes, weight: dict[int, int], dynamic: set[int]) -> list[int]:
    """Slowest first: dynamic sizes outermost (their size is a runtime value), then by stride."""
    return sorted(classes, key=lambda c: (c not in dynamic, -weight.get(c, 0)))


def _prod(it) -> int:
    out = 1
    for v in it:
        out *= v
    return out


def _size(classes, values, dyn_names: dict[int, str]) -> str:
    static, dyn = 1, []
    for c in classes:
        if c in dyn_names:
            dyn.append(dyn_names[c])
        else:
            static *= values[c]
    return " * ".join(dyn + [str(static)]) if dyn else str(static)


def _decompose(var: str, classes: list[int], prefix: str, values, dyn_names: dict[int, str],
               indent: str) -> list[str]:
    """Lines splitting the flat index ``var`` into one variable ``<prefix>c<id>`` per class (mixed
    radix, last class fastest): how every flattened tile index is turned back into class indices."""
    lines, rest = [], var
    for j, c in enumerate(reversed(classes)):
        size = dyn_names.get(c, str(values[c]))
        if j == len(classes) - 1:
            lines.append(f"{indent}{prefix}c{c} = {rest}")
        else:
            lines.append(f"{indent}{prefix}c{c} = {rest} % {size}")
            lines.append(f"{indent}{prefix}r{c} = {rest} // {size}")
            rest = f"{prefix}r{c}"
    return lines


@dataclass(frozen=True)
class Partition:
    """How a stage's classes map onto the tile: batch (one program per value), rows (M), columns
    (N), the reduction (K, slowest first) and, for tl.dot stages, the tap/block split of K."""

    two: bool
    batch: list[int]
    m_cls: list[int]
    n_cls: list[int]
    k_cls: list[int]
    structured: TapSplit | None
    grouped: GroupedSplit | None = None


def partition(prog: Program, stage: Stage, strides: dict[str, tuple[int, ...]],
              fused: dict[str, Stage] | None = None, grouped_ok: bool = True) -> Partition:
    fused = fused or {}
    plan = prog.plan
    vals = plan.values
    dynamic = {cid for _, (_, cid) in plan.analysis.dynamic.items()}
    ops = stage.operands
    two = len(ops) == 2
    a_cls = set(ops[0].classes)
    b_cls = set(ops[1].classes) if two else set()
    out = list(stage.out)
    if two:
        batch = [c for c in out if c in a_cls and c in b_cls]
        n_cls = [c for c in out if c in b_cls and c not in a_cls]
        k_static = all(c not in dynamic for c in stage.summed)
        n_static = all(c not in dynamic for c in n_cls)
        small = (k_static and _prod(vals[c] for c in stage.summed) < 16) or \
                (n_static and _prod(vals[c] for c in n_cls) < 16)
        if small:
            # too thin for a GEMM (e.g. a grouped 1x1 conv with 2 channels per group): block-
            # diagonal dots once per output tile where the stage is grouped (:mod:`.grouped`),
            # else one flat row index over every output class summed with tl.sum (FMA units)
            store_w = _eff_strides(stage.store, strides)
            grouped = grouped_split(stage, vals, dynamic, strides, lambda cls: _order(cls, store_w, dynamic)) \
                if grouped_ok and not set(a.leaf for a in ops) & set(fused) else None
            if grouped is not None:
                return Partition(True, [], grouped.rows, grouped.groups + grouped.free, grouped.reduce, None,
                                 grouped)
            two, batch, n_cls = False, [], []
    else:
        batch, n_cls = [], []
    m_cls = [c for c in out if c not in batch and c not in n_cls]
    store_w = _eff_strides(stage.store, strides)
    k_w: dict[int, int] = {}
    # the reduction follows the activations' layout (x, intermediates): weights are packed to
    # match it (weight_layouts), so their as-allocated strides must not reorder K
    weights = set(prog.inputs) - {"x"}
    led = [a for a in ops if a.leaf not in weights] or list(ops)
    for a in led:
        for c, s in _eff_strides(a, strides).items():
            k_w[c] = k_w.get(c, 0) + s
    m_cls = _order(m_cls, store_w, dynamic)
    n_cls = _order(n_cls, store_w, dynamic)
    k_cls = _order(stage.summed, k_w, dynamic)
    batch = _order(batch, store_w, dynamic)
    structured = None
    if two:
        rows = []
        for acc, vec in ((ops[0], set(m_cls)), (ops[1], set(n_cls))):
            if acc.leaf in fused:
                rows += [(v, vec) for v in fused_views(acc, fused[acc.leaf])]
                rows.append((Access(acc.leaf, (), acc.classes, acc.masks), vec))
            else:
                rows.append((acc, vec))
        structured = choose_split(k_cls, rows, vals, dynamic)
    return Partition(two, batch, m_cls, n_cls, k_cls, structured)


def b_layout(prog: Program, stage: Stage, strides: dict[str, tuple[int, ...]],
             fused: dict[str, Stage] | None = None) -> tuple[str, tuple[int, ...]] | None:
    """(weight, physical axis order) that makes a tap-structured stage's B tile a plain GEMM
    operand: taps outermost, then the K block (one contiguous run), then the columns (stride 1,
    coalesced, vectorised). None when B is not a plainly indexed input of such a stage."""
    part = partition(prog, stage, strides, fused)
    if not part.two or part.structured is None:
        return None
    b = stage.operands[1]
    if b.leaf not in prog.inputs or b.leaf == "x" or b.masks:
        return None
    axis_of = {}
    for k, e in enumerate(b.index):
        cls = mentions(e)
        if e.strip("()") != f"c{next(iter(cls))}" if len(cls) == 1 else True:
            return None
        axis_of[next(iter(cls))] = k
    order = [c for c in part.batch + part.structured.outer + part.structured.inner + part.n_cls
             if c in axis_of]
    if sorted(axis_of[c] for c in order) != list(range(len(b.index))):
        return None
    return b.leaf, tuple(axis_of[c] for c in order)


def stage_source(prog: Program, stage: Stage, index: int, strides: dict[str, tuple[int, ...]],
                 dtype: str = "float32", fused: dict[str, Stage] | None = None,
                 producer_dot: bool = True, grouped_ok: bool = True) -> tuple[str, KernelSpec]:
    """Triton source of ``stage`` (kernel ``stage<index>``) for buffers with the given (typical)
    strides; any strides work at run time, these only choose the loop orders.

    ``producer_dot``: fused grouped producers on tensor cores where they fit (:mod:`.gemm`).

    ``fused``: intermediate buffer -> the stage producing it. An operand reading such a buffer
    computes its tile in registers from the producer's operands (a short loop over the
    producer's summed classes) instead of loading it, so the intermediate never goes to memory."""
    fused = fused or {}
    plan = prog.plan
    values = plan.values
    dyn_names = {cid: "v_" + name for name, (_, cid) in plan.analysis.dynamic.items()}
    ops = stage.operands
    part = partition(prog, stage, strides, fused, grouped_ok=grouped_ok and dtype != "float64")
    two, batch, m_cls, n_cls, k_cls, structured = (part.two, part.batch, part.m_cls, part.n_cls,
                                                   part.k_cls, part.structured)

    read: list[str] = []
    for a in ops:
        read += [p.leaf for p in fused[a.leaf].operands] if a.leaf in fused else [a.leaf]
    leaves = tuple(dict.fromkeys(read + [stage.store.leaf]))
    ranks = tuple(len(prog.leaves[l]) if l in prog.leaves else len(prog.leaves[l[2:]]) for l in leaves)
    all_cls = set(stage.classes)
    for a in ops:
        if a.leaf in fused:
            all_cls |= fused[a.leaf].classes
    used_dyn = sorted({dyn_names[c] for c in all_cls if c in dyn_names})
    name = f"stage{index}"
    ptr = {l: f"p_{l}" for l in leaves}
    args = [ptr[l] for l in leaves]
    for l, r in zip(leaves, ranks):
        args += [f"s_{l}_{k}" for k in range(r)]
    args += used_dyn
    args += ["BM: tl.constexpr", "BN: tl.constexpr", "BK: tl.constexpr", "SPLIT: tl.constexpr",
             "PREC: tl.constexpr"]
    L: list[str] = []
    w = L.append
    cn = prog.plan.classes
    w("@triton.jit")
    w(f"def {name}({', '.join(args)}):")
    desc = " * ".join(
        f"{a.leaf}[{', '.join(a.index)}]" for a in ops)
    w(f"    # {stage.kind}: {stage.store.leaf}[{', '.join(stage.store.index)}] "
      f"{'+=' if stage.atomic else '='} sum over {[cn[c].name for c in stage.summed]} of {desc}")
    w(f"    # classes: " + ", ".join(f"c{c}={cn[c].name}:{values[c]}" for c in sorted(stage.classes)))
    m_size = _size(m_cls, values, dyn_names)
    n_size = _size(n_cls, values, dyn_names)
    k_size = _size(k_cls, values, dyn_names)
    b_size = _size(batch, values, dyn_names)
    w(f"    M = {m_size}  # rows: {[cn[c].name for c in m_cls]}")
    w(f"    N = {n_size}  # columns: {[cn[c].name for c in n_cls]}")
    w(f"    K = {k_size}  # reduction: {[cn[c].name for c in k_cls]}")
    w("    pid = tl.program_id(0)")
    w("    num_m = tl.cdiv(M, BM)")
    w("    num_n = tl.cdiv(N, BN)")
    w("    pid_b = pid // (num_m * num_n)")
    w("    pid_m = (pid // num_n) % num_m")
    w("    pid_n = pid % num_n")

    def decompose(var: str, classes: list[int], prefix: str) -> None:
        for line in _decompose(var, classes, prefix, values, dyn_names, "    "):
            w(line)

    decompose("pid_b", batch, "b_")
    w("    offs_m = pid_m * BM + tl.arange(0, BM)")
    w("    mask_m = offs_m < M")
    decompose("offs_m", m_cls, "m_")
    dot_t = DOT_DTYPES[dtype]
    if part.grouped is not None:
        prec = ", input_precision=PREC" if dtype == "float32" else ""
        L.extend(grouped_body(stage, part.grouped, m_cls, batch, values, strides, ptr,
                              f"tl.dot(a.to({dot_t}), b.to({dot_t}){prec})"))
        spec = KernelSpec(name, leaves, ranks, tuple(used_dyn), m_size, n_size, b_size, k_size, True,
                          False, split_ok=False, grouped=True, per_group=part.grouped.per_group,
                          width=part.grouped.width)
        return "\n".join(L) + "\n", spec
    if two:
        w("    offs_n = pid_n * BN + tl.arange(0, BN)")
        w("    mask_n = offs_n < N")
        decompose("offs_n", n_cls, "n_")

    acc_shape = "(BM, BN)" if two else "(BM,)"
    acc_t = "tl.float64" if dtype == "float64" else "tl.float32"  # accumulation type
    w(f"    acc = tl.zeros({acc_shape}, dtype={acc_t})")
    if dtype == "float32":
        dot = f"acc = tl.dot(a.to({dot_t}), b.to({dot_t}), acc, input_precision=PREC)"
    elif dtype == "float64":
        dot = "acc += tl.sum(a.to(tl.float64)[:, :, None] * b.to(tl.float64)[None, :, :], axis=1)"
    else:
        dot = f"acc = tl.dot(a.to({dot_t}), b.to({dot_t}), acc)"
    if structured is not None:
        L.extend(structured_loop(ops, fused, m_cls, n_cls, batch, structured, values, dyn_names, ptr,
                                 acc_t, dot, strides,
                                 dot_t if producer_dot and dtype != "float64" else None))
    else:
        _flat_loop(L, ops, fused, two, m_cls, n_cls, k_cls, batch, values, dyn_names, ptr, acc_t, dot)
    _store(L, stage, two, m_cls, n_cls, batch, ptr)
    spec = KernelSpec(name, leaves, ranks, tuple(used_dyn), m_size, n_size, b_size, k_size, two,
                      stage.atomic)
    return "\n".join(L) + "\n", spec


def _ctx(which: str, two: bool, batch, m_cls, n_cls, k_cls) -> dict[int, str]:
    """How a class variable reads inside a tile expression: a_ (BM x BK), b_ (BK x BN),
    o_ (BM x BN, or BM for one-operand stages)."""
    mp = {c: f"b_c{c}" for c in batch}
    if which == "a":
        mp.update({c: f"m_c{c}[:, None]" for c in m_cls})
        mp.update({c: f"k_c{c}[None, :]" for c in k_cls})
    elif which == "b":
        mp.update({c: f"k_c{c}[:, None]" for c in k_cls})
        mp.update({c: f"n_c{c}[None, :]" for c in n_cls})
    else:
        mp.update({c: (f"m_c{c}[:, None]" if two else f"m_c{c}") for c in m_cls})
        mp.update({c: f"n_c{c}[None, :]" for c in n_cls})
    return mp


def _address(acc: Access, ptr, mp: dict[int, str], tile: str) -> str:
    # the zero tile broadcasts addresses that depend on only some of the tile's axes
    terms = [tile]
    for k, e in enumerate(acc.index):
        terms.append(f"({substitute(e, mp)}) * s_{acc.leaf}_{k}")
    return f"{ptr[acc.leaf]} + " + " + ".join(terms)


def _masks(acc: Access, mp: dict[int, str], base: list[str]) -> str:
    return " & ".join(base + [substitute(m, mp) for m in acc.masks])


def _flat_loop(L, ops, fused, two, m_cls, n_cls, k_cls, batch, values, dyn_names, ptr, acc_t, dot) -> None:
    """The generic K loop: one flat K index decomposed into every summed class per element
    (weight gradients summing over pixels, thin stages, anything :mod:`.gemm` does not fit)."""
    w = L.append
    w("    zero_a = tl.zeros((BM, BK), dtype=tl.int32)")
    if two:
        w("    zero_b = tl.zeros((BK, BN), dtype=tl.int32)")
    # SPLIT > 1: programs also split K (a weight gradient: small output, huge reduction)
    w("    pid_k = tl.program_id(1)")
    w("    k_chunk = tl.cdiv(tl.cdiv(K, SPLIT), BK) * BK")
    w("    for k0 in range(pid_k * k_chunk, tl.minimum(K, (pid_k + 1) * k_chunk), BK):")
    inner: list[str] = []
    inner.append("offs_k = k0 + tl.arange(0, BK)")
    inner.append("mask_k = offs_k < K")
    inner.extend(_decompose("offs_k", k_cls, "k_", values, dyn_names, ""))

    def load(var: str, acc: Access, mp: dict[int, str], zero: str, base: list[str], shape: str) -> None:
        if acc.leaf not in fused:
            inner.append(f"{var} = tl.load({_address(acc, ptr, mp, zero)},\n                    "
                         f"mask={_masks(acc, mp, base)}, other=0.0)")
            return
        # recompute the producer for exactly the elements this tile reads: its output classes
        # become this operand's index expressions, its summed classes a short scalar loop
        prod = fused[acc.leaf]
        r_cls = list(prod.summed)
        fmp = dict(mp)
        fmp.update({c: f"f_c{c}" for c in r_cls})
        inner.append(f"{var} = tl.zeros({shape}, dtype={acc_t})  # fused: {acc.leaf} = stage {prod.name}")
        inner.append(f"for fr in range({_size(r_cls, values, dyn_names)}):")
        inner.extend(_decompose("fr", r_cls, "f_", values, dyn_names, "    "))
        terms = []
        for q, view in enumerate(fused_views(acc, prod)):
            inner.append(f"    f{q} = tl.load({_address(view, ptr, fmp, zero)},\n                        "
                         f"mask={_masks(view, fmp, base)}, other=0.0).to({acc_t})")
            terms.append(f"f{q}")
        inner.append(f"    {var} += {' * '.join(terms)}")
        if acc.masks:
            inner.append(f"{var} = tl.where({_masks(acc, mp, base)}, {var}, 0.0)")

    a, mp = ops[0], _ctx("a", two, batch, m_cls, n_cls, k_cls)
    load("a", a, mp, "zero_a", ["mask_m[:, None]", "mask_k[None, :]"], "(BM, BK)")
    if two:
        b, mp = ops[1], _ctx("b", two, batch, m_cls, n_cls, k_cls)
        load("b", b, mp, "zero_b", ["mask_k[:, None]", "mask_n[None, :]"], "(BK, BN)")
        inner.append(dot)
    elif len(ops) == 2:
        load("b", ops[1], mp, "zero_a", ["mask_m[:, None]", "mask_k[None, :]"], "(BM, BK)")
        inner.append(f"acc += tl.sum(a.to({acc_t}) * b.to({acc_t}), axis=1)")
    else:
        inner.append(f"acc += tl.sum(a.to({acc_t}), axis=1)")
    for line in inner:
        w("        " + line)


def _store(L, stage: Stage, two: bool, m_cls, n_cls, batch, ptr) -> None:
    w = L.append
    if stage.scale != 1.0:
        w(f"    acc = acc * {stage.scale!r}")
    st, mp = stage.store, _ctx("o", two, batch, m_cls, n_cls, [])
    zero_o = "tl.zeros((BM, BN), dtype=tl.int32)" if two else "tl.zeros((BM,), dtype=tl.int32)"
    base = ["mask_m[:, None]", "mask_n[None, :]"] if two else ["mask_m"]
    addr, mask = _address(st, ptr, mp, zero_o), _masks(st, mp, base)
    if stage.atomic:
        w(f"    tl.atomic_add({addr}, acc,\n                  mask={mask})")
    else:
        w("    if SPLIT == 1:")
        w(f"        tl.store({addr}, acc.to({ptr[st.leaf]}.dtype.element_ty),\n"
          f"                 mask={mask})")
        w("    else:")
        w(f"        tl.atomic_add({addr}, acc,\n"
          f"                      mask={mask})")


__all__ = ["stage_source", "KernelSpec"]
