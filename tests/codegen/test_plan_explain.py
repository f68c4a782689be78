"""`syno plan`: the chosen lowering per stage and the rejected alternatives with their costs."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from syno.cli import app

FAMILY = Path(__file__).parent / "data" / "unfold_unfold_channels.json"


def test_syno_plan_explains_chosen_and_rejected():
    res = CliRunner().invoke(app, ["plan", str(FAMILY), "--map", "N=4,C_in=64,C_out=64,H=56"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "chosen plan" in out and "select" in out and "contract" in out
    # the min-MAC plan of before (441x window) is listed with its cost and rejected
    row = next(l for l in out.splitlines() if l.strip().startswith("min-MAC"))
    assert "rejected" in row and "GB" in row


def test_syno_plan_bad_input_one_line():
    res = CliRunner().invoke(app, ["plan", "/no/such/kernel"])
    assert res.exit_code == 2
    assert "no operator.json" in res.output and len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(app, ["plan", str(FAMILY), "--map", "N=four"])
    assert res.exit_code == 2 and "--map" in res.output


def test_syno_plan_prints_the_generated_triton_kernels(tmp_path):
    """`syno plan --triton`: the readable Triton source of every forward and backward stage, with
    the tap-structured K loop of the GEMM stage (channels_last input)."""
    pytest.importorskip("triton")
    from syno.ir import library

    (tmp_path / "operator.json").write_text(library.operator1().to_json())
    res = CliRunner().invoke(app, ["plan", str(tmp_path), "--map", "N=2,C_in=64,C_out=64,H=8", "--triton"])
    assert res.exit_code == 0, res.output
    assert res.output.count("@triton.jit") >= 3  # forward stage(s) and gradients
    assert "taps: scalar loop" in res.output and "tl.dot(" in res.output
