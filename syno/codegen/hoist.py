"""Weight preparation hoisted out of inference forwards.

A generated forward interleaves work on the data with work on the weights alone: a Shift of a
weight (``torch.roll``), a selection tensor contracted into a weight, the permute/reshape of a
weight into a conv's layout, its channels_last copy. During training the weights change every
step, so that work belongs to each forward (and to autograd). At inference it recomputes the same
tensors on every call: measured on an H100 (benchmarks/README.md, space speed), the slowest
ResNet-18 operators at N=1 rolled a 56 MB weight per layer per forward.

:func:`split_prepare` cuts a forward's source into ``prepare(cl, x_device, x_dtype, w1, ...)``, the
statements that read only weights, constants (a selection tensor built on the input's device in its
dtype) and the input's memory layout flag ``cl``, and ``main(x, w1, ..., p1, ...)``,
the rest, reading the prepared tensors as arguments. :class:`PreparedForward` runs ``main`` with
``prepare``'s result cached while no weight needs a gradient (``torch.no_grad`` or frozen
weights), keyed by the weights' storage and version counters, the layout flag, the device and the
autocast state, and the original forward otherwise (training, ``torch.compile``, CUDA-graph
capture of a first call). The cut works on the source's syntax tree, so it serves every emitter.
A CUDA graph captured at inference replays the prepared tensors it captured (like Inductor's
freezing): weights changed in place afterwards need an eager no-grad call and a new capture.
"""

from __future__ import annotations

import ast
import os
import weakref
from dataclasses import dataclass
from typing import Callable

import torch

_GLOBALS = {"torch", "F", "math", "None", "True", "False"}
LAYOUT_FLAG = "cl"
#: the data's attributes a prepared statement may read (``x.device`` -> ``x_device``): constants
#: such as selection tensors are built on the data's device in its dtype; both are in the cache key
DATA_META = ("device", "dtype")


class _DataMeta(ast.NodeTransformer):
    """Rewrites ``<data>.device`` / ``<data>.dtype`` into the names ``<data>_device`` / ``<data>_dtype``."""

    def __init__(self, data: str):
        self.data = data

    def visit_Attribute(self, node: ast.Attribute):
        if isinstance(node.value, ast.Name) and node.value.id == self.data and node.attr in DATA_META:
            return ast.copy_location(ast.Name(f"{self.data}_{node.attr}", ast.Load()), node)
        return self.generic_visit(node)


@dataclass(frozen=True)
class PreparedSource:
    prepare: str          # def prepare(cl, x_device, x_dtype, w1, ...) -> tuple of the prepared names
    main: str             # def main(x, w1, ..., <prepared names>)
    layout: str | None    # def layout(x) -> the forward's ``cl`` flag (None: the forward has none)
    outputs: tuple[str, ...]


def _reads(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _writes(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def split_prepare(source: str, fn_name: str = "forward") -> PreparedSource | None:
    """``source``'s forward cut into weight preparation and the rest, or None when nothing is
    worth hoisting (no statement reads a weight without the data) or the cut would change what the
    forward computes (a prepared name assigned again from the data)."""
    fn = next((n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == fn_name), None)
    if fn is None or fn.args.vararg or fn.args.kwonlyargs or len(fn.args.args) < 2:
        return None
    params = [a.arg for a in fn.args.args]
    data, weights = params[0], params[1:]
    meta = [f"{data}_{a}" for a in DATA_META]
    known = set(weights) | set(meta)  # names whose value depends on weights, the layout, device and dtype only
    hoisted: list[ast.stmt] = []
    kept: list[ast.stmt] = []
    layout: ast.Assign | None = None
    hoisted_names: set[str] = set()
    for st in fn.body:
        if (isinstance(st, ast.Assign) and _writes(st) == {LAYOUT_FLAG} and layout is None
                and _reads(st.value) <= {data} | _GLOBALS):  # layout(x) recomputes it outside the forward
            layout = st
            kept.append(st)
            known.add(LAYOUT_FLAG)
            continue
        lifted = _DataMeta(data).visit(ast.parse(ast.unparse(st)).body[0])  # a copy: st stays as it is
        if isinstance(st, (ast.Assign, ast.If)) and _hoistable(lifted, known):
            hoisted.append(lifted)
            names = _writes(st)
            known |= names
            hoisted_names |= names
            continue
        if isinstance(st, ast.Delete):  # prepared names are main's arguments: not deleted there
            rest = [t for t in st.targets if not (isinstance(t, ast.Name) and t.id in hoisted_names)]
            if rest:
                kept.append(ast.Delete(targets=rest) if len(rest) < len(st.targets) else st)
            continue
        if _writes(st) & hoisted_names:
            return None  # a prepared name reassigned from the data: keep the forward as it is
        known -= _writes(st)
        kept.append(st)
    if not hoisted:
        return None
    used = set().union(*(_reads(st) for st in kept)) if kept else set()
    outputs = tuple(sorted(hoisted_names & used))
    prep_args = ([LAYOUT_FLAG] if layout is not None else []) + meta + weights
    returned = ast.Return(ast.Tuple([ast.Name(n, ast.Load()) for n in outputs], ast.Load()))
    return PreparedSource(
        _function("prepare", prep_args, hoisted + [returned]),
        _function("main", [data, *weights, *outputs], kept),
        _function("layout", [data], [ast.Return(layout.value)]) if layout is not None else None,
        outputs)


def _hoistable(st: ast.stmt, known: set[str]) -> bool:
    """Reads nothing but weights, prepared names, the layout flag and module globals, and reads at
    least one weight-derived name (``t = None`` is left where it is)."""
    reads = _reads(st)
    if not reads <= known | _GLOBALS:
        return False
    if not (reads & (known - {LAYOUT_FLAG})):
        return False
    if isinstance(st, ast.If):
        return all(isinstance(s, ast.Assign) for s in st.body + st.orelse)
    return True


def _function(name: str, params: list[str], body: list[ast.stmt]) -> str:
    """Source of ``def name(*params): body``."""
    args = ast.arguments(posonlyargs=[], args=[ast.arg(n) for n in params], vararg=None, kwonlyargs=[],
                         kw_defaults=[], kwarg=None, defaults=[])
    fn = ast.FunctionDef(name=name, args=args, decorator_list=[], returns=None, type_params=[], body=body)
    return ast.unparse(ast.fix_missing_locations(ast.Module([fn], [])))


class PreparedForward:
    """``forward(x, *weights)`` with the weight preparation cached at inference (module docstring).
    ``hits``/``misses`` count cache use (tests, benchmarks)."""

    def __init__(self, forward: Callable, split: PreparedSource, compile_source: Callable[..., Callable]):
        self.forward = forward
        self.prepare = compile_source(split.prepare, "prepare")
        self.main = compile_source(split.main, "main")
        self.layout = compile_source(split.layout, "layout") if split.layout else None
        self._key: tuple | None = None
        self._prepared: tuple = ()
        self._held: tuple = ()
        self.hits = self.misses = 0
        _LIVE.add(self)

    def __call__(self, x: torch.Tensor, *weights: torch.Tensor):
        if (torch.compiler.is_compiling() or (torch.is_grad_enabled() and any(w.requires_grad for w in weights))
                or any(w.is_inference() for w in weights)):  # inference tensors have no version counter
            self._key, self._prepared, self._held = None, (), ()  # training: the weights move, drop what was kept
            return self.forward(x, *weights)
        flag = (self.layout(x),) if self.layout is not None else ()
        # the weights themselves are held with the key (identity, not addresses: a new tensor in a
        # freed weight's memory, e.g. a dequantized copy per call, must not hit), and their
        # version counters (in-place updates)
        amp = x.device.type in ("cuda", "cpu")  # autocast has no state for other devices (meta, mps)
        key = (flag, x.device, x.dtype, amp and torch.is_autocast_enabled(x.device.type),
               torch.get_autocast_dtype(x.device.type) if amp else None,
               tuple(w._version for w in weights))
        if key != self._key or any(a is not b for a, b in zip(weights, self._held)):
            if x.is_cuda and torch.cuda.is_current_stream_capturing():
                return self.forward(x, *weights)  # a first call inside a capture: nothing kept
            with torch.no_grad():
                self._prepared = self.prepare(*flag, x.device, x.dtype, *weights)
            self._key, self._held = key, weights
            self.misses += 1
        else:
            self.hits += 1
        return self.main(x, *weights, *self._prepared)


#: every live prepared forward, so a benchmark can count what the caches hold
_LIVE: "weakref.WeakSet[PreparedForward]" = weakref.WeakSet()


def live_prepared() -> tuple[torch.Tensor, ...]:
    """The tensors every live :class:`PreparedForward` keeps prepared now (what a CUDA graph
    captured at inference reads, and must keep alive)."""
    return tuple(t for fwd in list(_LIVE) for t in fwd._prepared if isinstance(t, torch.Tensor))


def live_prepared_bytes() -> int:
    """Bytes held by the weight caches of every live :class:`PreparedForward` (distinct storages):
    memory a model keeps besides its parameters once it has run at inference."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in live_prepared()}
    return sum(storages.values())


def with_prepared_weights(source: str, compile_source: Callable[[str, str], Callable]) -> Callable:
    """``source``'s ``forward`` compiled with ``compile_source(source, fn_name)``, wrapped in a
    :class:`PreparedForward` when it has weight preparation to hoist (never with
    ``SYNO_PREPARE_WEIGHTS=0`` at build time: the switch for side-by-side measurements)."""
    forward = compile_source(source, "forward")
    if os.environ.get("SYNO_PREPARE_WEIGHTS", "1") == "0":
        return forward
    split = split_prepare(source)
    return forward if split is None else PreparedForward(forward, split, compile_source)
