"""The shape-distance bound is a true lower bound on the real presets (issue #17 item 1).

For operators found with the bound off (hand-built convolution-family members, the library's convs,
and finals of walks in a space without the bound), at every node of the canonical path after the
reduction phase the bound is <= the number of ops the path still takes, and the same path replays
with the bound on. (Reduction-phase nodes are kept by looking ahead over more reductions, not by the
bound itself.) The FLOPs window is off: several of these lie outside the preset's window by design;
the shape bound does not depend on it."""

from __future__ import annotations

import pytest

from syno.ir import library as L
from syno.synth.options import SynthOptions
from syno.synth.pathfind import path_of
from syno.synth.space import SynthSpace

from .conv_family import CONV_FAMILY, OUTSIDE_RESNET18

_SPACES: dict = {}


def spaces(preset: str) -> tuple[SynthSpace, SynthSpace]:
    """(bound off, bound on), both without the FLOPs window, shared across the cases of a preset."""
    if preset not in _SPACES:
        opts = getattr(SynthOptions, preset)()
        _SPACES[preset] = (SynthSpace(opts, use_distance=False, enforce_flops=False),
                           SynthSpace(opts, enforce_flops=False))
    return _SPACES[preset]


def check_bound_along(off: SynthSpace, on: SynthSpace, path) -> None:
    nodes = [off.root()]
    for nxt in path[:-1]:
        nodes.append(nodes[-1].child(nxt))
        assert nodes[-1] is not None
    last = nodes[-1].depth  # the Finalize edge costs no depth
    for n in nodes:
        if n.state.in_reduction_phase:
            continue
        need = last - n.depth
        got = on.shape_distance(n.state, limit=need)
        assert got <= need, f"bound {got} > {need} ops still taken at depth {n.depth} ({n.state})"
    assert on.node_from_path(path).is_final


HAND_BUILT = {**CONV_FAMILY, **{k: getattr(L, k) for k in ("conv2d", "grouped_conv2d", "pointwise_conv2d",
                                                           "operator1")}}
# the default run takes the first ten; the rest are slow-marked
DEFAULT = sorted(HAND_BUILT)[:10]


@pytest.mark.parametrize("name", [n if n in DEFAULT else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(HAND_BUILT)])
def test_bound_is_a_lower_bound_on_hand_built_resnet18_operators(name):
    off, on = spaces("resnet18")
    path = path_of(off, HAND_BUILT[name](off.size_space))
    check_bound_along(off, on, path)


@pytest.mark.parametrize("name", sorted(OUTSIDE_RESNET18))
def test_operators_outside_the_resnet18_preset_are_refused(name):
    build, why = OUTSIDE_RESNET18[name]
    off, _ = spaces("resnet18")
    with pytest.raises(ValueError, match="not reachable"):
        path_of(off, build(off.size_space))
