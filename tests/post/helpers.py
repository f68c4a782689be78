"""Shared helpers of the post-search tests: extra operators and fake sessions."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from syno.ir.builder import Builder
from syno.ir.evaluate import reference_forward, tensor_shapes
from syno.ir.graph import Operator
from syno.ir.library import CONV_OUTPUT, conv_space
from syno.session import kernel_dir_name, write_json_atomic


def conv_scaled() -> Operator:
    """A dense 3x3 conv with a redundant per-output-channel scale weight: same function family as
    conv2d, different hash."""
    b = Builder(conv_space(), CONV_OUTPUT, name="conv_scaled")
    n, co, h, w = b.outputs
    ci, kh, kw = b.reduce("C_in"), b.reduce("k_1"), b.reduce("k_1")
    co_x1, co_w1 = b.share(co, 1)
    co_x, co_w2 = b.share(co_x1, 2)
    b.expand(co_x)
    ci_x, ci_w = b.share(ci, 1)
    kh_x, kh_w = b.share(kh, 1)
    kw_x, kw_w = b.share(kw, 1)
    return b.build([n, ci_x, b.unfold(h, kh_x), b.unfold(w, kw_x)], [[co_w1, ci_w, kh_w, kw_w], [co_w2]])


def make_kernel_dir(session: Path, op: Operator, accuracy: float | None, flops: float, *,
                    operator_in_meta: bool = True, status: str = "ok", name_hash: str | None = None) -> Path:
    h = name_hash or op.hash
    d = session / kernel_dir_name(h, ok=accuracy is not None, accuracy=accuracy)
    d.mkdir(parents=True, exist_ok=True)
    meta = {"path": f"Finalize:{h}", "accuracy": accuracy if accuracy is not None else -1, "flops": flops,
            "params": 1000, "time": 1.0, "loss": 1.0, "status": status}
    if operator_in_meta:
        meta["operator"] = op.to_dict()
    else:
        (d / "operator.json").write_text(op.to_json())
    write_json_atomic(d / "meta.json", meta)
    (d / "loop.txt").write_text("// loop\n")
    return d


class ReferenceModule(nn.Module):
    """Test-only operator module built on the IR reference evaluator (stands in for codegen)."""

    def __init__(self, op: Operator, mapping: dict[str, int]):
        super().__init__()
        self.op, self.mapping = op, dict(mapping)
        shapes = tensor_shapes(op, self.mapping)
        self.weights = nn.ParameterList([nn.Parameter(torch.randn(s) * 0.1) for s in shapes[1:]])

    def forward(self, x):
        m = dict(self.mapping, N=x.shape[0])
        return reference_forward(self.op, m, [x, *self.weights])
