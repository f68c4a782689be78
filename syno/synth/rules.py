"""Candidate ops per node, filtered by the canonicalization rules (reference §4).

Rule ids in comments are the reference's. "Operand is an X top" means the frontier dim being
transformed was produced by an X op. Every rule here is a property of the partial operator (never of
the path taken), and none depends on reduction multiplicities, so rules commute with the canonical
relabelling of :mod:`syno.synth.state`.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

import numpy as np

from syno.ir.primitives import Dim, Merge, ReduceDim, Shift, Split, Stride, Unfold

from . import analysis as A
from .state import C_EXPAND, C_MERGE, C_REDUCE, C_SHARE, C_SHIFT, C_SPLIT, C_STRIDE, C_UNFOLD, State

if TYPE_CHECKING:  # pragma: no cover
    from .space import SynthSpace


def _move(t: str, key_text: str, payload: tuple):
    from .space import Move, _h
    return Move(t, _h(key_text), payload)


def _op_key(name: str, params: tuple, bottoms: tuple[Dim, ...]) -> str:
    """Same text as ``Op.describe_key`` (so keys equal the op's content digest)."""
    return f"{name}[{','.join(str(p) for p in params)}](" + ",".join(b.digest for b in bottoms) + ")"


def _chain_ok(sp: SynthSpace, *dims: Dim) -> bool:
    """C2: the new top stays within the chain length."""
    return 1 + max(d.height for d in dims) <= sp.options.max_chain_length


def _size_key(sp: SynthSpace, s) -> tuple:
    return (sp.upper(s), s.exps)


# ------------------------------------------------------------------------------------- Reduce
def reduce_sizes(sp: SynthSpace, s: State) -> list:
    """The domains of the Reduce children of ``s`` (the sizes :func:`reduce_moves` turns into
    moves; the reduction-phase look-ahead needs only these, not the edge keys)."""
    o = sp.options
    n_red = s.counts[C_REDUCE]
    # Reductions come first (reduction phase) and in non-decreasing domain order: one path per
    # multiset of reductions (fixes the original's known gap, reference §4 last line).
    if not s.in_reduction_phase or n_red >= o.max_reductions:
        return []
    base = sp._enum_base()
    if not base:
        return []
    idx = sp._red_index.get(s.reductions)
    if idx is None:
        # (in the reduction phase the state, its usage included, follows from its reductions.) The
        # sizes allowed after these reductions are among those allowed after all but the last one:
        # the allowance only shrinks, the order start and the product below only grow. So filter
        # those (computed when the walk or the look-ahead passed there) rather than the whole base.
        cand = sp._red_index.get(s.reductions[:-1]) if s.reductions else None
        if cand is None:
            cand = np.arange(len(base))
        allow = np.array(sp.allowance(s.usage), dtype=np.int64)
        ok = np.all(sp._red_abs[cand] <= allow, axis=1)
        if s.reductions:
            ok &= cand >= bisect.bisect_left(sp._red_exps, s.reductions[-1].size.exps)
        # "at most one matmul": prod(reductions) / numel(input) <= max_size_multiplier, every mapping
        prod = sp.size_space.one
        for r in s.reductions:
            prod = prod * r.size
        scale = np.array([float(v) for v in sp.bindings.values(prod / sp.problem.input_numel)])
        ok &= np.all(sp._red_vals[cand] * scale <= o.max_size_multiplier * (1 + 1e-12), axis=1)
        idx = sp._red_index[s.reductions] = cand[ok]
    return [base[i] for i in idx]


def reduce_moves(sp: SynthSpace, s: State) -> list:
    counts: dict = {}
    for r in s.reductions:
        counts[r.size] = counts.get(r.size, 0) + 1
    return [_move("Reduce", f"R{counts.get(size, 0)}:{size}", (size,)) for size in reduce_sizes(sp, s)]


# ------------------------------------------------------------------------------------- Expand
def expand_moves(sp: SynthSpace, s: State) -> list:
    o = sp.options
    if not sp.expands_enabled() or sp.cap_left(s, C_EXPAND, "expands") <= 0:
        return []
    rep = sp.repeat_numel(s)
    expanded_bases = {_base(x) for x in s.expanded}
    out = []
    for d in s.current:
        k = A.kind(d)
        if not (k == "MergeR" or (k == "MergeL" and o.allow_tile)):  # E1
            continue
        if not o.allow_tile and A.top_of(d.op.bottoms[0], Merge):  # E1: nested repeat = tile
            continue
        if not sp.is_new(s, d):  # C3
            continue
        if any(n in expanded_bases for n in A.merge_neighbours(d)):  # E2
            continue
        if sp.upper(rep * d.size) > o.max_expansion_repeat_multiplier:  # E3
            continue
        out.append(_move("Expand", _op_key("Expand", (), (d,)), (d,)))
    return out


def _base(d: Dim) -> Dim:
    while A.is_share_l(d):
        d = d.op.bottoms[0]
    return d


# ------------------------------------------------------------------------------------- Shift
def shift_moves(sp: SynthSpace, s: State) -> list:
    o = sp.options
    if sp.cap_left(s, C_SHIFT, "shifts") <= 0:
        return []
    out = []
    for d in s.current:
        if isinstance(d, ReduceDim) or A.is_share_l(d) or A.top_of(d, Shift):  # H1
            continue
        if o.disallow_shift_above_unfold and A.top_of(d, Unfold):
            continue
        if A.is_unordered(d):  # H2
            continue
        if A.top_of(d, Split) and sp.upper(d.op.bottoms[1].size) > o.max_shift_rhs:  # H3
            continue
        if not _chain_ok(sp, d) or not sp.is_new(s, d):  # C2, C3
            continue
        out.append(_move("Shift", _op_key("Shift", (), (d,)), (d,)))
    return out


# ------------------------------------------------------------------------------------- Stride
def stride_moves(sp: SynthSpace, s: State) -> list:
    o = sp.options
    if sp.cap_left(s, C_STRIDE, "strides") <= 0:
        return []
    strides = [x for x in sp._enum_sizes(sp.allowance(s.usage)) if x.is_coefficient()]
    out = []
    for d in s.current:
        if A.top_of(d, Unfold) or A.top_of(d, Stride):  # T1
            continue
        if o.disallow_stride_above_split and A.top_of(d, Split):
            continue
        if o.disallow_stride_above_merge_r and A.kind(d) == "MergeR":
            continue
        if not _chain_ok(sp, d) or not sp.is_new(s, d):
            continue
        for st in strides:
            top = st * d.size
            if not sp.size_ok(top) or sp.upper(top) > o.max_strided_dim_size:  # T2
                continue
            out.append(_move("Stride", _op_key("Stride", (st,), (d,)), (d, st)))
    return out


# ------------------------------------------------------------------------------------- Split
def split_moves(sp: SynthSpace, s: State) -> list:
    if sp.cap_left(s, C_SPLIT, "splits") <= 0:
        return []
    out = []
    cur = s.current
    limit = sp.options.max_chain_length
    # per dim, once per state (the rules below test pairs): height, new (C3), Merge (op, slot),
    # reduced boundary pieces, weight ids of Share-data atoms, unordered scope, merge root
    facts = []
    for d in cur:
        atoms_w = [x.op.weight for x in A.split_atoms(d) if A.is_share_l(x)]
        is_merge = A.top_of(d, Merge)
        facts.append((d.height, not s.n_weights or sp.is_new(s, d), is_merge, getattr(d, "op", None),
                      getattr(d, "slot", None), isinstance(A.boundary(d, 0), ReduceDim),
                      isinstance(A.boundary(d, 1), ReduceDim), atoms_w, A.unordered_scope(d),
                      A.merge_root(d) if is_merge else None, A.top_of(d, Split)))
    for lhs, fl in zip(cur, facts):
        if fl[10]:  # S1: right-nested chains only
            continue
        for rhs, fr in zip(cur, facts):
            if rhs is lhs or 1 + max(fl[0], fr[0]) > limit:  # C2
                continue
            if s.n_weights and not (fl[1] or fr[1]):  # C3
                continue
            if fl[2] and fl[3] is fr[3] and fl[4] == 0 and fr[4] == 1:  # S2: split . merge = identity
                continue
            if fl[6] and fr[5]:
                continue  # S2: two adjacent reduced pieces = one reduction of the product domain
            ws = fl[7] + fr[7]
            if len(ws) != len(set(ws)):  # S3: reshape could be applied to the weight instead
                continue
            sl, sr = fl[8], fr[8]
            if sl is not None and sl is sr and fl[9] is not None and fl[9] is fr[9]:
                continue  # S4: permuting an unordered dim
            out.append(_move("Split", _op_key("Split", (), (lhs, rhs)), (lhs, rhs)))
    return out


# ------------------------------------------------------------------------------------- Unfold
def unfold_moves(sp: SynthSpace, s: State) -> list:
    o = sp.options
    if sp.cap_left(s, C_UNFOLD, "unfolds") <= 0:
        return []
    out = []
    cur = s.current
    for main in cur:
        if o.disallow_unfold_l_above_split and A.top_of(main, Split):  # U1 options
            continue
        if o.disallow_unfold_l_above_shift and A.top_of(main, Shift):
            continue
        if o.disallow_unfold_l_above_merge_r and A.kind(main) == "MergeR":
            continue
        if A.ends_up_reduce(main):  # U2
            continue
        prev = main.op.window if A.top_of(main, Unfold) else None
        for win in cur:
            if win is main or isinstance(win, ReduceDim):  # U1: window not a raw reduction
                continue
            if not _chain_ok(sp, main, win):
                continue
            if s.n_weights and not (sp.is_new(s, main) or sp.is_new(s, win)):  # C3 (as for Split)
                continue
            k = win.size
            vals = sp.bindings.values(k)
            if o.odd_unfold_kernels and any(v.denominator != 1 or v.numerator % 2 == 0 for v in vals):  # U3
                continue
            if sp.upper(k) > o.max_unfold_kernel_size:  # U4
                continue
            if sp.lower(main.size / k) < o.min_unfold_ratio:
                continue
            if prev is not None and o.canonicalize_unfold_order and _size_key(sp, k) < _size_key(sp, prev):  # U5
                continue
            out.append(_move("Unfold", _op_key("Unfold", (), (main, win)), (main, win)))
    return out


# ------------------------------------------------------------------------------------- Merge
def merge_moves(sp: SynthSpace, s: State) -> list:
    o = sp.options
    if sp.cap_left(s, C_MERGE, "merges") <= 0:
        return []
    allow = sp.allowance(s.usage)
    out = []
    for d in s.current:
        k = A.kind(d)
        if k in ("ShareL", "ShareR", "Split", "MergeL"):  # M1
            continue
        if isinstance(d, ReduceDim):  # M2
            continue
        if not _chain_ok(sp, d) or not sp.is_new(s, d):
            continue
        unordered = A.is_unordered(d)
        for block in sp._merge_blocks(d.size, allow):
            major = d.size / block
            if k == "Shift" and sp.upper(block) > o.max_shift_rhs:  # M3
                continue
            if k == "Stride" and o.disallow_merge_with_large_block_above_stride \
                    and sp.lower(block / d.op.stride) >= 1:  # M4
                continue
            if k == "Unfold":
                win = d.op.window
                if o.disallow_merge_with_large_block_above_unfold and sp.lower(block / win) >= 1:  # M5
                    continue
                if (win / block).is_coefficient():  # M6
                    continue
            if unordered:  # M7: canonical order of channel factors
                if block.exps < major.exps:
                    continue
                if k == "MergeR" and major.exps < d.op.tops[0].size.exps:
                    continue
            out.append(_move("Merge", _op_key("Merge", (block,), (d,)), (d, block)))
    return out


# ------------------------------------------------------------------------------------- Contraction
def contraction_moves(sp: SynthSpace, s: State) -> list:
    o = sp.options
    if not sp.can_contract(s):  # K5 (max tensors), share cap
        return []
    wid = s.n_weights + 1
    shares_left = o.cap("shares") - s.counts[C_SHARE]
    allow = list(sp.allowance(s.usage))
    coef = o.count_coefficients_in_weights_as_allowance_usage
    outer0 = sp.outer_numel(s)
    cands = []
    for d in s.current:
        if A.data_discarding(d) or not _chain_ok(sp, d):
            continue
        if not sp.fits(allow, d.size, coef):
            continue
        t, _ = A.contraction_type(d)
        if t == "weights_sharing":
            u = sp.upper(d.size)
            can_outer = o.min_weight_share_dim <= u <= o.max_weight_share_dim
        else:
            can_outer = t == "merge"
        cands.append((d, t, can_outer))
    if len(cands) < 2:
        return []
    # K4: contractions independent of the previous weight come in canonical (leader) order.
    prev_leader = None
    if s.n_weights:
        prev = [w.op.bottoms[0] for w in s.weights if w.op.weight == s.n_weights]
        prev_leader = min(A.order_key(x) for x in prev)
    out = []
    chosen: list[tuple[Dim, bool]] = []
    n = len(cands)

    def emit():
        n_outer = sum(1 for _, e in chosen if e)
        if len(chosen) < 2 or n_outer == 0 or n_outer == len(chosen):  # K1
            return
        numel = sp.size_space.one
        for d, _ in chosen:
            numel = numel * d.size
        if sp.lower(numel) < o.min_single_weight_params:  # K2
            return
        if prev_leader is not None and not any(s.n_weights in A.weights_below(d) for d, _ in chosen):
            if min(A.order_key(d) for d, _ in chosen) < prev_leader:  # K4 (ties allowed)
                return
        payload = tuple(sorted(chosen, key=lambda x: x[0].digest))
        text = f"Contraction{wid}:" + ",".join(d.digest + ("+" if e else "") for d, e in payload)
        out.append(_move("Contraction", text, payload))

    # K1 needs two Shares, one of them an outer product: subtrees that cannot reach that emit nothing
    outer_after = [False] * (n + 1)
    for i in range(n - 1, -1, -1):
        outer_after[i] = outer_after[i + 1] or cands[i][2]

    def dfs(i: int, outer: object) -> None:
        if len(chosen) + n - i < 2 or not (outer_after[i] or any(e for _, e in chosen)):
            return
        if i == n:
            emit()
            return
        dfs(i + 1, outer)  # skip
        if len(chosen) >= shares_left:
            return
        d, t, can_outer = cands[i]
        if not sp.fits(allow, d.size, coef):
            return
        for k, e in enumerate(d.size.exps):
            if k < sp.n_primary or coef:
                allow[k] -= abs(e)
        chosen.append((d, False))
        dfs(i + 1, outer)  # inner (plain) Share
        chosen.pop()
        if can_outer:
            ok = True
            if t == "merge":
                new_outer = outer * d.size
                ok = sp.upper(new_outer) <= o.max_expansion_merge_multiplier
            else:
                new_outer = outer
            if ok and any(_adjacent(d, x) for x, e in chosen if e):  # K3
                ok = False
            if ok:
                chosen.append((d, True))
                dfs(i + 1, new_outer)  # outer product: Share + Expand
                chosen.pop()
        for k, e in enumerate(d.size.exps):
            if k < sp.n_primary or coef:
                allow[k] += abs(e)

    dfs(0, outer0)
    return out


def _adjacent(a: Dim, b: Dim) -> bool:
    a, b = _base(a), _base(b)
    return b in A.merge_neighbours(a) or a in A.merge_neighbours(b)


# ------------------------------------------------------------------------------------- Finalize
def finalize_moves(sp: SynthSpace, s: State) -> list:
    o = sp.options
    desired = sp.problem.desired
    unordered = sp.problem.desired_unordered
    if s.n_weights == 0 or len(s.current) != len(desired):  # F2; F1 (no leftover non-input dim)
        return []
    if any(A.data_discarding(d) for d in s.current):  # F1
        return []
    if not sp.pooling_ok(s):  # P1
        return []
    assignments: list[tuple[Dim, ...]] = []
    used: set = set()
    pick: list[Dim] = []

    def ok_for_unordered(d: Dim) -> bool:
        if A.top_of(d, Shift):  # H4: a cyclic shift of an unordered axis is a permutation
            return False
        if A.top_of(d, Split):  # O2: factor order of a reshaped unordered axis
            lhs, rhs = d.op.bottoms
            if rhs.size.exps < lhs.size.exps:
                return False
        return True

    def rec(j: int) -> None:
        if len(assignments) >= o.max_finalizations:  # F3 (all candidates tie on tensors/FLOPs)
            return
        if j == len(desired):
            assignments.append(tuple(pick))
            return
        for d in s.current:
            if d in used or d.size != desired[j]:
                continue
            if unordered[j] and not ok_for_unordered(d):
                continue
            used.add(d)
            pick.append(d)
            rec(j + 1)
            pick.pop()
            used.discard(d)

    rec(0)
    out = []
    for asg in assignments:
        # the FLOPs and params windows are checked when the edge is taken (SynthSpace._child)
        op = sp.build_operator(s, asg)
        out.append(_move("Finalize", "Finalize:" + ",".join(d.digest for d in asg), (asg, op)))
    return out


__all__ = ["reduce_sizes", "reduce_moves", "expand_moves", "shift_moves", "stride_moves", "split_moves", "unfold_moves",
           "merge_moves", "contraction_moves", "finalize_moves"]
