"""Shape distance: a lower bound on the primitives still needed to reach the input shape.

Model (a re-derivation of the original's ShapeComplexity, reference §5.5). In a finished operator
every current (frontier, non-weight) dim ends in one connected *reshape group* together with some
desired input axes, or vanishes into an outer product. Inside a group, Splits and Unfolds join two
pieces into one (an Unfold also discards its window), Merges cut one piece into two, Expands make a
piece vanish. Counting pieces and connectivity of a group with ``c`` current dims, ``d`` desired
axes and surplus ``q = prod(current) / prod(desired)`` gives, for the group,

* ``q == 1``: ops >= c + d - 2, Merges >= d - 1, Splits + Unfolds >= c - 1 (and for ``d >= 2`` some
  member must be cuttable by a Merge);
* ``q != 1`` and ``q`` is the product of some of the group's current dims that can be eliminated
  whole (Unfold windows with a main large enough (U4), or Expands): the same counts;
* otherwise pieces must be *cut* by Merges off some members: one Merge (plus the detour that makes
  the member mergeable) per member cut. A cut piece holds only primaries of the dim it is cut from.
  Any block can be cut off an output iterator or a Merge's minor half; Shift, Unfold and Stride tops
  only admit blocks at most the shift limit / a window / a stride (M3-M5); reductions, Share data
  sides, Split tops and Merge majors must first become one of those (M1, M2), at a cost.

``q`` must be a legal, integral size (primaries cannot be created, and a missing coefficient factor
cannot be supplied either: a Stride's top is data-discarding and may only end as an Unfold window). Data-discarding dims each need an Unfold (as window) or an Expand. A current dim that can
still become an outer product of a future contraction may vanish at no per-dim cost (one contraction
for all), but pays its primary occurrences (allowance) together with the reductions that must still
get below a Share. Frozen dims (chain length exhausted) must equal a desired axis. The bound is the
minimum over set partitions of the desired axes and assignments of current dims to groups.
"""

from __future__ import annotations

from itertools import combinations, product
from operator import add, gt
from typing import Callable, NamedTuple, Sequence

INF = 10 ** 6


class CurSig(NamedTuple):
    """What the bound needs to know of one current dim. A tuple (hashing, equality and ordering run
    in C: the bound sorts and hashes these for every bounded state)."""

    exps: tuple[int, ...]
    frozen: bool = False        # no op may touch it any more (chain length)
    dd: bool = False            # data-discarding
    vanish: bool = False        # may become an outer product of a future contraction
    carve_big: bool = True      # a Merge may cut any block off it right now (iterator / MergeR)
    carve_tiny: int = 0         # ops before a Merge may cut a block <= max_shift_rhs (Shift top, M3)
    carve_small: int = 0        # ops before a Merge may cut a block < window/stride (M4, M5)
    whole: bool = True          # can be eliminated whole (Unfold window or Expand)
    expand: bool = False        # ... by an Expand (else only as an Unfold window)
    rigid: bool = False         # its primary factors can never be cut off or eliminated
    reduce_only: bool = False   # depends on reductions only (never an Unfold's main side, U2)
    cuts: frozenset = frozenset()  # for carve_big: the pieces a Merge may cut off it now


def _set_partitions(items: list[int]):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _set_partitions(rest):
        for k in range(len(part)):
            yield part[:k] + [[first] + part[k]] + part[k + 1:]
        yield [[first]] + part


def shape_lower_bound(curs: Sequence[CurSig], desired: Sequence[tuple[int, ...]], n_primary: int,
                      q_ok: Callable[[tuple[int, ...]], bool], *,
                      small_ok: Callable[[tuple[int, ...], int, int], bool],
                      merges_left: int, joins_left: int, strides_left: int, shifts_left: int = INF,
                      need_contraction: bool, can_contract: bool,
                      allowance: tuple[int, ...] | None = None,
                      share_needs: Sequence[tuple[int, ...]] | None = None,
                      window_ok: Callable[[tuple[int, ...], tuple[int, ...]], bool] | None = None,
                      elim_free: Sequence[bool] | None = None,
                      limit: int = INF - 1, budget: int = 20000,
                      group_memo: dict | None = None, memo_context=None) -> int:
    """Lower bound on the number of primitives to turn ``curs`` into ``desired`` (INF if impossible).

    ``q_ok(exps)``: a non-trivial surplus / remainder size is legal and integral under all mappings.
    ``small_ok(exps, n_tiny, n_small)``: it fits into pieces cut off ``n_tiny`` Shift tops (M3) and
    ``n_small`` Unfold / Stride tops (M4-M5). ``window_ok(main, window)``: U4 allows the window on a
    main cut from ``main``. ``joins_left`` = remaining Splits + Unfolds + Expands. ``allowance``
    (primary occurrences left) and ``share_needs`` (alternative occurrences that reductions not yet
    under a Share will consume) make vanishing dims pay their outer-product Share; so do primaries
    cut off by Merges, unless ``elim_free[k]`` says primary ``k`` can go into a window or an Expand.

    ``group_memo`` caches group costs across calls; ``memo_context`` must identify everything the
    callbacks depend on. The search stops at the first configuration costing at most ``limit`` (the result is then only
    known to be <= limit) and returns INF when the bound exceeds ``limit``."""
    if share_needs is not None and not share_needs:
        return INF
    curs = sorted(curs)
    dd = [c for c in curs if c.dd]
    if any(c.frozen for c in dd) or (need_contraction and not can_contract) or len(dd) > joins_left:
        return INF
    base = len(dd)
    joins_used = len(dd)
    desired = list(desired)
    flex: list[CurSig] = []
    for c in curs:
        if c.dd:
            continue
        if c.frozen:
            if c.exps in desired:
                desired.remove(c.exps)
            else:
                return INF
        else:
            flex.append(c)
    # most constrained first: dims carrying primaries (rigid ones first), then the rest
    flex.sort(key=lambda c: (not c.rigid, -sum(max(e, 0) for e in c.exps[:n_primary]), c))
    m = len(desired)
    if m == 0:  # every desired axis is taken by a frozen dim; the rest must vanish
        keep = sum(1 for c in flex if not c.vanish)
        return base + keep + (1 if (len(flex) > keep or need_contraction) else 0)
    if not flex:
        return INF

    n = len(flex)
    nvars = len(desired[0])
    early = limit < INF - 1  # stop at the first witness <= limit (else: the exact minimum)
    best = [INF if not early else limit + 1]
    found = [INF]
    steps = [0]
    gmemo: dict = {}
    # primary content still to be assigned from member i on (feasibility pruning)
    pos = [tuple(max(e, 0) for e in c.exps[:n_primary]) for c in flex]  # what a vanishing member consumes
    psuffix = [(0,) * n_primary] * (n + 1)
    for i in range(n - 1, -1, -1):
        psuffix[i] = tuple(map(add, psuffix[i + 1], pos[i]))
    keep_suffix = [0] * (n + 1)
    for i in range(n - 1, -1, -1):
        keep_suffix[i] = keep_suffix[i + 1] + (0 if flex[i].vanish else 1)
    pexp = [c.exps[:n_primary] for c in flex]
    pzero = (0,) * n_primary
    same_prev = [i > 0 and flex[i - 1] == flex[i] for i in range(n)]

    dmin: dict = {}
    dlist: dict = {}

    groups = GroupCosts(flex, n_primary, nvars, q_ok, small_ok, window_ok, elim_free, merges_left,
                        strides_left, shifts_left, dmin, dlist,
                        fit_memo=None if group_memo is None else group_memo.setdefault(("fits", memo_context), {}))
    fits_memo = groups.fits

    def group_cost(members: tuple[int, ...], dsum: tuple[int, ...], dcnt: int):
        key = (members, dsum)
        got = gmemo.get(key, gmemo)
        if got is gmemo:
            if group_memo is not None:
                gkey = (tuple(sorted(flex[i] for i in members)), dlist[dsum], merges_left, strides_left,
                        shifts_left, memo_context)
                got = group_memo.get(gkey, gmemo)
                if got is gmemo:
                    got = group_memo[gkey] = groups.cost(members, dsum, dcnt)
            else:
                got = groups.cost(members, dsum, dcnt)
            gmemo[key] = got
        return got

    # the cheapest way to provide an outer product for a needed contraction without a vanishing dim:
    # cut a Merge piece (Merge-type) off a dim
    outer_cut = min((0 if f.carve_big else min(f.carve_tiny, f.carve_small)) for f in flex)

    for G, dsum, dcnt, dl, dm, twin in _partitions(tuple(desired), nvars):
        if G > n:
            continue
        dlist.update(dl)
        dmin.update(dm)
        dsum_p = [d[:n_primary] for d in dsum]
        fixed_cost = base + m - 2 * G
        gsum = [pzero] * G  # primaries of the members so far
        rsum = [pzero] * G  # primaries of rigid members
        vsum = [pzero]  # primaries consumed by vanishing dims (outer-product Shares)
        members: list[list[int]] = [[] for _ in range(G)]
        choice = [0] * n
        fit_ig = [[None] * G for _ in range(n)]  # fits_memo(i, dsum[g]), looked up by index
        empty = [G]  # groups without a member yet

        def finish(used_o: bool) -> None:
            cost = fixed_cost
            merges = 0
            joins = joins_used
            carved = False
            vtot = list(vsum[0])
            for g in range(G):
                c = len(members[g])
                if c == 0:
                    return
                got = group_cost(tuple(members[g]), dsum[g], dcnt[g])
                if got is None:
                    return
                cost += c + got[0]
                merges += dcnt[g] - 1 + got[1]
                joins += c - 1
                carved = carved or got[1] > 0
                if any(got[2]):
                    used_o = True
                    for k in range(n_primary):
                        vtot[k] += got[2][k]
            if share_needs is not None and not any(
                    all(a + b <= c for a, b, c in zip(need, vtot, allowance)) for need in share_needs):
                return
            if used_o and not can_contract:
                return
            cost += 1 if (used_o or need_contraction) else 0
            if need_contraction and not used_o and not carved:
                # a contraction needs an outer product (K1): a vanishing dim, a piece cut off in a
                # group, or else a Merge piece cut for it
                if outer_cut >= INF:
                    return
                cost += 1 + outer_cut
                merges += 1
            if merges > merges_left or joins > joins_left:
                return
            best[0] = min(best[0], cost)
            found[0] = min(found[0], cost)

        def dfs(i: int, assigned: int, used_o: bool) -> None:
            steps[0] += 1
            if steps[0] > budget or (early and found[0] <= limit):
                return
            if fixed_cost + assigned + keep_suffix[i] + (1 if (used_o or need_contraction) else 0) >= best[0]:
                return
            if i == n:
                finish(used_o)
                return
            if empty[0] > n - i:
                return  # every group needs a member (finish), and only n - i dims are left
            suf = psuffix[i]
            for g in range(G):  # a group short of primaries that the rest cannot supply
                if any(map(gt, dsum_p[g], map(add, gsum[g], suf))):
                    return
            c = flex[i]
            lo = choice[i - 1] if same_prev[i] else 0
            for g in range(lo, G + (1 if c.vanish else 0)):
                choice[i] = g
                if g == G:  # vanishes into a future outer product
                    old = vsum[0]
                    vsum[0] = tuple(map(add, old, pos[i]))
                    if allowance is None or all(v <= a for v, a in zip(vsum[0], allowance)):
                        dfs(i + 1, assigned, True)
                    vsum[0] = old
                    continue
                if twin[g] >= 0 and not members[twin[g]]:
                    continue
                if not c.whole:  # a member not eliminated whole must fit its group (_group_cost)
                    ok = fit_ig[i][g]
                    if ok is None:
                        ok = fit_ig[i][g] = fits_memo(i, dsum[g])
                    if not ok:
                        continue
                if c.rigid:
                    r = tuple(map(add, rsum[g], pexp[i]))
                    if any(map(gt, r, dsum_p[g])):
                        continue  # rigid primaries must all end in this group's desired axes
                    old_r = rsum[g]
                    rsum[g] = r
                old_g = gsum[g]
                gsum[g] = tuple(map(add, old_g, pexp[i]))
                mg = members[g]
                if not mg:
                    empty[0] -= 1
                mg.append(i)
                dfs(i + 1, assigned + 1, used_o)
                mg.pop()
                if not mg:
                    empty[0] += 1
                gsum[g] = old_g
                if c.rigid:
                    rsum[g] = old_r

        dfs(0, 0, False)
        if early and found[0] <= limit:
            return found[0]
        if steps[0] > budget:
            return cheap_lower_bound(dd + flex, m, need_contraction)
    return found[0]


_PARTITIONS: dict = {}


def _partitions(desired: tuple, nvars: int) -> list:
    """The set partitions of the desired axes, up to equal axes (first of each kind, in
    :func:`_set_partitions` order), with per group: exponent sum, axis count, (sum -> axes) and
    (sum -> smallest axis) entries, and the twin group (-1: none). Cached per desired tuple: they
    are the same for every bound of a space."""
    got = _PARTITIONS.get(desired)
    if got is not None:
        return got
    out = []
    seen = set()
    m = len(desired)
    for part in _set_partitions(list(range(m))):
        sig = tuple(sorted(tuple(sorted(desired[j] for j in g)) for g in part))
        if sig in seen:
            continue
        seen.add(sig)
        G = len(part)
        dsum, dcnt, dl, dm = [], [], {}, {}
        for g in part:
            s = [0] * nvars
            for j in g:
                for k, e in enumerate(desired[j]):
                    s[k] += e
            s = tuple(s)
            dsum.append(s)
            dcnt.append(len(g))
            dl[s] = tuple(sorted(desired[j] for j in g))
            # the smallest desired axis of the group (a cut between its axes is at least that big)
            # any fixed choice is fine: small_ok is only a necessary condition
            dm[s] = min((desired[j] for j in g), key=tuple)
        # groups with the same desired axes are interchangeable: such a group may take its first
        # member only once the previous one has one (with the non-decreasing choices of equal dims
        # below, the lexicographically smallest assignment of every symmetry class stays)
        twin = [-1] * G
        for g in range(G):
            for h in range(g - 1, -1, -1):
                if sorted(desired[j] for j in part[h]) == sorted(desired[j] for j in part[g]):
                    twin[g] = h
                    break
        out.append((G, tuple(dsum), tuple(dcnt), dl, dm, tuple(twin)))
    _PARTITIONS[desired] = out
    return out


class GroupCosts:
    """Costs of single reshape groups for :func:`shape_lower_bound` (one instance per call): what a
    group of current dims (``members``, indices into ``flex``) with desired axes summing to
    ``dsum`` costs beyond ``c + d - 2`` ops, and the feasibility tests it is made of. ``dmin`` and
    ``dlist`` (smallest desired axis / desired axes of a group, by ``dsum``) are filled by the
    caller as it goes through the partitions of the desired axes."""

    def __init__(self, flex: Sequence[CurSig], n_primary: int, nvars: int, q_ok, small_ok, window_ok, elim_free,
                 merges_left: int, strides_left: int, shifts_left: int, dmin: dict, dlist: dict,
                 fit_memo: dict | None = None):
        self.flex, self.n_primary, self.nvars = flex, n_primary, nvars
        self.q_ok, self.small_ok, self.window_ok, self.elim_free = q_ok, small_ok, window_ok, elim_free
        self.merges_left, self.strides_left, self.shifts_left = merges_left, strides_left, shifts_left
        self.pzero = (0,) * n_primary
        self.dmin, self.dlist = dmin, dlist
        # fits_group depends on the signature, the desired product and the callbacks only, so a
        # memo shared across calls (one per memo context) is valid
        self._fit: dict = {} if fit_memo is None else fit_memo

    def covers(self, rem, idx) -> bool:
        flex, n_primary = self.flex, self.n_primary
        return all(rem[k] <= sum(max(flex[i].exps[k], 0) for i in idx) for k in range(n_primary))

    def rest_ok(self, rem, idx) -> bool:
        """What is left of the dims a piece is cut from is a legal, integral size."""
        flex, nvars, q_ok = self.flex, self.nvars, self.q_ok
        rest = [0] * nvars
        for i in idx:
            for k, e in enumerate(flex[i].exps):
                rest[k] += e
        rest = tuple(a - b for a, b in zip(rest, rem))
        return any(rest) and q_ok(rest)

    def carve_cost(self, rem, others, members, dcnt):
        """Cheapest way to cut ``rem`` off some of ``others``: (extra ops, extra Merges) or None."""
        flex, n_primary, nvars = self.flex, self.n_primary, self.nvars
        small_ok, merges_left = self.small_ok, self.merges_left
        strides_left, shifts_left = self.strides_left, self.shifts_left
        cands = [i for i in others if flex[i].carve_big or flex[i].carve_tiny < INF or flex[i].carve_small < INF]
        max_cuts = min(len(cands), merges_left - (dcnt - 1))
        no_unfold_main = strides_left <= 0 and all(flex[i].reduce_only for i in members)
        found_cut = None
        for size in range(1, max_cuts + 1):
            for T in combinations(cands, size):
                if not self.covers(rem, T) or not self.rest_ok(rem, T):
                    continue
                big = [i for i in T if flex[i].carve_big]
                nb = [i for i in T if not flex[i].carve_big]
                if len(T) == 1 and big and rem not in flex[T[0]].cuts:
                    continue  # one Merge: the piece must be one of the allowed blocks / majors
                prim_nb = tuple(max(0, rem[k] - sum(max(flex[i].exps[k], 0) for i in big)) if k < n_primary
                                else 0 for k in range(nvars))
                if any(prim_nb) and not self.covers(prim_nb, nb):
                    continue
                routes = []
                for i in nb:
                    opts = []
                    if flex[i].carve_tiny < INF:
                        opts.append((1, 0, flex[i].carve_tiny))
                    if flex[i].carve_small < INF and not no_unfold_main:
                        opts.append((0, 1, flex[i].carve_small))
                    if not opts:
                        break
                    routes.append(opts)
                else:
                    for choice in product(*routes):
                        n_tiny = sum(c[0] for c in choice)
                        n_small = sum(c[1] for c in choice)
                        if n_tiny > shifts_left:
                            continue
                        # primaries the big dims cannot supply must fit into the small pieces
                        if nb and any(prim_nb) and not small_ok(prim_nb, n_tiny, n_small):
                            continue
                        if not big and not small_ok(rem, n_tiny, n_small):
                            continue
                        cost = size + sum(c[2] for c in choice)
                        if found_cut is None or cost < found_cut[0]:
                            found_cut = (cost, size)
        return found_cut

    def fits_group(self, i: int, dtot: tuple[int, ...]) -> bool:
        """A member that cannot be cut freely ends up inside the group's desired product, after
        giving away at most a small piece (its own excess over the desired product)."""
        flex, n_primary, q_ok, small_ok = self.flex, self.n_primary, self.q_ok, self.small_ok
        f = flex[i]
        if f.carve_big:
            return True
        rest = tuple(a - b for a, b in zip(dtot, f.exps))
        if not any(rest) or q_ok(rest):
            return True
        if self.uncuttable(i):
            return False
        excess = tuple(max(b - a, 0) for a, b in zip(dtot, f.exps))
        if any(excess[:n_primary]):
            return False  # primaries cut off small pieces are too large (they are not separable)
        rest2 = tuple(r + e for r, e in zip(rest, excess))
        if any(rest2) and not q_ok(rest2):
            return False
        if f.carve_tiny < INF and small_ok(excess, 1, 0):
            return True
        return f.carve_small < INF and small_ok(excess, 0, 1)

    def fits(self, i: int, dtot: tuple[int, ...]) -> bool:
        """:meth:`fits_group`, memoized per signature."""
        key = (self.flex[i], dtot)
        got = self._fit.get(key)
        if got is None:
            got = self._fit[key] = self.fits_group(i, dtot)
        return got

    def uncuttable(self, i: int) -> bool:
        flex = self.flex
        f = flex[i]
        return not f.carve_big and f.carve_tiny >= INF and f.carve_small >= INF

    def cost(self, members: tuple[int, ...], dsum: tuple[int, ...], dcnt: int):
        """(extra ops beyond c + d - 2, extra Merges beyond d - 1) or None if infeasible."""
        flex, n_primary, nvars, q_ok, small_ok = self.flex, self.n_primary, self.nvars, self.q_ok, self.small_ok
        merges_left, window_ok, elim_free = self.merges_left, self.window_ok, self.elim_free
        pzero, dmin, dlist = self.pzero, self.dmin, self.dlist
        q = [0] * nvars
        for i in members:
            for k, e in enumerate(flex[i].exps):
                q[k] += e
        q = tuple(a - b for a, b in zip(q, dsum))
        cut = 0
        if dcnt >= 2:  # Merges must cut the group's material into several desired axes
            cut = INF
            for i in members:
                f = flex[i]
                if f.carve_big:
                    cut = 0
                else:
                    if f.carve_tiny < INF and small_ok(dmin[dsum], 1, 0):
                        cut = min(cut, f.carve_tiny)
                    if f.carve_small < INF and small_ok(dmin[dsum], 0, 1):
                        cut = min(cut, f.carve_small)
            if cut >= INF:
                return None
        if not any(q):
            if dcnt >= 2 and not all(self.fits_one_axis(flex[i].exps, dlist[dsum])
                                     for i in members if self.uncuttable(i)):
                return None
            if not all(self.fits(i, dsum) for i in members):
                return None
            return cut, 0, pzero
        if any(e < 0 for e in q[:n_primary]):
            return None
        has_primary = any(e > 0 for e in q[:n_primary])
        if not has_primary and any(e < 0 for e in q[n_primary:]):
            # the desired axes are larger than the material by a pure coefficient: nothing can supply
            # it (a Stride's top is data-discarding and can only end as an Unfold window)
            return None
        if not q_ok(q):
            return None
        c = len(members)
        best_extra = None
        whole = [i for i in members if flex[i].whole]
        axes = dlist[dsum]
        for r in range(0, min(len(whole), c - 1) + 1):
            for sub in combinations(whole, r):
                if not all(self.fits_one_axis(flex[i].exps, axes)
                           for i in members if i not in sub and self.uncuttable(i)):
                    continue
                if not all(self.fits(i, dsum) for i in members if i not in sub):
                    continue
                rem = list(q)
                for i in sub:
                    for k, e in enumerate(flex[i].exps):
                        rem[k] -= e
                rem = tuple(rem)
                if window_ok is not None and sub:
                    mains = [flex[i].exps for i in members if i not in sub]
                    if not all(flex[i].expand or any(window_ok(mn, flex[i].exps) for mn in mains) for i in sub):
                        continue
                if not any(rem):
                    return cut, 0, pzero  # the surplus is a set of whole pieces (windows / expands)
                if merges_left <= dcnt - 1 or any(e < 0 for e in rem[:n_primary]) or not q_ok(rem):
                    continue
                got = self.carve_cost(rem, [i for i in members if i not in sub], members, dcnt)
                if got is not None:
                    # primaries cut off must vanish into outer products unless windows/expands may take them
                    surplus = tuple(0 if (elim_free is not None and elim_free[k]) else max(rem[k], 0)
                                    for k in range(n_primary))
                    got = (max(got[0], cut), got[1], surplus)
                    if best_extra is None or (got[0], sum(got[2])) < (best_extra[0], sum(best_extra[2])):
                        best_extra = got
        return best_extra

    def fits_one_axis(self, x: tuple[int, ...], axes) -> bool:
        """An uncuttable dim ends whole inside one desired axis: axis / x is 1 or legal."""
        q_ok = self.q_ok
        for ax in axes:
            rest = tuple(a - b for a, b in zip(ax, x))
            if not any(rest) or q_ok(rest):
                return True
        return False


def cheap_lower_bound(curs: Sequence[CurSig], desired_len: int, need_contraction: bool) -> int:
    dd = sum(1 for c in curs if c.dd)
    rest = [c for c in curs if not c.dd]
    keep = sum(1 for c in rest if not c.vanish)
    return dd + max(keep - desired_len, desired_len - len(rest), 0) + (1 if need_contraction else 0)


__all__ = ["CurSig", "GroupCosts", "shape_lower_bound", "cheap_lower_bound", "INF"]
