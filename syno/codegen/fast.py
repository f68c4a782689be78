"""Fast path: map convolution-like plan stages to cuDNN / cuBLAS.

:class:`FastEmitter` executes the same :class:`~syno.ir.lowering.Plan` as the reference emitter,
but

* Unfolds of data tensors are *lazy*: nothing is materialised until a consumer needs it;
* a contraction of a (lazily unfolded) data tensor with a weight-side tensor is mapped to
  ``F.conv1d/2d/3d`` when it has convolution structure, classifying every letter class:

  ========================  ===========================================================
  class in                  role in the convolution
  ========================  ===========================================================
  data, weight, result      group (``groups=``)
  data, weight, summed      input channel
  weight, result            output channel
  unfold window, summed     kernel tap (the unfold's top is a conv spatial axis)
  unfold window, kept       output channel with a delta kernel (``W[.., w] * eye[w, tap]``)
  data, result              batch (before the channels) or a kernel-1 spatial axis (after)
  ========================  ===========================================================

  Without any window and without spatial axes the contraction is an ``F.linear``. Unfolds that
  do not fit (windows on the diagonal, nested windows whose main is summed, ...) are materialised
  with pad + ``Tensor.unfold`` and the contraction goes through ``torch.einsum``;
* intermediate results are laid out ``[batch, channels, spatial]`` (classes ranked by their role
  and by the input axis they come from), so consecutive conv stages need no copies and
  channels_last inputs stay channels_last.

The candidate implementations (reference einsum or fast, each on the min-MAC plan, the plan
without diagonal views, and the weights-first plan) are chosen between by
:mod:`syno.codegen.registry` (GPU time, disk-cached under :func:`tune_key`);
:func:`measure_variants` times them anywhere (the benchmarks' CPU numbers).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from syno.ir.lowering import Plan, Step, plan_for

from .emit import LETTERS, Emitter, release_dead

#: plan options of each plan name used in variant names ("<emitter>:<plan>")
PLAN_OPTIONS = {
    "min": {},
    "nodiag": {"allow_diag": False},
    "wfirst": {"weights_first": True},
    # without selection tensors: every window stays an Unfold (the Triton backend folds windows
    # into its addressing, where a dense selection-folded weight would only add MACs)
    "nosel": {"select": False},
}
#: emitters: reference einsum; fast = grouped convs + delta kernels; fastd = dense block-diagonal
#: groups, kept windows materialised
EMITTERS = ("einsum", "fast", "fastd")


# --------------------------------------------------------------------------------------------
# Layout: preferred axis order of intermediate tensors
# --------------------------------------------------------------------------------------------
def layout_keys(plan: Plan) -> dict[int, tuple]:
    """Sort key of every class: (rank, origin, id). rank 0: dynamic (batch) classes; 1: channels;
    2: spatial (connected to an Unfold's main axis). origin: the input axis a class descends from
    (Split's minor part after its major), or the output axis for weight-only classes."""
    an = plan.analysis
    spatial: set[int] = set()
    for f in an.fops:
        if f.kind == "unfold":
            spatial.update((f.tops[0], f.bottoms[0]))
    changed = True
    while changed:
        changed = False
        for f in an.fops:
            if f.kind == "unfold":
                continue
            group = set(f.tops) | set(f.bottoms)
            if group & spatial and not group <= spatial:
                spatial |= group
                changed = True
    origin: dict[int, tuple] = {c: (float(i),) for i, c in enumerate(an.tensors[0])}
    for _ in range(len(an.fops) + 1):
        for f in an.fops:
            if not all(t in origin for t in f.tops):
                continue
            o = origin[f.tops[0]]
            if f.kind == "split":
                origin.setdefault(f.bottoms[0], o + (0.0,))
                origin.setdefault(f.bottoms[1], o + (1.0,))
            elif f.kind == "unfold":
                origin.setdefault(f.bottoms[0], o)
                origin.setdefault(f.bottoms[1], o + (1.0,))
            else:
                for b in f.bottoms:
                    origin.setdefault(b, o)
    dyn = {cid for _, cid in an.dynamic.values()}
    keys = {}
    for c in an.classes:
        rank = 0 if c.id in dyn else (2 if c.id in spatial else 1)
        o = origin.get(c.id)
        if o is None:
            o = (float(c.index),) if c.role == "output" else (math.inf,)
        keys[c.id] = (rank, o, c.id)
    return keys


@dataclass
class Lazy:
    base: str
    unfolds: list = field(default_factory=list)   # [u, m, w, K, diag]


class FastEmitter(Emitter):
    """``dense_groups``: run grouped stages as one dense conv with a block-diagonal weight (G x the
    MACs of that stage, but cuDNN's dense kernels are much faster than tiny groups).
    ``delta_windows``: map unfold windows kept in the result to delta kernels (else materialise)."""

    def __init__(self, plan: Plan, fn_name: str = "forward", dense_groups: bool = False,
                 delta_windows: bool = True):
        super().__init__(plan, fn_name)
        self.dense_groups = dense_groups
        self.delta_windows = delta_windows
        self.keys = layout_keys(plan)
        self.lazy: dict[str, Lazy] = {}
        self.is_data: dict[str, bool] = {}
        self.final_src = plan.steps[-1].srcs[0]
        self.stats = {"conv": 0, "linear": 0, "einsum": 0, "materialized_unfolds": 0}

    def header(self) -> None:
        super().header()
        if len(self.plan.analysis.tensors[0]) == 4:
            self.emit("cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()")
        else:
            self.emit("cl = False")

    def desired(self, classes) -> list[int]:
        return sorted(classes, key=self.keys.__getitem__)

    # -- lazy unfolds ----------------------------------------------------------------------
    def materialize(self, name: str, only: Sequence[int] | None = None) -> str:
        """Emit pad+unfold(+diagonal) for the pending unfolds of ``name`` (all, or indices ``only``)."""
        lz = self.lazy.get(name)
        if lz is None:
            return name
        cur = lz.base
        rest = []
        for k, (u, m, w, K, diag) in enumerate(lz.unfolds):
            if only is not None and k not in only:
                rest.append([u, m, w, K, diag])
                continue
            axes = self.axes[cur]
            i = axes.index(u)
            dst = self.fresh()
            self.emit(f"{dst} = {self.unfold_code(cur, i, K)}")
            new = axes[:i] + [m] + axes[i + 1:] + [w]
            self.axes[dst] = new
            self.stats["materialized_unfolds"] += 1
            self.is_data[dst] = True
            cur = dst
            if diag:
                j = new.index(w)
                dst = self.fresh()
                self.emit(f"{dst} = torch.diagonal({cur}, 0, {j}, {len(new) - 1})")
                self.axes[dst] = [c for q, c in enumerate(new) if q not in (j, len(new) - 1)] + [w]
                self.is_data[dst] = True
                cur = dst
        if only is None or not rest:
            return cur
        self.lazy[cur] = Lazy(cur, rest)
        self.is_data[cur] = True
        return cur

    def logical_axes(self, name: str) -> list[int]:
        lz = self.lazy.get(name)
        if lz is None:
            return self.axes[name]
        axes = list(self.axes[lz.base])
        for u, m, w, K, diag in lz.unfolds:
            axes[axes.index(u)] = m
            if not diag:
                axes.append(w)
        return axes

    # -- driver ----------------------------------------------------------------------------
    def run(self) -> str:
        self.header()
        alias = {n: n for n in self.plan.input_names}
        alias.update({f"c{k}": f"c{k}" for k in range(1, len(self.plan.analysis.consts) + 1)})
        self.is_data = {n: n == "x" for n in alias}
        for step in self.plan.steps:
            srcs = [alias[s] for s in step.srcs]
            if step.kind == "unfold" and self.is_data[srcs[0]]:
                out = self.lazy_unfold(step, srcs[0])
            elif step.kind == "diag" and srcs[0] in self.lazy and self.lazy_diag(step, srcs[0]):
                out = srcs[0]
            elif step.kind == "contract":
                out = self.contract(step, srcs)
            else:
                srcs = [self.materialize(s) for s in srcs]
                out = getattr(self, "step_" + step.kind)(step, srcs)
                self.is_data[out] = any(self.is_data.get(s, False) for s in srcs)
            alias[step.dst] = out
        return "\n".join(release_dead(self.lines, self.plan.input_names)) + "\n"

    def lazy_unfold(self, step: Step, src: str) -> str:
        f = self.plan.analysis.fops[step.fop]
        lz = self.lazy.get(src)
        new = Lazy(lz.base if lz else src, [list(x) for x in lz.unfolds] if lz else [])
        new.unfolds.append([f.tops[0], f.bottoms[0], f.bottoms[1], self.plan.values[f.bottoms[1]], False])
        name = self.fresh("lz")
        self.lazy[name] = new
        self.is_data[name] = True
        self.comment(f"lazy unfold {self.cname(f.tops[0])} -> {self.cname(f.bottoms[0])},{self.cname(f.bottoms[1])}")
        return name

    def lazy_diag(self, step: Step, src: str) -> bool:
        lz = self.lazy[src]
        c = step.classes[0]
        last = lz.unfolds[-1]
        if last[2] == c and not last[4] and c in self.axes[lz.base]:
            last[4] = True
            return True
        return False

    # -- contractions ----------------------------------------------------------------------
    def contract(self, step: Step, srcs: list[str]) -> str:
        data = [s for s in srcs if self.is_data.get(s)]
        out = None
        if len(data) == 1:
            d = data[0]
            w = srcs[1] if srcs[0] == d else srcs[0]
            w = self.materialize(w)
            out = self.try_conv(step, d, w)
        if out is None:
            a, b = (self.materialize(s) for s in srcs)
            self.comment(f"contract (einsum){' summing ' + ','.join(map(self.cname, step.summed)) if step.summed else ''}")
            order = list(step.dst_axes) if step.dst == self.final_src else self.desired(step.dst_axes)
            out = self.einsum(a, b, order)
            self.stats["einsum"] += 1
        self.is_data[out] = bool(data)
        return out

    def try_conv(self, step: Step, d: str, w: str) -> str | None:
        """Emit the contraction of data ``d`` (maybe lazily unfolded) with weight-side ``w`` as one
        ``F.conv1d/2d/3d`` or ``F.linear`` when every class has a conv role; None otherwise."""
        cs = self._conv_windows(step, d, w)
        if not self._conv_roles(cs, step) or not self._conv_layout(cs, step):
            return None
        self.comment(("linear" if cs.use_linear else f"conv{len(cs.dims)}d") + " stage"
                     + (f" summing {','.join(map(self.cname, step.summed))}" if step.summed else ""))
        inp = self._emit_conv_input(cs, d)
        wt, kernel = self._emit_conv_weight(cs, w)
        out = self._emit_conv_call(cs, inp, wt, kernel)
        # result axes: [batch, groups, output channels, spatial]
        out_spx = [cs.conv_u[c][1] if c in cs.conv_u else c for c in cs.spx]
        res_axes = cs.lead + cs.group + cs.cout + out_spx
        dst = self.fresh()
        self.emit(f"{dst} = {out}.reshape{self.shape_expr([[c] for c in res_axes])}")
        self.axes[dst] = res_axes
        if step.dst == self.final_src:
            return dst
        return self.permute_to(dst, self.desired(res_axes))

    def _conv_windows(self, step: Step, d: str, w: str) -> "ConvStage":
        """Which pending unfolds of ``d`` become conv windows (at most 3, each a weight-held window
        over an axis no weight holds, not a diagonal, not re-unfolded); the others are
        materialised first. Also the data operand's axes after those materialisations."""
        cs = ConvStage(step=step, wax=list(self.axes[w]))
        wset = set(cs.wax)
        result, summed = set(step.dst_axes), set(step.summed)
        cs.lz = self.lazy.get(d)
        unfolds = cs.lz.unfolds if cs.lz else []
        base_axes = self.axes[cs.lz.base] if cs.lz else self.axes[d]
        for k, (u, m, wd, K, diag) in enumerate(unfolds):
            ok = (not diag and wd in wset and m in result and m not in wset and u not in wset
                  and all(m != q[0] for q in unfolds[k + 1:])
                  and (self.delta_windows or wd in summed))
            if ok and len(cs.conv_idx) < 3:
                cs.conv_idx.append(k)
        cs.mat = [k for k in range(len(unfolds)) if k not in cs.conv_idx]
        cs.conv = [unfolds[k] for k in cs.conv_idx]
        cs.a_axes = list(base_axes)
        for k in cs.mat:
            u, m, wd, K, diag = unfolds[k]
            cs.a_axes[cs.a_axes.index(u)] = m
            if not diag:
                cs.a_axes.append(wd)
        cs.conv_u = {q[0]: q for q in cs.conv}
        cs.conv_w = {q[2]: q for q in cs.conv}
        return cs

    def _conv_roles(self, cs: "ConvStage", step: Step) -> bool:
        """The conv role of every class (docstring table); False when one has none."""
        wset = set(cs.wax)
        result, summed = set(step.dst_axes), set(step.summed)
        roles = cs.roles
        for c in cs.a_axes:
            if c in cs.conv_u:
                roles[c] = "spatial"
            elif c in wset and c in result:
                roles[c] = "group"
            elif c in wset and c in summed:
                roles[c] = "cin"
            elif c not in wset and c in result:
                roles[c] = "batch"
            elif c not in wset and c in summed:
                roles[c] = "asum"
            else:
                return False
        for c in cs.wax:
            if c in roles:
                continue
            if c in cs.conv_w:
                roles[c] = "tap" if c in summed else ("keep" if c in result else None)
                if roles[c] is None:
                    return False
            elif c in result:
                roles[c] = "cout"
            elif c in summed:
                roles[c] = "bsum"
            else:
                return False
        expect = ({c for c, r in roles.items() if r in ("batch", "group", "cout", "keep")}
                  | {q[1] for q in cs.conv})
        return expect == result

    def _conv_layout(self, cs: "ConvStage", step: Step) -> bool:
        """Batch / group / input-channel / spatial axes of the conv input and output channels;
        False when the stage is not worth a conv (no reduction) or does not fit 1-3 spatial dims."""
        roles = cs.roles
        cs.group = [c for c in cs.a_axes if roles[c] == "group"]
        cs.cin = [c for c in cs.a_axes if roles[c] == "cin"]
        if not cs.cin and not cs.conv:
            return False  # elementwise / outer product: einsum does it without a reduction
        chan_pos = [i for i, c in enumerate(cs.a_axes) if roles[c] in ("group", "cin")]
        first_chan = min(chan_pos) if chan_pos else len(cs.a_axes)
        cs.lead = [c for i, c in enumerate(cs.a_axes) if roles[c] == "batch" and i < first_chan]
        cs.spx = [c for i, c in enumerate(cs.a_axes)
                  if (roles[c] == "batch" and i >= first_chan) or roles[c] == "spatial"]
        # spatial dims: each conv axis alone; kernel-1 axes merged with kernel-1 neighbours while
        # there are more than 2 dims (cuDNN is at its best in 2-D, and NHWC stays NHWC)
        dims: list[list[int]] = [[c] for c in cs.spx]
        while len(dims) > 2:
            k = next((i for i in range(len(dims) - 1)
                      if dims[i][0] not in cs.conv_u and dims[i + 1][0] not in cs.conv_u), None)
            if k is None:
                break
            dims[k:k + 2] = [dims[k] + dims[k + 1]]
        if len(dims) > 3:
            return False
        cs.dims = dims
        cs.cout = self.desired([c for c in cs.wax if roles[c] == "cout"]
                               + [q[2] for q in cs.conv if roles[q[2]] == "keep"])
        cs.use_linear = not dims
        return not (cs.use_linear and cs.group)

    def _emit_conv_input(self, cs: "ConvStage", d: str) -> str:
        """The data operand as ``[lead, group*cin, *dims]`` (NHWC-gathered for channels_last)."""
        lz = cs.lz
        if lz:
            src = self.materialize(d, only=cs.mat) if cs.mat else lz.base
            if src in self.lazy:
                src = self.lazy[src].base
        else:
            src = d
        asum = [c for c in self.axes[src] if cs.roles.get(c) == "asum"]
        if asum:
            src = self.reduce_axes(src, asum)
        target = cs.lead + cs.group + cs.cin + cs.spx
        groups_shape = [cs.lead, cs.cin] if cs.use_linear else [cs.lead, cs.group + cs.cin] + cs.dims
        dst = self.fresh()
        permuted = self._permuted_roll(src)
        if len(cs.dims) == 2:
            # NHWC input: gather straight into NHWC order (a view when the data already is NHWC)
            nhwc = [cs.lead, cs.dims[0], cs.dims[1], cs.group + cs.cin]
            order = cs.lead + cs.dims[0] + cs.dims[1] + cs.group + cs.cin
            perm = [self.axes[src].index(c) for c in order]
            self.emit("if cl:")
            self.emit(f"    {dst} = {permuted(perm)}.reshape{self.shape_expr(nhwc)}.permute(0, 3, 1, 2)")
            self.emit("else:")
            self.emit(f"    {dst} = {permuted([self.axes[src].index(c) for c in target])}"
                      f".reshape{self.shape_expr(groups_shape)}")
        else:
            self.emit(f"{dst} = {permuted([self.axes[src].index(c) for c in target])}"
                      f".reshape{self.shape_expr(groups_shape)}")
        return dst

    def _permuted_roll(self, src: str) -> Callable[[list[int]], str]:
        """``perm -> expression of src.permute(perm)``. When ``src`` is a roll's result (or squeezes
        of it) that nothing else reads, the roll is taken out of its line and applied after the permute
        (``torch.roll(base.permute(perm), shifts, permuted dims)``): rolling a window view writes
        its result contiguous in the permuted order, so the reshape into the conv's layout is a
        view and the windows are copied once, not twice (37 of 200 sampled resnet18-preset
        operators rolled a window view and then copied the roll into the conv's layout)."""
        def permuted(name: str, perm: list[int]) -> str:
            return name if perm == sorted(perm) else f"{name}.permute({', '.join(map(str, perm))})"

        def plain(perm: list[int]) -> str:
            return permuted(src, perm)

        for roll in reversed(list(self._rolls.values())):
            chain = self.view_chain(roll, src, _SQUEEZE)  # squeezes of the roll's result (views)
            if chain is not None:
                break
        else:
            return plain
        dims, cur = roll.dims, roll.dst
        for _, m in chain:
            gone = sorted(int(d) for d in m.group(3).split(",") if d.strip())
            if any(d in gone for d in dims):
                return plain
            kept = [d for d in range(len(self.axes[cur])) if d not in gone]
            dims = tuple(kept.index(d) for d in dims)
            cur = m.group(1)
        for k, _ in chain:
            self.lines[k] = "    # (squeeze, below)"
        self.retire_roll(roll, "roll taken into the copy below")
        base = roll.base + "".join(f".squeeze(({m.group(3)}))" for _, m in chain)
        shifts = roll.shifts

        def rolled(perm: list[int]) -> str:
            return f"torch.roll({permuted(base, perm)}, {shifts}, {tuple(perm.index(d) for d in dims)})"
        return rolled

    def _emit_conv_weight(self, cs: "ConvStage", w: str) -> tuple[str, list]:
        """The weight as ``[groups*cout, cin, *kernel]`` (one permute, or an einsum when kept
        windows need a delta kernel or dense groups a block-diagonal eye). Returns its name and
        the kernel class (or tap) of each spatial dim (None: kernel 1)."""
        taps = {}
        letters: dict = {}

        def let(c) -> str:
            if c not in letters:
                letters[c] = LETTERS[len(letters)]
            return letters[c]

        operands = [(w, "".join(let(c) for c in cs.wax))]
        for u, m, wd, K, _ in cs.conv:
            if cs.roles[wd] == "keep":
                tap = ("tap", wd)
                taps[u] = tap
                operands.append((f"torch.eye({K}, dtype={w}.dtype, device={w}.device)", let(wd) + let(tap)))
            else:
                taps[u] = wd
        kernel = [taps[dgrp[0]] if dgrp[0] in cs.conv_u else None for dgrp in cs.dims]
        size = self.plan.values
        cs.dense = self.dense_groups and bool(cs.group) and not cs.use_linear
        group_in = []
        if cs.dense:  # block-diagonal dense weight: W[g, o, i] * eye[g, g']
            for c in cs.group:
                gi = ("g", c)
                group_in.append(gi)
                operands.append((f"torch.eye({size[c]}, dtype={w}.dtype, device={w}.device)", let(c) + let(gi)))
        w_out = cs.group + cs.cout + group_in + cs.cin + [k for k in kernel if k is not None]
        ins = [s_ for _, s_ in operands]
        outs = "".join(let(c) for c in w_out)
        wt = self.fresh("wt")
        if len(operands) == 1 and sorted(ins[0]) == sorted(outs) and len(set(ins[0])) == len(ins[0]):
            perm = [ins[0].index(ch) for ch in outs]
            self.emit(f"{wt} = {w}" + (f".permute({', '.join(map(str, perm))})" if perm != sorted(perm) else ""))
        else:
            self.emit(f"{wt} = torch.einsum('{','.join(ins)}->{outs}', {', '.join(o for o, _ in operands)})")
        return wt, kernel

    def _emit_conv_call(self, cs: "ConvStage", inp: str, wt: str, kernel: list) -> str:
        """``F.linear`` or ``F.conv{1,2,3}d`` with ``K//2`` padding (explicit ``F.pad`` for even K)."""
        size = self.plan.values
        g_size = math.prod(size[c] for c in cs.group)
        conv_groups = 1 if cs.dense else g_size
        cin_size = math.prod(size[c] for c in cs.cin) * (g_size if cs.dense else 1)
        out = self.fresh()
        if cs.use_linear:
            self.emit(f"{wt} = {wt}.reshape({math.prod(size[c] for c in cs.cout)}, {math.prod(size[c] for c in cs.cin)})")
            self.emit(f"{out} = torch.nn.functional.linear({inp}, {wt})")
            self.stats["linear"] += 1
            return out
        kshape = [size[k[1]] if isinstance(k, tuple) else size[k] if k is not None else 1 for k in kernel]
        self.emit(f"{wt} = {wt}.reshape({g_size * math.prod(size[c] for c in cs.cout)}, "
                  f"{cin_size}, {', '.join(map(str, kshape))})")
        if len(cs.dims) == 2:  # match the input's memory format (NHWC input + NCHW weight is slow)
            self.emit("if cl:")
            self.emit(f"    {wt} = {wt}.contiguous(memory_format=torch.channels_last)")
        pads = []
        for dgrp in cs.dims:
            K = cs.conv_u[dgrp[0]][3] if dgrp[0] in cs.conv_u else 1
            pads.append((K // 2, K - 1 - K // 2))
        if any(lo != hi for lo, hi in pads):
            flat = [p for lo_hi in reversed(pads) for p in lo_hi]
            padded = self.fresh()
            self.emit(f"{padded} = F.pad({inp}, {flat})")
            inp = padded
            padding = [0] * len(cs.dims)
        else:
            padding = [lo for lo, _ in pads]
        self.emit(f"{out} = F.conv{len(cs.dims)}d({inp}, {wt}, None, 1, {tuple(padding)}, 1, {conv_groups})")
        self.stats["conv"] += 1
        return out


_SQUEEZE = re.compile(r"^\s*(\w+) = (\w+)\.squeeze\(\(([\d, ]+)\)\)$")


@dataclass
class ConvStage:
    """What :meth:`FastEmitter.try_conv` found out about one contraction."""

    step: Step
    wax: list                                   # weight-side operand's axes
    lz: "Lazy | None" = None
    conv_idx: list = field(default_factory=list)  # pending unfolds run as conv windows
    mat: list = field(default_factory=list)       # pending unfolds materialised first
    conv: list = field(default_factory=list)
    conv_u: dict = field(default_factory=dict)    # unfolded axis -> unfold
    conv_w: dict = field(default_factory=dict)    # window class -> unfold
    a_axes: list = field(default_factory=list)    # data operand axes after materialisation
    roles: dict = field(default_factory=dict)
    group: list = field(default_factory=list)
    cin: list = field(default_factory=list)
    lead: list = field(default_factory=list)
    spx: list = field(default_factory=list)
    dims: list = field(default_factory=list)
    cout: list = field(default_factory=list)
    use_linear: bool = False
    dense: bool = False


def emit_fast(plan: Plan, fn_name: str = "forward", dense_groups: bool = False,
              delta_windows: bool = True) -> tuple[str, dict]:
    em = FastEmitter(plan, fn_name, dense_groups=dense_groups, delta_windows=delta_windows)
    return em.run(), em.stats


# --------------------------------------------------------------------------------------------
# Variants and autotuning
# --------------------------------------------------------------------------------------------
def variant_plan(module, name: str) -> Plan:
    """"min": the module's own plan (the planner's choice, or the guard's replacement)."""
    from .registry import parse
    plan_name = parse(name)[1]
    if plan_name == "min" and getattr(module, "plan", None) is not None:
        return module.plan
    return plan_for(module.op, module.mapping, **PLAN_OPTIONS[plan_name])


def variant_source(module, name: str) -> str:
    from .cost import forward_source  # one emitter dispatch, shared with the memory guard
    return forward_source(variant_plan(module, name), name)


def build_variant(module, name: str) -> Callable:
    from .torch import compile_forward
    return compile_forward(variant_source(module, name), tag=name.replace(":", "-"))


def candidate_variants(module) -> list[str]:
    """Distinct candidates (identical plans are measured once)."""
    from .cost import peak_limit_bytes, plan_peak_bytes
    out, seen = [], set()
    limit = peak_limit_bytes(module.plan)
    for plan_name in PLAN_OPTIONS:
        plan = variant_plan(module, "einsum:" + plan_name)
        sig = tuple((s.kind, s.srcs, s.src_axes, s.dst_axes) for s in plan.steps)
        if sig in seen:
            continue
        seen.add(sig)
        for em in EMITTERS:
            # never time (and allocate) a variant whose forward would blow past the limit
            if em == "einsum" and plan_name == "min" or plan_peak_bytes(plan, em) <= limit:
                out.append(f"{em}:{plan_name}")
    return out or [module.cpu_variant]


def default_variant(module) -> str:
    return "fast:min"


def tune_key(module, x: torch.Tensor, backward: bool) -> str:
    dev = torch.cuda.get_device_name(x.device) if x.device.type == "cuda" else x.device.type
    dtype = (torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype)
    mapping = dict(module.mapping)
    for v, (axis, _) in module.plan.analysis.dynamic.items():
        mapping[v] = int(x.shape[axis])
    cl = x.is_contiguous(memory_format=torch.channels_last) and x.dim() == 4 and not x.is_contiguous()
    return json.dumps([module.op.hash, sorted(mapping.items()), dev, str(dtype), torch.__version__,
                       "cl" if cl else "c", "fwdbwd" if backward else "fwd"])


def time_fn(fn: Callable[[], object], warmup: int = 3, reps: int = 10, device: str = "cuda") -> float:
    """Median milliseconds of ``fn`` (CUDA events on GPU, perf_counter elsewhere)."""
    import time
    for _ in range(warmup):
        fn()
    times = []
    if device == "cuda":
        torch.cuda.synchronize()
        for _ in range(reps):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e))
    else:
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def measure_variants(module, x: torch.Tensor, names: Sequence[str] | None = None,
                     backward: bool | None = None, reps: int = 10) -> dict[str, float]:
    names = list(names or candidate_variants(module))
    weights = module.weights
    if backward is None:
        backward = torch.is_grad_enabled() and any(w.requires_grad for w in weights)
    out = {}
    for name in names:
        fn = module._impls.get(name)
        if fn is None:
            fn = module._impls[name] = build_variant(module, name)

        def run(fn=fn):
            y = fn(x, *weights)
            if backward:
                y.backward(torch.ones_like(y))  # grads accumulate; harmless for timing
            return y

        try:
            with torch.no_grad() if not backward else torch.enable_grad():
                out[name] = time_fn(run, reps=reps, device=x.device.type)
        except RuntimeError:  # e.g. out of memory for a huge materialisation
            out[name] = math.inf
            if x.device.type == "cuda":
                torch.cuda.empty_cache()
    if backward:
        for w in weights:
            w.grad = None
    return out


__all__ = ["FastEmitter", "emit_fast", "layout_keys", "measure_variants",
           "candidate_variants", "build_variant", "variant_source", "default_variant", "time_fn",
           "PLAN_OPTIONS", "tune_key"]
