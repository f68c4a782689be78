"""One error-reporting path for the whole CLI (issue #19 item 4): one ``error:`` line naming the
culprit on stderr, exit status != 0, the traceback only with ``--debug`` / ``SYNO_DEBUG=1``;
Ctrl-C / SIGTERM end with one line that says how to resume."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from syno.cli import app
from syno.cli_errors import one_line
from syno.search.evaluator import EvaluatorError, LocalPoolEvaluator

runner = CliRunner()


def _one_error_line(res, code: int = 2) -> str:
    assert res.exit_code == code, (res.exit_code, res.output, res.exception)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output and "https://" not in res.output
    return lines[0]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.fixture()
def evil_cifar(tmp_path: Path) -> Path:
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    for name in ("train", "test", "meta"):
        (d / name).write_bytes(pickle.dumps({b"data": _Evil()}))
    return tmp_path


def test_refused_pickle_is_one_line_in_baseline(evil_cifar, tmp_path):
    res = runner.invoke(app, ["baseline", "tiny", "cifar100", "--data-dir", str(evil_cifar),
                              "--out", str(tmp_path / "b"), "--no-progress"])
    line = _one_error_line(res)
    assert "refusing to load posix.system" in line or "refusing to load os.system" in line
    # --debug (or SYNO_DEBUG=1): the exception propagates with its traceback
    res = runner.invoke(app, ["--debug", "baseline", "tiny", "cifar100", "--data-dir", str(evil_cifar),
                              "--out", str(tmp_path / "b"), "--no-progress"])
    assert isinstance(res.exception, pickle.UnpicklingError)
    res = runner.invoke(app, ["baseline", "tiny", "cifar100", "--data-dir", str(evil_cifar), "--out",
                              str(tmp_path / "b"), "--no-progress"], env={"SYNO_DEBUG": "1"})
    assert isinstance(res.exception, pickle.UnpicklingError)


def test_refused_pickle_is_one_line_in_reevaluate_and_search(evil_cifar, tmp_path):
    from syno.ir.library import conv2d

    from post.helpers import make_kernel_dir  # tests/ is on sys.path (pytest's rootdir-relative import)

    s = tmp_path / "sess"
    s.mkdir()
    make_kernel_dir(s, conv2d(), 0.6, 1.5e6)
    line = _one_error_line(runner.invoke(app, ["reevaluate", str(s), "--dataset", "cifar100", "--data-dir",
                                               str(evil_cifar), "-q"]))
    assert "refusing to load" in line
    line = _one_error_line(runner.invoke(app, ["search", "tiny", "--set", "dataset=cifar100", "--data-dir",
                                               str(evil_cifar), "--session", str(tmp_path / "s2"), "-n", "1"]))
    assert "refusing to load" in line


def test_pydantic_error_is_one_line_without_url():
    line = _one_error_line(runner.invoke(app, ["search", "tiny", "--set", "train.epochs=x"]))
    assert "epochs" in line and "'x'" in line
    line = _one_error_line(runner.invoke(app, ["search", "tiny", "--set", "mcts.no_such_knob=1"]))
    assert "mcts.no_such_knob" in line


def test_usage_errors_are_one_line():
    line = _one_error_line(runner.invoke(app, ["search"]))
    assert "model" in line.lower() and "syno search --help" in line
    line = _one_error_line(runner.invoke(app, ["search", "synthetic", "--no-such-flag"]))
    assert "--no-such-flag" in line
    line = _one_error_line(runner.invoke(app, ["search", "synthetic", "--set", "novalue"]))
    assert "novalue" in line


def test_unexpected_exception_is_one_line_exit_1(monkeypatch, tmp_path):
    import syno.train.baseline

    def boom(*a, **k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(syno.train.baseline, "run_baseline", boom)
    line = _one_error_line(runner.invoke(app, ["baseline", "tiny", "digits", "--out", str(tmp_path)]), code=1)
    assert "RuntimeError: boom; second line" in line and "--debug" in line
    res = runner.invoke(app, ["--debug", "baseline", "tiny", "digits", "--out", str(tmp_path)])
    assert isinstance(res.exception, RuntimeError)


def test_interrupt_prints_resume_hint_for_resumable_commands(monkeypatch, tmp_path):
    import syno.post.reevaluate

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(syno.post.reevaluate, "reevaluate", interrupted)
    res = runner.invoke(app, ["reevaluate", str(tmp_path), "--dataset", "digits", "-q"])
    assert res.exit_code == 130 and "Traceback" not in res.output
    assert res.stderr.strip() == f"interrupted; resume with: syno reevaluate {tmp_path} --dataset digits -q --resume"


def test_one_line_folds_messages():
    assert one_line("a\n  b\n\n") == "a; b"
    assert one_line("bad kernel\nTraceback (most recent call last):\n  File x\nValueError: y") == "bad kernel"
    assert one_line(KeyError("k")) == "missing key 'k'"


class _FailingSetup:
    def setup(self, slot):
        raise FileNotFoundError("no data in /nowhere")

    def evaluate(self, path):  # pragma: no cover - never reached
        raise AssertionError


def test_worker_setup_error_is_one_line_with_traceback_kept_apart():
    ev = LocalPoolEvaluator(_FailingSetup(), workers=1)
    ev.submit("x")
    with pytest.raises(EvaluatorError) as info:
        ev.poll(timeout=60)
    msg = str(info.value)
    assert "\n" not in msg and "FileNotFoundError: no data in /nowhere" in msg
    assert "Traceback" in info.value.detail


# ------------------------------------------------------------------------------------ signals

def _terminal_signals() -> None:
    """The child starts as a terminal's foreground job would: SIGINT handled by default and not
    blocked. In the full default run the test process's state is not that (the test passed alone
    and timed out after the whole suite: the search never saw the Ctrl-C), and a disposition or
    mask inherited from the test runner says nothing about the CLI."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _search(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    s = tmp_path / "s"
    register = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from search import synthetic; " \
               "synthetic.register(); "  # the tests' synthetic space (tests/search/synthetic.py)
    cmd = [sys.executable, "-c", register + "from syno.cli import app; app()", "search", "synthetic", "--session", str(s),
           "-n", "40", "-w", "2", "--set", "problem.delay=3"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_terminal_signals)
    deadline = time.monotonic() + 120
    inflight = s / "inflight.json"
    while time.monotonic() < deadline and proc.poll() is None:  # until both workers are mid-kernel
        if inflight.exists() and inflight.read_text().count('"') >= 6:
            break
        time.sleep(0.1)
    time.sleep(1.0)
    assert proc.poll() is None, proc.communicate()
    return proc, s


@pytest.mark.parametrize("sig, code, what", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_ctrl_c_and_sigterm_end_with_a_resume_hint(tmp_path, sig, code, what):
    proc, s = _search(tmp_path)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C in a terminal: the whole process group, workers included
    else:
        os.kill(proc.pid, sig)  # `kill PID`: only the search process
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the search ignored {sig!r}; its stderr so far:\n{exc.stderr}") from exc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    last = [ln for ln in err.splitlines() if ln.strip()][-1]
    assert last == f"{what}; resume with: syno search synthetic --session {s} --resume"
    time.sleep(1.0)  # no orphaned worker writes a traceback later
    res = runner.invoke(app, ["search", "synthetic", "--session", str(s), "--resume", "-n", "3", "-w", "0", "-q"])
    assert res.exit_code == 0, res.output
