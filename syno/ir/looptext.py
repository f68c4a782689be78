"""C-like loop-nest text of an operator's forward computation (like the original's loop.txt).

One loop per output axis (``i_k``), then one per reduction (``ri_k``, innermost = ``ri_0``), each
reduction with its own accumulator; tensor accesses are the primitives' index expressions, with
``restrict(x, 0, n)`` marking zero padding outside ``[0, n)``.
"""

from __future__ import annotations

from .graph import Operator


def index_expressions(op: Operator) -> dict:
    """Text of every dim's index, bottom-up from ``i_k`` / ``ri_k``."""
    exprs = {d: f"i_{d.index}" for d in op.outputs}
    for k, r in enumerate(op.reductions):
        exprs[r] = f"ri_{k}"
    for o in op.ops:
        for top, text in zip(o.tops, o.top_exprs([exprs[b] for b in o.bottoms])):
            exprs[top] = text
    return exprs


def loop_text(op: Operator) -> str:
    exprs = index_expressions(op)
    accesses = []
    for t, dims in enumerate(op.tensors):
        accesses.append(f"in_{t}[{', '.join(exprs[d] for d in dims)}]")
    body = " * ".join(accesses)
    lines = ["/* Loops -1: Forward Kernel */"]
    depth = 0

    def emit(text: str) -> None:
        lines.append("    " * depth + text)

    for it in op.outputs:
        emit(f"for (int i_{it.index} = 0; i_{it.index} < {it.size}; i_{it.index}++) {{")
        depth += 1
    reds = list(enumerate(op.reductions))
    if not reds:
        out = ", ".join(f"i_{d.index}" for d in op.outputs)
        emit(f"out[{out}] = {body};")
    else:
        for k, r in reversed(reds):
            emit(f"float temp_ri_{k} = 0;")
            emit(f"for (int ri_{k} = 0; ri_{k} < {r.size}; ri_{k}++) {{")
            depth += 1
        emit(f"temp_ri_0 += {body};")
        for k, _ in reds:
            depth -= 1
            emit("}")
            if k + 1 < len(reds):
                emit(f"temp_ri_{k + 1} += temp_ri_{k};")
        out = ", ".join(f"i_{d.index}" for d in op.outputs)
        emit(f"out[{out}] = temp_ri_{len(reds) - 1};")
    while depth:
        depth -= 1
        emit("}")
    return "\n".join(lines) + "\n"
