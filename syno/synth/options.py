"""Search-space options: the synthesis problem (shapes, variables, mappings) plus every sampler knob.

:class:`SynthOptions` is one typed, immutable pydantic model. Defaults follow the original's
experiment command line (``--kas-*``, reference §9) where a flag exists, else the original Python
``Sampler`` default (reference §5.9); exceptions are listed in ``docs/synthesis.md``.
:meth:`SynthOptions.problem` compiles it once into a :class:`Problem` (size space, parsed shapes,
bindings over the distinct mappings, reference FLOPs).

Presets: :meth:`SynthOptions.resnet18` (the paper's ResNet-18 run), :meth:`SynthOptions.gpt2`
(linear layers of GPT-2 small) and :meth:`SynthOptions.tiny` (small sizes for CPU tests and the
digits demo).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from functools import cached_property
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from syno.ir.sizes import Bindings, Shape, Size, SizeError, SizeSpace, parse_variable_spec

UNLIMITED = -1
_PROBLEMS: dict[str, "Problem"] = {}

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# The original's CNN / ViT-style specs (reference §5.9), shared with syno.ir.library.
CONV_INPUT = "[N, C_in: unordered, H, H]"
CONV_OUTPUT = "[N, C_out: unordered, H, H]"
CONV_PRIMARY = ("N: 0", "C_in: 2", "C_out: 4", "H: 0")
CONV_COEFFICIENT = ("k_1=3: 2", "k_2=7: 2", "s=2: 2", "g=32: 3")
LINEAR_INPUT = "[N, seq_len, H_in: unordered]"
LINEAR_OUTPUT = "[N, seq_len, H_out: unordered]"


def _resnet18_mappings(batch: int = 1) -> tuple[dict[str, int], ...]:
    """One mapping per ResNet-18 placeholder at 224x224 (ImageNet stem, as the original trained
    CIFAR-100): every 3x3/1x1 conv with groups 1; stride-2 convs are pooled first, so they see the
    output resolution (syno.models.placeholder.PooledPlaceholder)."""
    rows = []
    rows += [dict(C_in=64, C_out=64, H=56)] * 4
    rows += [dict(C_in=64, C_out=128, H=28)] * 2 + [dict(C_in=128, C_out=128, H=28)] * 3
    rows += [dict(C_in=128, C_out=256, H=14)] * 2 + [dict(C_in=256, C_out=256, H=14)] * 3
    rows += [dict(C_in=256, C_out=512, H=7)] * 2 + [dict(C_in=512, C_out=512, H=7)] * 3
    return tuple(dict(N=batch, **r) for r in rows)


def _gpt2_mappings(batch: int = 1, seq_len: int = 1024) -> tuple[dict[str, int], ...]:
    """GPT-2 small: per block c_attn 768->2304, c_proj 768->768, c_fc 768->3072, mlp c_proj 3072->768."""
    rows = []
    for _ in range(12):
        rows += [dict(H_in=768, H_out=2304), dict(H_in=768, H_out=768),
                 dict(H_in=768, H_out=3072), dict(H_in=3072, H_out=768)]
    return tuple(dict(N=batch, seq_len=seq_len, **r) for r in rows)


class SynthOptions(BaseModel):
    """Everything that defines a synthesis space. Immutable; ``model_copy(update=...)`` to vary."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # ---- the problem ------------------------------------------------------------------------
    input_shape: str = Field(description="data input shape, e.g. '[N, C_in: unordered, H, H]'")
    output_shape: str = Field(description="output shape, e.g. '[N, C_out: unordered, H, H]'")
    primary_specs: tuple[str, ...] = Field(description="primary variables 'name[=value][: max_occurrences]'")
    coefficient_specs: tuple[str, ...] = Field(default=(), description="coefficient variables, e.g. 'k_1=3: 2'")
    fixed_io_pairs: tuple[tuple[int, int], ...] = Field(
        default=(), description="(input axis, output axis) pairs that bypass the search, e.g. batch (0, 0)")
    mappings: tuple[dict[str, int], ...] = Field(
        description="concrete values, one mapping per placeholder layer; missing names use spec estimates")

    # ---- structure limits ---------------------------------------------------------------------
    depth: int = Field(12, ge=1, le=40, description="max primitives per operator (Finalize not counted)")
    max_chain_length: int = Field(10, ge=1, description="max primitives on one chain from an output/reduction")
    max_tensors: int = Field(3, ge=2, le=8, description="input + weights")
    max_reductions: int = Field(4, ge=0, le=6)
    max_expands: int = Field(UNLIMITED, ge=-1, description="-1 = unlimited")
    max_merges: int = Field(UNLIMITED, ge=-1)
    max_splits: int = Field(UNLIMITED, ge=-1)
    max_shifts: int = Field(UNLIMITED, ge=-1)
    max_strides: int = Field(UNLIMITED, ge=-1)
    max_unfolds: int = Field(UNLIMITED, ge=-1)
    max_shares: int = Field(UNLIMITED, ge=-1)

    # ---- sizes --------------------------------------------------------------------------------
    max_size_multiplier: float = Field(1.0, gt=0, description="(prod reductions) / numel(input) bound")
    max_enumerations_per_var: int = Field(5, ge=1)
    max_variables_in_size: int = Field(3, ge=1)
    max_variable_powers_in_size: int = Field(16, ge=1)
    exact_division: bool = True
    count_coefficients_in_weights_as_allowance_usage: bool = False

    # ---- primitive parameters ------------------------------------------------------------------
    max_shift_rhs: float = Field(5.0, gt=0, description="maximumValidReshapeShiftPattern")
    max_strided_dim_size: int = Field(30, ge=1)
    max_unfold_kernel_size: int = Field(30, ge=1)
    min_unfold_ratio: float = Field(1.5, ge=1.0)
    odd_unfold_kernels: bool = True
    canonicalize_unfold_order: bool = True
    allow_tile: bool = False
    max_expansion_repeat_multiplier: float = Field(1.0, ge=1.0, description="1 disables standalone Expand")
    max_expansion_merge_multiplier: float = Field(512.0, ge=1.0)
    min_weight_share_dim: int = Field(3, ge=1)
    max_weight_share_dim: int = Field(8, ge=1)
    max_pooling_factor: float = Field(8.0, ge=1.0)
    min_single_weight_params: int = Field(100, ge=0)

    # ---- canonicalization switches (the original's option pairs; see reference §4) -----------------
    disallow_merge_with_large_block_above_stride: bool = True
    disallow_stride_above_merge_r: bool = False
    disallow_merge_with_large_block_above_unfold: bool = True
    disallow_unfold_l_above_merge_r: bool = False
    disallow_stride_above_split: bool = True
    disallow_unfold_l_above_split: bool = True
    disallow_unfold_l_above_shift: bool = True
    disallow_shift_above_unfold: bool = False

    # ---- finalization / cost window -------------------------------------------------------------
    max_finalizations: int = Field(5, ge=1)
    flops_ratio: Optional[tuple[float, float]] = Field(
        None, description="(min, max) FLOPs relative to reference_operator's FLOPs under the same mappings")
    reference_operator: Optional[str] = Field(None, description="name in syno.ir.library.HAND_BUILT")
    min_flops: float = Field(0.0, ge=0, description="absolute, summed over mappings (weighted by repeats)")
    max_flops: Optional[float] = Field(None, gt=0)
    min_weight_params: int = Field(0, ge=0, description="total weight parameters, checked under every mapping")
    max_weight_params: Optional[int] = Field(None, ge=1)
    enable_flops_pruning: bool = True

    # ---- sampling ---------------------------------------------------------------------------------
    seed: int = 42
    workers: int = Field(1, ge=1)

    # ------------------------------------------------------------------------------- validation
    @field_validator("primary_specs", "coefficient_specs")
    @classmethod
    def _specs_parse(cls, specs, info):
        kind = "primary" if info.field_name == "primary_specs" else "coefficient"
        for s in specs:
            try:
                parse_variable_spec(s, kind)
            except SizeError as exc:
                raise ValueError(f"{info.field_name}: {exc}") from None
        return specs

    @field_validator("mappings")
    @classmethod
    def _mappings_nonempty(cls, mappings):
        if not mappings:
            raise ValueError("mappings: at least one concrete mapping is required")
        return mappings

    @field_validator("flops_ratio")
    @classmethod
    def _ratio_window(cls, window):
        if window is not None:
            lo, hi = window
            if not (0 <= lo < hi):
                raise ValueError(f"flops_ratio: need 0 <= min < max, got {window}")
        return window

    @model_validator(mode="after")
    def _check(self) -> SynthOptions:
        pairs = [("disallow_merge_with_large_block_above_stride", "disallow_stride_above_merge_r"),
                 ("disallow_merge_with_large_block_above_unfold", "disallow_unfold_l_above_merge_r")]
        for a, b in pairs:
            if getattr(self, a) and getattr(self, b):
                raise ValueError(f"{a} and {b}: at most one of the pair may be true")
        if self.min_weight_share_dim > self.max_weight_share_dim:
            raise ValueError(f"min_weight_share_dim/max_weight_share_dim: empty window "
                             f"[{self.min_weight_share_dim}, {self.max_weight_share_dim}]")
        if self.max_flops is not None and self.min_flops >= self.max_flops:
            raise ValueError(f"min_flops/max_flops: empty window [{self.min_flops}, {self.max_flops}]")
        if self.max_weight_params is not None and self.min_weight_params > self.max_weight_params:
            raise ValueError(f"min_weight_params/max_weight_params: empty window "
                             f"[{self.min_weight_params}, {self.max_weight_params}]")
        if self.flops_ratio is not None and self.reference_operator is None:
            raise ValueError("flops_ratio: needs reference_operator (the FLOPs the ratio is relative to)")
        if self.reference_operator is not None:
            from syno.ir.library import HAND_BUILT
            if self.reference_operator not in HAND_BUILT:
                raise ValueError(f"reference_operator: unknown {self.reference_operator!r}; "
                                 f"known: {', '.join(sorted(HAND_BUILT))}")
        prob = self.problem()  # parses shapes, variables and mappings; raises naming the field
        if self.reference_operator is not None:
            try:
                prob.reference_flops
            except (SizeError, ValueError) as exc:
                raise ValueError(f"reference_operator: {self.reference_operator!r} cannot be built in this "
                                 f"space: {exc}") from None
            prob.flops_window
        return self

    # ------------------------------------------------------------------------------- compiled
    def problem(self) -> Problem:
        """The compiled problem (cached per distinct options, per process)."""
        key = self.model_dump_json()
        cached = _PROBLEMS.get(key)
        if cached is None:
            cached = Problem(self)
            _PROBLEMS[key] = cached
        return cached

    def cap(self, name: str) -> int:
        """A ``max_*`` op cap with -1 mapped to a large number."""
        v = getattr(self, f"max_{name}")
        return 10 ** 6 if v == UNLIMITED else v

    def digest(self) -> str:
        import hashlib
        return hashlib.blake2b(self.model_dump_json().encode(), digest_size=8).hexdigest()

    # ------------------------------------------------------------------------------- presets
    @classmethod
    def resnet18(cls, **overrides: Any) -> SynthOptions:
        """The paper's ResNet-18 run (reference §5.9 "paper-style run") on the conv spec."""
        base = dict(
            input_shape=CONV_INPUT, output_shape=CONV_OUTPUT,
            primary_specs=CONV_PRIMARY, coefficient_specs=CONV_COEFFICIENT,
            fixed_io_pairs=((0, 0),), mappings=_resnet18_mappings(),
            depth=12, max_reductions=5, max_merges=1, max_splits=3, max_shifts=2, max_strides=0,
            max_size_multiplier=4, max_variables_in_size=3, max_chain_length=6, max_shift_rhs=2,
            max_expansion_merge_multiplier=2048, min_weight_share_dim=8, max_weight_share_dim=8,
            min_unfold_ratio=2.3, max_finalizations=2, max_tensors=3,
            flops_ratio=(0.15, 0.9), reference_operator="conv2d",
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def gpt2(cls, **overrides: Any) -> SynthOptions:
        """The original's GPT-2 space (reference syno-experiments.md §1.2, §1.3, §5.1): only each
        block's ``attn.c_attn`` (768 -> 2304 = t * H_in) is replaced; ``[N, seq_len, H_in: unordered]
        -> [N, seq_len, t*H_in]``, primaries ``N: 0, seq_len: 0, H_in: 4``, coefficients ``k_1=2: 3,
        k_2=5: 2, t=3: 3, g=32: 3``, only the batch fixed (as in the original, seq_len is not: a
        kernel may mix positions, which the trainer's loss < 3 check catches), 12 mappings
        ``{N: 1, seq_len: 2048, H_in: 768}``; the common knobs of the paper's runs with the GPT-2
        column (merges 2, splits 2, depth 7, chain length 5, expansion-merge multiplier 6144) and the
        GPT-only options (expansion repeat multiplier 5, tiles, >= 100000 weight params). FLOPs
        window 0.1-1.2 of the c_attn Linears' MACs (the original's ratios are of the whole model)."""
        mappings = tuple(dict(N=1, seq_len=2048, H_in=768) for _ in range(12))
        linear_macs = sum(m["N"] * m["seq_len"] * m["H_in"] * 3 * m["H_in"] for m in mappings)
        base = dict(
            input_shape=LINEAR_INPUT, output_shape="[N, seq_len, t*H_in]",
            primary_specs=("N: 0", "seq_len: 0", "H_in: 4"),
            coefficient_specs=("k_1=2: 3", "k_2=5: 2", "t=3: 3", "g=32: 3"),
            fixed_io_pairs=((0, 0),), mappings=mappings,
            depth=7, max_chain_length=5, max_reductions=5, max_merges=2, max_splits=2, max_shifts=2,
            max_strides=0, max_size_multiplier=4, max_variables_in_size=3, max_shift_rhs=2,
            max_expansion_merge_multiplier=6144, max_expansion_repeat_multiplier=5, allow_tile=True,
            min_weight_share_dim=8, max_weight_share_dim=8, min_unfold_ratio=2.3, max_finalizations=2,
            max_tensors=3, min_single_weight_params=100000,
            min_flops=0.1 * linear_macs, max_flops=1.2 * linear_macs,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def gpt2_linears(cls, **overrides: Any) -> SynthOptions:
        """All four Linear shapes of GPT-2 small (d=768, seq 1024) with an independent ``H_out``
        (the former ``gpt2()`` preset, not the original's space); N and seq_len are fixed (causality)."""
        base = dict(
            input_shape=LINEAR_INPUT, output_shape=LINEAR_OUTPUT,
            primary_specs=("N: 0", "seq_len: 0", "H_in: 2", "H_out: 3"),
            coefficient_specs=("k_1=3: 3", "s=2: 3", "g=32: 3"),
            fixed_io_pairs=((0, 0), (1, 1)), mappings=_gpt2_mappings(),
            depth=10, max_reductions=4, max_tensors=3, max_chain_length=6, max_size_multiplier=4,
            max_shifts=0, max_strides=0, max_unfolds=0, max_expansion_merge_multiplier=4096,
            max_finalizations=2, flops_ratio=(0.1, 0.9), reference_operator="linear",
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def tiny(cls, **overrides: Any) -> SynthOptions:
        """Small conv space for fast CPU tests and the digits demo (8..16 channels, 8..16 pixels).

        Exercises every primitive (strides, shifts, standalone expands are enabled) while keeping
        random walks cheap and operators small enough for the reference evaluator."""
        base = dict(
            input_shape=CONV_INPUT, output_shape=CONV_OUTPUT,
            primary_specs=("N: 0", "C_in: 2", "C_out: 2", "H: 0"),
            coefficient_specs=("k_1=3: 2", "s=2: 2"),
            fixed_io_pairs=((0, 0),),
            mappings=(dict(N=1, C_in=8, C_out=16, H=16), dict(N=1, C_in=16, C_out=16, H=8)),
            depth=8, max_reductions=3, max_tensors=3, max_chain_length=5,
            max_merges=2, max_splits=2, max_shifts=1, max_strides=1, max_unfolds=3, max_expands=1,
            max_size_multiplier=4, max_shift_rhs=4, min_unfold_ratio=2.0,
            max_expansion_repeat_multiplier=4, max_expansion_merge_multiplier=64,
            min_weight_share_dim=2, max_weight_share_dim=8, min_single_weight_params=16,
            max_finalizations=2, flops_ratio=(0.02, 2.0), reference_operator="conv2d",
        )
        base.update(overrides)
        return cls(**base)


class Problem:
    """Compiled form of :class:`SynthOptions` (parsed once per process)."""

    def __init__(self, options: SynthOptions):
        self.options = options
        o = options
        try:
            space = SizeSpace.from_specs(o.primary_specs, o.coefficient_specs)
        except SizeError as exc:
            raise ValueError(f"primary_specs/coefficient_specs: {exc}") from None
        declared = {v.name for v in space.variables}
        for field in ("input_shape", "output_shape"):
            text = getattr(o, field)
            names = {n for n in _IDENT.findall(text) if n != "unordered"}
            unknown = sorted(names - declared)
            if unknown:
                raise ValueError(f"{field}: unknown variable(s) {unknown} in {text!r}; declare them in "
                                 f"primary_specs or coefficient_specs")
        self.space = space
        self.input_shape = self._shape("input_shape", o.input_shape)
        self.output_shape = self._shape("output_shape", o.output_shape)
        n_in, n_out = len(self.input_shape), len(self.output_shape)
        seen_in, seen_out = set(), set()
        for i, j in o.fixed_io_pairs:
            if not (0 <= i < n_in and 0 <= j < n_out):
                raise ValueError(f"fixed_io_pairs: ({i}, {j}) out of range for {n_in} input / {n_out} output axes")
            if i in seen_in or j in seen_out:
                raise ValueError(f"fixed_io_pairs: axis used twice in {o.fixed_io_pairs}")
            seen_in.add(i)
            seen_out.add(j)
            if self.input_shape[i] != self.output_shape[j]:
                raise ValueError(f"fixed_io_pairs: ({i}, {j}) pairs sizes {self.input_shape[i]} and "
                                 f"{self.output_shape[j]}")
        self.fixed: tuple[tuple[int, int], ...] = tuple(sorted(o.fixed_io_pairs))
        self.fixed_inputs = {i for i, _ in self.fixed}
        self.fixed_outputs = {j for _, j in self.fixed}
        self.desired: tuple[Size, ...] = tuple(s for k, s in enumerate(self.input_shape) if k not in self.fixed_inputs)
        self.desired_unordered: tuple[bool, ...] = tuple(
            u for k, u in enumerate(self.input_shape.unordered) if k not in self.fixed_inputs)
        for s in self.desired:
            prim = [e for e in s.primary_exps if e]
            if prim != [1] or any(e < 0 for e in s.primary_exps):
                raise ValueError(f"input_shape: every searched (non-fixed) axis must contain exactly one primary "
                                 f"variable to the first power (got {s}); fix it with fixed_io_pairs or the spec")
        if not self.desired:
            raise ValueError("input_shape: all axes are fixed; nothing to synthesize")
        # Distinct mappings with multiplicities: validity depends on the set, totals on the counts.
        rows: dict[tuple, int] = {}
        for m_index, m in enumerate(o.mappings):
            unknown = sorted(set(m) - declared)
            if unknown:
                raise ValueError(f"mappings: mapping {m_index} names unknown variable(s) {unknown}")
            key = tuple(sorted(m.items()))
            rows[key] = rows.get(key, 0) + 1
        try:
            self.bindings: Bindings = space.bind([dict(k) for k in rows])
        except SizeError as exc:
            raise ValueError(f"mappings: {exc}") from None
        self.repeats: tuple[int, ...] = tuple(rows.values())
        for field, shape in (("input_shape", self.input_shape), ("output_shape", self.output_shape)):
            for s in shape:
                if not self.bindings.is_valid(s):
                    raise ValueError(f"{field}: size {s} is not a positive integer under every mapping "
                                     f"({list(map(str, self.bindings.values(s)))})")
        self.input_numel = self.space.one
        for s in self.desired:
            self.input_numel = self.input_numel * s

    def _shape(self, field: str, text: str) -> Shape:
        try:
            return self.space.shape(text)
        except SizeError as exc:
            raise ValueError(f"{field}: {exc}") from None

    # -- evaluation helpers ------------------------------------------------------------------
    def total(self, per_mapping) -> float:
        """Sum of a per-(distinct)-mapping quantity weighted by how often each mapping occurs."""
        return float(sum(r * v for r, v in zip(self.repeats, per_mapping)))

    @cached_property
    def reference_flops(self) -> float | None:
        o = self.options
        if o.reference_operator is None:
            return None
        from syno.ir.library import HAND_BUILT
        from .flops import operator_flops
        ref = HAND_BUILT[o.reference_operator](self.space)
        return self.total(operator_flops(ref, self.bindings))

    @cached_property
    def flops_window(self) -> tuple[float, float]:
        o = self.options
        lo, hi = o.min_flops, math.inf if o.max_flops is None else o.max_flops
        if o.flops_ratio is not None:
            ref = self.reference_flops
            lo, hi = max(lo, o.flops_ratio[0] * ref), min(hi, o.flops_ratio[1] * ref)
            if lo >= hi:
                raise ValueError(f"flops_ratio/min_flops/max_flops: empty combined window [{lo}, {hi}]")
        return lo, hi

    def upper(self, size: Size) -> Fraction:
        return self.bindings.upper(size)

    def lower(self, size: Size) -> Fraction:
        return self.bindings.lower(size)


__all__ = ["SynthOptions", "Problem", "UNLIMITED", "CONV_INPUT", "CONV_OUTPUT", "CONV_PRIMARY",
           "CONV_COEFFICIENT", "LINEAR_INPUT", "LINEAR_OUTPUT"]
