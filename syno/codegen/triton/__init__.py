"""Fused-kernel backend: a plan's contraction stages as generated Triton implicit-GEMM kernels.

* :func:`supports` — whether a plan can run here;
* :class:`TritonOperator` (:mod:`.runtime`) — forward/backward launcher, ``.source()`` prints the
  generated kernels;
* :mod:`.stages` (plan -> stages, views folded into index expressions), :mod:`.kernel`
  (stage -> Triton source), :mod:`.tune` (GPU-time autotuning with a disk cache),
  :mod:`.ops` (torch custom ops + autograd, so torch.compile/CUDA graphs/export work).
"""

from __future__ import annotations

from syno.ir.lowering import LoweringError, Plan


def available() -> bool:
    """Triton importable (it ships with CUDA builds of torch)."""
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def supports(plan: Plan) -> bool:
    """Whether every step of ``plan`` has a Triton lowering (every kind the planner emits does;
    False only when Triton is missing or the plan is malformed)."""
    if not available():
        return False
    from .stages import build_program

    try:
        build_program(plan)
    except LoweringError:
        return False
    return True


def peak_bytes(plan: Plan, itemsize: int = 4) -> int:
    """Peak bytes of a forward through this backend: inputs, weights, every stage result (kept
    for backward) and the output; no unfolded, shifted or broadcast copy is ever made."""
    import math

    from .stages import build_program

    prog = build_program(plan)
    total = sum(math.prod(plan.values[c] for c in axes) for name, axes in prog.leaves.items()
                if name not in prog.consts)
    return total * itemsize


def triton_operator(plan: Plan):
    from .runtime import TritonOperator

    return TritonOperator(plan)


__all__ = ["available", "supports", "peak_bytes", "triton_operator"]
