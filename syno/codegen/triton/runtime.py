"""Compiled stages and their launcher: :class:`TritonOperator` runs a plan's forward and backward
stages as Triton kernels (GPU, or the CPU interpreter when ``TRITON_INTERPRET=1``).

Buffers: the inputs and weights as given (any strides), ones tensors for constant Unfolds,
intermediates allocated in the layout :func:`~syno.codegen.triton.stages.build_program` chose,
and the output ``y`` (channels_last when a 4-D input is). Gradients: ``g_<buffer>``, zeroed and
in fp32 where a stage scatters into them with atomic adds.
"""

from __future__ import annotations

import linecache
import math
import os
import threading
import weakref
from dataclasses import dataclass, replace

import torch

from syno.ir.lowering import Plan

from .kernel import KernelSpec, stage_source
from .stages import Program, Stage, backward_stages, build_program

_COUNTER = [0]
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Config:
    BM: int = 64
    BN: int = 64
    BK: int = 32
    num_warps: int = 4
    num_stages: int = 3
    split: int = 1          # split-K programs (atomic fp32 accumulation when > 1)

    def key(self) -> str:
        return f"{self.BM}x{self.BN}x{self.BK}w{self.num_warps}s{self.num_stages}k{self.split}"

    @classmethod
    def parse(cls, text: str) -> "Config":
        mnk, rest = text.split("w")
        warps, rest = rest.split("s")
        stages, split = rest.split("k")
        bm, bn, bk = (int(v) for v in mnk.split("x"))
        return cls(bm, bn, bk, int(warps), int(stages), int(split))


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, 1 << max(0, math.ceil(math.log2(max(n, 1))))))


def default_config(spec: KernelSpec, m: int, n: int, k: int, b: int = 1) -> Config:
    """A reasonable untuned tile: tensor-core sized, no larger than the problem."""
    if interpreting():
        # the CPU interpreter pays per program and per op, not per element: few, large tiles
        lo = 16 if spec.two else 1
        return Config(_pow2(m, 16, 1024), _pow2(n, lo, 256), _pow2(k, lo, 256), 1, 1)
    if spec.grouped:
        return grouped_config(spec, Config(_pow2(m, 16, 128), 32, 16, 4, 2), n)
    if not spec.two:
        cfg = Config(_pow2(m, 16, 128), 1, _pow2(k, 1, 32), 4, 2)
    else:
        cfg = Config(_pow2(m, 16, 128), _pow2(n, 16, 128), _pow2(k, 16, 32), 4, 3)
    return replace(cfg, split=default_split(spec, cfg, m, n, k, b))


def grouped_config(spec: KernelSpec, cfg: Config, n: int) -> Config:
    """A grouped stage's tile (:mod:`.grouped`): BN at least one group's columns and 16, at most
    the columns there are; BK follows from BN (the block's data columns)."""
    from .grouped import block_width

    bn = max(spec.per_group, 16, min(cfg.BN, _pow2(n, 16, 256)))
    return replace(cfg, BN=bn, BK=block_width(spec.per_group, spec.width, bn), split=1)


def default_split(spec: KernelSpec, cfg: Config, m: int, n: int, k: int, b: int) -> int:
    """Split K when the output tiles alone cannot fill the GPU (about two waves of 132 SMs)."""
    if not spec.split_ok:
        return 1
    tiles = triton_cdiv(m, cfg.BM) * triton_cdiv(n, cfg.BN) * b
    if tiles >= 264 or k < 8 * cfg.BK:
        return 1
    return int(max(1, min(128, 264 // tiles, k // (4 * cfg.BK))))


def _compile(source: str, name: str):
    import triton
    import triton.language as tl

    with _LOCK:
        _COUNTER[0] += 1
        filename = f"<syno-triton-{_COUNTER[0]}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    ns = {"triton": triton, "tl": tl}
    exec(compile(source, filename, "exec"), ns)
    fn = ns[name]
    # Triton reads the source through linecache while it compiles; drop it with the kernel so a
    # long search does not keep every generated kernel's text
    weakref.finalize(fn, linecache.cache.pop, filename, None)
    return fn


def _dtype_name(dt: torch.dtype) -> str:
    return str(dt).replace("torch.", "")


class TritonOperator:
    """Forward and backward of one plan as generated Triton kernels."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.prog: Program = build_program(plan)
        self.bwd: list[Stage] = backward_stages(self.prog)
        an = plan.analysis
        self.dynamic = {cid: axis for _, (axis, cid) in an.dynamic.items()}
        self.dyn_names = {cid: "v_" + name for name, (_, cid) in an.dynamic.items()}
        self._kernels: dict[tuple, tuple] = {}
        #: tuned tile per (direction, stage index, dtype, shape key); see :mod:`.tune`
        self.configs: dict[tuple, Config] = {}
        self._ones: dict[tuple, torch.Tensor] = {}
        self._looked_up: set = set()
        self._sizes: dict[tuple, tuple[int, int, int, int]] = {}
        #: intermediates computed inside their consumer's loads instead of materialised
        #: (chosen by the tuner by GPU time; see :meth:`fusable`)
        self._producer = {st.store.leaf: (i, st) for i, st in enumerate(self.prog.stages)}
        # default before any timing: fuse producers of at most 4 products per element (e.g.
        # Operator 1's grouped 1x1 stage at C <= 128), which cost less than a round trip of
        # the intermediate through memory; tune() times both and may flip it
        self.fused: frozenset[str] = frozenset(self.fusable(limit=4))
        #: fused grouped producers as block-diagonal tl.dot (else FMA loops); see gemm.dot_producer
        self.producer_dot = True
        #: forward stages run as the flat kernel although they fit the grouped one (:mod:`.grouped`;
        #: the tuner picks per stage by GPU time: the grouped kernel launches few programs at N=1)
        self.flat_thin: frozenset[int] = frozenset()

    # -- sizes and buffers -----------------------------------------------------------------
    def class_sizes(self, x: torch.Tensor) -> list[int]:
        vals = list(self.plan.values)
        for cid, axis in self.dynamic.items():
            vals[cid] = x.shape[axis]
        return vals

    def check_input(self, x: torch.Tensor) -> None:
        want = self.prog.leaves["x"]
        if x.dim() != len(want):
            raise ValueError(f"input has {x.dim()} axes, the operator takes {len(want)}")
        for k, c in enumerate(want):
            if c not in self.dynamic and x.shape[k] != self.plan.values[c]:
                raise ValueError(f"input axis {k} has size {x.shape[k]}, expected {self.plan.values[c]} "
                                 f"(mapping {self.plan.mapping})")

    def shape(self, leaf: str, vals) -> list[int]:
        return [vals[c] for c in self.prog.leaves[leaf]]

    def output_like(self, x: torch.Tensor, vals, dtype) -> torch.Tensor:
        shape = self.shape("y", vals)
        channels_last = (x.dim() == 4 and len(shape) == 4 and x.shape[1] > 1
                         and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return torch.empty(shape, device=x.device, dtype=dtype, memory_format=fmt)

    def alloc(self, leaf: str, vals, like: torch.Tensor, dtype=None, zero=False) -> torch.Tensor:
        layout = self.prog.layouts.get(leaf)
        shape = self.shape(leaf, vals)
        if layout is None:
            layout = tuple(range(len(shape)))
        phys = [shape[k] for k in layout]
        make = torch.zeros if zero else torch.empty
        t = make(phys, device=like.device, dtype=dtype or like.dtype)
        inv = [layout.index(k) for k in range(len(shape))]
        return t.permute(inv)

    def ones(self, name: str, like: torch.Tensor) -> torch.Tensor:
        key = (name, like.device, like.dtype)
        t = self._ones.get(key)
        if t is None:
            spec, v = self.prog.consts[name], self.plan.values
            if isinstance(spec, tuple):
                u, m, w = spec
                ar = lambda n: torch.arange(n, device=like.device)  # noqa: E731
                t = (ar(v[u])[:, None, None] == ar(v[m])[None, :, None] + ar(v[w])[None, None, :]
                     - v[w] // 2).to(like.dtype)
            else:
                t = torch.ones(v[spec], device=like.device, dtype=like.dtype)
            self._ones[key] = t
        return t

    def fusable(self, limit: int = 32) -> list[str]:
        """Intermediates whose producer sums over few static values (e.g. Operator 1's grouped
        1x1 stage, C/g channels): cheap enough to recompute inside the consumer's loads."""
        out: list[str] = []
        consumer = {a.leaf: st.store.leaf for st in self.prog.stages for a in st.operands}
        for leaf in self.prog.intermediates:
            _, st = self._producer[leaf]
            # one level only: a fused producer reads materialised buffers, and its consumer is a
            # real kernel (not itself recomputed inside another one)
            chained = any(a.leaf in out for a in st.operands) or consumer.get(leaf) in self._producer and \
                consumer.get(leaf) in self.fusable_candidates(limit)
            if not chained and leaf in self.fusable_candidates(limit):
                out.append(leaf)
        return out

    def fusable_candidates(self, limit: int) -> set[str]:
        out = set()
        for leaf in self.prog.intermediates:
            _, st = self._producer[leaf]
            if all(c not in self.dynamic for c in st.summed) and \
                    math.prod(self.plan.values[c] for c in st.summed) <= limit:
                out.add(leaf)
        return out

    @property
    def materialized(self) -> list[str]:
        return [l for l in self.prog.intermediates if l not in self.fused]

    # -- kernels ---------------------------------------------------------------------------
    def kernel(self, direction: str, index: int, dtype: torch.dtype, bufs: dict[str, torch.Tensor]):
        stage = (self.prog.stages if direction == "fwd" else self.bwd)[index]
        fused = {a.leaf: self._producer[a.leaf][1] for a in stage.operands
                 if direction == "fwd" and a.leaf in self.fused}
        leaves = []
        for a in stage.operands:
            leaves += [p.leaf for p in fused[a.leaf].operands] if a.leaf in fused else [a.leaf]
        leaves.append(stage.store.leaf)
        strides = {l: tuple(bufs[l].stride()) for l in leaves}
        # the strides pick loop orders and which K blocks are contiguous runs (kernel.py, gemm.py);
        # they are fixed per layout (the batch size only scales the outermost one)
        grouped_ok = not (direction == "fwd" and index in self.flat_thin)
        key = (direction, index, _dtype_name(dtype), tuple(strides.values()), tuple(sorted(fused)),
               self.producer_dot, grouped_ok)
        hit = self._kernels.get(key)
        if hit is None:
            src, spec = stage_source(self.prog, stage, index, strides, _dtype_name(dtype), fused,
                                     self.producer_dot, grouped_ok)
            if direction != "fwd":
                src = src.replace(f"def stage{index}(", f"def grad{index}(")
                spec = KernelSpec(f"grad{index}", *list(spec.__dict__.values())[1:])
            hit = self._kernels[key] = (_compile(src, spec.name), spec, src)
        return hit

    def resolve(self, direction: str, index: int, bufs, vals, dtype):
        """(kernel, spec, sizes m, n, b, k, config) of one stage."""
        fn, spec, _ = self.kernel(direction, index, dtype, bufs)
        dyn = {self.dyn_names[c]: vals[c] for c in self.dyn_names}
        skey = (spec, tuple(dyn.values()))
        sizes = self._sizes.get(skey)
        if sizes is None:  # the size expressions are products of ints and dynamic sizes
            sizes = self._sizes[skey] = tuple(eval(s, {}, dyn) for s in (spec.m_size, spec.n_size, spec.batch_size,
                                                                         spec.k_size))
        m, n, b, k = sizes
        config = self.configs.get(self.config_key(direction, index, dtype, vals)) or \
            default_config(spec, m, n, k, b)
        if not spec.split_ok:
            config = replace(config, split=1)
        return fn, spec, (m, n, b, k), config

    def launch(self, direction: str, index: int, bufs: dict[str, torch.Tensor], vals, dtype,
               config: Config | None = None, precision: str = "ieee"):
        fn, spec, (m, n, b, k), default = self.resolve(direction, index, bufs, vals, dtype)
        config = config or default
        if spec.grouped:
            config = grouped_config(spec, config, n)
        dyn = {self.dyn_names[c]: vals[c] for c in self.dyn_names}
        args = [bufs[l] for l in spec.leaves]
        for l in spec.leaves:
            args += list(bufs[l].stride())
        args += [dyn[d] for d in spec.dynamic]
        grid = (triton_cdiv(m, config.BM) * triton_cdiv(n, config.BN) * b, config.split)
        fn[grid](*args, BM=config.BM, BN=config.BN, BK=config.BK, SPLIT=config.split, PREC=precision,
                 num_warps=config.num_warps, num_stages=config.num_stages)
        return m, n, k, b

    def load_tuned(self, x: torch.Tensor) -> None:
        """Tiles tuned earlier for this shape/dtype/layout/device (disk cache of :mod:`.tune`):
        a lookup, once per shape; nothing is timed here."""
        key = (tuple(x.shape), tuple(x.stride()), x.dtype, x.device)
        if key in self._looked_up or not x.is_cuda:
            return
        self._looked_up.add(key)
        from .tune import load_cached
        load_cached(self, x)

    def config_key(self, direction, index, dtype, vals) -> tuple:
        return (direction, index, _dtype_name(dtype), tuple(vals[c] for c in self.dyn_names))

    # -- execution -------------------------------------------------------------------------
    def inputs(self, x, weights) -> dict[str, torch.Tensor]:
        bufs = {"x": x}
        for j, w in enumerate(weights, start=1):
            bufs[f"w{j}"] = w
        for name in self.prog.consts:
            bufs[name] = self.ones(name, x)
        return bufs

    def forward(self, x: torch.Tensor, weights, precision: str = "ieee"):
        """(y, intermediates) for inputs of one dtype."""
        self.check_input(x)
        for t in [x, *weights]:
            if t.numel() >= 2 ** 31:
                raise ValueError(f"tensor of {t.numel()} elements: 32-bit addressing only")
        vals = self.class_sizes(x)
        self.load_tuned(x)
        bufs = self.inputs(x, weights)
        inter = []
        for i, st in enumerate(self.prog.stages):
            leaf = st.store.leaf
            if leaf in self.fused:
                continue  # computed inside its consumer's loads
            bufs[leaf] = (self.output_like(x, vals, x.dtype) if leaf == "y" else self.alloc(leaf, vals, x))
            if bufs[leaf].numel() >= 2 ** 31:
                raise ValueError(f"{leaf} would have {bufs[leaf].numel()} elements: 32-bit addressing only")
            if leaf != "y":
                inter.append(bufs[leaf])
            self.launch_forward(i, bufs, vals, x.dtype, precision=precision)
        return bufs["y"], inter

    def launch_forward(self, index: int, bufs, vals, dtype, config: Config | None = None,
                       precision: str = "ieee") -> None:
        """One forward stage into ``bufs[its leaf]``. With split-K (few output tiles, e.g. N=1 on
        a large layer: the SMs would idle) the programs add fp32 partial sums into a zeroed
        buffer of the same layout, cast into the result afterwards."""
        leaf = self.prog.stages[index].store.leaf
        cfg = config or self.resolve("fwd", index, bufs, vals, dtype)[3]
        if cfg.split <= 1:
            self.launch("fwd", index, bufs, vals, dtype, cfg, precision)
            return
        real = bufs[leaf]
        bufs[leaf] = torch.zeros_like(real, dtype=torch.float32)
        try:
            self.launch("fwd", index, bufs, vals, dtype, cfg, precision)
            real.copy_(bufs[leaf])
        finally:
            bufs[leaf] = real

    def backward(self, gy: torch.Tensor, x: torch.Tensor, weights, inter, needs, precision: str = "ieee",
                 keep: dict | None = None):
        """Gradients w.r.t. (x, *weights); None where ``needs`` is False. ``keep`` receives the
        buffers (for the tuner)."""
        vals = self.class_sizes(x)
        bufs = self.inputs(x, weights)
        for leaf, t in zip(self.materialized, inter):
            bufs[leaf] = t
        for leaf in self.prog.intermediates:  # fused ones are recomputed for the weight gradients
            if leaf in self.fused:
                i, _ = self._producer[leaf]
                bufs[leaf] = self.alloc(leaf, vals, x)
                self.launch_forward(i, bufs, vals, x.dtype, precision=precision)
        bufs["g_y"] = gy
        wanted = {name for name, need in zip(self.prog.inputs, needs) if need}
        # gradients of unwanted inputs are skipped (intermediates' always run: they feed others)
        for i, st in enumerate(self.bwd):
            target = st.store.leaf[2:]
            if target in self.prog.inputs and target not in wanted:
                continue
            bufs[st.store.leaf] = bufs[target]  # stand-in with the right strides to pick the kernel
            _, _, _, cfg = self.resolve("bwd", i, bufs, vals, x.dtype)
            f32 = st.atomic or cfg.split > 1
            zero = f32 or not st.store.bijective
            base = bufs[target]
            dt = (torch.float32 if base.dtype != torch.float64 else base.dtype) if f32 else base.dtype
            if target in self.prog.inputs:
                g = torch.zeros_like(base, dtype=dt) if zero else torch.empty_like(base, dtype=dt)
            else:
                g = self.alloc(target, vals, base, dtype=dt, zero=zero)
            bufs[st.store.leaf] = g
            self.launch("bwd", i, bufs, vals, x.dtype, precision=precision)
        if keep is not None:
            keep.update(bufs)
        out = []
        for name, need, t in zip(self.prog.inputs, needs, [x, *weights]):
            out.append(bufs["g_" + name].to(t.dtype) if need else None)
        return out

    def weight_layouts(self, x_strides=None) -> dict[str, tuple[int, ...]]:
        """Physical axis order per weight that makes it a plain GEMM operand of the stage reading
        it (taps, then one contiguous K run, then unit-stride columns; :func:`.kernel.b_layout`).
        Weights stored that way (:func:`relayout`) load as coalesced, vectorised tiles instead of
        strided gathers."""
        from .kernel import b_layout

        fake = self.typical_strides(x_strides)
        out = {}
        for st in self.prog.stages:
            if st.store.leaf in self.fused:
                continue
            fmap = {a.leaf: self._producer[a.leaf][1] for a in st.operands if a.leaf in self.fused}
            found = b_layout(self.prog, st, fake, fmap)
            if found is not None and found[0] not in out:
                out[found[0]] = found[1]
        return out

    # -- source ----------------------------------------------------------------------------
    def typical_strides(self, x_strides=None) -> dict[str, tuple[int, ...]]:
        """Strides of every buffer (and its gradient) as allocated here; inputs contiguous unless
        ``x_strides``."""
        vals = list(self.plan.values)
        fake = {}
        for leaf in list(self.prog.leaves):
            shape = self.shape(leaf, vals)
            layout = self.prog.layouts.get(leaf, tuple(range(len(shape))))
            st = [0] * len(shape)
            acc = 1
            for k in reversed(layout):
                st[k] = acc
                acc *= shape[k]
            fake[leaf] = tuple(st)
            fake["g_" + leaf] = tuple(st)
        if x_strides is not None:
            fake["x"] = fake["g_x"] = tuple(x_strides)
        return fake

    def source(self, dtype: torch.dtype = torch.bfloat16, backward: bool = True, x_strides=None,
               fused=None) -> str:
        """Readable Triton source of every stage (for contiguous buffers unless ``x_strides``)."""
        fake = self.typical_strides(x_strides)
        parts = [f"# plan:\n# " + self.plan.describe().replace("\n", "\n# ") + "\n"]
        fused = self.fused if fused is None else frozenset(fused)
        for i, st in enumerate(self.prog.stages):
            if st.store.leaf in fused:
                continue
            fmap = {a.leaf: self._producer[a.leaf][1] for a in st.operands if a.leaf in fused}
            parts.append(stage_source(self.prog, st, i, fake, _dtype_name(dtype), fmap)[0])
        if backward:
            for i, st in enumerate(self.bwd):
                parts.append(stage_source(self.prog, st, i, fake, _dtype_name(dtype))[0]
                             .replace(f"def stage{i}(", f"def grad{i}("))
        return "\n\n".join(parts)


def relayout(t: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """``t`` (same shape and values) stored with physical axis order ``order`` (slowest first)."""
    inv = [order.index(k) for k in range(t.dim())]
    return t.permute(order).contiguous().permute(inv)


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


__all__ = ["TritonOperator", "Config", "default_config", "interpreting", "relayout"]
