import json
import subprocess
import sys

import pytest

from syno.ir.builder import Builder
from syno.ir.graph import Operator
from syno.ir.library import HAND_BUILT, conv2d, conv_space, operator1
from syno.ir.primitives import IRError
from syno.ir.sizes import SizeSpace

R18_MAPPINGS = [{"N": 1, "C_in": c, "C_out": c, "H": h} for c, h in [(64, 56), (128, 28), (256, 14), (512, 7)]]


def test_validation_errors():
    space = SizeSpace.from_specs(["A", "B"], [])
    b = Builder(space, "[A, B]")
    i, j = b.outputs
    with pytest.raises(IRError, match="not all reached"):
        b.build([i])
    with pytest.raises(IRError, match="used 2 times"):
        b.build([i, j, j])
    b2 = Builder(space, "[A]")
    (i,) = b2.outputs
    x, w = b2.share(i, 1)
    with pytest.raises(IRError, match="used exactly once"):
        b2.build([x])  # weight side dangling
    with pytest.raises(IRError, match="weight side"):
        b2.build([w], [[x]])


@pytest.mark.parametrize("name", sorted(HAND_BUILT))
def test_json_round_trip(name):
    op = HAND_BUILT[name]()
    back = Operator.from_json(op.to_json())
    assert back.hash == op.hash and back == op
    assert back.to_dict() == op.to_dict()
    assert [str(s) for s in back.weight_shapes] == [str(s) for s in op.weight_shapes]


def test_broken_json_is_named():
    with pytest.raises(IRError, match="malformed"):
        Operator.from_json("{not json")
    with pytest.raises(IRError, match="format"):
        Operator.from_json(json.dumps({"format": "other"}))
    data = operator1().to_dict()
    data["input"][1] = "o99.0"
    with pytest.raises(IRError, match="o99.0"):
        Operator.from_dict(data)


def test_hash_is_stable_across_processes():
    code = "from syno.ir.library import HAND_BUILT; print(' '.join(f().hash for f in HAND_BUILT.values()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert out.stdout.split() == [f().hash for f in HAND_BUILT.values()]
    assert len(set(out.stdout.split())) == len(HAND_BUILT)


def test_hash_ignores_weight_axis_order():
    op = conv2d()
    swapped = Operator(op.space, op.outputs, op.input, (tuple(reversed(op.weights[0])),), op.expanded)
    assert swapped.hash == op.hash


def test_params_and_naive_flops_several_mappings():
    op = conv2d(conv_space())
    b = op.bind(R18_MAPPINGS)
    assert op.params(b) == tuple(c * c * 9 for c in (64, 128, 256, 512))
    assert op.naive_flops(b) == tuple(c * c * 9 * h * h for c, h in [(64, 56), (128, 28), (256, 14), (512, 7)])
    op1 = operator1()
    b = op1.bind(R18_MAPPINGS)
    # W1 = g*k*k*C_out*C_out/(g*s), W2 = C_in*k*C_out/(g*s)
    assert op1.params(b) == tuple(9 * c * c // 2 + 3 * c * (c // 64) for c in (64, 128, 256, 512))


def test_invalid_mapping_for_operator():
    op = operator1()
    with pytest.raises(Exception, match="not an integer"):
        op.params(op.bind({"N": 1, "C_in": 48, "C_out": 48, "H": 8}))  # 48/(32*2) is fractional
