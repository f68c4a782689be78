"""The shape-distance bound of a state: per-dim signatures and the call into :mod:`.distance`.

:class:`ShapeBoundMixin` is the part of :class:`~syno.synth.space.SynthSpace` that turns a state
into the inputs of :func:`~syno.synth.distance.shape_lower_bound` -- what a Merge could cut off
each current dim and after how many ops (``_carve``), whether it can be eliminated whole
(``_whole``), whether it may still vanish into an outer product (``may_vanish``) -- and caches the
signatures per context and the bounds per signature key (``shape_distance``).
"""

from __future__ import annotations

from syno.ir.primitives import Dim, ReduceDim
from syno.ir.sizes import Size

from . import analysis as A
from .distance import INF, CurSig, shape_lower_bound
from .state import C_EXPAND, C_MERGE, C_SHIFT, C_SPLIT, C_STRIDE, C_UNFOLD, State


class ShapeBoundMixin:
    def may_vanish(self, state: State, d: Dim, allow, outer, can_c: bool) -> bool:
        """Could ``d`` still become an outer product (Share + Expand) of a future contraction?"""
        if not can_c:
            return False
        if self.outer_ok(state, d, allow, outer):
            return True
        o = self.options
        # a reduction may first be shared plainly, then become an outer product of a later weight
        if isinstance(d, ReduceDim) and state.n_weights + 2 <= o.max_tensors - 1 \
                and d.height + 2 <= o.max_chain_length:
            u = self.upper(d.size)
            if o.min_weight_share_dim <= u <= o.max_weight_share_dim:
                coef = o.count_coefficients_in_weights_as_allowance_usage
                return all(2 * abs(e) <= a for i, (e, a) in enumerate(zip(d.size.exps, allow))
                           if i < self.n_primary or coef)
        return False

    def _carve(self, state: State, d: Dim, caps: dict, can_c: bool, allow) -> tuple[bool, int, int]:
        """How a Merge could cut a block off ``d`` (or what it becomes): (any block now, ops before a
        block <= max_shift_rhs can be cut (Shift top, M3), ops before a block smaller than a
        window / stride can be cut (Unfold / Stride top, M4-M5)). Detours follow M1/M2, H1, T1/T2, U1/U2
        and C3; an unreachable cut is INF."""
        o = self.options
        if caps["merges"] <= 0 or d.height + 1 > o.max_chain_length:
            return False, INF, INF
        k = A.kind(d)
        new = self.is_new(state, d)
        room = o.max_chain_length - d.height - 1  # ops that may precede the Merge on this chain
        big = k in ("iterator", "MergeR") and new and bool(self._merge_blocks(d.size, allow))
        if big:
            return True, 0, 0
        shares_ok = can_c and self.fits(allow, d.size, o.count_coefficients_in_weights_as_allowance_usage)
        # -- tiny blocks: through a Shift top
        if k == "Shift" and new:
            tiny = 0
        elif room >= 1 and new and caps["shifts"] > 0 and k not in ("reduce", "ShareL", "Shift") \
                and not A.is_unordered(d) and not (k == "Split" and self.upper(d.op.bottoms[1].size) > o.max_shift_rhs):
            tiny = 1
        elif room >= 2 and caps["splits"] > 0 and caps["shifts"] > 0 and self._tiny_partner(state, d):
            tiny = 2  # Split with a tiny dim as the block, then Shift (H3), then Merge
        elif room >= 2 and caps["splits"] > 0 and caps["shifts"] > 0 and caps["merges"] >= 2 and any(
                x is not d and A.kind(x) in ("iterator", "MergeR") and self.is_new(state, x)
                for x in state.current):
            tiny = 3  # ... after cutting a tiny partner off some dim (C3: a new one)
        else:
            tiny = INF
        # -- small blocks: through an Unfold or Stride top
        # (a Stride top is data-discarding, and so are both halves of a Merge of it: such pieces can
        # only end as windows, so Strides never help to keep a cut dim's material)
        unfold_main = (caps["unfolds"] > 0 and not A.ends_up_reduce(d)
                       and not (k == "Split" and o.disallow_unfold_l_above_split)
                       and not (k == "Shift" and o.disallow_unfold_l_above_shift))
        if k == "Unfold" and new:
            small = 0
        elif room >= 1 and unfold_main:
            small = 1
        elif room >= 2 and caps["unfolds"] > 0 and (
                (caps["splits"] > 0 and not o.disallow_unfold_l_above_split)
                or (shares_ok and not A.ends_up_reduce(d))):
            small = 2
        elif room >= 3 and caps["splits"] > 0 and shares_ok and caps["unfolds"] > 0:
            small = 3
        else:
            small = INF
        return False, tiny, small

    def _tiny_partner(self, state: State, d: Dim) -> bool:
        return any(x is not d and self._is_tiny(x.size) for x in state.current)

    def _whole(self, d: Dim, caps: dict) -> tuple[bool, bool]:
        """(as an Unfold window, possibly after joining others; by an Expand): could ``d`` be
        eliminated whole?"""
        o = self.options
        if d.height >= o.max_chain_length:
            return False, False
        window = caps["unfolds"] > 0 and self._can_window(d.size)
        k = A.kind(d)
        expand = caps["expands"] > 0 and (k == "MergeR" or (k == "MergeL" and o.allow_tile))
        return window, expand

    def _window_ok(self, main: tuple[int, ...], win: tuple[int, ...]) -> bool:
        """U4 for an Unfold whose main comes from the dim ``main`` (a Merge piece of it is smaller;
        a Stride may enlarge it): lower(main / window) >= min_unfold_ratio."""
        key = (main, win)
        got = self._winok.get(key)
        if got is None:
            o = self.options
            ratio = self.lower(self.size_space.size_of(tuple(a - b for a, b in zip(main, win))))
            if o.max_strides != 0:
                ratio *= o.max_strided_dim_size
            if not o.disallow_unfold_l_above_split:
                ratio = float("inf")  # mains may be products of several dims
            got = ratio >= o.min_unfold_ratio
            self._winok[key] = got
        return got

    def shape_distance(self, state: State, limit: int | None = None) -> int:
        """Lower bound on primitives to reach the input shape if it is at most ``limit`` (default:
        the remaining depth; the search stops at the first witness), else INF."""
        o = self.options
        can_c = self.contraction_possible(state)
        allow = self.allowance(state.usage)
        outer = self.outer_numel(state)
        caps, caps_key = self._caps_of(state.counts)
        # a dim's signature depends on the state through this context only (_carve also looks for
        # a tiny partner and a new iterator / MergeR among the other current dims: their counts)
        nw = state.n_weights
        facts_of = self._facts.get
        n_tiny = n_open = 0
        # the largest block an Unfold / Stride top may give away (M4, M5): below the largest window
        # that can still be formed from the current odd small dims, or a stride
        win = 1.0
        for x in state.current:
            f = facts_of(x) or self._dim_facts(x)
            n_tiny += f[0]
            win *= f[1]
            if f[2] and (nw == 0 or nw in f[3]):
                n_open += 1
        ctx = (nw, caps_key[0], allow, can_c, outer, n_tiny, n_open)
        per_dim = self._sig_cache.get(ctx)
        if per_dim is None:
            per_dim = self._sig_cache[ctx] = {}
        sids = []
        for d in state.current:
            got = per_dim.get(d)
            if got is None:
                big, tiny, small = self._carve(state, d, caps, can_c, allow)
                window, expand = self._whole(d, caps)
                whole = window or expand
                prim = d.size.exps[:self.n_primary]
                vanish = self.may_vanish(state, d, allow, outer, can_c)
                rigid = (any(prim) and not big and not whole and not vanish
                         and ((tiny >= INF and small >= INF)
                              or not any(self._prim_separable[k] for k, e in enumerate(prim) if e)))
                cuts = frozenset()
                if big:
                    blocks = self._merge_blocks(d.size, allow)
                    cuts = frozenset([b.exps for b in blocks] + [(d.size / b).exps for b in blocks])
                sig = CurSig(d.size.exps, d.height >= o.max_chain_length, A.data_discarding(d),
                             vanish, big, tiny, small, whole, expand, rigid, A.ends_up_reduce(d), cuts)
                # signatures are keyed by a small id (hashing and comparing the bound's cache keys
                # is then cheap); equal signatures share one id
                sid = self._sig_ids.get(sig)
                if sid is None:
                    sid = self._sig_ids[sig] = len(self._sig_of)
                    self._sig_of.append(sig)
                got = per_dim[d] = sid
            sids.append(got)
        sids.sort()
        needs, must_share = self.share_needs(state, can_c, allow)
        prim_allow = allow[:self.n_primary]
        small_limit = min(win, float(o.max_unfold_kernel_size)) if caps["unfolds"] > 0 else 0.0
        # (the remaining depth is not part of the key: the entry holds proved / witnessed values)
        key = (tuple(sids), caps_key[1], caps_key[2], caps_key[3], nw == 0 or must_share, can_c, prim_allow,
               needs, caps_key[4], small_limit)
        if limit is None:
            limit = self.remaining(state)
        lo_hi = self._dist_cache.get(key)  # (proved lower bound, witnessed value)
        if lo_hi is not None:
            if lo_hi[1] <= limit:
                return lo_hi[1]
            if lo_hi[0] > limit:
                return INF
        got = None
        if got is None:
            sigs = tuple(sorted(self._sig_of[i] for i in sids))
            got = shape_lower_bound(sigs, self.desired_exps, self.n_primary, self._q_ok,
                                    small_ok=lambda q, a, b, lim=small_limit: self._small_ok(q, a, b, lim),
                                    merges_left=key[1], joins_left=key[2], strides_left=key[3],
                                    shifts_left=caps["shifts"],
                                    need_contraction=key[4], can_contract=can_c,
                                    allowance=prim_allow, share_needs=needs, limit=limit,
                                    window_ok=self._window_ok, elim_free=self._prim_elim_free,
                                    group_memo=self._group_memo, memo_context=small_limit)
            lo, hi = lo_hi if lo_hi is not None else (0, INF)
            if got <= limit:
                hi = min(hi, got)
            else:
                lo = max(lo, limit + 1)
            self._dist_cache[key] = (lo, hi)
        return got

    def _caps_of(self, counts: tuple[int, ...]) -> tuple[dict, tuple]:
        """The op caps left for these op counts, and what the bound's keys take of them: (all caps,
        merges, joins (capped), strides (capped), shifts (capped)). Per counts tuple: the bound's
        set-up runs for every bounded state."""
        got = self._caps_memo.get(counts)
        if got is None:
            o = self.options
            caps = {"merges": o.cap("merges") - counts[C_MERGE], "shifts": o.cap("shifts") - counts[C_SHIFT],
                    "strides": o.cap("strides") - counts[C_STRIDE], "unfolds": o.cap("unfolds") - counts[C_UNFOLD],
                    "splits": o.cap("splits") - counts[C_SPLIT],
                    "expands": o.cap("expands") - counts[C_EXPAND] if self.expands_enabled() else 0}
            got = self._caps_memo[counts] = (caps, (
                tuple(caps.values()), caps["merges"], min(caps["splits"] + caps["unfolds"] + caps["expands"], 64),
                min(caps["strides"], 8), min(caps["shifts"], 8)))
        return got

    def _dim_facts(self, d: Dim) -> tuple:
        """(tiny, window factor, iterator or MergeR, weights below): what the bound's set-up reads
        of every current dim, per dim (dims are interned and immutable)."""
        got = self._facts.get(d)
        if got is None:
            got = self._facts[d] = (self._is_tiny(d.size), self._window_factor(d.size),
                                    A.kind(d) in ("iterator", "MergeR"), A.weights_below(d))
        return got

    def _is_tiny(self, size: Size) -> bool:
        """Could a dim of this size be the block of a Shift (upper <= max_shift_rhs, M3)?"""
        got = self._tiny.get(size)
        if got is None:
            got = self._tiny[size] = self.upper(size) <= self.options.max_shift_rhs
        return got

    def _can_window(self, size: Size) -> bool:
        """Could a dim of this size be an Unfold window (U3, U4: small, odd if required)?"""
        got = self._canwin.get(size)
        if got is None:
            o = self.options
            got = self.upper(size) <= o.max_unfold_kernel_size and (not o.odd_unfold_kernels or all(
                v.denominator == 1 and v.numerator % 2 == 1 for v in self.bindings.values(size)))
            self._canwin[size] = got
        return got

    def _window_factor(self, size: Size) -> float:
        """upper(size) if a dim of that size can be an Unfold window (small, odd if required), else 1."""
        got = self._winfac.get(size)
        if got is None:
            o = self.options
            u = float(self.upper(size))
            got = u if u <= o.max_unfold_kernel_size and (not o.odd_unfold_kernels or all(
                v.denominator == 1 and v.numerator % 2 == 1 for v in self.bindings.values(size))) else 1.0
            self._winfac[size] = got
        return got

    def _primary_escapes(self) -> tuple[tuple[bool, ...], tuple[bool, ...]]:
        """Per primary variable: (can a factor of it be cut off a dim or eliminated without a
        Share: through a Shift block (M3), a window (U3/U4), or a Stride block (M4, T2); can it
        vanish without an outer-product Share: in a window or an Expand)."""
        o = self.options
        sep, free = [], []
        for k in range(self.n_primary):
            v = self.size_space.var(self.size_space.variables[k].name)
            lo, hi = float(self.lower(v)), float(self.upper(v))
            odd = all(x.denominator == 1 and x.numerator % 2 == 1 for x in self.bindings.values(v))
            window = hi <= o.max_unfold_kernel_size and (odd or not o.odd_unfold_kernels)
            stride = o.max_strides != 0 and lo * lo < o.max_strided_dim_size
            expand = self.expands_enabled() and o.max_expands != 0 and hi <= o.max_expansion_repeat_multiplier
            sep.append(lo <= o.max_shift_rhs or window or stride)
            free.append(window or expand)
        return tuple(sep), tuple(free)

    def _small_ok(self, q: tuple[int, ...], n_tiny: int, n_small: int, small_limit: float) -> bool:
        """Does ``q`` fit into ``n_tiny`` blocks cut off Shift tops (<= max_shift_rhs, M3) and
        ``n_small`` blocks cut off Unfold / Stride tops (< window / stride, M4-M5)?"""
        cap = float(self.options.max_shift_rhs) ** n_tiny * small_limit ** n_small
        return float(self.lower(self.size_space.size_of(q))) <= cap
