"""Do two operators mean (nearly) the same thing? Exact hash identity plus a *mutual-fit probe*.

Two kernels found by a search are duplicates for cherry-picking if a model could not tell them apart:
whatever function one of them computes (for some weights), the other computes too (for other
weights), up to the order and scale of the output channels, which the next BatchNorm/conv absorbs.
Random weights differ per operator, so comparing raw outputs means nothing; instead this module
compares the *function families*:

1. **Hash.** Equal :attr:`Operator.hash` (a canonical content hash, independent of weight layout)
   means the same operator.
2. **Interface.** Different input or output shapes, or different size-variable specs, mean different
   operators.
3. **Mutual fit.** At a small concrete *probe mapping* (:func:`probe_mapping`), ``A`` gets random
   teacher weights; ``B`` is trained by Adam on fresh random inputs every step (so it cannot just
   memorize a fixed probe batch) to reproduce ``A``'s output, with a learnable per-channel scale and
   a periodically re-solved channel permutation on the axes the IR marks ``unordered`` (the output
   channels). The residual on held-out inputs, ``||B(x) - P D A(x)||^2 / ||A(x)||^2``, is ``B``'s
   *fit error* for ``A``. ``A`` and ``B`` are near-same when both directions fit below ``tol``
   (default 0.05: each explains at least 95% of the other's output energy).

Why both directions: a dense 3x3 conv fits Operator 1 perfectly (Operator 1 is a rank-restricted
3x3 conv), but not the reverse, and keeping only the more accurate of a subset/superset pair would
throw away a genuinely different (cheaper) kernel.

Limits (see docs/post.md): the probe is a numerical test at one small mapping, not a proof. It can
miss equivalences that Adam fails to fit in ``steps`` (a false "different": both kernels are kept,
which is the safe error), and it can call operators equal that differ only at sizes larger than the
probe (e.g. windows wider than the probe image). Input-channel permutations (e.g. ``c // g`` vs
``c % g`` grouping) are *not* searched, so such pairs count as different.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from syno.ir.graph import Operator
from syno.ir.sizes import Size

__all__ = ["ProbeConfig", "FitResult", "Equivalence", "probe_mapping", "interface_key", "fit_error",
           "compare", "operator_function"]

#: The batch variable of every operator space (never merged or split: a pure batch axis).
BATCH_VAR = "N"


@dataclass
class ProbeConfig:
    """Settings of the mutual-fit probe. ``mapping`` overrides the automatic probe mapping."""

    tol: float = 0.05             # accepted relative residual (1 - explained energy)
    steps: int = 300              # Adam steps per direction
    lr: float = 0.03
    batch: int = 2                # fresh random samples per step (N of the probe mapping)
    eval_batches: int = 2         # held-out batches for the final residual
    min_extent: int = 8           # floor of every non-batch primary variable in the probe mapping
    abort_after: float = 0.4      # after this fraction of steps, give up if the residual is still ...
    abort_residual: float = 0.6   # ... above this (clearly not the same family)
    realign_every: int = 50       # steps between re-solving the output-channel permutation
    seed: int = 0
    max_coefficient: int | None = 8   # larger coefficients (g=32) get a small stand-in; None keeps them
    mapping: dict[str, int] | None = None

    def key(self) -> str:
        d = asdict(self)
        return ",".join(f"{k}={d[k]}" for k in sorted(d))


@dataclass
class FitResult:
    """``student`` fitted to ``teacher``: held-out relative residual and steps used."""

    residual: float
    steps: int
    aborted: bool = False


@dataclass
class Equivalence:
    """Outcome of :func:`compare`: ``same`` and why (``reason``), with both fit directions if run."""

    same: bool
    reason: str                    # "hash" | "interface" | "fit" | "no-fit" | "probe-error"
    a_fits_b: FitResult | None = None   # A trained to reproduce B
    b_fits_a: FitResult | None = None
    mapping: dict[str, int] = field(default_factory=dict)
    detail: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        return d


# ------------------------------------------------------------------------------------ probe mapping
def _sizes(op: Operator) -> list[Size]:
    out = {d.size for d in op.all_dims}
    out.update(p for o in op.ops for p in o.params if isinstance(p, Size))
    return list(out)


def interface_key(op: Operator) -> str:
    """What must agree for two operators to be interchangeable: variable specs and I/O shapes."""
    specs = op.space.specs()
    return (f"{sorted(specs['primary'])}|{sorted(specs['coefficient'])}|"
            f"{op.input_shape}->{op.output_shape}")


def small_coefficients(space, max_coefficient: int | None = 8) -> dict[str, int]:
    """Stand-in values for coefficient variables above ``max_coefficient`` (e.g. ``g=32``).

    Each gets the smallest integer >= 3 that equals no other coefficient's value and no product of
    two of them (``g=5`` next to ``k_1=3, k_2=7, s=2``), so the probe stays small without making
    two different structures coincide (a Merge by ``g`` must not equal two Merges by ``s``).
    """
    if max_coefficient is None:
        return {}
    coeffs = {v.name: v.estimate for i, v in enumerate(space.variables)
              if not space.is_primary(i) and v.estimate is not None}
    keep = {n: x for n, x in coeffs.items() if x <= max_coefficient}
    out: dict[str, int] = {}
    for name in sorted(n for n, x in coeffs.items() if x > max_coefficient):
        taken = set(keep.values()) | set(out.values())
        taken |= {a * b for a in taken for b in taken}
        value = 3
        while value in taken:
            value += 1
        out[name] = value
    return out


def probe_mapping(ops: Sequence[Operator], *, batch: int = 2, min_extent: int = 8,
                  base: Mapping[str, int] | None = None, max_coefficient: int | None = 8) -> dict[str, int]:
    """A small mapping under which every size of every operator in ``ops`` is a positive integer.

    Coefficient variables keep their spec values (``k_1=3``, ``s=2``) unless larger than
    ``max_coefficient`` (:func:`small_coefficients`: ``g=32`` becomes 5, which shrinks the channel
    counts the probe needs from 128 to 20). Primary variables start at ``base`` (e.g. a real layer mapping) or
    1, ``N`` at ``batch``; each is raised to at least ``min_extent`` and multiplied by the missing
    denominator of any size that is not an integer. Every size that depends on a non-batch primary
    must also be at least 2, so no structure degenerates (at ``C_in = g`` Operator 1's grouped factor
    covers one channel per group and the operator *is* a dense conv). Without ``base`` the channel
    variables (primaries that may be split or merged, i.e. spec ``max_occurrences > 0``) are then
    set equal, as in most layers of a real model: with ``C_out = 2 C_in`` Operator 1's rank
    ``C_out/(g s)`` would reach the group width ``C_in/g`` and again make it a dense conv.
    """
    if not ops:
        raise ValueError("probe_mapping needs at least one operator")
    space = ops[0].space
    variables = list(space.variables)
    primaries = [v.name for i, v in enumerate(variables) if space.is_primary(i)]
    channels = [v.name for i, v in enumerate(variables)
                if space.is_primary(i) and v.max_occurrences > 0 and v.name != BATCH_VAR]
    index = {v.name: i for i, v in enumerate(variables)}
    sizes = sorted({s for op in ops for s in _sizes(op)}, key=str)

    def non_batch(s: Size) -> bool:
        return any(s.exps[index[n]] > 0 for n in primaries if n != BATCH_VAR)

    def fix(m: dict[str, int]) -> dict[str, int]:
        for _ in range(256):
            b = space.bind(m)
            bad = None
            for s in sizes:
                v = b.values(s)[0]
                if v.denominator != 1 or v < 1 or (v < 2 and non_batch(s)):
                    bad = (s, v)
                    break
            if bad is None:
                small = [n for n in primaries if n != BATCH_VAR and m[n] < min_extent]
                if not small:
                    return m
                for n in small:
                    m[n] *= -(-min_extent // m[n])
                continue
            s, v = bad
            grow = [n for n in primaries if n != BATCH_VAR and s.exps[index[n]] > 0]
            if not grow:
                raise ValueError(f"size {s} cannot be made a positive integer by any primary variable")
            m[grow[0]] *= max(int(v.denominator), 2)
        raise ValueError(f"no valid probe mapping found for sizes {[str(s) for s in sizes]}")

    coeff = small_coefficients(space, max_coefficient)
    m = {n: (batch if n == BATCH_VAR else max(int(base[n]) if base and n in base else 1, 1)) for n in primaries}
    m.update(coeff)
    m = fix(m)
    if base is None and len(channels) > 1:
        top = max(m[n] for n in channels)
        equal = fix({**m, **{n: top for n in channels}})
        if all(equal[n] == equal[channels[0]] for n in channels):
            m = equal
    return m


# -------------------------------------------------------------------------------- operator functions
class _EinsumFunction(nn.Module):
    """``x -> op(x; weights)``, exact, evaluated as one einsum over gathered tensors.

    The IR's reference evaluator multiplies everything in the full (outputs x reductions) index space.
    Here every tensor (and the Unfold validity mask) is gathered only over the leaf loops it depends
    on, and ``torch.einsum`` contracts them, so the cost is that of the operator's im2col plus a
    contraction. The index arrays are built once per (operator, mapping); it is checked against
    :func:`syno.ir.evaluate.reference_forward` in the tests. Independent of code generation, so the
    probe judges the IR's semantics rather than a particular lowering.
    """

    def __init__(self, op: Operator, mapping: Mapping[str, int], generator: torch.Generator):
        super().__init__()
        from syno.ir.evaluate import concrete_sizes, index_arrays, tensor_shapes

        self.op = op
        self.mapping = dict(mapping)
        shapes = tensor_shapes(op, self.mapping)
        self.input_shape = shapes[0]
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.randn(s, generator=generator)) for s in shapes[1:]])
        sizes = concrete_sizes(op, self.mapping)
        values, mask = index_arrays(op, sizes)
        n_leaves = len(op.outputs) + len(op.reductions)
        letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
        if n_leaves > len(letters):
            raise ValueError(f"operator has {n_leaves} loops; the probe evaluator supports {len(letters)}")
        self.out_shape = tuple(sizes[d.size] for d in op.outputs)
        self._gathers: list[tuple[tuple[torch.Tensor, ...], tuple[int, ...]]] = []
        present: set[int] = set()
        subs = []
        for dims in op.tensors:
            idx = []
            for d in dims:
                v = values[d]
                idx.append(v.clamp(0, sizes[d.size] - 1))
            bshape = torch.broadcast_shapes(*(i.shape for i in idx)) if idx else (1,) * n_leaves
            bshape = tuple(bshape) + (1,) * (n_leaves - len(bshape))
            axes = tuple(a for a in range(n_leaves) if bshape[a] > 1)
            direct = self._direct_axes(idx, n_leaves)
            if direct is not None:  # every axis is a plain loop: a permutation, no gather needed
                present.update(a for a in direct if a is not None)
                kept = [a for a in direct if a is not None]
                subs.append("".join(letters[a] for a in kept))
                self._gathers.append((("direct",) + tuple(direct), tuple(kept)))
                continue
            self._gathers.append((tuple(idx), axes))
            present.update(axes)
            subs.append("".join(letters[a] for a in axes))
        self._mask = None
        if mask is not None:
            mshape = tuple(mask.shape) + (1,) * (n_leaves - mask.dim())
            maxes = tuple(a for a in range(n_leaves) if mshape[a] > 1)
            self._mask = (mask.reshape(mshape).to(torch.get_default_dtype()), maxes)
            present.update(maxes)
            subs.append("".join(letters[a] for a in maxes))
        out_axes = [a for a in range(len(op.outputs)) if a in present]
        self._out_axes = out_axes
        # a reduction no tensor depends on (an expanded one) multiplies the sum by its extent
        self._factor = 1
        for k, r in enumerate(op.reductions):
            if len(op.outputs) + k not in present:
                self._factor *= sizes[r.size]
        self._equation = ",".join(subs) + "->" + "".join(letters[a] for a in out_axes)
        self._n_leaves = n_leaves

    @staticmethod
    def _direct_axes(idx: list[torch.Tensor], n_leaves: int) -> list[int | None] | None:
        """For each tensor axis the loop it is indexed by directly (``None``: a size-1 axis), or
        None if some axis needs a real gather (an expression, not a plain loop index)."""
        out: list[int | None] = []
        for i in idx:
            shape = tuple(i.shape) + (1,) * (n_leaves - i.dim())
            big = [a for a in range(n_leaves) if shape[a] > 1]
            if not big:
                if i.numel() != 1 or int(i.reshape(-1)[0]) != 0:
                    return None
                out.append(None)
                continue
            if len(big) != 1 or not torch.equal(i.reshape(-1), torch.arange(shape[big[0]])):
                return None
            out.append(big[0])
        used = [a for a in out if a is not None]
        return out if len(used) == len(set(used)) else None

    @staticmethod
    def _squeeze(t: torch.Tensor, axes: tuple[int, ...], n_leaves: int) -> torch.Tensor:
        t = t.reshape(tuple(t.shape) + (1,) * (n_leaves - t.dim()))
        drop = [a for a in range(n_leaves) if a not in axes]
        for a in reversed(drop):
            t = t.squeeze(a)
        return t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) != tuple(self.input_shape):
            raise ValueError(f"input shape {tuple(x.shape)} != probe shape {tuple(self.input_shape)}")
        operands = []
        for t, (idx, axes) in zip([x, *self.weights], self._gathers):
            if idx and isinstance(idx[0], str):  # direct: drop size-1 axes, einsum does the permute
                keep = [k for k, a in enumerate(idx[1:]) if a is not None]
                operands.append(t.reshape([t.shape[k] for k in keep]))
                continue
            g = t[idx] if idx else t
            operands.append(self._squeeze(g, axes, self._n_leaves))
        if self._mask is not None:
            m, axes = self._mask
            operands.append(self._squeeze(m.to(x.dtype), axes, self._n_leaves))
        y = torch.einsum(self._equation, *operands)
        if self._factor != 1:
            y = y * self._factor
        shape = [self.out_shape[a] if a in self._out_axes else 1 for a in range(len(self.out_shape))]
        return y.reshape(shape).expand(self.out_shape)


def operator_function(op: Operator, mapping: Mapping[str, int], generator: torch.Generator) -> nn.Module:
    """A module computing ``op`` at ``mapping`` with random weights (``.input_shape`` = data shape)."""
    return _EinsumFunction(op, mapping, generator)


def _normalize_output(fn: nn.Module, x: torch.Tensor) -> None:
    """Rescale ``fn``'s weights so its output on ``x`` has unit RMS (balanced across weights)."""
    with torch.no_grad():
        rms = fn(x).pow(2).mean().sqrt().item()
        ws = list(fn.parameters())
        if rms > 0 and math.isfinite(rms) and ws:
            f = rms ** (-1.0 / len(ws))
            for w in ws:
                w.mul_(f)


def _channel_axes(op: Operator) -> list[int]:
    """Output axes whose order does not matter (marked unordered in the IR, e.g. ``C_out``)."""
    return [i for i, u in enumerate(op.output_shape.unordered) if u]


def _assign(student: torch.Tensor, teacher: torch.Tensor, axis: int) -> torch.Tensor:
    """Permutation ``p`` maximizing ``sum |cos(student[p[i]], teacher[i])|`` along ``axis`` (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    s = student.detach().movedim(axis, 0).reshape(student.shape[axis], -1)
    t = teacher.detach().movedim(axis, 0).reshape(teacher.shape[axis], -1)
    s = s / s.norm(dim=1, keepdim=True).clamp_min(1e-12)
    t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = (t @ s.T).abs().cpu().numpy()
    rows, cols = linear_sum_assignment(-cos)
    perm = torch.empty(len(rows), dtype=torch.long)
    perm[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return perm


def fit_error(teacher_op: Operator, student_op: Operator, mapping: Mapping[str, int],
              config: ProbeConfig | None = None,
              make_function: Callable[[Operator, Mapping[str, int], torch.Generator], nn.Module] = operator_function,
              ) -> FitResult:
    """Train ``student_op`` to reproduce ``teacher_op`` (random weights) and return the held-out residual."""
    cfg = config or ProbeConfig()
    g = torch.Generator().manual_seed(cfg.seed)
    teacher = make_function(teacher_op, mapping, g)
    student = make_function(student_op, mapping, g)
    shape = tuple(teacher.input_shape)
    if tuple(student.input_shape) != shape:
        return FitResult(residual=math.inf, steps=0, aborted=True)

    def inputs() -> torch.Tensor:
        return torch.randn(shape, generator=g)

    x0 = inputs()
    _normalize_output(teacher, x0)
    _normalize_output(student, x0)
    for p in teacher.parameters():
        p.requires_grad_(False)
    axes = _channel_axes(student_op)
    with torch.no_grad():
        y0 = teacher(x0)
    scales = nn.ParameterList([nn.Parameter(torch.ones(y0.shape[a])) for a in axes])
    perms = [torch.arange(y0.shape[a]) for a in axes]

    def student_out(x: torch.Tensor) -> torch.Tensor:
        y = student(x)
        for a, sc, p in zip(axes, scales, perms):
            shape_ = [1] * y.dim()
            shape_[a] = -1
            y = y.index_select(a, p) * sc.view(shape_)
        return y

    def residual(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (y - t).pow(2).sum() / t.pow(2).sum().clamp_min(1e-12)

    opt = torch.optim.Adam(list(student.parameters()) + list(scales.parameters()), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.steps, 1))
    abort_at = int(cfg.abort_after * cfg.steps)
    steps = 0
    for step in range(cfg.steps):
        x = inputs()
        with torch.no_grad():
            t = teacher(x)
        if axes and step % cfg.realign_every == 0:
            with torch.no_grad():
                raw = student(x)
            for k, a in enumerate(axes):
                perms[k] = _assign(raw, t, a)
        loss = residual(student_out(x), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        steps = step + 1
        if not torch.isfinite(loss):
            return FitResult(residual=math.inf, steps=steps, aborted=True)
        if step + 1 == abort_at and loss.item() > cfg.abort_residual:
            return FitResult(residual=float(loss.item()), steps=steps, aborted=True)
    with torch.no_grad():
        num = den = 0.0
        for _ in range(cfg.eval_batches):
            x = inputs()
            t = teacher(x)
            y = student_out(x)
            num += (y - t).pow(2).sum().item()
            den += t.pow(2).sum().item()
    return FitResult(residual=num / max(den, 1e-12), steps=steps)


def compare(a: Operator, b: Operator, config: ProbeConfig | None = None, **kw) -> Equivalence:
    """Decide whether ``a`` and ``b`` are the same or near-same operator (see the module docstring)."""
    cfg = config or ProbeConfig()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # probe tensors are tiny: threads only add contention
    try:
        return _compare(a, b, cfg, **kw)
    finally:
        torch.set_num_threads(threads)


def _compare(a: Operator, b: Operator, cfg: ProbeConfig, **kw) -> Equivalence:
    if a.hash == b.hash:
        return Equivalence(True, "hash")
    if interface_key(a) != interface_key(b):
        return Equivalence(False, "interface", detail=f"{a.input_shape}->{a.output_shape} vs "
                                                       f"{b.input_shape}->{b.output_shape}")
    try:
        mapping = dict(cfg.mapping) if cfg.mapping else probe_mapping(
            [a, b], batch=cfg.batch, min_extent=cfg.min_extent, max_coefficient=cfg.max_coefficient)
        ba = fit_error(a, b, mapping, cfg, **kw)
        if ba.residual > cfg.tol:
            return Equivalence(False, "no-fit", b_fits_a=ba, mapping=mapping)
        ab = fit_error(b, a, mapping, cfg, **kw)
    except Exception as exc:  # an operator the probe cannot run is treated as distinct
        return Equivalence(False, "probe-error", detail=f"{type(exc).__name__}: {exc}")
    same = ab.residual <= cfg.tol
    return Equivalence(same, "fit" if same else "no-fit", a_fits_b=ab, b_fits_a=ba, mapping=mapping)
