"""CI runs the browser and Graphviz paths of the report (issue #19 item 9), and the README's test
command is the one CI runs."""

import os
import re
import shlex
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / ".ci" / "run"


def _commands() -> list[list[str]]:
    out = []
    for line in CI.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        for part in re.split(r"&&|;", line):
            if part.strip():
                out.append(shlex.split(part))
    return out


def test_ci_installs_chromium_and_graphviz_non_interactively():
    installs = [c for c in _commands() if c[:2] == ["apt-get", "install"]]
    assert installs and {"chromium", "graphviz"} <= set(installs[0]) and "-y" in installs[0]
    assert "DEBIAN_FRONTEND=noninteractive" in CI.read_text()


def test_readme_test_command_is_the_one_ci_runs():
    ci = [c for c in _commands() if c[-2:] == ["-m", "pytest"] or c[-3:-1] == ["-m", "pytest"]]
    assert ci, "no pytest command in .ci/run"
    readme = (ROOT / "README.md").read_text()
    assert f"pip install -e \".[test]\" && {shlex.join(ci[-1])}" in readme


@pytest.mark.skipif(not os.environ.get("SYNO_REQUIRE_TOOLS"), reason="only where .ci/run installed the tools")
def test_tools_are_installed_where_ci_promises_them():
    assert shutil.which("chromium") or shutil.which("chromium-browser")
    assert shutil.which("dot")
