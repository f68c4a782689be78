"""Naive reference evaluator: the ground truth codegen is tested against.

Enumerates every (output iterator, reduction) index combination with broadcasting, computes every
tensor index through the primitives' forward semantics, gathers, multiplies and sums. Written with
torch so it is differentiable (gradients of the reference are a reference too); memory is
``numel(output) * numel(reductions)`` elements, so use it on small concrete sizes.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from .graph import Operator
from .primitives import Dim, TopDim
from .sizes import Bindings, Size


def concrete_sizes(op: Operator, mapping: Mapping[str, int] | Bindings) -> dict[Size, int]:
    b = mapping if isinstance(mapping, Bindings) else op.space.bind(mapping)
    if len(b) != 1:
        raise ValueError("the reference evaluator takes exactly one mapping")
    return {d.size: b.int(d.size) for d in op.all_dims} | {
        p: b.int(p) for o in op.ops for p in o.params if isinstance(p, Size)}


def tensor_shapes(op: Operator, mapping: Mapping[str, int]) -> tuple[tuple[int, ...], ...]:
    """Concrete shapes of (input, weight 1, weight 2, ...)."""
    sizes = concrete_sizes(op, mapping)
    return tuple(tuple(sizes[d.size] for d in t) for t in op.tensors)


def output_shape(op: Operator, mapping: Mapping[str, int]) -> tuple[int, ...]:
    sizes = concrete_sizes(op, mapping)
    return tuple(sizes[d.size] for d in op.outputs)


def index_arrays(op: Operator, sizes: Mapping[Size, int], device=None):
    """Index value (broadcastable LongTensor) of every dim, and the combined validity mask."""
    leaves: list[Dim] = list(op.outputs) + list(op.reductions)
    n = len(leaves)
    values: dict[Dim, torch.Tensor] = {}
    for axis, d in enumerate(leaves):
        shape = [1] * n
        shape[axis] = sizes[d.size]
        values[d] = torch.arange(sizes[d.size], device=device).reshape(shape)
    mask = None
    for o in op.ops:
        tops, valid = o.top_indices([values[b] for b in o.bottoms], sizes.__getitem__)
        for t, v in zip(o.tops, tops):
            values[t] = v
        if valid is not None:
            mask = valid if mask is None else mask & valid
    return values, mask


def reference_forward(op: Operator, mapping: Mapping[str, int], inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Evaluate ``op`` on ``inputs`` = (data, weight 1, ...) for one concrete mapping."""
    if len(inputs) != len(op.tensors):
        raise ValueError(f"operator takes {len(op.tensors)} tensors, got {len(inputs)}")
    sizes = concrete_sizes(op, mapping)
    for k, (t, dims) in enumerate(zip(inputs, op.tensors)):
        want = tuple(sizes[d.size] for d in dims)
        if tuple(t.shape) != want:
            raise ValueError(f"tensor {k} has shape {tuple(t.shape)}, expected {want}")
    values, mask = index_arrays(op, sizes, device=inputs[0].device)
    term = None
    for t, dims in zip(inputs, op.tensors):
        idx = []
        for d in dims:
            v = values[d]
            idx.append(v.clamp(0, sizes[d.size] - 1) if _may_leave_range(d) else v)
        g = t[tuple(idx)] if dims else t
        term = g if term is None else term * g
    if mask is not None:
        term = term * mask.to(term.dtype)
    n_out = len(op.outputs)
    full = [sizes[d.size] for d in op.outputs] + [sizes[d.size] for d in op.reductions]
    term = term.expand(full) if term.dim() else term.expand(full)
    if op.reductions:
        term = term.sum(dim=tuple(range(n_out, n_out + len(op.reductions))))
    return term


def _may_leave_range(d: Dim) -> bool:
    """Only Unfold tops (and dims computed from them) can index outside their range."""
    return isinstance(d, TopDim)


def random_inputs(op: Operator, mapping: Mapping[str, int], dtype=torch.float64,
                  generator: torch.Generator | None = None) -> list[torch.Tensor]:
    return [torch.randn(s, dtype=dtype, generator=generator) for s in tensor_shapes(op, mapping)]
