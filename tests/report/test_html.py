"""The HTML report: parsed structure, self-containment, Graphviz and its fallback, a browser screenshot."""

from __future__ import annotations

import base64
import html
import io
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from syno.cli import app
from syno.report import collect, render_dot_svg, write_report


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections: list[str] = []
        self.imgs: list[str] = []
        self.svgs = 0
        self.pres: list[tuple[str, str]] = []  # (class, text)
        self.external: list[str] = []
        self.links: list[str] = []
        self.ids: list[str] = []
        self._pre: str | None = None
        self._buf: list[str] = []
        self.stack_errors = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "section":
            self.sections.append(a.get("id", ""))
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "svg":
            self.svgs += 1
        if tag == "pre":
            self._pre, self._buf = a.get("class", ""), []
        if tag in ("link", "script", "iframe"):
            self.external.append(tag)
        for k in ("src", "href"):
            v = a.get(k) or ""
            if v.startswith(("http:", "https:", "//", "file:")):
                self.external.append(v)
        if tag == "a" and a.get("href", "").startswith("#"):
            self.links.append(a["href"][1:])

    def handle_endtag(self, tag):
        if tag == "pre" and self._pre is not None:
            self.pres.append((self._pre, "".join(self._buf)))
            self._pre = None

    def handle_data(self, data):
        if self._pre is not None:
            self._buf.append(data)


def parse(path: Path) -> Page:
    p = Page()
    p.feed(path.read_text())
    p.close()
    return p


@pytest.fixture(scope="module")
def report(report_inputs, tmp_path_factory):
    extra = [report_inputs["baseline"], report_inputs["bench"], report_inputs["lm"]]
    extra += [report_inputs[k] for k in ("reeval", "quantize") if report_inputs[k] is not None]
    path, figures = write_report(report_inputs["session"], tmp_path_factory.mktemp("html") / "report.html", extra)
    return path, figures


def test_report_structure(report, report_inputs):
    path, figures = report
    page = parse(path)
    assert page.sections == ["summary", "leaderboard", "figures", "kernels", "failures", "inputs"]
    assert not page.external, page.external  # self-contained
    assert len(page.ids) == len(set(page.ids)), "duplicate ids (several inline SVGs)"
    for link in page.links:
        assert link in page.ids, f"dangling link #{link}"
    drawn = [f for f in figures if f.drawn]
    assert len(drawn) == 7  # the six of the original's artifact and search-latency (issue 16)
    pngs = [s for s in page.imgs if s.startswith("data:image/png;base64,")]
    assert len(pngs) == len(page.imgs) == len(drawn)
    for src in pngs:
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            assert np.asarray(im.convert("L")).var() > 0
    inputs = collect([report_inputs["session"]])
    ok = inputs.sessions[0].ranked()
    loops = [t for c, t in page.pres if c == "loop"]
    assert len(loops) == len(ok)
    for k, text in zip(ok, loops):
        assert text.strip() == k.loop_text.strip()
    text = path.read_text()
    for k in inputs.sessions[0].kernels:
        assert k.name in text
    for k in inputs.sessions[0].kernels:
        if not k.ok and k.message:  # failure messages are shown
            assert html.escape(k.message.strip().splitlines()[0][:60]) in text
    assert "Δ vs baseline" in text
    if report_inputs["reeval"] is not None:
        assert ">reevaluated</th>" in text and "digits" in text
    if report_inputs["quantize"] is not None:
        assert "<h3>Quantization: tiny on digits" in text and text.count(">int8</td>") == 2


def test_report_graphviz_or_fallback(report):
    path, _ = report
    page = parse(path)
    if shutil.which("dot"):
        assert page.svgs >= 3
        assert not [c for c, _ in page.pres if c == "dot"]
    else:
        assert page.svgs == 0
        dots = [t for c, t in page.pres if c == "dot"]
        assert dots and all(t.lstrip().startswith("digraph") for t in dots)


def test_no_dot_fallback(report_inputs, tmp_path, monkeypatch):
    import syno.report.html as h

    monkeypatch.setattr(h.shutil, "which", lambda name: None)
    assert render_dot_svg("digraph { a -> b }") is None
    path, _ = write_report(report_inputs["session"], tmp_path / "r.html", top=2)
    page = parse(path)
    assert page.svgs == 0
    dots = [t for c, t in page.pres if c == "dot"]
    assert len(dots) == 2 and all(t.lstrip().startswith("digraph") for t in dots)
    assert "Graphviz is not installed" in path.read_text()


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot not installed")
def test_render_dot_svg_prefixes_ids():
    svg = render_dot_svg('digraph g { a -> b [label="x"]; }', id_prefix="k1-")
    assert svg.startswith("<svg") and "<?xml" not in svg and "DOCTYPE" not in svg
    assert 'id="k1-graph0"' in svg


def test_report_of_bare_session_and_cli(report_inputs, tmp_path):
    s = tmp_path / "bare-session"
    shutil.copytree(report_inputs["session"], s)
    res = CliRunner().invoke(app, ["report", str(s), "--top", "1"])
    assert res.exit_code == 0, res.output
    out = s / "report.html"
    page = parse(out)
    assert page.sections == ["summary", "leaderboard", "figures", "kernels", "failures", "inputs"]
    assert len([c for c, _ in page.pres if c == "loop"]) == 1
    assert "figure end-to-end-performance: not drawn" in res.output  # no bench CSV given: said, not fatal
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_report_of_empty_session(tmp_path):
    s = tmp_path / "empty"
    s.mkdir()
    path, figures = write_report(s)
    page = parse(path)
    assert page.sections == ["summary", "leaderboard", "figures", "kernels", "failures", "inputs"]
    assert not any(f.drawn for f in figures)
    assert "No kernel was evaluated successfully" in path.read_text()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed")
def test_screenshot_in_headless_chromium(report, tmp_path):
    path, _ = report
    shot = tmp_path / "shot.png"
    # a file:// page, no network: the flags keep Chromium from reaching out on its own
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
                           f"--screenshot={shot}", "--window-size=1400,2400", path.resolve().as_uri()],
                          capture_output=True, timeout=120)
    assert shot.is_file(), proc.stderr.decode()[-2000:]
    with Image.open(shot) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert a.shape[:2] == (2400, 1400)
    assert a.var() > 100  # rendered content, not a blank page
    # the dark header band is at the top
    assert a[:40].mean() < 120
