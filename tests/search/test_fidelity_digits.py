"""Rungs with the real trainer (tiny CNN on digits): a promoted kernel continues from its checkpoint,
also after being killed in the middle of a rung, and ends exactly where one uninterrupted run ends."""

from __future__ import annotations

import random

from syno.search.fidelity import checkpoint_file, rung_task, rung_train_options
from syno.search.options import build_options
from syno.search.problem import KernelProblem, evaluate_operator
from syno.synth.protocol import path_from_str, path_to_str

# a fraction of an epoch: a few seconds per epoch on a busy 2-core machine
FAST = {"train.max_steps_per_epoch": 8, "train.eval_batch_size": 360, "latency.enabled": False}


def _kernel(problem: KernelProblem) -> str:
    rng = random.Random(0)
    while True:
        f = problem.space.random_final(problem.space.root(), rng)
        if f is not None and (problem.final_filter is None or problem.final_filter(f) is None):
            return path_to_str(f.path)


def first_rung(tmp_path, schedule: str):
    """A tiny-preset session with rungs [1, 3] of ``schedule``: one kernel evaluated at rung 0
    (checked); returns (options, operator, job, path)."""
    opts = build_options("tiny", {**FAST, "session_dir": str(tmp_path / "s"), "fidelity.enabled": True,
                                  "fidelity.rungs": [1, 3], "fidelity.schedule": schedule})
    problem = KernelProblem(opts)
    path = _kernel(problem)
    job = problem.job()
    job.setup(0)
    r0 = job.evaluate(path)
    assert r0.ok and [e["epoch"] for e in r0.extra["curve"]] == [1] and r0.extra["rung"] == 0
    return opts, problem.space.node_from_path(path_from_str(path)).operator(), job, path


def test_promoted_kernel_resumes_mid_rung_from_its_checkpoint(tmp_path):
    opts, op, job, path = first_rung(tmp_path, "prefix")
    ckpt = checkpoint_file(opts.directory, op.hash)
    assert ckpt.is_file()
    # the promotion to rung 1 (epochs 2-3) is killed after epoch 2: what it leaves is its checkpoint
    kill_resume_and_compare(opts, op, job, path, ckpt, tmp_path)


def kill_resume_and_compare(opts, op, job, path: str, ckpt, tmp_path) -> None:
    """Kill the promotion of ``path`` to rung 1 (3 epochs) after epoch 2 (its checkpoint ``ckpt``
    is what is left), submit it again, and check it ends exactly where one uninterrupted 3-epoch
    run of the plain recipe ends, epoch by epoch."""
    killed = rung_train_options(job.train_options, opts.fidelity, 1).model_copy(update={"stop_epoch": 2})
    evaluate_operator(opts, op, job.data, killed, checkpoint=ckpt)
    assert ckpt.is_file()
    r1 = job.evaluate(rung_task(path, 1))  # submitted again after the resume
    assert r1.ok and r1.extra["rung"] == 1 and r1.extra["budget"] == 3
    assert [e["epoch"] for e in r1.extra["curve"]] == [1, 2, 3]
    assert r1.extra["steps"] == 3 * 8  # epoch 3 only was trained now; the count includes epochs 1-2
    assert not ckpt.exists(), "the top rung removes its training checkpoint"
    straight = build_options("tiny", {**FAST, "session_dir": str(tmp_path / "t"), "fidelity.enabled": False,
                                      "train.epochs": 3})
    job2 = KernelProblem(straight).job()
    job2.setup(0)
    r = job2.evaluate(path)
    assert [e["test_acc"] for e in r.extra["curve"]] == [e["test_acc"] for e in r1.extra["curve"]]
    assert r.accuracy == r1.accuracy
