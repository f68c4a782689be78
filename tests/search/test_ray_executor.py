"""RayEvaluator on a real local Ray cluster: searches finish, no kernel is lost when a worker dies,
backpressure, growth, failure statuses, and a killed driver that resumes and re-attaches.

One in-process cluster (``ray.init(num_cpus=4)``) is shared by the module; the driver-restart test
starts its own head with ``ray start --head`` in a subprocess. Runs in about two minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from syno.search import MCTS, MCTSConfig, RewardConfig
from syno.search.base import EvalResult
from . import synthetic
from .synthetic import SyntheticJob, SyntheticProblem
from syno.search.session import SearchRunner, SessionStore
from syno.synth.protocol import path_from_str, path_to_str

ray = pytest.importorskip("ray")  # the `test` extra installs it; skipped only in a bare install
# Ray workers import by module name and cannot import the tests' synthetic space (it is not part of
# the shipped `syno` package): its jobs travel by value
ray.cloudpickle.register_pickle_by_value(synthetic)

from syno.search.ray_executor import RayEvaluator, RayNotInstalledError  # noqa: E402

SPACE = {"n_atoms": 14, "seed": 0}


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, namespace="syno-test")
    yield
    ray.shutdown()


def run_search(problem, ev, root: Path, n: int, on_event=None, **kw):
    store = SessionStore(root)
    if not store.exists():
        store.create({"options": {"model": "synthetic"}})
    reward = RewardConfig()
    algo = MCTS(problem.space, MCTSConfig(seed=1), reward=reward)
    runner = SearchRunner(store, problem, algo, ev, reward, on_event=on_event, checkpoint_interval=1e9)
    runner.restore()
    summary = runner.run(max_evaluations=n, **kw)
    return store, runner, summary


def statuses(store) -> dict[str, str]:
    return {r.path: r.result.status for r in store.kernels()}


def test_missing_ray_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(RayNotInstalledError, match=r"pip install .*syno\[ray\]"):
        RayEvaluator(SyntheticJob(SPACE))


def test_cli_executor_ray_without_ray(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from syno.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)
    r = CliRunner().invoke(app, ["search", "synthetic", "--executor", "ray", "-n", "2", "-q", "--session",
                                 str(tmp_path / "s")])
    assert r.exit_code == 2 and 'pip install "syno[ray]"' in r.output
    assert not (tmp_path / "s").exists()  # no half-made session to trip over after installing Ray


def test_cli_search_on_ray(cluster, tmp_path):
    """``syno search --executor ray`` (Ray already initialized here: the evaluator joins it)."""
    from typer.testing import CliRunner

    from syno.cli import app

    s = str(tmp_path / "s")
    r = CliRunner().invoke(app, ["search", "synthetic", "--executor", "ray", "-w", "3", "-n", "9", "-q", "--session", s,
                                 "--set", "problem.delay=0.1"])
    assert r.exit_code == 0, r.output
    assert len(SessionStore(s).kernel_dirs()) == 9
    r = CliRunner().invoke(app, ["search", "synthetic", "--executor", "ray", "-n", "12", "-q", "--session", s,
                                 "--resume"])
    assert r.exit_code == 0, r.output
    assert len(SessionStore(s).kernel_dirs()) == 12
    r = CliRunner().invoke(app, ["search", "synthetic", "--address", "auto", "-n", "1", "--session", s, "--resume"])
    assert r.exit_code == 2 and "--address needs --executor ray" in r.output


def test_digits_kernel_job_on_ray(cluster, tmp_path):
    """The real problem: the tiny CNN trained on digits with each synthesized operator, in Ray actors."""
    from syno.search.options import build_options
    from syno.search.run import run_search

    options = build_options("tiny", {"run.max_evaluations": 3, "session_dir": str(tmp_path / "tiny"),
                                     "mcts.seed": 0})
    summary = run_search(options, executor="ray", max_workers=2)
    assert summary.evaluated == summary.new == 3
    recs = SessionStore(options.directory).kernels()
    assert len(recs) == 3 == len(SessionStore(options.directory).kernel_dirs())
    for rec in recs:
        assert rec.result.status in ("ok", "pruned"), rec.result.message
        assert 0.0 < rec.result.accuracy <= 1.0 and rec.result.flops > 0 and rec.result.params > 0
        assert (rec.dir / "operator.json").is_file()


def test_search_with_four_workers_respects_backpressure(cluster, tmp_path):
    problem = SyntheticProblem(SPACE, delay=0.2)
    seen = []
    with RayEvaluator(problem.job(), workers=4) as ev:
        assert ev.workers == 4 and ev.capacity() == 4
        assert ev.wait_ready(timeout=120) == 4  # (2 shared cores: the 4 actors start slowly)

        def watch(kind, data):
            if kind == "tick":  # data: the runner; its in-flight kernels never exceed the slots
                seen.append(len(data.inflight))
                assert len(data.inflight) <= ev.workers and len(ev.running) <= ev.workers
                assert 0 <= ev.capacity() <= ev.workers - len(data.inflight)

        store, runner, summary = run_search(problem, ev, tmp_path / "s", 24, on_event=watch)
        assert summary.stop_reason == "reached 24 kernels"
        assert len(store.kernel_dirs()) == 24 == ev.stats["submitted"] == ev.stats["returned"]
        assert seen and ev.stats["max_busy"] == 4  # the cluster was used in parallel
        hosts = {w["pid"] for w in ev.workers_info()}
        assert len(hosts) == 4 and os.getpid() not in hosts
    # the synthetic's planted results come back unchanged through Ray
    for rec in store.kernels():
        assert rec.result.status == problem.space.evaluate(path_from_str(rec.path)).status


def test_killed_worker_loses_no_kernel(cluster, tmp_path):
    problem = SyntheticProblem(SPACE, delay=0.6)
    killed: dict = {}
    with RayEvaluator(problem.job(), workers=4, max_retries=2) as ev:

        def kill_one(kind, data):
            if kind == "tick" and not killed and len(runner_box[0].records) >= 4:
                busy = [w for w in ev.workers_info() if w["ready"] and w["task"] and w["task_s"] < 0.2]
                if busy:  # just started (0.6 s per kernel): the kill surely lands mid-evaluation
                    killed["path"], killed["slot"] = busy[0]["task"], busy[0]["slot"]
                    killed["pid"] = ev.kill_worker(busy[0]["slot"])

        runner_box: list = []
        store = SessionStore(tmp_path / "s")
        store.create({"options": {"model": "synthetic"}})
        reward = RewardConfig()
        runner = SearchRunner(store, problem, MCTS(problem.space, MCTSConfig(seed=2), reward=reward), ev, reward,
                              on_event=kill_one)
        runner_box.append(runner)
        runner.restore()
        summary = runner.run(max_evaluations=20)
        assert killed, "no busy worker was found to kill"
        assert summary.evaluated == 20
        # every issued evaluation has exactly one kernel directory; the killed one was re-queued and finished
        assert len(store.kernel_dirs()) == ev.stats["submitted"] == 20
        assert ev.stats["requeued"] == 1 and ev.stats["replaced"] == 1 and ev.stats["crash"] == 0
        st = statuses(store)
        assert st[killed["path"]] == problem.space.evaluate(path_from_str(killed["path"])).status
        assert sum(s != "ok" for s in st.values()) == len(list(store.root.glob("ERROR_*")))
        assert killed["pid"] not in {w.get("pid") for w in ev.workers_info()}


def test_killed_worker_without_retries_is_recorded_as_crash(cluster, tmp_path):
    problem = SyntheticProblem(SPACE, delay=0.6)
    killed: dict = {}
    with RayEvaluator(problem.job(), workers=2, max_retries=0) as ev:
        def kill_one(kind, data):
            if kind == "tick" and not killed:
                busy = [w for w in ev.workers_info() if w["ready"] and w["task"] and w["task_s"] < 0.2]
                if busy:
                    killed["path"] = busy[0]["task"]
                    ev.kill_worker(busy[0]["slot"])

        store, runner, summary = run_search(problem, ev, tmp_path / "s", 8, on_event=kill_one)
    rec = next(r for r in store.kernels() if r.path == killed["path"])
    assert rec.result.status == "crash" and rec.dir.name.startswith("ERROR_") and rec.reward is None
    assert "died" in rec.result.message and "max_retries=0" in rec.result.message
    assert len(store.kernel_dirs()) == 8 == ev.stats["submitted"]


def final_path(space, atoms) -> str:
    """The path that adds ``atoms`` in index order, then finalizes."""
    node = space.root()
    for a in sorted(atoms):
        node = next(c for n, c in node.children() if n.type != "Finalize" and c.atoms == node.atoms | {a})
    return path_to_str(next(c for n, c in node.children() if n.type == "Finalize").path)


def test_failure_statuses_are_exact(cluster):
    """Kernels that kill their worker (retried, then ``crash``), hang (``timeout``), raise (``error``)."""
    problem = SyntheticProblem(SPACE, die=0.15, hang=0.15, raise_=0.15)
    check = SyntheticJob(SPACE, die=0.15, hang=0.15, raise_=0.15)
    check.setup(0)
    by_kind: dict[str, list[str]] = {}
    for atoms in sorted(problem.space.all_finals(), key=sorted):
        what = check.behaviour(atoms)
        if what == "ok" and problem.space.crashes(atoms):
            what = "synthetic-error"
        by_kind.setdefault(what, []).append(final_path(problem.space, atoms))
    paths = {k: v[:2] for k, v in by_kind.items() if k in ("die", "hang", "raise", "ok")}
    assert all(len(v) == 2 for v in paths.values()) and len(paths) == 4
    expected = {p: {"die": "crash", "hang": "timeout", "raise": "error", "ok": "ok"}[k]
                for k, v in paths.items() for p in v}
    got: dict[str, EvalResult] = {}
    with RayEvaluator(problem.job(), workers=4, max_retries=1, timeout=3.0) as ev:
        todo = list(expected)
        while todo or ev.running:
            while todo and ev.capacity() > 0:
                ev.submit(todo.pop())
            for path, res in ev.poll(timeout=30):
                assert path not in got  # each path comes back exactly once
                got[path] = res
        stats = dict(ev.stats)
    assert {p: r.status for p, r in got.items()} == expected
    assert stats["crash"] == 2 and stats["requeued"] == 2  # each dying kernel ran max_retries + 1 times
    assert stats["timeout"] == 2 and stats["replaced"] == 2 * 2 + 2
    assert all("attempt(s)" in got[p].message for p in paths["die"])
    assert all(got[p].accuracy == problem.space.evaluate(path_from_str(p)).accuracy for p in paths["ok"])


def wait_free_cpus(n: float, timeout: float = 30) -> None:
    t0 = time.monotonic()
    while ray.available_resources().get("CPU", 0) != n:
        assert time.monotonic() - t0 < timeout, ray.available_resources()
        time.sleep(0.2)


def test_capacity_grows_when_resources_free_up(cluster):
    """A node joining looks like free CPUs appearing: an auto-sized pool grows into them."""

    @ray.remote(num_cpus=2)
    class Hog:
        def ping(self):
            return 1

    wait_free_cpus(4)  # earlier tests' actors are gone
    hog = Hog.remote()
    ray.get(hog.ping.remote())
    wait_free_cpus(2)
    with RayEvaluator(SyntheticJob(SPACE), workers=None, grow_interval=0.5) as ev:
        assert ev.workers == 2 and ev.capacity() == 2
        ev.submit("bogus")  # an invalid path: comes back as an error result, not an exception
        out = ev.poll(timeout=60)
        assert out[0][0] == "bogus" and out[0][1].status == "error"
        ray.kill(hog)
        t0 = time.monotonic()
        while ev.workers < 4 and time.monotonic() - t0 < 30:
            ev.capacity()
            ev.poll(timeout=0.5)
        assert ev.workers == 4 and ev.stats["grown"] == 2
        t0 = time.monotonic()
        while not all(w["ready"] for w in ev.workers_info()) and time.monotonic() - t0 < 60:
            ev.poll(timeout=0.5)
        assert ev.capacity() == 4


def test_setup_failure_raises(cluster):
    with pytest.raises(Exception, match="fail during setup"):
        with RayEvaluator(SyntheticJob({"n_atoms": 1, "max_ops": 6}), workers=1, max_setup_failures=2) as ev:
            ev.submit("x")
            ev.poll(timeout=120)


# ---------------------------------------------------------------------------------------------
# driver restart: a separate `ray start --head` cluster; the driver is killed and resumed

DRIVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[4])  # tests/: the synthetic space
    import ray.cloudpickle
    from search import synthetic
    from search.synthetic import SyntheticProblem
    ray.cloudpickle.register_pickle_by_value(synthetic)
    from syno.search import MCTS, MCTSConfig, RewardConfig
    from syno.search.session import SearchRunner, SessionStore
    from syno.search.ray_executor import RayEvaluator
    root, address, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    problem = SyntheticProblem({"n_atoms": 14, "seed": 0}, delay=0.5)
    store = SessionStore(root)
    if not store.exists():
        store.create({"options": {"model": "synthetic"}})
    reward = RewardConfig()
    ev = RayEvaluator(problem.job(), address=address, init_kwargs={"log_to_driver": False})
    print("workers", ev.workers, "runtime_env", sorted(ev.runtime_env), flush=True)
    runner = SearchRunner(store, problem, MCTS(problem.space, MCTSConfig(seed=3), reward=reward), ev, reward,
                          checkpoint_interval=0.5)
    print("restore", runner.restore(), flush=True)
    s = runner.run(max_evaluations=n)
    print("done", s.evaluated, s.new, s.reissued, s.stop_reason, flush=True)
    ev.close()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head_node():
    """``ray start --head --block`` with 2 CPUs, a private temp dir and a private auth token."""
    tmp = tempfile.mkdtemp(prefix="syno-ray-")
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env.pop("RAY_ADDRESS", None)
    log = open(Path(tmp) / "head.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--num-cpus=2", f"--port={port}",
                             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={tmp}"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in (Path(tmp) / "head.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (Path(tmp) / "head.log").read_text()
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", env
    finally:
        proc.send_signal(signal.SIGTERM)  # `ray start --block` stops everything it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_driver_restart_resumes_and_reattaches(head_node, tmp_path):
    address, env = head_node
    root, n = tmp_path / "session", 14
    cmd = [sys.executable, "-c", DRIVER, str(root), address, str(n), str(Path(__file__).parents[1])]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    store = SessionStore(root)
    deadline = time.monotonic() + 120
    while len(store.kernel_dirs()) < 4:
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    first.kill()  # the driver dies with kernels in flight
    out1 = first.communicate()[0]
    assert "workers 2" in out1 and "py_modules" in out1  # joined the 2-CPU cluster, shipped syno
    before = len(store.kernel_dirs())
    inflight = json.loads((root / "inflight.json").read_text())["paths"]
    assert 4 <= before < n and inflight
    second = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=180)
    assert second.returncode == 0, second.stdout
    done = [line for line in second.stdout.splitlines() if line.startswith("done")][0].split()
    assert int(done[1]) == n and int(done[2]) == n - before and int(done[3]) >= 1
    recs = store.kernels()
    assert len(recs) == len(store.kernel_dirs()) == n == len({r.hash for r in recs})
    paths = {r.path for r in recs}
    assert set(inflight) <= paths  # kernels in flight at the kill were evaluated after the restart
