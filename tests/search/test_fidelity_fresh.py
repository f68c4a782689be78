"""The ``fresh`` rung schedule (syno.search.fidelity): each rung is the plain recipe at its budget, trained
from scratch in a checkpoint of its own, so a promotion still resumes mid-rung after a kill and the top rung
equals one uninterrupted long run of the same recipe."""

from __future__ import annotations

from syno.search.fidelity import Asha, FidelityOptions, rung_checkpoint, rung_train_options
from syno.train.options import VisionTrainOptions

from .test_fidelity_digits import first_rung, kill_resume_and_compare


def test_fresh_rungs_train_their_own_schedule_from_scratch():
    fid = FidelityOptions(rungs=[3, 15], schedule="fresh")
    train = VisionTrainOptions(epochs=1, time_budget_s=10.0)
    opts = [rung_train_options(train, fid, k) for k in range(2)]
    assert [(o.epochs, o.stop_epoch) for o in opts] == [(3, 3), (15, 15)]
    assert [o.time_budget_s for o in opts] == [10.0, 50.0]  # the whole 15 epochs again, not 12 more
    assert [fid.added(k) for k in range(2)] == [3, 15]
    assert FidelityOptions(rungs=[3, 15], schedule="restart").added(1) == 12
    # one checkpoint per rung: the promotion never continues rung 0's decayed weights
    assert rung_checkpoint("s", "h", fid, 0).name == "h.pt" and rung_checkpoint("s", "h", fid, 1).name == "h@1.pt"
    assert rung_checkpoint("s", "h", FidelityOptions(rungs=[3, 15]), 1).name == "h.pt"
    # ASHA's time estimate counts the whole budget of a fresh promotion: rung 0 took 6 s for 3 epochs
    a = Asha(fid.model_copy(update={"reduction": 3}))
    for i, acc in enumerate([0.5, 0.9, 0.7]):
        a.record(f"h{i}", f"p{i}", 0, True, acc, time=6.0)
    assert a.next_promotion(time_left=29.0) is None and a.next_promotion(time_left=31.0)[0] == "h1"


def test_fresh_promotion_resumes_mid_rung_and_equals_the_long_run(tmp_path):
    opts, op, job, path = first_rung(tmp_path, "fresh")
    ck0, ck1 = (rung_checkpoint(opts.directory, op.hash, opts.fidelity, k) for k in (0, 1))
    assert not ck0.exists(), "no rung continues rung 0: its checkpoint is removed"
    # the promotion (3 epochs from scratch) is killed after epoch 2: what it leaves is its own checkpoint
    kill_resume_and_compare(opts, op, job, path, ck1, tmp_path)
