"""Sizes of a synthesis space: validity, allowance-limited enumeration, bounds under the mappings.

:class:`SizeMixin` is the part of :class:`~syno.synth.space.SynthSpace` that answers questions
about symbolic sizes (reference §1.4-§1.5): is a size legal and integral, which reduction domains
and Merge blocks the allowance enumerates, and a size's smallest / largest value over the
mappings. Everything is cached on the space (the caches are created in ``SynthSpace.__init__``).
"""

from __future__ import annotations

from fractions import Fraction
from itertools import product
from typing import Sequence

import numpy as np

from syno.ir.sizes import Size


class SizeMixin:
    def size_ok(self, s: Size) -> bool:
        """Legal to sample and valid (reference §1.4): not 1, no illegal coefficient, lower >= 1,
        within the variable-usage limits, integral under every mapping if exact division."""
        ok = self._size_ok.get(s)
        if ok is None:
            o = self.options
            nvars, powers = s.usage()
            ok = (not s.is_one() and s.is_legal() and nvars <= o.max_variables_in_size
                  and powers <= o.max_variable_powers_in_size)
            if ok:
                vals = self.bindings.values(s)
                ok = min(vals) >= 1 and (not o.exact_division or all(v.denominator == 1 for v in vals))
            self._size_ok[s] = ok
        return ok

    def _q_ok(self, exps: tuple[int, ...]) -> bool:
        ok = self._surplus_ok.get(exps)
        if ok is None:
            s = self.size_space.size_of(exps)
            vals = self.bindings.values(s)
            ok = s.is_legal() and min(vals) >= 1 and (
                not self.options.exact_division or all(v.denominator == 1 for v in vals))
            self._surplus_ok[exps] = ok
        return ok

    def allowance(self, usage: Sequence[int]) -> tuple[int, ...]:
        return tuple(m - u for m, u in zip(self.max_occ, usage))

    def _enum_base(self) -> list[Size]:
        """Allowance.enumerateSizes (reference §1.5) at full allowance, sorted by exponent vector."""
        if self._red_base is None:
            E = self.options.max_enumerations_per_var
            ranges = []
            for i, a in enumerate(self.max_occ):
                if i < self.n_primary:
                    ranges.append(range(0, max(0, min(a, E - 1)) + 1))
                else:
                    lo, hi = max(E // 2 - E + 1, -a), min(E // 2, a)
                    ranges.append(range(lo, hi + 1) if lo <= hi else range(0, 1))
            base = []
            for exps in product(*ranges):
                sz = self.size_space.size_of(exps)
                if self.size_ok(sz):
                    base.append(sz)
            base.sort(key=lambda x: x.exps)
            self._red_base = base
            self._red_exps = [x.exps for x in base]
            self._red_abs = np.array([[abs(e) for e in x.exps] for x in base], dtype=np.int64).reshape(
                len(base), len(self.max_occ))
            self._red_vals = np.array([[float(v) for v in self.bindings.values(x)] for x in base],
                                      dtype=np.float64).reshape(len(base), len(self.bindings))
        return self._red_base

    def _enum_sizes(self, allow: tuple[int, ...]) -> list[Size]:
        """Allowance.enumerateSizes: sizes whose |exponents| fit the allowance (reference §1.5)."""
        got = self._red_sizes.get(allow)
        if got is None:
            base = self._enum_base()
            mask = np.all(self._red_abs <= np.array(allow, dtype=np.int64), axis=1)
            got = [x for x, ok in zip(base, mask) if ok]
            self._red_sizes[allow] = got
        return got

    def _merge_blocks(self, size: Size, allow: tuple[int, ...]) -> list[Size]:
        """Allowance.enumerateDivisors (reference §1.5): blocks b with b and size/b both valid."""
        E = self.options.max_enumerations_per_var
        # the allowance matters only for coefficients, and only up to the most a block of this size
        # can move a coefficient away from 0: key the memo on that (many allowances, same blocks)
        key = (size, tuple(min(max(a, 0), _most_moved(p, E))
                           for p, a in zip(size.exps[self.n_primary:], allow[self.n_primary:])))
        got = self._blocks.get(key)
        if got is None:
            ranges = []
            for i, (p, a) in enumerate(zip(size.exps, allow)):
                lo = p // 2 - (E - 1) // 2
                hi = lo + E - 1
                if i < self.n_primary:
                    if lo < 0:
                        hi, lo = hi - lo, 0
                    ranges.append(range(lo, min(hi, p) + 1))
                else:
                    # moving a factor farther from 0 than the size has it costs allowance
                    ranges.append([b for b in range(lo, hi + 1) if max(abs(b) - abs(p), 0) <= max(a, 0)])
            got = []
            for exps in product(*ranges):
                b = self.size_space.size_of(exps)
                if self.size_ok(b) and self.size_ok(size / b):
                    got.append(b)
            got.sort(key=lambda s: s.exps)
            self._blocks[key] = got
        return got

    def upper(self, s: Size) -> Fraction:
        v = self._upper.get(s)
        if v is None:
            v = self._upper[s] = self.bindings.upper(s)
        return v

    def lower(self, s: Size) -> Fraction:
        v = self._lower.get(s)
        if v is None:
            v = self._lower[s] = self.bindings.lower(s)
        return v


def _most_moved(p: int, E: int) -> int:
    """The most allowance a block's exponent in ``range(lo, lo + E)`` (``lo = p // 2 - (E - 1) // 2``,
    as in :meth:`SizeMixin._merge_blocks`) can cost: max(|b| - |p|, 0) at an end of the range."""
    lo = p // 2 - (E - 1) // 2
    return max(abs(lo) - abs(p), abs(lo + E - 1) - abs(p), 0)
