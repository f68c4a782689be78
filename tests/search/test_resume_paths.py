"""Issue #19 item 1: a session holding a kernel whose path takes an edge that enumeration lists under
another key must resume.

Two moves related by a relabelling of equal reductions (here: sharing either of two untouched k_1
reductions) give one canonical child. Before the fix, walks could take either key while
``Node.children()`` listed only one, so MCTS could not re-attach such a kernel and ``syno search
--resume`` failed with "path element Contraction:61680d7bba8565e2 does not exist below node ...".
Now only one key per child is an edge; the other (an alias) still replays to the same child, so
sessions written by earlier versions resume too. The path below is the one from the issue's report
(the digits demo's default seed reached it).
"""

from __future__ import annotations

import subprocess
import sys

from syno.search.objective import make_reward
from syno.search.options import build_options
from syno.search.problem import make_problem
from syno.search.run import make_algorithm, make_evaluator, run_search
from syno.search.session import SearchRunner, SessionStore
from syno.synth.protocol import path_from_str

# a fraction of an epoch per kernel (as tests/search/test_digits_search.py)
FAST = {"train.max_steps_per_epoch": 4, "train.eval_batch_size": 360, "run.kernel_timeout": 240}
ISSUE_PATH = ("Reduce:cd1a6521756f8ffd_Reduce:5f1dac4ff5fe806f_Reduce:476a884a2ef9733f_Contraction:61680d7bba8565e2_"
              "Contraction:53539934087f4367_Unfold:5338300a3b665d0c_Finalize:24ce63d143cc0257")


def test_alias_edge_replays_but_is_not_listed():
    space = make_problem(build_options("tiny", FAST)).space
    path = path_from_str(ISSUE_PATH)
    final = space.node_from_path(path)
    assert final.is_final
    node = space.root()
    for nxt in path:
        kids = dict(node.children())
        listed = node.canonical_next(nxt)
        assert listed in kids and kids[listed] is node.child(nxt)
        if listed != nxt:  # the issue's element: an alias of a listed edge, not listed itself
            assert nxt.type == "Contraction" and nxt not in kids
        node = kids[listed]
    assert node is final


def test_session_with_an_alias_path_resumes_via_the_cli(tmp_path):
    root = tmp_path / "s"
    opts = build_options("tiny", {**FAST, "session_dir": str(root), "run.max_evaluations": 1, "run.workers": 0})
    run_search(opts)
    # record the issue's kernel as an earlier version did: under the alias path the walk took
    problem = make_problem(opts)
    store = SessionStore(root)
    evaluator = make_evaluator(opts, problem)
    runner = SearchRunner(store, problem, make_algorithm(opts, problem), evaluator, make_reward(opts))
    runner.restore()
    evaluator.submit(ISSUE_PATH)
    ((p, result),) = evaluator.poll()
    runner._record(p, result)
    runner.checkpoint()
    evaluator.close()
    assert ISSUE_PATH in {r.path for r in store.kernels()}

    res = subprocess.run([sys.executable, "-c", "from syno.cli import app; app()", "search", "tiny", "--session",
                          str(root), "--resume", "-n", "3", "-w", "0"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "not replayed" not in res.stdout + res.stderr  # the alias kernel was placed in the search tree
    recs = store.kernels()
    assert len(recs) == 3 and len({r.hash for r in recs}) == 3
    # the kernels the resumed search wrote take listed edges only
    space = problem.space
    for r in recs:
        if r.path == ISSUE_PATH:
            continue
        node = space.root()
        for nxt in path_from_str(r.path):
            kids = dict(node.children())
            assert nxt in kids, f"{r.path}: {nxt} is not among its parent's children()"
            node = kids[nxt]
