"""The operator graph: an immutable DAG of primitives from output dims to input + weight tensors.

``out[i_0..] = sum over reductions of in_0[...] * in_1[...] * ...`` where every tensor index is an
expression of the output iterators and reductions built by the primitives (see
:mod:`syno.ir.primitives`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping, Sequence

from .primitives import (Dim, Expand, IRError, IteratorDim, Op, ReduceDim, Share, TopDim,
                         op_from_name)
from .sizes import Bindings, Shape, Size, SizeSpace

FORMAT = "syno.operator/1"


@dataclass(frozen=True, eq=False)
class Operator:
    """A complete operator. ``input`` are the data tensor's axes (in input-shape order);
    ``weights[j]`` the axes of weight ``j+1`` (each a Share's weight side); ``expanded`` the dims
    that are broadcast (consumed by an :class:`Expand`)."""

    space: SizeSpace
    outputs: tuple[IteratorDim, ...]
    input: tuple[Dim, ...]
    weights: tuple[tuple[Dim, ...], ...]
    expanded: tuple[Dim, ...] = ()
    name: str = ""
    _analysis: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "input", tuple(self.input))
        object.__setattr__(self, "weights", tuple(tuple(w) for w in self.weights))
        object.__setattr__(self, "expanded", tuple(self.expanded))
        self._validate()

    # -- structure ---------------------------------------------------------------------------
    @property
    def tensors(self) -> tuple[tuple[Dim, ...], ...]:
        return (self.input,) + self.weights

    @cached_property
    def ops(self) -> tuple[Op, ...]:
        """All primitives (incl. Expands), bottom-up: an op comes after the ops below it."""
        seen: dict[Op, None] = {}
        stack: list[Dim] = [d for t in self.tensors for d in t]
        ops = [Expand(d) for d in self.expanded]
        stack.extend(d for d in self.expanded)
        while stack:
            d = stack.pop()
            if isinstance(d, TopDim) and d.op not in seen:
                seen[d.op] = None
                stack.extend(d.op.bottoms)
        ops.extend(seen)
        return tuple(sorted(ops, key=lambda o: (max(b.height for b in o.bottoms), o.describe_key())))

    @cached_property
    def reductions(self) -> tuple[ReduceDim, ...]:
        reds = {b for op in self.ops for b in op.bottoms if isinstance(b, ReduceDim)}
        reds |= {d for t in self.tensors for d in t if isinstance(d, ReduceDim)}
        return tuple(sorted(reds, key=lambda r: (r.size.exps, r.multiplicity)))

    @cached_property
    def consumer(self) -> dict[Dim, Op | None]:
        """For every dim, the op that consumes it as a bottom (None for tensor axes)."""
        out: dict[Dim, Op | None] = {d: None for t in self.tensors for d in t}
        for op in self.ops:
            for b in op.bottoms:
                out[b] = op
        return out

    @cached_property
    def all_dims(self) -> tuple[Dim, ...]:
        dims = dict.fromkeys(self.outputs)
        dims.update(dict.fromkeys(self.reductions))
        for op in self.ops:
            dims.update(dict.fromkeys(op.bottoms))
            dims.update(dict.fromkeys(op.tops))
        for t in self.tensors:
            dims.update(dict.fromkeys(t))
        return tuple(dims)

    def _validate(self) -> None:
        if not self.weights:
            pass  # pure view/pooling operators are allowed in the IR; synthesis requires weights
        for i, it in enumerate(self.outputs):
            if not isinstance(it, IteratorDim) or it.index != i:
                raise IRError(f"output {i} must be IteratorDim index {i}, got {it!r}")
        uses: dict[Dim, int] = {}
        for t in self.tensors:
            for d in t:
                uses[d] = uses.get(d, 0) + 1
        for op in self.ops:  # includes the Expand ops of ``expanded``
            for b in op.bottoms:
                uses[b] = uses.get(b, 0) + 1
        for op in self.ops:
            for top in op.tops:
                if uses.get(top, 0) != 1:
                    raise IRError(f"top {top!r} of {op.name} must be used exactly once "
                                  f"(as a tensor axis or an operand), used {uses.get(top, 0)} times")
        for d, n in uses.items():
            if n != 1:
                raise IRError(f"dimension {d!r} is used {n} times; each dim has one consumer")
        leaves = {d for d in uses if not isinstance(d, TopDim)}
        iters = {d for d in leaves if isinstance(d, IteratorDim)}
        if iters != set(self.outputs):
            missing = set(self.outputs) - iters
            extra = iters - set(self.outputs)
            raise IRError(f"output iterators not all reached (missing {sorted(map(repr, missing))}, "
                          f"foreign {sorted(map(repr, extra))})")
        for j, w in enumerate(self.weights, start=1):
            if not w:
                raise IRError(f"weight {j} has no axes")
            for d in w:
                if not (isinstance(d, TopDim) and isinstance(d.op, Share) and d.slot == 1):
                    raise IRError(f"weight {j} axis {d!r} must be the weight side of a Share")
                if d.op.weight != j:
                    raise IRError(f"weight {j} axis {d!r} belongs to weight {d.op.weight}")
        for op in self.ops:
            if isinstance(op, Share) and op.weight > len(self.weights):
                raise IRError(f"Share refers to weight {op.weight} but only {len(self.weights)} weights exist")
        for d in self.input + self.expanded:
            if isinstance(d, TopDim) and isinstance(d.op, Share) and d.slot == 1:
                raise IRError(f"weight-side dim {d!r} used as data")

    # -- shapes, counts ----------------------------------------------------------------------
    @property
    def input_shape(self) -> Shape:
        return Shape(tuple(d.size for d in self.input))

    @property
    def output_shape(self) -> Shape:
        return Shape(tuple(d.size for d in self.outputs), tuple(d.unordered for d in self.outputs))

    @property
    def weight_shapes(self) -> tuple[Shape, ...]:
        return tuple(Shape(tuple(d.size for d in w)) for w in self.weights)

    def bind(self, mappings: Sequence[Mapping[str, int]] | Mapping[str, int] | None = None) -> Bindings:
        return self.space.bind(mappings)

    def _numel(self, dims, b: Bindings) -> tuple[int, ...]:
        out = [1] * len(b)
        for d in dims:
            for i, v in enumerate(b.ints(d.size)):
                out[i] *= v
        return tuple(out)

    def params(self, bindings: Bindings) -> tuple[int, ...]:
        """Number of weight parameters under each mapping."""
        totals = [0] * len(bindings)
        for w in self.weights:
            for i, v in enumerate(self._numel(w, bindings)):
                totals[i] += v
        return tuple(totals)

    def naive_flops(self, bindings: Bindings) -> tuple[int, ...]:
        """Multiply-accumulates of the plain loop nest (one MAC per extra tensor per point)."""
        factor = max(len(self.tensors) - 1, 1)
        outs = self._numel(self.outputs, bindings)
        reds = self._numel(self.reductions, bindings)
        return tuple(o * r * factor for o, r in zip(outs, reds))

    def flops(self, bindings: Bindings) -> tuple[int, ...]:
        """MACs of the lowered computation (the minimal-cost plan that codegen executes)."""
        from .lowering import plan_for

        return tuple(plan_for(self, bindings.mapping(i)).flops for i in range(len(bindings)))

    # -- identity ----------------------------------------------------------------------------
    @cached_property
    def hash(self) -> str:
        """Stable content hash: equal for the same operator in any process or run."""
        parts = ["in:" + ",".join(d.digest for d in self.input)]
        for j, w in enumerate(self.weights, start=1):
            parts.append(f"w{j}:" + ",".join(sorted(d.digest for d in w)))
        parts.append("ex:" + ",".join(sorted(d.digest for d in self.expanded)))
        parts.append("out:" + ",".join(d.digest for d in self.outputs))
        return hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Operator) and self.hash == other.hash

    def __hash__(self) -> int:
        return hash(self.hash)

    # -- serialization -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        refs: dict[Dim, str] = {d: f"i{d.index}" for d in self.outputs}
        for k, r in enumerate(self.reductions):
            refs[r] = f"r{k}"
        ops_out = []
        for k, op in enumerate(o for o in self.ops if not isinstance(o, Expand)):
            params = [str(p) if isinstance(p, Size) else p for p in op.params]
            ops_out.append({"op": op.name, "bottoms": [refs[b] for b in op.bottoms], "params": params})
            for t in op.tops:
                refs[t] = f"o{k}.{t.slot}"
        return {
            "format": FORMAT,
            "name": self.name,
            "space": self.space.specs(),
            "output": str(self.output_shape),
            "reductions": [{"size": str(r.size), "multiplicity": r.multiplicity} for r in self.reductions],
            "ops": ops_out,
            "input": [refs[d] for d in self.input],
            "weights": [[refs[d] for d in w] for w in self.weights],
            "expanded": [refs[d] for d in self.expanded],
        }

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Operator:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise IRError(f"not a serialized syno operator (expected format {FORMAT!r})")
        try:
            space = SizeSpace.from_specs(data["space"]["primary"], data["space"]["coefficient"])
            out_shape = space.shape(data["output"])
            refs: dict[str, Dim] = {}
            outputs = []
            for i, (s, u) in enumerate(zip(out_shape.sizes, out_shape.unordered)):
                outputs.append(IteratorDim(i, s, u))
                refs[f"i{i}"] = outputs[-1]
            for k, r in enumerate(data["reductions"]):
                refs[f"r{k}"] = ReduceDim(space.size(r["size"]), int(r["multiplicity"]))
            for k, o in enumerate(data["ops"]):
                cls_ = op_from_name(o["op"])
                params = [space.size(p) if isinstance(p, str) else p for p in o["params"]]
                op = cls_(*[refs[b] for b in o["bottoms"]], *params)
                for t in op.tops:
                    refs[f"o{k}.{t.slot}"] = t
            return cls(space, tuple(outputs), tuple(refs[r] for r in data["input"]),
                       tuple(tuple(refs[r] for r in w) for w in data["weights"]),
                       tuple(refs[r] for r in data.get("expanded", [])), data.get("name", ""))
        except KeyError as exc:
            raise IRError(f"serialized operator is missing or references unknown entry {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> Operator:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IRError(f"operator JSON is malformed: {exc}") from None
        return cls.from_dict(data)

    def __repr__(self) -> str:
        ws = ", ".join(str(s) for s in self.weight_shapes)
        return f"Operator({self.name or self.hash}: {self.input_shape}, {ws} -> {self.output_shape})"
