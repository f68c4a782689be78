"""The guard's outcome in the search: a kernel whose plan is too costly is scored, not trained."""

from pathlib import Path

import pytest

from syno.codegen.cost import PlanTooCostly
from syno.codegen.torch import build_module
from syno.ir.graph import Operator
from syno.search.evaluator import safe_evaluate

FAMILY = Path(__file__).parent / "data" / "unfold_unfold_channels.json"


class _Job:
    """Builds the module as the real job does, with a limit nothing fits."""

    def setup(self, slot: int) -> None:
        pass

    def evaluate(self, path: str):
        op = Operator.from_json(FAMILY.read_text())
        build_module(op, {"N": 4, "C_in": 64, "C_out": 64, "H": 56}, peak_limit="1MB")
        raise AssertionError("not reached: the guard refuses first")


def test_too_costly_kernel_gets_its_status_without_training():
    res = safe_evaluate(_Job(), "some/path")
    assert res.status == "too_costly"
    assert "\n" not in res.message and "limit" in res.message


def test_status_is_registered_as_a_failure():
    from syno.session.status import STATUSES, is_ok
    assert "too_costly" in STATUSES and not is_ok("too_costly")


def test_weights_of_live_modules_count_against_the_memory_cap(monkeypatch):
    """issue #19.2: a model's placeholders are built one by one; absurd sizes are refused at the
    first placeholder that would cross the cap, in one line naming the weights already held."""
    monkeypatch.setenv("SYNO_MEMORY_LIMIT", "64MB")
    op = Operator.from_json(FAMILY.read_text())
    m = {"N": 1, "C_in": 64, "C_out": 64, "H": 8, "k_2": 100}  # weight: 300 x 300 x 64 floats, 23 MB
    held = [build_module(op, m)]
    with pytest.raises(PlanTooCostly) as info:
        for _ in range(4):
            held.append(build_module(op, m))
    assert 1 <= len(held) <= 3
    assert "already built" in str(info.value) and "SYNO_MEMORY_LIMIT" in str(info.value)
    del held
    import gc
    gc.collect()
    build_module(op, m)  # freed modules no longer count
