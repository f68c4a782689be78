"""Multi-fidelity evaluation (syno.search.fidelity): the ASHA rule, promotion in a session, resume,
a kernel that fails at a higher rung, and a promoted kernel continuing from its training checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from syno.search.base import EvalResult
from syno.search.fidelity import Asha, FidelityOptions, rung_task, split_task
from syno.search.leaderboard import leaderboard_rows
from syno.search.options import build_options
from syno.search.run import run_search
from syno.search.session import SessionStore
from syno.session import kernel_dir_name, read_kernel_dir


def test_tasks_round_trip():
    assert rung_task("a:1_b:2", 0) == "a:1_b:2" and split_task("a:1_b:2") == ("a:1_b:2", 0)
    assert split_task(rung_task("a:1_b:2", 2)) == ("a:1_b:2", 2)
    with pytest.raises(ValueError, match="malformed"):
        split_task("a:1@x")


def test_options_validate_and_milestones_become_rungs():
    with pytest.raises(ValueError, match="increasing"):
        FidelityOptions(rungs=[3, 1])
    f = FidelityOptions(rungs=[1, 3, 9]).with_milestones({2: 0.5, 3: 0.6})
    assert f.rungs == [1, 2, 3, 9] and f.min_accuracy == {2: 0.5, 3: 0.6}


def test_rung_train_options_prefix_and_restart_schedules():
    from syno.search.fidelity import rung_train_options
    from syno.train.options import VisionTrainOptions

    train = VisionTrainOptions(epochs=1, time_budget_s=10.0, prune_milestones={1: 0.2})
    prefix = [rung_train_options(train, FidelityOptions(rungs=[1, 3, 15]), k) for k in range(3)]
    assert [(o.epochs, o.stop_epoch) for o in prefix] == [(15, 1), (15, 3), (15, 15)]
    assert [o.time_budget_s for o in prefix] == [10.0, 20.0, 120.0] and not prefix[0].prune_milestones
    restart = [rung_train_options(train, FidelityOptions(rungs=[1, 3, 15], schedule="restart"), k) for k in range(3)]
    assert [(o.epochs, o.stop_epoch) for o in restart] == [(1, 1), (3, 3), (15, 15)]


def test_asha_promotes_the_best_third_asynchronously():
    a = Asha(FidelityOptions(rungs=[1, 3, 9], reduction=3))
    accs = [0.5, 0.9, 0.7]
    for i, acc in enumerate(accs[:2]):
        a.record(f"h{i}", f"p{i}", 0, True, acc)
    assert a.next_promotion() is None  # 2 results: floor(2 / 3) = 0 promotions
    a.record("h2", "p2", 0, True, accs[2])
    assert a.next_promotion() == ("h1", "p1", 1)
    assert a.next_promotion(busy={"h1"}) is None  # being evaluated
    a.mark_started("h1", 1)
    assert a.next_promotion() is None  # never promoted twice from one rung
    for i, acc in enumerate([0.95, 0.2, 0.3], start=3):
        a.record(f"h{i}", f"p{i}", 0, True, acc)
    assert a.next_promotion() == ("h3", "p3", 1)  # the top 2 of 6: h3 (0.95) and h1 (0.9, started)
    # a failed kernel is never promoted; a floor blocks promotion
    b = Asha(FidelityOptions(rungs=[1, 3], min_accuracy={1: 0.95}))
    for i, acc in enumerate([0.5, 0.9, 0.7]):
        b.record(f"h{i}", f"p{i}", 0, True, acc)
    assert b.next_promotion() is None
    # time left: the promotion of a kernel whose rung 0 took 10 s to 3 epochs needs 20 s more
    c = Asha(FidelityOptions(rungs=[1, 3]))
    for i, acc in enumerate([0.5, 0.9, 0.7]):
        c.record(f"h{i}", f"p{i}", 0, True, acc, time=10.0)
    assert c.next_promotion(time_left=15.0) is None and c.next_promotion(time_left=25.0)[0] == "h1"


def test_asha_normalises_rungs_to_rung_zero_scale():
    a = Asha(FidelityOptions(rungs=[1, 3]))
    a.record("a", "pa", 0, True, 0.6)
    a.record("a", "pa", 1, True, 0.8)
    a.record("b", "pb", 0, True, 0.7)
    a.record("b", "pb", 1, True, 0.85)
    assert a.offset(1) == 0.0 and a.normalized("a") == (1, 0.8)  # two pairs: no trusted mean gain yet
    a.record("d", "pd", 0, True, 0.5)
    a.record("d", "pd", 1, True, 0.8)
    assert a.offset(1) == pytest.approx(0.65 / 3)  # gains .2, .15, .3
    assert a.normalized("a") == (1, pytest.approx(0.8 - 0.65 / 3))
    assert a.normalized("b") == (1, pytest.approx(0.85 - 0.65 / 3))
    a.record("c", "pc", 0, True, 0.65)
    a.record("c", "pc", 1, False, None)  # fails at rung 1: keeps rung 0
    assert a.rung_of("c") == 0 and a.normalized("c") == (0, 0.65)


def _synthetic_options(root: Path, **extra):
    return build_options("synthetic", {"session_dir": str(root), "run.workers": 0, "fidelity.enabled": True,
                                  "fidelity.rungs": [1, 2, 4], "fidelity.reduction": 2, **extra})


def _check_session(root: Path) -> list:
    recs = SessionStore(root).kernels()
    assert len({r.hash for r in recs}) == len(recs)
    for r in recs:
        k = read_kernel_dir(r.dir)
        assert not k.problem, k.problem
        rungs = [x.rung for x in k.record.rungs]
        assert rungs == list(range(len(rungs))), "rungs are reached in order, each once"
        if r.result.ok:
            assert r.dir.name == kernel_dir_name(r.hash, ok=True, accuracy=r.result.accuracy)
            ok_rungs = [x for x in k.record.rungs if x.status == "ok"]
            assert k.meta["rung"] == len(ok_rungs) - 1
            assert r.result.accuracy == pytest.approx(ok_rungs[-1].accuracy)
    return recs


def test_synthetic_session_promotes_and_ranks_by_rung(tmp_path):
    root = tmp_path / "s"
    summary = run_search(_synthetic_options(root, **{"run.max_evaluations": 24}))
    assert summary.evaluated == 24
    recs = _check_session(root)
    reached = [r.meta.get("rung", 0) for r in recs]
    assert max(reached) == 2 and reached.count(0) > reached.count(1) > 0
    promoted = [r for r in recs if r.meta.get("rung", 0) > 0]
    for r in promoted:  # the synthetic trains "longer" at higher rungs: the kernel takes its top rung's accuracy
        assert r.result.accuracy > r.meta["rungs"][0]["accuracy"]
    rows = leaderboard_rows(SessionStore(root))
    assert [row["rung"] for row in rows] == sorted((row["rung"] for row in rows), reverse=True)
    for rung in (0, 1, 2):  # then by accuracy at that rung (every kernel there has the same offset)
        accs = [row["accuracy"] for row in rows if row["rung"] == rung]
        assert accs == sorted(accs, reverse=True)
    state = json.loads((root / "state.json").read_text())
    # one revision per promotion, more when a later pair moved a rung's offset (SearchRunner._renormalise)
    assert state["stats"].get("revised", 0) >= sum(r.meta["rung"] for r in promoted)
    # the rewards stored at one rung all use that rung's final offset: they order its kernels as their accuracy
    for rung in (1, 2):
        at = sorted((r for r in recs if r.meta.get("rung") == rung), key=lambda r: r.result.accuracy)
        assert [r.reward for r in at] == sorted(r.reward for r in at)


def test_resume_rebuilds_rungs_and_goes_on(tmp_path):
    root = tmp_path / "s"
    run_search(_synthetic_options(root, **{"run.max_evaluations": 10}))
    before = {r.hash: len(r.meta["rungs"]) for r in SessionStore(root).kernels()}
    run_search(_synthetic_options(root, **{"run.max_evaluations": 20}), resume=True)
    recs = _check_session(root)
    assert len(recs) == 20
    for r in recs:  # no rung was trained twice, none lost
        assert len(r.meta["rungs"]) >= before.get(r.hash, 1)


class _FailAtRungOne:
    """The synthetic job, except that rung 1 of every kernel whose rung-0 accuracy is the session's best so far
    fails (a kernel that diverges when trained longer)."""

    def __init__(self, job):
        self.job = job

    def setup(self, slot):
        self.job.setup(slot)

    def evaluate(self, task):
        path, rung = split_task(task)
        if rung == 1:
            return EvalResult(status="nan", message="non-finite training loss in epoch 2", time=0.1,
                              extra={"rung": 1})
        return self.job.evaluate(task)


def test_kernel_failing_at_a_higher_rung_keeps_its_lower_result(tmp_path, monkeypatch):
    from .synthetic import SyntheticProblem

    real = SyntheticProblem.job
    monkeypatch.setattr(SyntheticProblem, "job", lambda self: _FailAtRungOne(real(self)))
    root = tmp_path / "s"
    run_search(_synthetic_options(root, **{"run.max_evaluations": 12}))
    recs = _check_session(root)
    failed = [r for r in recs if r.meta.get("rung_failed")]
    assert failed, "some kernel was promoted"
    for r in failed:
        assert r.meta["rung_failed"]["status"] == "nan" and r.meta["rung"] == 0
        assert [x["status"] for x in r.meta["rungs"]] == ["ok", "nan"]  # never promoted again
        assert r.result.ok and r.reward is not None
        assert r.result.accuracy == r.meta["rungs"][0]["accuracy"]
