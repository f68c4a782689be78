"""Which partial operators are kept: contraction feasibility, pooling, FLOPs bounds, viability.

:class:`FeasibilityMixin` is the part of :class:`~syno.synth.space.SynthSpace` that decides
whether a new node can still be finished (``viable``): a further contraction can still be formed,
reductions can still get under Shares or be pooled (P1, ``share_needs``), the FLOPs window can
still be met, and the shape-distance bound (:mod:`syno.synth.shape`) fits the remaining depth;
reduction-phase nodes look ahead over more reductions. See docs/synthesis.md, "Bounds".
"""

from __future__ import annotations

from typing import Sequence

from syno.ir.primitives import Dim, ReduceDim
from syno.ir.sizes import Size

from . import analysis as A
from .flops import stage_lower_bound
from .state import C_MERGE, C_REDUCE, C_SHARE, State


class FeasibilityMixin:
    def remaining(self, state: State) -> int:
        return self.options.depth - state.depth

    def cap_left(self, state: State, slot: int, name: str) -> int:
        return self.options.cap(name) - state.counts[slot]

    def expands_enabled(self) -> bool:
        return self.options.max_expansion_repeat_multiplier > 1

    def can_contract(self, state: State) -> bool:
        """Limits allow another contraction now (K5, share cap, depth)."""
        o = self.options
        return (state.n_weights < o.max_tensors - 1 and self.remaining(state) >= 1
                and o.cap("shares") - state.counts[C_SHARE] >= 2)

    def contraction_possible(self, state: State) -> bool:
        """Could any future contraction still be formed? It needs two Shares (K1) whose primary
        occurrences fit the allowance, one of them an outer product: current dims that fit, plus
        pieces cut by the Merges still allowed (a Merge piece may be an outer product)."""
        key = state.key
        got = self._cposs.get(key)
        if got is None:
            got = self._contraction_possible(state)
            self._cposs[key] = got
        return got

    def _contraction_possible(self, state: State) -> bool:
        o = self.options
        if not self.can_contract(state):
            return False
        allow = self.allowance(state.usage)
        coef = o.count_coefficients_in_weights_as_allowance_usage
        outer = self.outer_numel(state)
        merges = self.cap_left(state, C_MERGE, "merges")
        fit = outer_ok = 0
        gains = 0
        ctx = (allow, outer, merges > 0)
        per_dim = self._cposs_dims.get(ctx)
        if per_dim is None:
            per_dim = self._cposs_dims[ctx] = {}
        for d in state.current:
            got = per_dim.get(d)
            if got is None:  # (fits the allowance, can be an outer product now, a Merge may cut a piece that fits)
                got = (False, False, False)
                if not (A.data_discarding(d) or d.height + 1 > o.max_chain_length):
                    f = self.fits(allow, d.size, coef)
                    got = (f, f and self.outer_ok(state, d, allow, outer),
                           merges > 0 and d.height + 2 <= o.max_chain_length
                           and A.kind(d) not in ("ShareL", "Split", "MergeL", "reduce")
                           and any(self.fits(allow, b, coef) or self.fits(allow, d.size / b, coef)
                                   for b in self._merge_blocks(d.size, allow)))
                per_dim[d] = got
            fit += got[0]
            outer_ok += got[1]
            gains += got[2]
        pieces = fit + min(gains, merges)
        return pieces >= 2 and (outer_ok > 0 or (merges > 0 and gains > 0))

    def is_new(self, state: State, d: Dim) -> bool:
        """C3: after a contraction, a dim is "new" if it lies above the latest weight's Shares."""
        return state.n_weights == 0 or state.n_weights in A.weights_below(d)

    def fits(self, allow: Sequence[int], size: Size, coefficients: bool) -> bool:
        for i, (e, a) in enumerate(zip(size.exps, allow)):
            if (i < self.n_primary or coefficients) and abs(e) > a:
                return False
        return True

    def outer_numel(self, state: State) -> Size:
        s = self._outer.get(state.expanded)
        if s is None:
            s = self.size_space.one
            for d in state.expanded:
                if A.is_share_l(d):
                    s = s * d.size
            self._outer[state.expanded] = s
        return s

    def repeat_numel(self, state: State) -> Size:
        s = self.size_space.one
        for d in state.expanded:
            if not A.is_share_l(d):
                s = s * d.size
        return s

    def outer_ok(self, state: State, d: Dim, allow, outer: Size) -> bool:
        """Can ``d`` become an outer product (Share + Expand) in a contraction now?"""
        o = self.options
        if A.data_discarding(d) or d.height + 1 > o.max_chain_length:
            return False
        if not self.fits(allow, d.size, o.count_coefficients_in_weights_as_allowance_usage):
            return False
        t, _ = A.contraction_type(d)
        if t == "merge":
            return self.upper(outer * d.size) <= o.max_expansion_merge_multiplier
        if t == "weights_sharing":
            u = self.upper(d.size)
            return o.min_weight_share_dim <= u <= o.max_weight_share_dim
        return False

    def share_needs(self, state: State, can_c: bool, allow) -> tuple[tuple[tuple[int, ...], ...], bool]:
        """Primary occurrences that reductions not yet under a Share must still consume, and
        whether some reduction must still get under a Share (so a contraction is still needed).

        Every reduction ends below a Share or is pooled (P1: pooled domains multiply to at most
        max_pooling_factor). A reduction whose primary variables no window, Shift block or Stride
        block can take (``_primary_escapes``: too large, or even under an odd-kernel rule) can only
        get below a Share whose size contains them, consuming their occurrences. Returns the Pareto-minimal
        alternatives (one per admissible pooled subset; empty = impossible) and the flag."""
        covered = self.covered(state)
        free = tuple(r for r in state.reductions if r not in covered)
        key = (free, can_c, tuple(allow[:self.n_primary]))
        got = self._needs.get(key)
        if got is None:
            got = self._needs[key] = self._share_needs(free, can_c, allow)
        return got

    def _share_needs(self, free: Sequence[ReduceDim], can_c: bool, allow) -> tuple[tuple[tuple[int, ...], ...], bool]:
        o = self.options
        pool_all = self.size_space.one
        for r in free:
            pool_all = pool_all * r.size
        must_share = not pool_all.is_one() and not self._poolable(pool_all)
        strict = []
        for r in free:
            prim = r.size.exps[:self.n_primary]
            if any(prim) and not any(self._prim_separable[k] for k, e in enumerate(prim) if e):
                strict.append(r)
        if not strict:
            return ((0,) * self.n_primary,), must_share
        out = set()
        n = len(strict)
        for mask in range(1 << n):
            pooled = self.size_space.one
            need = [0] * self.n_primary
            for i, r in enumerate(strict):
                if mask >> i & 1:
                    pooled = pooled * r.size
                else:
                    for k, e in enumerate(r.size.exps[:self.n_primary]):
                        need[k] += abs(e)
            if not pooled.is_one() and not self._poolable(pooled):
                continue
            if any(need) and not can_c:
                continue
            if all(a <= b for a, b in zip(need, allow[:self.n_primary])):
                out.add(tuple(need))
        pareto = [v for v in out if not any(w != v and all(x <= y for x, y in zip(w, v)) for w in out)]
        return tuple(sorted(pareto)), must_share

    def covered(self, state: State) -> frozenset:
        """The leaves (outputs and reductions) below the weights' Shares, per weight set."""
        got = self._covered.get(state.weights)
        if got is None:
            acc: set = set()
            for w in state.weights:
                acc |= A.leaves(w)
            got = self._covered[state.weights] = frozenset(acc)
        return got

    def pooling_ok(self, state: State, reductions: Sequence[ReduceDim] | None = None) -> bool:
        """P1: reductions with no Share above them (pooling) multiply to at most max_pooling_factor."""
        covered = self.covered(state)
        pool = self.size_space.one
        for r in (state.reductions if reductions is None else reductions):
            if r not in covered:
                pool = pool * r.size
        return pool.is_one() or self._poolable(pool)

    def _poolable(self, size: Size) -> bool:
        """upper(size) <= max_pooling_factor (P1), per size."""
        got = self._pool_memo.get(size)
        if got is None:
            got = self._pool_memo[size] = self.upper(size) <= self.options.max_pooling_factor
        return got

    def flops_lower_bound(self, state: State) -> float:
        """A lower bound on the planned FLOPs of any completion, valid for the cost model of
        :mod:`syno.ir.lowering`: the step that produces the output iterates over it, except for
        broadcast (repeated) pieces, which all repeats together shrink at most by
        max_expansion_repeat_multiplier (E3); and every weight is read by some contraction.

        Deliberately conservative: sharper leaf-level bounds (the original's FLOPs game) are not
        valid for plans that multiply weights together first or iterate over view indices, and
        measured, they barely changed sampling (docs/synthesis.md)."""
        got = self._flops_lo_memo.get(state.weights)
        if got is None:
            if self._flops_out_lo is None:  # the outputs' part is the same for every state
                repeat = self.options.max_expansion_repeat_multiplier if self.expands_enabled() else 1
                self._flops_out_lo = [v / repeat for v in stage_lower_bound([], (), self.outputs, self.bindings)]
            per = list(self._flops_out_lo)
            for w in state.weight_groups():
                numel = self.size_space.one
                for d in w:
                    numel = numel * d.size
                vals = self.bindings.values(numel)
                per = [max(a, float(v)) for a, v in zip(per, vals)]
            # keyed on the weight dims: the weight groups (and so the bound) follow from them
            got = self._flops_lo_memo[state.weights] = self.problem.total(per)
        return got

    def viable(self, state: State) -> bool:
        """Keep a new node? Reduction-phase nodes (only reductions so far) are kept if finishing the
        reductions here or after adding more of them passes the bounds (the original's "OR of the
        Reduce children and the embedded normal stage"); other nodes must pass the bounds."""
        if state.in_reduction_phase and state.counts[C_REDUCE] > 0:
            return self._reduction_viable(state)
        return self._normal_viable(state)

    def _reduction_viable(self, state: State) -> bool:
        got = self._red_memo.get(state.key)
        if got is None:
            got = self._normal_viable(state)
            if not got and state.counts[C_REDUCE] < self.options.max_reductions and self.remaining(state) >= 2 \
                    and self._reductions_extensible(state):
                from .rules import reduce_sizes
                from .space import Move
                got = any(self._reduction_viable(self.apply(state, Move("Reduce", "", (size,))))
                          for size in reduce_sizes(self, state))
            self._red_memo[state.key] = got
        return got

    def _reductions_extensible(self, state: State) -> bool:
        """False if no extension of this reduction-phase state by more reductions can pass the shape
        bound: when even with a contraction the reductions cannot all get under Shares or be pooled
        (``share_needs`` empty), adding reductions only makes it worse (more reductions to place, less
        allowance, larger pooled products), so the whole lattice above is dead without visiting it."""
        if not self.use_distance:
            return True
        needs, _ = self.share_needs(state, True, self.allowance(state.usage))
        return bool(needs)

    def _normal_viable(self, state: State) -> bool:
        if not self.contraction_possible(state):
            if state.n_weights == 0:
                self.stats["dead_shape"] += 1
                return False
            if not self.pooling_ok(state):
                self.stats["dead_pool"] += 1
                return False
        # the FLOPs bounds are cheap next to the shape bound's search, so they go first
        if self.enforce_flops and self._prune_hi < float("inf") and state.n_weights > 0:
            if self.flops_lower_bound(state) > self._prune_hi:
                self.stats["dead_flops"] += 1
                return False
        if self.enforce_flops and self.options.enable_flops_pruning and self.flops_lo > 0:
            if self.flops_upper_bound(state) < self.flops_lo:
                self.stats["dead_flops"] += 1
                return False
        if self.use_distance and self.shape_distance(state) > self.remaining(state):
            self.stats["dead_shape"] += 1
            return False
        return True

    def flops_upper_bound(self, state: State) -> float:
        """No more reductions come after the reduction phase, so every stage of any completion
        iterates over at most all outputs and reductions: FLOPs <= (weights + a pooling stage) x
        numel(outputs x reductions), with the weights that can still be added."""
        total = self._flops_hi_memo.get(state.reductions)
        if total is None:  # numel(outputs x reductions) summed over the mappings, per reduction set
            numel = self.size_space.one
            for d in self.outputs:
                numel = numel * d.size
            for r in state.reductions:
                numel = numel * r.size
            vals = [float(v) for v in self.bindings.values(numel)]
            total = self._flops_hi_memo[state.reductions] = self.problem.total(vals)
        # each pairwise contraction of a plan costs at most that, and the standalone sums at most
        # that once more in total
        weights = self.options.max_tensors - 1 if self.contraction_possible(state) else state.n_weights
        return (max(weights, 1) + 1) * total
