"""Torch custom ops around :class:`~syno.codegen.triton.runtime.TritonOperator`.

``syno::triton_fwd(key, x, weights, precision) -> [y, *intermediates]`` and
``syno::triton_bwd(...) -> [grad_x, *grad_weights]`` are opaque to Dynamo/Inductor (fake kernels
give their shapes and strides), so ``torch.compile(fullgraph=True)``, CUDA graphs
(``reduce-overhead``) and ``torch.export`` see one node per operator call; autograd is registered
on the forward op. ``key`` names a live operator in this process (:func:`register`): an exported
program that calls the op needs the module that registered it.
"""

from __future__ import annotations

import itertools
import weakref

import torch

from .runtime import TritonOperator

_LIVE: "weakref.WeakValueDictionary[str, TritonOperator]" = weakref.WeakValueDictionary()
_IDS = itertools.count()


def register(op: TritonOperator) -> str:
    key = f"{op.plan.op.hash[:12]}-{next(_IDS)}"
    _LIVE[key] = op
    return key


def lookup(key: str) -> TritonOperator:
    op = _LIVE.get(key)
    if op is None:
        raise RuntimeError(f"syno triton operator {key!r} is not live in this process "
                           "(build the module that owns it first)")
    return op


@torch.library.custom_op("syno::triton_fwd", mutates_args=())
def triton_fwd(key: str, x: torch.Tensor, weights: list[torch.Tensor], precision: str) -> list[torch.Tensor]:
    y, inter = lookup(key).forward(x, weights, precision)
    return [y, *inter]


@triton_fwd.register_fake
def _(key, x, weights, precision):
    op = lookup(key)
    vals = op.class_sizes(x)
    y = op.output_like(x, vals, x.dtype)
    return [y] + [op.alloc(leaf, vals, x) for leaf in op.materialized]


@torch.library.custom_op("syno::triton_bwd", mutates_args=())
def triton_bwd(key: str, gy: torch.Tensor, x: torch.Tensor, weights: list[torch.Tensor],
               inter: list[torch.Tensor], needs: list[bool], precision: str) -> list[torch.Tensor]:
    grads = lookup(key).backward(gy, x, weights, inter, needs, precision)
    return [g if g is not None else t.new_empty(0) for g, t in zip(grads, [x, *weights])]


@triton_bwd.register_fake
def _(key, gy, x, weights, inter, needs, precision):
    return [torch.empty_like(t) if n else t.new_empty(0) for t, n in zip([x, *weights], needs)]


def _setup(ctx, inputs, output):
    key, x, weights, precision = inputs
    ctx.key, ctx.precision, ctx.n_w = key, precision, len(weights)
    ctx.save_for_backward(x, *weights, *output[1:])


def _backward(ctx, grads):
    saved = ctx.saved_tensors
    x, weights, inter = saved[0], list(saved[1:1 + ctx.n_w]), list(saved[1 + ctx.n_w:])
    gy = grads[0]
    needs = [bool(ctx.needs_input_grad[1])] + [bool(ctx.needs_input_grad[2])] * ctx.n_w
    out = triton_bwd(ctx.key, gy, x, weights, inter, needs, ctx.precision)
    gx = out[0] if needs[0] else None
    gws = [g if needs[1 + j] else None for j, g in enumerate(out[1:])]
    return None, gx, gws, None


triton_fwd.register_autograd(_backward, setup_context=_setup)


def apply(key: str, x: torch.Tensor, weights: list[torch.Tensor], precision: str) -> torch.Tensor:
    return triton_fwd(key, x, weights, precision)[0]


__all__ = ["register", "lookup", "apply", "triton_fwd", "triton_bwd"]
