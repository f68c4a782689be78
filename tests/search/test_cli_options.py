"""Options/presets and the `syno search` / `syno show` commands (synthetic model: no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from syno.cli import app
from syno.search.options import SearchOptions, apply_overrides, build_options, parse_value
from syno.search.run import resume_options
from syno.search.session import SessionError, SessionStore

runner = CliRunner()


def test_parse_value_and_overrides():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("[0.1, 0.9]") == [0.1, 0.9] and parse_value("cpu") == "cpu" and parse_value("None") is None
    d = apply_overrides({"a": {"b": 1}}, {"a.c": 2, "x.y.z": 3})
    assert d == {"a": {"b": 1, "c": 2}, "x": {"y": {"z": 3}}}


def test_unknown_option_is_rejected():
    with pytest.raises(ValueError, match="mcts"):
        build_options("synthetic", {"mcts.no_such_knob": 1})
    with pytest.raises(ValueError, match="unknown model"):
        build_options("vgg")


def test_options_of_sessions_written_before_the_problem_registry_load():
    """session.json of earlier versions holds "mock": null (a zoo model) or the synthetic space's
    settings under "mock": both still load (resume and reevaluate read them)."""
    zoo = build_options("tiny").model_dump(mode="json")
    zoo.pop("problem")
    zoo["mock"] = None
    assert SearchOptions.model_validate(zoo).problem is None
    synthetic = build_options("synthetic").model_dump(mode="json")
    settings = synthetic.pop("problem")
    synthetic["mock"] = settings
    assert SearchOptions.model_validate(synthetic).problem == settings


def test_registered_problems(monkeypatch):
    """Problems other than a zoo model's are registered by name; the package itself registers none."""
    from syno.search import problem

    from .synthetic import SyntheticProblem

    o = build_options("synthetic", {"problem.space.seed": 4, "problem.delay": 0.5})
    assert o.problem == {"space": {"seed": 4}, "delay": 0.5} and o.synth is None and o.train is None
    made = problem.make_problem(o)
    assert isinstance(made, SyntheticProblem) and made.space.seed == 4 and made.job().delay == 0.5
    stored = SearchOptions.model_validate(o.to_json_dict())  # a stored session reads without the registry
    monkeypatch.setattr(problem, "_PROBLEM_TYPES", {})
    assert stored.problem == o.problem
    with pytest.raises(ValueError, match="no search problem named 'synthetic' is registered"):
        problem.make_problem(stored)
    with pytest.raises(ValueError, match="unknown model 'synthetic'"):
        build_options("synthetic")
    with pytest.raises(ValueError, match="zoo model"):
        build_options("tiny", {"problem.delay": 1})
    with pytest.raises(ValueError, match="'problem' settings"):
        problem.register_problem(problem.ProblemType("x", SyntheticProblem.from_settings, preset={}))


@pytest.mark.parametrize("model", ["tiny", "resnet18"])
def test_vision_presets(model):
    o = build_options(model, {"train.epochs": 2, "synth.depth": 7})
    assert o.train.epochs == 2 and o.synth.depth == 7
    assert o.synth.mappings and all({"N", "C_in", "C_out", "H"} <= set(m) for m in o.synth.mappings)
    ref = o.reference
    assert ref["macs"] > ref["non_placeholder_macs"] > 0
    # the model-level FLOPs-ratio window becomes the space's window on the placeholders' MACs
    lo, hi = o.flops_ratio
    assert o.synth.max_flops == pytest.approx(hi * ref["macs"] - ref["non_placeholder_macs"])
    assert o.synth.min_flops == pytest.approx(max(0.0, lo * ref["macs"] - ref["non_placeholder_macs"]))
    again = SearchOptions.model_validate(json.loads(json.dumps(o.to_json_dict())))
    assert again.to_json_dict() == o.to_json_dict()
    if model == "resnet18":
        assert len(o.synth.mappings) == 19 and o.reward.acc_lower == 0.4 and o.reward.power == 4


def test_resume_allows_only_run_options():
    o = build_options("synthetic")
    assert resume_options(o, {"run.workers": 3}).run.workers == 3
    with pytest.raises(SessionError, match="reward.power"):
        resume_options(o, {"reward.power": 3})


def test_cli_search_resume_show(tmp_path: Path):
    s = str(tmp_path / "s")
    r = runner.invoke(app, ["search", "synthetic", "--session", s, "-n", "12", "-w", "0", "-q"])
    assert r.exit_code == 0, r.output
    assert len(SessionStore(s).kernels()) == 12
    # an existing session is not overwritten
    r = runner.invoke(app, ["search", "synthetic", "--session", s, "-n", "12", "-w", "0", "-q"])
    assert r.exit_code == 2 and "already exists" in r.output
    r = runner.invoke(app, ["search", "synthetic", "--session", s, "-n", "20", "-w", "0", "-q", "--resume"])
    assert r.exit_code == 0, r.output
    recs = SessionStore(s).kernels()
    assert len(recs) == 20 and len({x.hash for x in recs}) == 20
    r = runner.invoke(app, ["search", "synthetic", "--session", s, "--resume", "--set", "reward.power=3"])
    assert r.exit_code == 2 and "cannot change reward.power" in r.output
    r = runner.invoke(app, ["show", s, "--json", "--top", "5"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [x["rank"] for x in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["reward"] >= rows[-1]["reward"]
    r = runner.invoke(app, ["show", s, "--failed", "--top", "0"])
    assert r.exit_code == 0 and "20 kernels" in r.output.replace("\n", " ")


def test_cli_show_damaged_session(tmp_path: Path):
    s = tmp_path / "s"
    r = runner.invoke(app, ["search", "synthetic", "--session", str(s), "-n", "3", "-w", "0", "-q"])
    assert r.exit_code == 0
    meta = next(p for p in s.iterdir() if p.is_dir()) / "meta.json"
    meta.write_text("{")
    # a damaged kernel directory is listed as a warning naming it, not fatal (#19 items 1 and 4)
    r = runner.invoke(app, ["show", str(s)])
    assert r.exit_code == 0 and "warning:" in r.output and meta.parent.name in r.output, r.output
    r = runner.invoke(app, ["search", "synthetic", "--session", str(s), "--resume", "-n", "5", "-q"])
    assert r.exit_code == 0 and "warning:" in r.output and meta.parent.name in r.output, r.output
    assert meta.read_text() == "{"


def test_cli_show_options():
    r = runner.invoke(app, ["search", "tiny", "--show-options", "--set", "train.epochs=3", "--workers", "2"])
    assert r.exit_code == 0, r.output
    o = json.loads(r.output)
    assert o["train"]["epochs"] == 3 and o["run"]["workers"] == 2 and o["dataset"] == "digits"


def test_demo_defaults(tmp_path: Path, monkeypatch):
    """`syno demo`'s options (issue #22): rungs of 5 and 15 epochs promoting the best eighth, one torch
    thread per worker, latency of the whole model only (per-site timing cost a quarter of a rung-0
    evaluation); --set still overrides each."""
    import syno.search.cli as search_cli

    seen = []
    monkeypatch.setattr(search_cli, "_run", lambda options, **kw: seen.append(options))
    res = runner.invoke(app, ["demo", "--budget", "90s", "--session", str(tmp_path / "d"), "-q"])
    assert res.exit_code == 0, res.output
    o = seen[-1]
    assert o.fidelity.enabled and o.fidelity.rungs == [5, 15] and o.fidelity.reduction == 8
    assert o.fidelity.schedule == "fresh" and o.run.threads == 1 and o.run.budget_seconds == 90
    assert o.latency.enabled and not o.latency.sites and o.latency.scope == "model"
    res = runner.invoke(app, ["demo", "--session", str(tmp_path / "e"), "-q", "--set", "latency.sites=true",
                              "--set", "fidelity.enabled=false"])
    assert res.exit_code == 0, res.output
    assert seen[-1].latency.sites and not seen[-1].fidelity.enabled
