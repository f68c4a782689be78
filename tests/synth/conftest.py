import itertools

import pytest

from syno.ir.graph import Operator
from syno.ir.primitives import Share, TopDim
from syno.synth.canon import canonical_form
from syno.synth.options import SynthOptions


def micro_options(**kw) -> SynthOptions:
    """A 1-D conv space small enough to enumerate exhaustively."""
    base = dict(input_shape="[N, C_in: unordered, H]", output_shape="[N, C_out: unordered, H]",
                primary_specs=("N: 0", "C_in: 2", "C_out: 2", "H: 0"), coefficient_specs=("k=3: 2", "s=2: 2"),
                fixed_io_pairs=((0, 0),), mappings=({"N": 1, "C_in": 4, "C_out": 8, "H": 8},),
                depth=5, max_reductions=2, max_tensors=3, max_chain_length=4, min_single_weight_params=1,
                max_expansion_repeat_multiplier=4, max_strides=1, max_shifts=1, min_unfold_ratio=2.0,
                min_weight_share_dim=2)
    base.update(kw)
    return SynthOptions(**base)


@pytest.fixture(scope="session")
def micro():
    return micro_options()


def weight_permutation_invariant_hash(op: Operator, fixed_inputs=(0,)) -> str:
    """Smallest canonical hash over all renumberings of the weights (a stronger identity than
    ``Operator.hash``: independent weights in either order are the same operator)."""
    best = None
    n = len(op.weights)
    for perm in itertools.permutations(range(1, n + 1)):
        mp = {i + 1: p for i, p in enumerate(perm)}
        memo: dict = {}

        def nd(d):
            if d in memo:
                return memo[d]
            if not isinstance(d, TopDim):
                out = d
            else:
                o = d.op
                params = (mp[o.weight],) if isinstance(o, Share) else o.params
                out = type(o)(*[nd(b) for b in o.bottoms], *params).tops[d.slot]
            memo[d] = out
            return out

        ws = [None] * n
        for j, w in enumerate(op.weights, start=1):
            ws[mp[j] - 1] = tuple(nd(d) for d in w)
        new = Operator(op.space, op.outputs, tuple(nd(d) for d in op.input), tuple(ws),
                       tuple(nd(d) for d in op.expanded))
        h = canonical_form(new, fixed_inputs).hash
        best = h if best is None or h < best else best
    return best
