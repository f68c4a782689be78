"""CLI conventions a new user relies on (issue #19 item 6): readable help, one meaning per short
flag, --version, errors on stderr, nothing written before a name is checked, quiet means quiet,
no cut-off progress lines without a terminal."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from syno import __version__
from syno.cli import app

runner = CliRunner()
COMMANDS = sorted(get_command(app).commands)


def _help(*cmd: str) -> str:
    res = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    return res.output


def test_help_keeps_brackets_and_shows_no_bool_metavar():
    assert "pip install syno[ray]" in _help("search")  # rich markup used to eat "[ray]"
    for name in COMMANDS:
        text = _help(name)
        assert "<bool>" not in text, name
        assert "--quiet" not in text or "-q, --quiet" in text, name


def test_each_short_flag_has_one_meaning_across_commands():
    meaning: dict[str, set[str]] = {}
    for name, cmd in get_command(app).commands.items():
        for p in cmd.params:
            longs = [o for o in p.opts + p.secondary_opts if o.startswith("--")]
            for o in p.opts:
                if len(o) == 2 and o.startswith("-"):
                    meaning.setdefault(o, set()).update(longs[:1])
    clashes = {k: v for k, v in meaning.items() if len(v) > 1}
    assert not clashes, clashes
    assert meaning["-o"] == {"--out"} and meaning["-k"] == {"--top"} and meaning["-q"] == {"--quiet"}


def test_version_and_docs_pointer():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"syno {__version__}"
    assert "docs/" in _help()


def test_bench_errors_go_to_stderr():
    res = runner.invoke(app, ["bench", "tiny", "--operator", "no_such_operator", "--backend", "eager"])
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.startswith("error: ") and "no_such_operator" in res.stderr


def test_quantize_checks_names_before_writing(tmp_path):
    out = tmp_path / "q"
    res = runner.invoke(app, ["quantize", "nosuchmodel", "--dataset", "digits", "--out", str(out)])
    assert res.exit_code == 2 and "nosuchmodel" in res.stderr and not out.exists()
    res = runner.invoke(app, ["quantize", "tiny", "--dataset", "cifar100", "--data-dir", str(tmp_path / "none"),
                              "--out", str(out)])
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and not out.exists()


@pytest.fixture(scope="module")
def synthetic_session(tmp_path_factory) -> tuple[Path, str]:
    s = tmp_path_factory.mktemp("conv") / "s"
    res = runner.invoke(app, ["search", "synthetic", "--session", str(s), "-n", "6", "-w", "0"])
    assert res.exit_code == 0, res.output
    return s, res.stderr


def test_progress_without_terminal_prints_whole_lines(synthetic_session):
    s, err = synthetic_session
    lines = err.splitlines()
    kernel_lines = [ln for ln in lines if ln.startswith("  ") and ln.split()[0][:5].isdigit()]
    assert len(kernel_lines) == 6
    assert not any("━" in ln or "…" in ln for ln in lines), err  # no bar, nothing cut off


def test_quiet_prints_no_kernel_lines(tmp_path):
    res = runner.invoke(app, ["search", "synthetic", "--session", str(tmp_path / "q"), "-n", "4", "-w", "0", "-q"])
    assert res.exit_code == 0, res.output
    assert res.stderr.strip() == "", res.stderr


def test_pareto_figure_is_not_named_after_imagenet(synthetic_session, tmp_path):
    s, _ = synthetic_session
    res = runner.invoke(app, ["plot", str(s), "--out", str(tmp_path), "--format", "png",
                              "--only", "imagenet-performance"])  # the former name still selects it
    assert res.exit_code == 0, res.output
    assert (tmp_path / "accuracy-performance.png").is_file()
    assert not (tmp_path / "imagenet-performance.png").exists()
