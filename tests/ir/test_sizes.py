from fractions import Fraction

import pytest
from hypothesis import given, strategies as st

from syno.ir.sizes import SizeError, SizeSpace, parse_variable_spec


@pytest.fixture()
def space():
    return SizeSpace.from_specs(["N: 0", "C_in: 2", "C_out: 4", "H"], ["k_1=3: 2", "s=2", "g=32: 3"])


def test_variable_specs():
    v = parse_variable_spec("g=32: 2", "coefficient")
    assert (v.name, v.estimate, v.max_occurrences) == ("g", 32, 2)
    v = parse_variable_spec("H", "primary")
    assert (v.name, v.estimate, v.max_occurrences) == ("H", None, 3)
    for bad in ["", "3x", "g=", "g=0", "a b"]:
        with pytest.raises(SizeError):
            parse_variable_spec(bad, "primary")


def test_duplicate_names_rejected():
    with pytest.raises(SizeError, match="duplicate"):
        SizeSpace.from_specs(["H"], ["H=3"])


def test_order_is_lexicographic(space):
    assert [v.name for v in space.primary] == ["C_in", "C_out", "H", "N"]
    assert [v.name for v in space.coefficient] == ["g", "k_1", "s"]


def test_parse_and_print(space):
    assert str(space.size("s^-1*H")) == "s^-1*H"
    assert str(space.size("C_out/g")) == "g^-1*C_out"
    assert str(space.size("H*g^-1*s^-1*C_out")) == "g^-1*s^-1*C_out*H"
    assert str(space.size("1")) == "1"
    assert space.size("H*H") == space.size("H^2")
    assert space.size("C_in") is space.size("C_in")  # interned
    for text in ["", "H*", "X", "2*H", "H^x"]:
        with pytest.raises(SizeError):
            space.size(text)


def test_shape_specs(space):
    shape = space.shape("[N, C_in: unordered, s^-1*H, s^-1*H]")
    assert len(shape) == 4 and shape.unordered == (False, True, False, False)
    assert str(shape) == "[N, C_in: unordered, s^-1*H, s^-1*H]"
    assert len(space.shape("[C_in, g^-1*C_out]")) == 2
    with pytest.raises(SizeError, match="brackets"):
        space.shape("N, H")
    with pytest.raises(SizeError, match="attribute"):
        space.shape("[N: sorted]")


def test_traits(space):
    assert space.size("s^-1*H").is_legal()
    assert not space.size("s^-1").is_legal()
    assert not space.size("H^-1*s").is_legal()
    assert space.size("k_1^2").is_coefficient()
    assert not space.size("H").is_coefficient()
    assert space.size("g^-1*C_in*H").usage() == (3, 3)


def test_bindings_several_mappings(space):
    b = space.bind([{"N": 1, "C_in": 64, "C_out": 64, "H": 56}, {"N": 1, "C_in": 128, "C_out": 256, "H": 7}])
    assert b.ints(space.size("C_in*k_1")) == (192, 384)
    assert b.values(space.size("s^-1*H")) == (28, Fraction(7, 2))
    assert not b.is_valid(space.size("s^-1*H"))  # 7/2 under the second mapping
    assert b.is_valid(space.size("g^-1*C_in"))
    assert b.lower(space.size("C_out")) == 64 and b.upper(space.size("C_out")) == 256
    with pytest.raises(SizeError, match="not an integer"):
        b.ints(space.size("s^-1*H"))


def test_bindings_errors(space):
    with pytest.raises(SizeError, match="'C_in'"):
        space.bind({"N": 1, "C_out": 4, "H": 4})
    with pytest.raises(SizeError, match="unknown"):
        space.bind({"Q": 1})
    with pytest.raises(SizeError, match="positive"):
        space.bind({"N": 1, "C_in": 0, "C_out": 4, "H": 4})


exps = st.lists(st.integers(-3, 3), min_size=7, max_size=7)


@given(exps, exps)
def test_arithmetic_matches_values(a, b):
    space = SizeSpace.from_specs(["N: 0", "C_in: 2", "C_out: 4", "H"], ["k_1=3: 2", "s=2", "g=32: 3"])
    sa, sb = space.size_of(a), space.size_of(b)
    mapping = space.bind({"N": 2, "C_in": 6, "C_out": 10, "H": 14})
    (va,), (vb,) = mapping.values(sa), mapping.values(sb)
    assert mapping.values(sa * sb) == (va * vb,)
    assert mapping.values(sa / sb) == (va / vb,)
    assert mapping.values(sa ** 2) == (va ** 2,)
    assert space.size(str(sa)) is sa  # print/parse round trip
