"""Hand-built operators against torch's layers and the published loop nests."""

import itertools
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from syno.ir.evaluate import random_inputs, reference_forward
from syno.ir.library import (conv2d, depthwise_conv2d, grouped_conv2d, linear, operator1,
                             pointwise_conv2d, stacked_conv)
from syno.ir.looptext import loop_text

# The paper's published loop nests (copied from the original artifact's description).
REFERENCE = Path(__file__).resolve().parent / "data"

dims = st.fixed_dictionaries({"N": st.integers(1, 2), "C_in": st.sampled_from([2, 4, 6]),
                              "C_out": st.sampled_from([2, 4, 8]), "H": st.integers(1, 6)})


@settings(max_examples=25, deadline=None)
@given(dims, st.sampled_from([1, 3, 5]))
def test_conv2d(m, k):
    m = m | {"k_1": k}
    x, w = random_inputs(conv2d(), m)
    assert torch.allclose(reference_forward(conv2d(), m, [x, w]), F.conv2d(x, w, padding=k // 2))


@settings(max_examples=20, deadline=None)
@given(dims, st.sampled_from([1, 2]))
def test_grouped_and_depthwise(m, g):
    m = m | {"g": g}
    x, w = random_inputs(grouped_conv2d(), m)
    assert torch.allclose(reference_forward(grouped_conv2d(), m, [x, w]), F.conv2d(x, w, padding=1, groups=g))
    x, w = random_inputs(depthwise_conv2d(), m)
    want = F.conv2d(x, w.unsqueeze(1), padding=1, groups=m["C_in"])
    assert torch.allclose(reference_forward(depthwise_conv2d(), m, [x, w]), want)


@settings(max_examples=20, deadline=None)
@given(dims)
def test_pointwise_and_linear(m):
    x, w = random_inputs(pointwise_conv2d(), m)
    assert torch.allclose(reference_forward(pointwise_conv2d(), m, [x, w]), F.conv2d(x, w[:, :, None, None]))
    lm = {"N": m["N"], "seq_len": m["H"], "H_in": m["C_in"], "H_out": m["C_out"]}
    x, w = random_inputs(linear(), lm)
    assert torch.allclose(reference_forward(linear(), lm, [x, w]), F.linear(x, w))


def _paper_kernels(x, w1, w2, m, stacked):
    n, ci, h, _ = x.shape
    g, k = m["g"], 3
    j = w2.shape[-1]
    w2g = w2.reshape(g, ci // g, k, j)
    if stacked:  # 1-D conv along W with W2 (per input channel, rank j), then the 2-D conv with W1
        xp = F.pad(x, (1, 1)).unfold(3, k, 1).reshape(n, g, ci // g, h, h, k)
        t = torch.einsum("ngchwa,gcaj->ngjhw", xp, w2g)
        tp = F.pad(t, (1, 1, 1, 1)).unfold(3, k, 1).unfold(4, k, 1)
        return torch.einsum("ngjhwab,ogabj->nohw", tp, w1)
    xp = F.pad(x, (1, 1, 1, 1)).unfold(2, k, 1).unfold(3, k, 1).reshape(n, g, ci // g, h, h, k, k)
    return torch.einsum("ngchwab,gabOj,gcbj->nOhw", xp, w1, w2g)


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 2), st.sampled_from([(4, 8, 2, 2), (8, 8, 2, 2), (6, 12, 3, 2)]), st.integers(1, 5))
def test_operator1_and_stacked_conv(n, cfg, h):
    ci, co, g, s = cfg
    m = {"N": n, "C_in": ci, "C_out": co, "H": h, "g": g, "s": s}
    for build, stacked in [(operator1, False), (stacked_conv, True)]:
        op = build()
        x, w1, w2 = random_inputs(op, m)
        assert torch.allclose(reference_forward(op, m, [x, w1, w2]), _paper_kernels(x, w1, w2, m, stacked))


def test_reference_is_differentiable():
    op = operator1()
    m = {"N": 1, "C_in": 4, "C_out": 8, "H": 3, "g": 2, "s": 2}
    ins = [t.requires_grad_() for t in random_inputs(op, m)]
    reference_forward(op, m, ins).square().sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in ins)


def _statement_and_bounds(text):
    body = next(line.strip() for line in text.splitlines() if "+=" in line and "in_0" in line)
    bounds = dict(re.findall(r"for \(int (r?i_\d+) = 0; \S+ < ([^;]+);", text))
    return body, bounds


def _matches_published(ours, published):
    """Equal up to renaming of the reduction loops (numbering is arbitrary)."""
    b_ours, n_ours = _statement_and_bounds(ours)
    b_pub, n_pub = _statement_and_bounds(published)
    reds = sorted(k for k in n_pub if k.startswith("ri_"))
    if len(reds) != len([k for k in n_ours if k.startswith("ri_")]):
        return False
    for perm in itertools.permutations(reds):
        rename = dict(zip(reds, perm))
        renamed = re.sub(r"\bri_\d+\b", lambda mt: rename[mt.group(0)], b_pub)
        renamed = renamed.replace(f"temp_{rename['ri_0']}", "temp_ri_0")
        if renamed.split("+=", 1)[1] == b_ours.split("+=", 1)[1] and all(
                n_ours[rename[r]] == n_pub[r] for r in reds):
            return True
    return False


def test_loop_text_matches_published_kernels():
    assert _matches_published(loop_text(operator1()), (REFERENCE / "operator1.loop.txt").read_text())
    assert _matches_published(loop_text(stacked_conv()), (REFERENCE / "stacked_conv.loop.txt").read_text())
    assert not _matches_published(loop_text(stacked_conv()), (REFERENCE / "operator1.loop.txt").read_text())


def test_loop_text_conv2d():
    text = loop_text(conv2d())
    assert "for (int i_0 = 0; i_0 < N; i_0++) {" in text
    assert "restrict((i_2 + ri_" in text and "out[i_0, i_1, i_2, i_3]" in text
    assert text.count("{") == text.count("}")
