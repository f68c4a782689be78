"""``nn.Module`` s from operators.

:func:`build_module` lowers an operator (:func:`syno.ir.lowering.plan_for`), emits plain-torch
source for the plan (:mod:`syno.codegen.emit`) and wraps it in a :class:`SynoModule`:

* parameters ``weight1``, ``weight2``, ... (shapes = the operator's weight shapes), initialised
  with a fan-in scaled uniform law that reduces to PyTorch's conv default for one weight;
* ``forward(x)`` reads the batch size (and any other dynamic size) from ``x``; autograd, AMP
  autocast, channels_last inputs and ``torch.compile(fullgraph=True)`` all work;
* ``count_macs(input, output)`` (the model zoo's FLOPs protocol) and ``.plan``;
* ``implementation``: which registered implementation runs (:mod:`syno.codegen.registry`);
  ``registry.compile_model`` / :meth:`SynoModule.tune` (``registry.compile_operator``) is the
  explicit tuning step and fixes it. ``forward`` never tunes: an ``"auto"`` module never compiled
  runs ``cpu_variant`` off CUDA and, on CUDA, the default variant with one
  :class:`~syno.codegen.registry.UntunedWarning` (the registry's miss rule); the einsum path
  stays the reference (``module.implementation = "einsum"`` forces it).

The module pickles as (operator JSON, mapping) plus its state, and the generated code is
rebuilt on load.
"""

from __future__ import annotations

import linecache
import math
import weakref
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from syno.ir.graph import Operator
from syno.ir.lowering import Plan, plan_for

from .emit import emit_forward, init_bounds, macs_expr

_SOURCE_COUNTER = [0]


def compile_source(source: str, fn_name: str, tag: str = "syno") -> Callable:
    """exec generated source (registered with linecache so tracebacks and inspect work, for as long
    as the function lives: a long search builds thousands of modules, and their sources would
    otherwise stay in linecache for good)."""
    _SOURCE_COUNTER[0] += 1
    filename = f"<{tag}-generated-{_SOURCE_COUNTER[0]}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"torch": torch, "F": F, "math": math}
    exec(compile(source, filename, "exec"), namespace)
    fn = namespace[fn_name]
    weakref.finalize(fn, linecache.cache.pop, filename, None)
    return fn


def compile_forward(source: str, tag: str = "syno") -> Callable:
    """A generated ``forward(x, *weights)``, its weight preparation cached at inference
    (:mod:`syno.codegen.hoist`)."""
    from .hoist import with_prepared_weights
    return with_prepared_weights(source, lambda src, fn: compile_source(src, fn, tag=tag))


class SynoModule(nn.Module):
    """A generated operator module. Build with :func:`build_module`."""

    def __init__(self, op: Operator, mapping: Mapping[str, int], plan: Plan | None = None,
                 implementation: str = "auto"):
        super().__init__()
        self.op = op
        self.mapping = dict(mapping)
        self.plan = plan or plan_for(op, self.mapping)
        shapes = [tuple(self.plan.values[c] for c in t) for t in self.plan.analysis.tensors[1:]]
        for j, shape in enumerate(shapes, start=1):
            self.register_parameter(f"weight{j}", nn.Parameter(torch.empty(shape)))
        self.n_weights = len(shapes)
        self._setup_code()
        #: "auto" (fastest by GPU time on CUDA, einsum elsewhere), or "<backend>:<plan>" with
        #: backend einsum|fast|fastd|triton and plan min|nodiag|wfirst (:mod:`syno.codegen.registry`)
        self.implementation = implementation
        #: what "auto" runs off CUDA (the reference, unless the guard found it too big)
        self.cpu_variant = "einsum:min"
        self.reset_parameters()

    @property
    def implementation(self) -> str:
        return self._implementation

    @property
    def cpu_variant(self) -> str:
        return self._cpu_variant

    @cpu_variant.setter
    def cpu_variant(self, name: str) -> None:
        self._get_impl(name)
        self._cpu_variant = name

    @implementation.setter
    def implementation(self, name: str) -> None:
        from .registry import normalize
        name = normalize(name)
        if name != "auto":
            self._get_impl(name)  # build now, never inside a compiled region
        self._implementation = name

    # -- code ------------------------------------------------------------------------------
    def _setup_code(self) -> None:
        self.source = emit_forward(self.plan, "forward")
        self._reference = compile_forward(self.source)
        lines, expr = macs_expr(self.plan, "inp")
        self._macs_src = "def count_macs(inp):\n" + "".join(f"    {l}\n" for l in lines) + f"    return {expr}\n"
        self._macs_fn = compile_source(self._macs_src, "count_macs")
        self._impls: dict[str, Callable] = {"einsum:min": self._reference}
        self._miss_warned = False  # the registry's miss rule warns once per module
        from .fast import default_variant
        self._default = default_variant(self)
        self._get_impl(self._default)

    def _get_impl(self, name: str) -> Callable:
        fn = self._impls.get(name)
        if fn is None:
            from .registry import build, normalize
            name = normalize(name)
            fn = self._impls.get(name) or build(self, name)
            self._impls[name] = fn
        return fn

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for j, b in enumerate(init_bounds(self.plan), start=1):
                getattr(self, f"weight{j}").uniform_(-b, b)

    @property
    def weights(self) -> list[torch.Tensor]:
        return [getattr(self, f"weight{j}") for j in range(1, self.n_weights + 1)]

    def extra_repr(self) -> str:
        return (f"{self.op.name or self.op.hash}, mapping={self.mapping}, macs={self.plan.flops}, "
                f"implementation={self.implementation!r}")

    # -- execution -------------------------------------------------------------------------
    def _select(self, x: torch.Tensor) -> Callable:
        impl = self._implementation
        if impl != "auto":
            return self._impls[impl]
        if x.device.type != "cuda":
            return self._impls[self.cpu_variant] if self.cpu_variant != "einsum:min" else self._reference
        # never compiled (registry.compile_model): the miss rule, no tuning here
        if not self._miss_warned and not torch.compiler.is_compiling():
            from .registry import warn_untuned
            self._miss_warned = warn_untuned(self, x)
        return self._impls[self._default]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._select(x)(x, *self.weights)

    def tune(self, x: torch.Tensor, *, backward: bool = True, budget_s: float = 120.0,
             backends=None, **kw):
        """Explicit tuning step (run before timing or compiling): tune Triton tiles, time every
        implementation by GPU time, keep the fastest; returns the
        :class:`~syno.codegen.registry.CompiledOperator` (:func:`syno.codegen.registry.compile_operator`)."""
        from .registry import compile_operator
        return compile_operator(self, x, backward=backward, budget_s=budget_s, backends=backends, **kw)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._reference(x, *self.weights)

    def count_macs(self, input: torch.Tensor, output: torch.Tensor | None = None) -> int:
        """MACs of one forward call on ``input`` (whole batch) as executed by the plan."""
        return int(self._macs_fn(input))

    # -- pickling --------------------------------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        for k in ("_reference", "_macs_fn", "_impls", "plan", "op"):
            state.pop(k, None)
        state["_op_json"] = self.op.to_json()
        state["_weights_first"] = self.plan.weights_first
        state["_plan_options"] = dict(self.plan.variant_options, peak_limit=self.plan.peak_limit)
        return state

    def __setstate__(self, state):
        op = Operator.from_json(state.pop("_op_json"))
        wf = state.pop("_weights_first", False)
        opts = state.pop("_plan_options", {"weights_first": wf})
        impl = state.pop("_implementation", "auto")
        cpu = state.pop("_cpu_variant", "einsum:min")
        self.__dict__.update(state)
        self.op = op
        self.plan = plan_for(op, self.mapping, **opts)
        self._setup_code()
        self.implementation = impl
        self.cpu_variant = cpu


def build_module(op: Operator, mapping: Mapping[str, int], *, implementation: str = "auto",
                 weights_first: bool = False, peak_limit: str | float | int | None = None) -> SynoModule:
    """An ``nn.Module`` computing ``op`` for inputs shaped by ``mapping`` (any batch size).

    Before anything is allocated, the plan's peak forward memory at ``mapping`` is checked
    against ``peak_limit`` (default ``$SYNO_PEAK_LIMIT`` or 8x the larger of input+weights and
    output; ``False`` disables the check): over it, another plan is picked, or
    :class:`syno.codegen.cost.PlanTooCostly` is raised (see :mod:`syno.codegen.cost`)."""
    if peak_limit is False:
        return SynoModule(op, mapping, plan_for(op, mapping, weights_first=weights_first), implementation)
    from .cost import guard_plan, track_weights
    choice = guard_plan(op, mapping, weights_first=weights_first, implementation=implementation,
                        limit=peak_limit)
    module = SynoModule(op, mapping, choice.plan, implementation)
    track_weights(module)
    if choice.emitter != "einsum":
        module.cpu_variant = f"{choice.emitter}:min"  # the reference would not fit
    return module


def operator_factory(op: Operator, **kwargs) -> Callable[[Mapping[str, int]], nn.Module]:
    """``mapping -> nn.Module`` for model placeholders (``fill_placeholders``)."""

    def factory(mapping: Mapping[str, int]) -> nn.Module:
        return build_module(op, mapping, **kwargs)

    factory.operator = op  # type: ignore[attr-defined]
    return factory


__all__ = ["SynoModule", "build_module", "operator_factory", "compile_source"]
