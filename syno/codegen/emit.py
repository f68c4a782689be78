"""Plan -> Python source (torch only). The reference ("einsum") emitter.

:func:`emit_forward` writes ``def forward(x, w1, ...)`` that executes a :class:`~syno.ir.lowering.Plan`
step by step with plain torch ops: ``reshape``/``permute`` for Split/Merge, ``torch.roll`` for
Shift, ``::s`` slicing for Stride, ``F.pad`` + ``Tensor.unfold`` (a strided view, no copy) for
Unfold, ``torch.diagonal``, ``torch.einsum`` for contractions, ``sum`` for reductions.

The generated function reads dynamic sizes (e.g. the batch ``N``) from ``x.shape`` and checks the
static ones, so one module serves any batch size and ``torch.compile(fullgraph=True)`` traces it
without graph breaks (no data-dependent Python control flow, no ``.item()``).
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from typing import Sequence

from syno.ir.lowering import Plan, Step

LETTERS = string.ascii_letters


def ident(name: str) -> str:
    out = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
    return out if out[:1].isalpha() else "v_" + out


_RESHAPE = re.compile(r"^\s*(\w+) = (\w+)\.reshape\(.*\)$")


@dataclass(frozen=True)
class _Roll:
    """An emitted ``dst = torch.roll(base, shifts, dims)`` at ``line`` (later shifts may fold in)."""

    line: int
    dst: str
    base: str
    dims: tuple
    shifts: tuple


class Emitter:
    """Tracks axis orders of named tensors and writes torch code lines."""

    def __init__(self, plan: Plan, fn_name: str = "forward"):
        self.plan = plan
        self.fn_name = fn_name
        self.lines: list[str] = []
        self.axes: dict[str, list[int]] = {}
        an = plan.analysis
        self.dyn_cls = {cid: "v_" + ident(v) for v, (_, cid) in an.dynamic.items()}
        self.counter = 0
        self._rolls: dict[str, _Roll] = {}            # emitted rolls by result name (shifts fold into them)
        self._copied_merges: dict[str, tuple] = {}    # merged name -> (permuted view, axis, line)

    # -- helpers ---------------------------------------------------------------------------
    def emit(self, line: str) -> None:
        self.lines.append("    " + line)

    def fresh(self, base: str = "t") -> str:
        self.counter += 1
        return f"{base}{self.counter}"

    def size_expr(self, classes: Sequence[int]) -> str:
        static = 1
        dyn = []
        for c in classes:
            if c in self.dyn_cls:
                dyn.append(self.dyn_cls[c])
            else:
                static *= self.plan.values[c]
        if not dyn:
            return str(static)
        return "*".join(dyn + ([str(static)] if static != 1 else []))

    def shape_expr(self, groups: Sequence[Sequence[int]]) -> str:
        parts = [self.size_expr(g) for g in groups]
        if not parts:
            return "(())"
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"

    def cname(self, c: int) -> str:
        return self.plan.classes[c].name

    def comment(self, text: str) -> None:
        self.emit("# " + text)

    def permute_to(self, name: str, order: Sequence[int]) -> str:
        axes = self.axes[name]
        if list(order) == axes:
            return name
        perm = [axes.index(c) for c in order]
        dst = self.fresh()
        self.emit(f"{dst} = {name}.permute({', '.join(map(str, perm))})")
        self.axes[dst] = list(order)
        return dst

    def reshape(self, name: str, groups: Sequence[Sequence[int]], new_axes: Sequence[int]) -> str:
        """Reshape ``name`` (axes already ordered as the flattened groups) into ``new_axes``."""
        dst = self.fresh()
        self.emit(f"{dst} = {name}.reshape{self.shape_expr(groups)}")
        self.axes[dst] = list(new_axes)
        return dst

    # -- header ----------------------------------------------------------------------------
    def header(self) -> None:
        plan = self.plan
        names = plan.input_names
        self.lines.append(f"def {self.fn_name}({', '.join(names)}):")
        an = plan.analysis
        for v, (axis, _) in an.dynamic.items():
            self.emit(f"v_{ident(v)} = x.shape[{axis}]")
        static = [(i, plan.values[c]) for i, c in enumerate(an.tensors[0])
                  if c not in self.dyn_cls]
        cond = " or ".join(f"x.shape[{i}] != {v}" for i, v in static)
        expect = ", ".join(self.size_expr([c]) for c in an.tensors[0])
        self.emit(f"if x.dim() != {len(an.tensors[0])}" + (f" or {cond}" if cond else "") + ":")
        self.emit(f"    raise ValueError('input must have shape ({expect}), got ' + str(tuple(x.shape)))")
        for n, axes in zip(names, an.tensors):
            self.axes[n] = list(axes)
        for k, c in enumerate(an.consts, start=1):
            self.emit(f"c{k} = torch.ones({plan.values[c]}, dtype=x.dtype, device=x.device)"
                      f"  # broadcast dim {self.cname(c)}, unfolded below")
            self.axes[f"c{k}"] = [c]

    # -- steps -----------------------------------------------------------------------------
    def run(self) -> str:
        self.header()
        alias: dict[str, str] = {n: n for n in self.plan.input_names}
        alias.update({f"c{k}": f"c{k}" for k in range(1, len(self.plan.analysis.consts) + 1)})
        for step in self.plan.steps:
            srcs = [alias[s] for s in step.srcs]
            out = getattr(self, "step_" + step.kind)(step, srcs)
            alias[step.dst] = out
        return "\n".join(release_dead(self.lines, self.plan.input_names)) + "\n"

    def _view_comment(self, step: Step) -> None:
        f = self.plan.analysis.fops[step.fop]
        self.comment(f"{step.kind} {','.join(map(self.cname, f.tops))} -> {','.join(map(self.cname, f.bottoms))}")

    def step_split(self, step: Step, srcs) -> str:
        self._view_comment(step)
        name = srcs[0]
        f = self.plan.analysis.fops[step.fop]
        axes = self.axes[name]
        i = axes.index(f.tops[0])
        groups = [[c] for c in axes[:i]] + [[f.bottoms[0]], [f.bottoms[1]]] + [[c] for c in axes[i + 1:]]
        new = axes[:i] + list(f.bottoms) + axes[i + 1:]
        return self.reshape(name, groups, new)

    def step_merge(self, step: Step, srcs) -> str:
        self._view_comment(step)
        name = srcs[0]
        f = self.plan.analysis.fops[step.fop]
        major, minor = f.tops
        b = f.bottoms[0]
        axes = self.axes[name]
        if major in axes and minor in axes:
            order = [c for c in axes if c != minor]
            order.insert(order.index(major) + 1, minor)
            name = self.permute_to(name, order)
        else:  # broadcast the missing part (repeat_interleave / tile)
            present = major if major in axes else minor
            missing = minor if present == major else major
            i = axes.index(present) + (1 if present == major else 0)
            shape = axes[:i] + [missing] + axes[i:]
            dst = self.fresh()
            self.emit(f"{dst} = {name}.unsqueeze({i}).expand{self.shape_expr([[c] for c in shape])}")
            self.axes[dst] = shape
            name = dst
        axes = self.axes[name]
        i = axes.index(major)
        groups = [[c] for c in axes[:i]] + [[major, minor]] + [[c] for c in axes[i + 2:]]
        return self._merging_reshape(name, groups, axes[:i] + [b] + axes[i + 2:], i)

    def _shift_of_copied_merge(self, name: str, i: int, dst: str) -> bool:
        """Emit ``dst``, the shift of axis ``i`` of ``name``, when ``name`` is the reshape just
        emitted that merges axes ``(i, i + 1)`` of a permuted view (a copy) and is read by nothing
        else: rolling the merged axis by 1 moves each minor index up by one and the last one to the
        next major index, so ``cat(v[.., 1:], roll(v[.., :1], -1, major), minor)`` is the rolled
        tensor in one copy (plus one minor slice), and its reshape is a view; the reshape-copy and
        the roll made two copies."""
        src = self._copied_merges.get(name)
        if src is None:
            return False
        view, j, at = src
        if j != i or any(not l.lstrip().startswith("#") for l in self.lines[at + 1:]):
            return False
        minor = self.plan.values[self.axes[view][j + 1]]
        if minor < 2:
            return False
        reshape = self.lines[at].split(".reshape", 1)[1]
        self.lines[at] = f"    # merge of {view}: taken into the shift below"
        self.emit(f"{dst} = torch.cat(({view}.narrow({j + 1}, 1, {minor - 1}), "
                  f"torch.roll({view}.narrow({j + 1}, 0, 1), -1, {j})), {j + 1}).reshape{reshape}")
        return True

    def step_inv_split(self, step: Step, srcs) -> str:
        self._view_comment(step)
        name = srcs[0]
        f = self.plan.analysis.fops[step.fop]
        l, r = f.bottoms
        axes = self.axes[name]
        order = [c for c in axes if c != r]
        order.insert(order.index(l) + 1, r)
        name = self.permute_to(name, order)
        axes = self.axes[name]
        i = axes.index(l)
        groups = [[c] for c in axes[:i]] + [[l, r]] + [[c] for c in axes[i + 2:]]
        return self._merging_reshape(name, groups, axes[:i] + [f.tops[0]] + axes[i + 2:], i)

    def _merging_reshape(self, name: str, groups, new_axes, i: int) -> str:
        """The reshape merging axes ``(i, i + 1)`` of ``name``; when ``name`` is a permuted view
        (its line is a ``permute``) the reshape copies, and a shift of the merged axis right after
        may take its place (:meth:`_shift_of_copied_merge`)."""
        permuted = any(re.match(rf"\s*{name} = \w+\.permute\(", line) for line in self.lines)
        dst = self.reshape(name, groups, new_axes)
        if permuted:
            self._copied_merges[dst] = (name, i, len(self.lines) - 1)
        return dst

    def step_inv_merge(self, step: Step, srcs) -> str:
        self._view_comment(step)
        name = srcs[0]
        f = self.plan.analysis.fops[step.fop]
        axes = self.axes[name]
        i = axes.index(f.bottoms[0])
        groups = [[c] for c in axes[:i]] + [[f.tops[0]], [f.tops[1]]] + [[c] for c in axes[i + 1:]]
        return self.reshape(name, groups, axes[:i] + list(f.tops) + axes[i + 1:])

    def step_shift(self, step: Step, srcs) -> str:
        self._view_comment(step)
        name = srcs[0]
        f = self.plan.analysis.fops[step.fop]
        axes = self.axes[name]
        i = axes.index(f.tops[0])
        dst = self.fresh()
        new_axes = axes[:i] + [f.bottoms[0]] + axes[i + 1:]
        if self._shift_of_copied_merge(name, i, dst):
            self.axes[dst] = new_axes
            return dst
        rolls = self._rolls
        for roll in reversed(list(rolls.values())):  # the most recent roll first
            chain = self.view_chain(roll, name, _RESHAPE)
            if chain is None:
                continue
            if not chain:
                # a shift of a fresh roll's result (consumed only here): one roll, one copy
                self._roll_line(roll, dst, roll.base, roll.dims + (i,), roll.shifts + (-1,))
                self.axes[dst] = new_axes
                return dst
            mapped = self._whole_axes(roll.dst, name, roll.dims)
            if mapped is not None:
                # the earlier roll's axes survive the reshapes whole: reshape the unrolled tensor
                # and roll the result once, over all the axes
                k = chain[0][0]
                self.lines[k] = self.lines[k].replace(f"= {roll.dst}.reshape(", f"= {roll.base}.reshape(", 1)
                self.retire_roll(roll, f"roll of {roll.base} moved below its reshapes")
                self.emit(f"{dst} = torch.roll({name}, {roll.shifts + (-1,)}, {mapped + (i,)})")
                rolls[dst] = _Roll(len(self.lines) - 1, dst, name, mapped + (i,), roll.shifts + (-1,))
                self.axes[dst] = new_axes
                return dst
            outer = self._outer_factor(roll.dst, name, i)
            if outer is not None:
                # the shifted axis is the outer factor of a rolled axis (rolling the outer factor
                # of a size A*B axis by 1 is rolling the axis by B): one roll, and its reshapes
                # are the shifted tensor
                self._roll_line(roll, roll.dst, roll.base, roll.dims + (outer[0],), roll.shifts + (-outer[1],))
                self.axes[name] = new_axes
                return name
            break
        self.emit(f"{dst} = torch.roll({name}, -1, {i})")
        rolls[dst] = _Roll(len(self.lines) - 1, dst, name, (i,), (-1,))
        self.axes[dst] = new_axes
        return dst

    def retire_roll(self, roll: "_Roll", why: str) -> None:
        """Replace ``roll``'s line by a comment saying where the roll went; forget it."""
        self.lines[roll.line] = f"    # {why}"
        del self._rolls[roll.dst]

    def _roll_line(self, roll: "_Roll", dst: str, base: str, dims: tuple, shifts: tuple) -> None:
        """Rewrite ``roll``'s line as ``dst = torch.roll(base, shifts, dims)``."""
        self.lines[roll.line] = f"    {dst} = torch.roll({base}, {shifts}, {dims})"
        del self._rolls[roll.dst]
        self._rolls[dst] = _Roll(roll.line, dst, base, dims, shifts)

    def view_chain(self, roll: "_Roll", name: str, view: re.Pattern) -> list[tuple[int, re.Match]] | None:
        """The lines (index, match of ``view``) that lead from ``roll``'s result to ``name``, each
        a view of the previous one, when no other line emitted since reads any of them (the roll's
        result is consumed by this chain alone); None otherwise."""
        chain: list[tuple[int, re.Match]] = []
        names = {roll.dst}
        cur = roll.dst
        for k in range(roll.line + 1, len(self.lines)):
            line = self.lines[k]
            if line.lstrip().startswith("#"):
                continue
            rhs = line.split("=", 1)[1] if "=" in line else line
            if not any(re.search(rf"\b{n}\b", rhs) for n in names):
                continue
            m = view.match(line)
            if m is None or m.group(2) != cur:
                return None
            cur = m.group(1)
            names.add(cur)
            chain.append((k, m))
        return chain if cur == name else None

    def _whole_axes(self, src: str, dst: str, dims: tuple) -> tuple | None:
        """Where each axis ``dims`` of ``src`` is in its reshape ``dst``, when each is kept whole
        (same size at the same flat offset); None otherwise."""
        size = self.plan.values
        a = [size[c] for c in self.axes[src]]
        b = [size[c] for c in self.axes[dst]]
        out = []
        for d in dims:
            at = [k for k in range(len(b)) if b[k] == a[d] and math.prod(b[:k]) == math.prod(a[:d])]
            if not at:
                return None
            out.append(at[0])
        return tuple(out)

    def _outer_factor(self, src: str, dst: str, i: int) -> tuple[int, int] | None:
        """``(axis of src, elements per step)`` when axis ``i`` of the reshape ``dst`` is the outer
        factor of one axis of ``src``; None otherwise."""
        size = self.plan.values
        outer = [size[c] for c in self.axes[src]]
        inner = [size[c] for c in self.axes[dst]]
        start = math.prod(inner[:i])
        for j in range(len(outer)):
            if math.prod(outer[:j]) == start and outer[j] % inner[i] == 0 and inner[i] > 1:
                end = math.prod(outer[:j + 1])
                if any(math.prod(inner[:k]) == end for k in range(i + 1, len(inner) + 1)):
                    return j, outer[j] // inner[i]
                return None
        return None

    def step_stride(self, step: Step, srcs) -> str:
        self._view_comment(step)
        name = srcs[0]
        f = self.plan.analysis.fops[step.fop]
        axes = self.axes[name]
        i = axes.index(f.tops[0])
        s = self.plan.values[f.tops[0]] // self.plan.values[f.bottoms[0]]
        dst = self.fresh()
        self.emit(f"{dst} = {name}[{':, ' * i}::{s}]")
        self.axes[dst] = axes[:i] + [f.bottoms[0]] + axes[i + 1:]
        return dst

    def unfold_code(self, name: str, axis: int, k: int) -> str:
        """pad + unfold along ``axis``: main index stays at ``axis``, window appended last."""
        ndim = len(self.axes[name])
        lo, hi = k // 2, k - 1 - k // 2
        pad = [0, 0] * (ndim - 1 - axis) + [lo, hi]
        return f"F.pad({name}, {pad}).unfold({axis}, {k}, 1)"

    def step_unfold(self, step: Step, srcs) -> str:
        self._view_comment(step)
        name = srcs[0]
        f = self.plan.analysis.fops[step.fop]
        axes = self.axes[name]
        i = axes.index(f.tops[0])
        k = self.plan.values[f.bottoms[1]]
        dst = self.fresh()
        self.emit(f"{dst} = {self.unfold_code(name, i, k)}")
        self.axes[dst] = axes[:i] + [f.bottoms[0]] + axes[i + 1:] + [f.bottoms[1]]
        return dst

    def step_select(self, step: Step, srcs) -> str:
        """The 0/1 tensor of an Unfold: e[u, m, w] = [u == m + w - K//2] (out of range: no u)."""
        u, m, w = step.dst_axes
        size = self.plan.values
        lo = size[w] // 2
        dst = self.fresh("e")
        self.comment(f"unfold {self.cname(u)} -> {self.cname(m)},{self.cname(w)} as a selection tensor")
        self.emit(f"{dst} = (torch.arange({size[u]}, device=x.device)[:, None, None] == "
                  f"torch.arange({size[m]}, device=x.device)[None, :, None] + "
                  f"torch.arange({size[w]}, device=x.device)[None, None, :] - {lo}).to(x.dtype)")
        self.axes[dst] = [u, m, w]
        return dst

    def step_diag(self, step: Step, srcs) -> str:
        name = srcs[0]
        c = step.classes[0]
        axes = self.axes[name]
        i = axes.index(c)
        j = axes.index(c, i + 1)
        dst = self.fresh()
        self.comment(f"diagonal over {self.cname(c)}")
        self.emit(f"{dst} = torch.diagonal({name}, 0, {i}, {j})")
        self.axes[dst] = [a for k, a in enumerate(axes) if k not in (i, j)] + [c]
        return dst

    def einsum(self, a: str, b: str | None, out_axes: Sequence[int]) -> str:
        letters: dict[int, str] = {}

        def sub(axes):
            s = ""
            for c in axes:
                if c not in letters:
                    if len(letters) >= len(LETTERS):
                        raise ValueError("too many distinct axes for one einsum")
                    letters[c] = LETTERS[len(letters)]
                s += letters[c]
            return s

        sa = sub(self.axes[a])
        sb = sub(self.axes[b]) if b is not None else None
        so = sub(out_axes)
        eq = f"{sa},{sb}->{so}" if b is not None else f"{sa}->{so}"
        dst = self.fresh()
        args = f"{a}, {b}" if b is not None else a
        self.emit(f"{dst} = torch.einsum('{eq}', {args})")
        self.axes[dst] = list(out_axes)
        return dst

    def step_contract(self, step: Step, srcs) -> str:
        self.comment("contract" + (" summing " + ",".join(map(self.cname, step.summed)) if step.summed else "")
                     + f" ({step.macs} MACs)")
        return self.einsum(srcs[0], srcs[1], step.dst_axes)

    def step_sum(self, step: Step, srcs) -> str:
        self.comment(f"sum over {','.join(map(self.cname, step.summed))} ({step.macs} MACs)")
        return self.reduce_axes(srcs[0], step.summed)

    def reduce_axes(self, name: str, summed: Sequence[int]) -> str:
        """``name`` summed over the classes ``summed``. Classes of static size 1 are squeezed out
        (a view): summing over them would copy the whole tensor for nothing, and in the resnet18
        space such stages copied 300 MB intermediates at N=128."""
        ones = [c for c in summed if c not in self.dyn_cls and self.plan.values[c] == 1]
        rest = [c for c in summed if c not in ones]
        src = name
        for call, classes in (("squeeze(", ones), ("sum(dim=", rest)):
            if classes:
                axes = self.axes[src]
                dst = self.fresh()
                self.emit(f"{dst} = {src}.{call}{tuple(axes.index(c) for c in classes)})")
                self.axes[dst] = [c for c in axes if c not in classes]
                src = dst
        return src

    def step_output(self, step: Step, srcs) -> str:
        name = srcs[0]
        out = list(step.dst_axes)
        held = [c for c in out if c not in step.broadcast]
        name = self.permute_to(name, held)
        if step.broadcast:
            idx = ", ".join("None" if c in step.broadcast else ":" for c in out)
            dst = self.fresh()
            self.emit(f"{dst} = {name}[{idx}].expand{self.shape_expr([[c] for c in out])}.contiguous()")
            self.axes[dst] = out
            name = dst
        if self.plan.scale != 1:
            dst = self.fresh()
            self.emit(f"{dst} = {name} * {self.plan.scale}")
            self.axes[dst] = out
            name = dst
        self.emit(f"return {name}")
        return name


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*) = ")


def release_dead(lines: Sequence[str], keep: Sequence[str] = ()) -> list[str]:
    """Insert ``del a, b`` after the statement that last reads each local, so an eager forward
    frees an intermediate (and the views that pin it) as soon as it is dead: the peak memory is
    then the largest live set, not the sum of every intermediate. ``lines``: a generated
    function (header line, then 4-space statements; deeper lines belong to the statement above,
    as do ``else:``/``elif`` lines). Inputs (``keep``) are the caller's and never deleted."""
    header, body = lines[0], list(lines[1:])
    stmts: list[list[str]] = []
    for line in body:
        top = line.startswith("    ") and not line.startswith("     ")
        if top and not line.lstrip().startswith(("else:", "elif ")) or not stmts:
            stmts.append([line])
        else:
            stmts[-1].append(line)
    assigned: set[str] = set()
    top_level: set[str] = set()  # assigned on every path (else only in a branch: set to None)
    last: dict[str, int] = {}
    for k, st in enumerate(stmts):
        for j, line in enumerate(st):
            code = line.split("#", 1)[0]
            m = _ASSIGN.match(code)
            if m:
                assigned.add(m.group(1))
                if j == 0:
                    top_level.add(m.group(1))
            for name in _NAME.findall(re.sub(r"'[^']*'", "", code)):
                last[name] = k
    dead: dict[int, list[str]] = {}
    for name in assigned - set(keep):
        k = last[name]
        if not any(l.lstrip().startswith("return") for l in stmts[k]):
            dead.setdefault(k, []).append(name)
    out = [header]
    for k, st in enumerate(stmts):
        out += st
        if k in dead:
            names = sorted(dead[k])
            gone = [n for n in names if n in top_level]
            maybe = [n for n in names if n not in top_level]
            if gone:
                out.append("    del " + ", ".join(gone))
            if maybe:
                out.append("    " + " = ".join(maybe) + " = None")
    return out


def emit_forward(plan: Plan, fn_name: str = "forward") -> str:
    """Source of ``def forward(x, w1, ...)`` executing ``plan`` with einsum (the reference path)."""
    return Emitter(plan, fn_name).run()


def macs_expr(plan: Plan, var_of_axis: str = "x") -> tuple[list[str], str]:
    """Lines reading the dynamic variables from ``var_of_axis`` and an expression for the MACs."""
    an = plan.analysis
    lines = [f"v_{ident(v)} = {var_of_axis}.shape[{axis}]" for v, (axis, _) in an.dynamic.items()]
    names = [f"v_{ident(v)}" for v in an.dynamic]
    terms = []
    for exps, coef in sorted(plan.macs_polynomial().items()):
        factors = [str(coef)] + [n if e == 1 else f"{n}**{e}" for n, e in zip(names, exps) if e]
        terms.append("*".join(factors))
    return lines, " + ".join(terms) if terms else "0"


def init_bounds(plan: Plan) -> list[float]:
    """Uniform init bound of each weight (see docs/codegen.md, "Initialization").

    With T weights and R = product of the (non-free) reduction sizes, each weight is drawn from
    U(-b, b) with prod_j Var(w_j) = 1 / (3 R s^2) (s: product of free reduction sizes, which
    scale the output). For T = 1 this is PyTorch's conv/linear default, b = 1/sqrt(fan_in).
    """
    n_w = len(plan.op.weights)
    if n_w == 0:
        return []
    r = 1
    for c in plan.classes:
        if c.role == "reduce" and not c.free:
            r *= plan.values[c.id]
    target = 1.0 / (3.0 * r * plan.scale ** 2)
    var_each = target ** (1.0 / n_w)
    return [math.sqrt(3.0 * var_each)] * n_w


__all__ = ["Emitter", "emit_forward", "macs_expr", "init_bounds", "ident", "release_dead"]
