"""Symbolic sizes: products of powers of named variables.

Two kinds of variables: *primary* (large sizes such as ``C_in``, ``H``; exponents must stay >= 0)
and *coefficient* (small constants such as ``k=3``, ``g=32``; exponents may be negative, so
``s^-1*H`` is a legal size). A :class:`Size` is an exponent vector over the variables of one
:class:`SizeSpace`; sizes are interned, hashable and cheap to multiply.

Concrete values come from :class:`Bindings`: several mappings at once (one per layer of a network
that shares the operator). A size is *valid* when it is a positive integer under all of them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Mapping, Sequence

PRIMARY = "primary"
COEFFICIENT = "coefficient"
DEFAULT_MAX_OCCURRENCES = 3
MAX_VARIABLES_PER_KIND = 16


class SizeError(ValueError):
    """A malformed size, shape or variable spec, or an impossible evaluation."""


@dataclass(frozen=True)
class Variable:
    name: str
    kind: str  # PRIMARY or COEFFICIENT
    estimate: int | None = None
    max_occurrences: int = DEFAULT_MAX_OCCURRENCES

    def spec(self) -> str:
        text = self.name if self.estimate is None else f"{self.name}={self.estimate}"
        return f"{text}: {self.max_occurrences}"


_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_SPEC_RE = re.compile(rf"^\s*({_IDENT})\s*(?:=\s*(\d+))?\s*(?::\s*(-?\d+))?\s*$")
_FACTOR_RE = re.compile(rf"^\s*({_IDENT}|\d+)\s*(?:\^\s*(-?\d+))?\s*$")


def parse_variable_spec(spec: str, kind: str) -> Variable:
    """Parse ``name``, ``name=value``, ``name: max_occ`` or ``name=value: max_occ``."""
    match = _SPEC_RE.match(spec)
    if not match:
        raise SizeError(f"malformed {kind} variable spec {spec!r}: expected 'name[=value][: max_occurrences]'")
    name, value, occ = match.groups()
    estimate = int(value) if value is not None else None
    if estimate is not None and estimate <= 0:
        raise SizeError(f"variable spec {spec!r}: value must be positive")
    max_occ = int(occ) if occ is not None else DEFAULT_MAX_OCCURRENCES
    if max_occ < 0:
        raise SizeError(f"variable spec {spec!r}: max occurrences must be >= 0")
    return Variable(name, kind, estimate, max_occ)


class SizeSpace:
    """The ordered variables of one synthesis problem; the factory of :class:`Size` objects.

    Variables are ordered by name within each kind (primary first), which fixes hashing,
    printing and enumeration order.
    """

    def __init__(self, primary: Iterable[Variable] = (), coefficient: Iterable[Variable] = ()):
        prim = sorted(primary, key=lambda v: v.name)
        coef = sorted(coefficient, key=lambda v: v.name)
        names = [v.name for v in prim + coef]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise SizeError(f"duplicate variable name(s): {', '.join(sorted(dup))}")
        if len(prim) > MAX_VARIABLES_PER_KIND or len(coef) > MAX_VARIABLES_PER_KIND:
            raise SizeError(f"at most {MAX_VARIABLES_PER_KIND} variables of each kind")
        if any(v.kind != PRIMARY for v in prim) or any(v.kind != COEFFICIENT for v in coef):
            raise SizeError("variable kinds do not match their lists")
        self.primary: tuple[Variable, ...] = tuple(prim)
        self.coefficient: tuple[Variable, ...] = tuple(coef)
        self.variables: tuple[Variable, ...] = self.primary + self.coefficient
        self.n_primary = len(prim)
        self._index = {v.name: i for i, v in enumerate(self.variables)}
        self._interned: dict[tuple[int, ...], Size] = {}
        self.one = self.size_of(())

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_specs(cls, primary: Sequence[str] = (), coefficient: Sequence[str] = (),
                   shapes: Sequence[str] = ()) -> SizeSpace:
        """Build from spec strings; names used in ``shapes`` but not declared become primaries."""
        prim = [parse_variable_spec(s, PRIMARY) for s in primary]
        coef = [parse_variable_spec(s, COEFFICIENT) for s in coefficient]
        declared = {v.name for v in prim + coef}
        for shape in shapes:
            for name in re.findall(_IDENT, shape):
                if name not in declared and name != "unordered":
                    prim.append(Variable(name, PRIMARY))
                    declared.add(name)
        return cls(prim, coef)

    def specs(self) -> dict[str, list[str]]:
        return {"primary": [v.spec() for v in self.primary],
                "coefficient": [v.spec() for v in self.coefficient]}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SizeSpace) and self.variables == other.variables

    def __hash__(self) -> int:
        return hash(self.variables)

    def __repr__(self) -> str:
        return f"SizeSpace({', '.join(v.spec() for v in self.variables)})"

    def index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise SizeError(f"unknown variable {name!r}; known: {', '.join(self._index)}") from None

    def variable(self, name: str) -> Variable:
        return self.variables[self.index(name)]

    def is_primary(self, index: int) -> bool:
        return index < self.n_primary

    def size_of(self, exps: Sequence[int]) -> Size:
        exps = tuple(exps) + (0,) * (len(self.variables) - len(exps))
        size = self._interned.get(exps)
        if size is None:
            size = Size(self, exps)
            self._interned[exps] = size
        return size

    def var(self, name: str, power: int = 1) -> Size:
        exps = [0] * len(self.variables)
        exps[self.index(name)] = power
        return self.size_of(exps)

    def size(self, text: str | Size | int) -> Size:
        """Parse ``C_in``, ``g^-1*C_out``, ``s^-1*H``, ``C_out/g`` or ``1``."""
        if isinstance(text, Size):
            return text
        if isinstance(text, int):
            if text != 1:
                raise SizeError(f"numeric size literal must be 1, got {text}")
            return self.one
        src = text.strip()
        if not src:
            raise SizeError("empty size expression")
        exps = [0] * len(self.variables)
        for sign, factor in _split_factors(src):
            match = _FACTOR_RE.match(factor)
            if not match:
                raise SizeError(f"malformed factor {factor!r} in size {text!r}")
            name, power = match.group(1), int(match.group(2) or 1)
            if name.isdigit():
                if int(name) != 1:
                    raise SizeError(f"numeric literal {name} in size {text!r}: only 1 is allowed; "
                                    "declare a coefficient variable (e.g. 'k=3') instead")
                continue
            if name not in self._index:
                raise SizeError(f"unknown variable {name!r} in size {text!r}; known: {', '.join(self._index)}")
            exps[self._index[name]] += sign * power
        return self.size_of(exps)

    def shape(self, text: str) -> Shape:
        """Parse a shape spec such as ``[N, C_in: unordered, H, W]``."""
        src = text.strip()
        if not (src.startswith("[") and src.endswith("]")):
            raise SizeError(f"shape {text!r} must be written in brackets, e.g. '[N, C_in, H, W]'")
        body = src[1:-1].strip()
        if not body:
            return Shape(())
        sizes, unordered = [], []
        for part in body.split(","):
            expr, _, attrs = part.partition(":")
            flags = {a.strip() for a in attrs.split("+") if a.strip()}
            unknown = flags - {"unordered"}
            if unknown:
                raise SizeError(f"unknown shape attribute(s) {sorted(unknown)} in {text!r}")
            size = self.size(expr)
            sizes.append(size)
            unordered.append("unordered" in flags)
        return Shape(tuple(sizes), tuple(unordered))

    def bind(self, mappings: Sequence[Mapping[str, int]] | Mapping[str, int] | None = None) -> Bindings:
        return Bindings(self, mappings)


def _split_factors(text: str) -> list[tuple[int, str]]:
    """Split ``a*b^2/c`` into signed factors [(1,'a'), (1,'b^2'), (-1,'c')]."""
    out, sign, start = [], 1, 0
    for i, ch in enumerate(text):
        if ch in "*/":
            out.append((sign, text[start:i]))
            sign, start = (1 if ch == "*" else -1), i + 1
    out.append((sign, text[start:]))
    return out


class Size:
    """An interned product of variable powers. Create through :class:`SizeSpace`."""

    __slots__ = ("space", "exps", "_hash", "__weakref__")

    def __init__(self, space: SizeSpace, exps: tuple[int, ...]):
        self.space = space
        self.exps = exps
        self._hash = hash(exps)

    # Interned per space, so identity is equality within a space.
    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, Size) and self.exps == other.exps
                                 and self.space == other.space)

    def __hash__(self) -> int:
        return self._hash

    def __mul__(self, other: Size) -> Size:
        return self.space.size_of(tuple(a + b for a, b in zip(self.exps, other.exps)))

    def __truediv__(self, other: Size) -> Size:
        return self.space.size_of(tuple(a - b for a, b in zip(self.exps, other.exps)))

    def __pow__(self, power: int) -> Size:
        return self.space.size_of(tuple(a * power for a in self.exps))

    @property
    def primary_exps(self) -> tuple[int, ...]:
        return self.exps[: self.space.n_primary]

    @property
    def coefficient_exps(self) -> tuple[int, ...]:
        return self.exps[self.space.n_primary:]

    def is_one(self) -> bool:
        return not any(self.exps)

    def has_primary(self) -> bool:
        return any(e > 0 for e in self.primary_exps)

    def is_legal(self) -> bool:
        """No negative primary power and not a pure coefficient quotient like ``s^-1``."""
        if any(e < 0 for e in self.primary_exps):
            return False
        if not self.has_primary() and any(e < 0 for e in self.coefficient_exps):
            return False
        return True

    def is_coefficient(self) -> bool:
        """Only non-negative coefficient powers, not one (e.g. ``k``, ``k^2*s``)."""
        return (not self.has_primary() and not self.is_one()
                and all(e >= 0 for e in self.coefficient_exps))

    def usage(self) -> tuple[int, int]:
        """(number of variables used, sum of |exponents|)."""
        return sum(1 for e in self.exps if e), sum(abs(e) for e in self.exps)

    def sort_key(self) -> tuple[int, ...]:
        return self.exps

    def __str__(self) -> str:
        n = self.space.n_primary
        parts = []
        order = list(range(n, len(self.exps))) + list(range(n))  # coefficients first, like the original
        for i in order:
            e = self.exps[i]
            if e:
                name = self.space.variables[i].name
                parts.append(name if e == 1 else f"{name}^{e}")
        return "*".join(parts) if parts else "1"

    def __repr__(self) -> str:
        return f"Size({self})"


@dataclass(frozen=True)
class Shape:
    sizes: tuple[Size, ...]
    unordered: tuple[bool, ...] = ()

    def __post_init__(self):
        if not self.unordered:
            object.__setattr__(self, "unordered", (False,) * len(self.sizes))

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self):
        return iter(self.sizes)

    def __getitem__(self, i: int) -> Size:
        return self.sizes[i]

    def __str__(self) -> str:
        items = [f"{s}: unordered" if u else str(s) for s, u in zip(self.sizes, self.unordered)]
        return "[" + ", ".join(items) + "]"


class Bindings:
    """Concrete values of every variable under one or more mappings (one per placeholder layer).

    Missing names fall back to the variable's ``=value`` estimate; with neither, it is an error
    naming the variable and the mapping.
    """

    def __init__(self, space: SizeSpace, mappings: Sequence[Mapping[str, int]] | Mapping[str, int] | None):
        if mappings is None:
            mappings = [{}]
        elif isinstance(mappings, Mapping):
            mappings = [mappings]
        if not mappings:
            raise SizeError("at least one mapping is required")
        self.space = space
        rows = []
        for m_index, mapping in enumerate(mappings):
            unknown = set(mapping) - set(space._index)
            if unknown:
                raise SizeError(f"mapping {m_index} names unknown variable(s) {sorted(unknown)}")
            row = []
            for var in space.variables:
                value = mapping.get(var.name, var.estimate)
                if value is None:
                    raise SizeError(f"no value for variable {var.name!r} in mapping {m_index} "
                                    f"and no estimate in its spec")
                if int(value) != value or value <= 0:
                    raise SizeError(f"variable {var.name!r} in mapping {m_index} must be a positive integer, got {value}")
                row.append(int(value))
            rows.append(tuple(row))
        self.rows: tuple[tuple[int, ...], ...] = tuple(rows)
        self._cache: dict[Size, tuple[Fraction, ...]] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def mapping(self, i: int) -> dict[str, int]:
        return {v.name: x for v, x in zip(self.space.variables, self.rows[i])}

    def values(self, size: Size) -> tuple[Fraction, ...]:
        """Exact value of ``size`` under every mapping."""
        cached = self._cache.get(size)
        if cached is None:
            out = []
            for row in self.rows:
                num, den = 1, 1
                for x, e in zip(row, size.exps):
                    if e > 0:
                        num *= x ** e
                    elif e < 0:
                        den *= x ** (-e)
                out.append(Fraction(num, den))
            cached = tuple(out)
            self._cache[size] = cached
        return cached

    def is_integral(self, size: Size) -> bool:
        return all(v.denominator == 1 for v in self.values(size))

    def is_valid(self, size: Size) -> bool:
        """Positive integer under every mapping (primary powers non-negative)."""
        return size.is_legal() and all(v.denominator == 1 and v >= 1 for v in self.values(size))

    def ints(self, size: Size) -> tuple[int, ...]:
        vals = self.values(size)
        for i, v in enumerate(vals):
            if v.denominator != 1:
                raise SizeError(f"size {size} is not an integer under mapping {i} ({self.mapping(i)}): {v}")
        return tuple(int(v) for v in vals)

    def int(self, size: Size, mapping: int = 0) -> int:
        return self.ints(size)[mapping]

    def lower(self, size: Size) -> Fraction:
        return min(self.values(size))

    def upper(self, size: Size) -> Fraction:
        return max(self.values(size))

    def total(self, size: Size) -> Fraction:
        return sum(self.values(size), Fraction(0))

    def log2(self, size: Size) -> tuple[float, ...]:
        return tuple(math.log2(v) for v in self.values(size))
