"""``syno report``: one self-contained HTML page for a search session.

The page has no external references: CSS is inline, figures are PNG data URIs, each kernel's
Graphviz diagram is inline SVG rendered with ``dot -Tsvg`` (when Graphviz is installed; otherwise
the DOT source is shown). Sections (each a ``<section id=...>``): ``summary``, ``leaderboard``,
``figures``, ``kernels`` (loop text, diagram, metrics of the best ``top`` kernels), ``failures``,
``inputs``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, Sequence

from .figures import FigureResult, PlotOptions, plot_all
from .inputs import Inputs, KernelDir, Session, collect

__all__ = ["write_report", "render_report", "render_dot_svg", "dot_available"]

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2b44;color:#fff;padding:18px 32px}
header h1{margin:0 0 4px 0;font-size:22px} header p{margin:0;color:#c9d3e6;font-size:13px}
main{padding:8px 32px 40px 32px;max-width:1400px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 20px;margin:18px 0}
h2{font-size:18px;margin:6px 0 12px 0;border-bottom:1px solid #e4e7ec;padding-bottom:6px}
h3{font-size:15px;margin:18px 0 8px 0}
table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid #e4e7ec;padding:4px 10px;text-align:right;white-space:nowrap}
th{background:#f0f2f5;position:sticky;top:0} td.l,th.l{text-align:left}
tr:hover td{background:#f7f9fc}
.num{font-variant-numeric:tabular-nums}
.ok{color:#1a7f37} .bad{color:#b42318} .muted{color:#6b7380}
pre{background:#0f1720;color:#e6edf3;padding:10px 12px;border-radius:5px;overflow:auto;font-size:12px;max-height:480px}
pre.dot{background:#f6f8fa;color:#24292f}
.kernel{border-top:1px solid #e4e7ec;padding-top:6px}
.grid{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:16px;align-items:start}
.diagram{overflow:auto;max-height:640px;border:1px solid #e4e7ec;border-radius:5px;padding:6px;background:#fff}
.diagram svg{max-width:100%;height:auto}
figure{margin:12px 0 20px 0} figure img{max-width:100%;border:1px solid #e4e7ec;border-radius:4px}
figcaption{font-size:13px;color:#4b5563;margin-top:4px}
ul.missing li{color:#8a5a00}
dl.metrics{display:grid;grid-template-columns:max-content auto;gap:2px 14px;font-size:13px;margin:6px 0}
dl.metrics dt{color:#6b7380} dl.metrics dd{margin:0}
.badge{display:inline-block;padding:1px 7px;border-radius:10px;font-size:12px;background:#eef2ff;color:#3730a3}
nav a{color:#c9d3e6;margin-right:14px;font-size:13px}
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _fmt_count(x: float | None) -> str:
    if x is None:
        return "–"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.0f}"


def _fmt_pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def _fmt_num(x: float | None, nd: int = 4) -> str:
    return "–" if x is None else f"{x:.{nd}g}"


def _fmt_s(x: float | None) -> str:
    if x is None:
        return "–"
    if x < 120:
        return f"{x:.1f} s"
    if x < 7200:
        return f"{x / 60:.1f} min"
    return f"{x / 3600:.1f} h"


def _anchor(name: str) -> str:
    return "k-" + re.sub(r"[^0-9A-Za-z_-]", "-", name)


# ------------------------------------------------------------------------------------- graphviz
def dot_available() -> bool:
    return shutil.which("dot") is not None


_SVG_ID = re.compile(r'\b(id|href|xlink:href)="(#?)([^"]+)"')


def render_dot_svg(dot_source: str, id_prefix: str = "", timeout: float = 20.0) -> str | None:
    """``dot -Tsvg`` of ``dot_source`` as inline ``<svg>`` markup (XML prolog and doctype removed, ids
    prefixed so several diagrams can share a page), or None when Graphviz is missing or fails."""
    exe = shutil.which("dot")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, "-Tsvg"], input=dot_source.encode(), capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0 or b"<svg" not in proc.stdout:
        return None
    svg = proc.stdout.decode("utf-8", errors="replace")
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)
    if id_prefix:
        svg = _SVG_ID.sub(lambda m: f'{m.group(1)}="{m.group(2)}{id_prefix}{m.group(3)}"', svg)
    return svg.strip()


# ------------------------------------------------------------------------------------- sections
def _summary(session: Session, inputs: Inputs) -> str:
    ks = session.kernels
    ok = [k for k in ks if k.ok]
    failed = [k for k in ks if not k.ok]
    ranked = session.ranked()
    best = ranked[0] if ranked else None
    b = inputs.baseline_for(session.model, session.dataset,
                            metric="loss" if session.target == "loss" else "accuracy")
    times = [k.time for k in ks if k.time is not None]
    rows = [
        ("session", f"<code>{_e(session.root)}</code>"),
        ("model / dataset", f"{_e(session.model or '?')} / {_e(session.dataset or '?')}"),
        ("target", _e(session.target)),
        ("algorithm", _e(session.algorithm or "?")),
        ("kernels evaluated", f"{len(ks)} ({len(ok)} ok, {len(failed)} failed)"),
        ("search time", _fmt_s(max(times)) if times else "–"),
    ]
    if b is not None:
        val = _fmt_num(b.loss) if session.target == "loss" else _fmt_pct(b.accuracy)
        rows.append(("baseline", f"{val}, {_fmt_count(b.flops)} MACs, {_fmt_count(b.params)} params "
                                 f"<span class=muted>({_e(b.source)})</span>"))
    if best is not None:
        val = _fmt_num(best.loss) if session.target == "loss" else _fmt_pct(best.accuracy)
        rows.append(("best kernel", f'<a href="#{_anchor(best.name)}">{_e(best.name)}</a> {val}'))
    opts = session.info.get("options") if isinstance(session.info.get("options"), dict) else None
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    extra = ""
    if opts:
        items = ", ".join(f"{_e(k)}={_e(v)}" for k, v in list(opts.items())[:40] if not isinstance(v, (dict, list)))
        extra = f"<details><summary>search options</summary><p class=muted>{items}</p></details>"
    return f'<section id="summary"><h2>Summary</h2><dl class="metrics">{body}</dl>{extra}</section>'


def _best_speedups(inputs: Inputs, k: KernelDir) -> str:
    out = []
    for r in inputs.bench:
        if r.scope == "model" and not r.is_baseline and r.ok and (r.op_hash == k.hash or r.variant == k.name) \
                and r.speedup is not None:
            out.append(f"{r.speedup:.2f}× <span class=muted>{_e(r.model)} {_e(r.backend)} N={r.batch}</span>")
    return "<br>".join(out) if out else "–"


def _leaderboard(session: Session, inputs: Inputs, top: int) -> str:
    ranked = session.ranked()
    loss = session.target == "loss"
    b = inputs.baseline_for(session.model, session.dataset, metric="loss" if loss else "accuracy")
    bflops = (b.flops if b is not None and b.flops else None) or session.baseline_flops
    bparams = (b.params if b is not None and b.params else None) or session.baseline_params
    head = ["#", "kernel", "loss" if loss else "accuracy"]
    if b is not None:
        head.append("Δ vs baseline")
    head += ["MACs", "× baseline", "params", "× baseline", "eval time", "found at", "status", "speedup (bench)"]
    if any(inputs.reeval_for(k) for k in ranked):
        head.append("reevaluated")
    rows = []
    for i, k in enumerate(ranked, 1):
        link = f'<a href="#{_anchor(k.name)}">{_e(k.name)}</a>' if i <= top else _e(k.name)
        cells = [str(i), link, _fmt_num(k.loss) if loss else _fmt_pct(k.accuracy)]
        if b is not None:
            if loss and k.loss is not None and b.loss is not None:
                cells.append(f"{k.loss - b.loss:+.4f}")
            elif not loss and k.accuracy is not None and b.accuracy is not None:
                cells.append(f"{100 * (k.accuracy - b.accuracy):+.2f} pt")
            else:
                cells.append("–")
        cells += [_fmt_count(k.flops), _fmt_num(k.flops / bflops, 3) if (k.flops and bflops) else "–",
                  _fmt_count(k.params), _fmt_num(k.params / bparams, 3) if (k.params and bparams) else "–",
                  _fmt_s(k.eval_time), _fmt_s(k.time), _e(k.status), _best_speedups(inputs, k)]
        if "reevaluated" in head:
            r = inputs.reeval_for(k)
            cells.append("–" if r is None else (f"{_fmt_pct(r.accuracy)} {_e(r.dataset or '')}" if r.accuracy
                                                 is not None else f"loss {_fmt_num(r.loss)}"))
        rows.append("<tr>" + "".join(f'<td class="{"l" if j == 1 else "num"}">{c}</td>'
                                     for j, c in enumerate(cells)) + "</tr>")
    if not rows:
        table = "<p class=muted>No kernel was evaluated successfully.</p>"
    else:
        table = ("<table><thead><tr>" + "".join(f'<th class="{"l" if j == 1 else ""}">{_e(h)}</th>'
                                                for j, h in enumerate(head)) + "</tr></thead><tbody>"
                 + "".join(rows) + "</tbody></table>")
    return (f'<section id="leaderboard"><h2>Leaderboard ({len(ranked)} kernels)</h2>{table}'
            f"{_quantize_tables(inputs)}</section>")


def _quantize_tables(inputs: Inputs) -> str:
    """``quantize.json`` results: fp32/int8 accuracy and side-by-side latency per variant."""
    out = []
    for q in inputs.quantize:
        base = (q.variants.get("original") or {}).get("fp32_ms")
        rows = []
        for name, v in q.variants.items():
            label = name if name != "operator" else f"operator {q.operator or ''}"
            for prec in ("fp32", "int8"):
                ms = v.get(f"{prec}_ms")
                rows.append(f'<tr><td class="l">{_e(label)}</td><td class="l">{prec}</td>'
                            f'<td class="num">{_fmt_pct(v.get(f"{prec}_accuracy"))}</td>'
                            f'<td class="num">{_fmt_num(ms)}</td>'
                            f'<td class="num">{f"{base / ms:.2f}×" if (base and ms) else "–"}</td></tr>')
        out.append(f'<h3>Quantization: {_e(q.model)} on {_e(q.dataset)} <span class=muted>({_e(q.source)})</span></h3>'
                   f'<table><thead><tr><th class="l">model</th><th class="l">precision</th><th>accuracy</th>'
                   f'<th>latency (ms)</th><th>speedup</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    return "".join(out)


def _figures(results: Sequence[FigureResult]) -> str:
    parts = []
    missing = []
    for r in results:
        if r.drawn and r.png:
            uri = "data:image/png;base64," + base64.b64encode(r.png).decode()
            notes = f" <span class=muted>({_e('; '.join(r.notes))})</span>" if r.notes else ""
            parts.append(f'<figure id="fig-{_e(r.name)}"><img alt="{_e(r.title)}" src="{uri}">'
                         f"<figcaption><b>{_e(r.title)}</b>{notes}</figcaption></figure>")
        else:
            missing.append(f"<li><b>{_e(r.title)}</b>: {_e(r.missing or 'not drawn')}</li>")
    miss = f'<p>Not drawn:</p><ul class="missing">{"".join(missing)}</ul>' if missing else ""
    return f'<section id="figures"><h2>Figures</h2>{"".join(parts)}{miss}</section>'


def _kernel_section(k: KernelDir, rank: int, session: Session, inputs: Inputs, use_dot: bool) -> str:
    loss = session.target == "loss"
    metrics = [("rank", str(rank)), ("accuracy", _fmt_pct(k.accuracy)), ("loss", _fmt_num(k.loss)),
               ("MACs / sample", _fmt_count(k.flops)), ("params", _fmt_count(k.params)),
               ("reward", _fmt_num(k.reward)), ("evaluation time", _fmt_s(k.eval_time)),
               ("found at", _fmt_s(k.time)), ("status", _e(k.status)), ("hash", f"<code>{_e(k.hash)}</code>")]
    if loss:
        metrics[1], metrics[2] = metrics[2], metrics[1]
    r = inputs.reeval_for(k)
    if r is not None:
        metrics.append(("reevaluated", f"{_fmt_pct(r.accuracy) if r.accuracy is not None else _fmt_num(r.loss)} "
                                       f"{_e(r.dataset or '')}"))
    sp = _best_speedups(inputs, k)
    if sp != "–":
        metrics.append(("speedup (bench)", sp))
    op = k.try_operator()
    if op is not None:
        try:
            metrics.append(("operator", f"<code>{_e(repr(op))}</code>"))
        except Exception:  # noqa: BLE001
            pass
    if k.path:
        metrics.append(("search path", f"<code>{_e(k.path)}</code>"))
    py = k.standalone_module()
    if py is not None:
        metrics.append(("standalone module", f"<code>{_e(py.name)}</code>"))
    dl = "".join(f"<dt>{a}</dt><dd>{b}</dd>" for a, b in metrics)
    loop = k.loop_text
    if loop is None and op is not None:
        try:
            from syno.ir.looptext import loop_text

            loop = loop_text(op)
        except Exception:  # noqa: BLE001
            loop = None
    loop_html = f"<pre class=loop>{_e(loop.rstrip())}</pre>" if loop else "<p class=muted>no loop.txt</p>"
    dot = k.dot
    if dot is None and op is not None:
        try:
            from syno.ir.dot import to_dot

            dot = to_dot(op)
        except Exception:  # noqa: BLE001
            dot = None
    if dot is None:
        diagram = "<p class=muted>no graph.dot</p>"
    else:
        svg = render_dot_svg(dot, id_prefix=_anchor(k.name) + "-") if use_dot else None
        if svg is not None:
            diagram = f'<div class="diagram">{svg}</div>'
        else:
            why = "Graphviz is not installed" if use_dot else "Graphviz rendering is off"
            diagram = f"<p class=muted>{why}; the DOT source:</p><pre class=dot>{_e(dot.rstrip())}</pre>"
    return (f'<div class="kernel" id="{_anchor(k.name)}"><h3>{rank}. {_e(k.name)}</h3>'
            f'<dl class="metrics">{dl}</dl><div class="grid"><div><h4>Loop nest</h4>{loop_html}</div>'
            f"<div><h4>Graph</h4>{diagram}</div></div></div>")


def _kernels(session: Session, inputs: Inputs, top: int, use_dot: bool) -> str:
    ranked = session.ranked()[:top]
    body = "".join(_kernel_section(k, i, session, inputs, use_dot) for i, k in enumerate(ranked, 1))
    more = len(session.ranked()) - len(ranked)
    tail = f"<p class=muted>{more} more kernel(s) in the leaderboard only (raise --top).</p>" if more > 0 else ""
    if not ranked:
        body = "<p class=muted>No successful kernel.</p>"
    return f'<section id="kernels"><h2>Kernels</h2>{body}{tail}</section>'


def _failures(session: Session, limit: int = 200) -> str:
    bad = [k for k in session.kernels if not k.ok]
    if not bad:
        return '<section id="failures"><h2>Failures</h2><p class=muted>None.</p></section>'
    rows = []
    for k in bad[:limit]:
        msg = k.message.strip().splitlines()[0][:240] if k.message.strip() else ""
        rows.append(f'<tr><td class="l">{_e(k.name)}</td><td class="l bad">{_e(k.status)}</td>'
                    f'<td class="num">{_fmt_s(k.time)}</td><td class="l">{_e(msg)}</td></tr>')
    more = f"<p class=muted>{len(bad) - limit} more.</p>" if len(bad) > limit else ""
    return (f'<section id="failures"><h2>Failures ({len(bad)})</h2><table><thead><tr><th class="l">kernel</th>'
            f'<th class="l">status</th><th>at</th><th class="l">message</th></tr></thead><tbody>{"".join(rows)}'
            f"</tbody></table>{more}</section>")


def _inputs_section(inputs: Inputs) -> str:
    items = "".join(f"<li><code>{_e(p)}</code>: {_e(what)}</li>" for p, what in inputs.files)
    probs = "".join(f"<li class=bad>{_e(p)}</li>" for p in inputs.problems)
    probs_html = f"<p>Problems:</p><ul>{probs}</ul>" if probs else ""
    return f'<section id="inputs"><h2>Inputs</h2><ul>{items}</ul>{probs_html}</section>'


# ------------------------------------------------------------------------------------------ page
def render_report(session: str | Path, extra: Iterable[str | Path] = (), *, top: int = 20,
                  use_dot: bool = True, opts: PlotOptions | None = None,
                  figures: Sequence[FigureResult] | None = None, inputs: Inputs | None = None) -> str:
    """The HTML page (a string) for ``session`` plus the ``extra`` inputs (bench CSVs, baselines, ...).
    ``inputs``/``figures``: already collected / drawn (else done here)."""
    root = Path(session)
    if inputs is None:
        inputs = collect([root, *extra])
    sess = next((s for s in inputs.sessions if s.root == root), None)
    if sess is None:
        from .inputs import load_session

        sess = load_session(root, inputs.problems) if root.is_dir() else Session(root=root)
        if root.is_dir():
            inputs.sessions.insert(0, sess)
    if figures is None:
        figures = plot_all(inputs, None, opts or PlotOptions(), keep_png=True)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = f"syno report: {sess.name}"
    nav = "".join(f'<a href="#{s}">{s}</a>' for s in ("summary", "leaderboard", "figures", "kernels", "failures",
                                                     "inputs"))
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>'
        f"<header><h1>{_e(title)}</h1><p>generated {now} · {_e(inputs.summary())}</p><nav>{nav}</nav></header>"
        f"<main>{_summary(sess, inputs)}{_leaderboard(sess, inputs, top)}{_figures(figures)}"
        f"{_kernels(sess, inputs, top, use_dot)}{_failures(sess)}{_inputs_section(inputs)}</main></body></html>\n")


def write_report(session: str | Path, out: str | Path | None = None, extra: Iterable[str | Path] = (), *,
                 top: int = 20, use_dot: bool = True, opts: PlotOptions | None = None) -> tuple[Path, list[FigureResult]]:
    """Write the report (default ``<session>/report.html``); returns its path and the figure results."""
    root = Path(session)
    if not root.is_dir():
        raise FileNotFoundError(f"session directory {str(root)!r} does not exist")
    inputs = collect([root, *extra])
    figures = plot_all(inputs, None, opts or PlotOptions(), keep_png=True)
    page = render_report(root, extra, top=top, use_dot=use_dot, opts=opts, figures=figures, inputs=inputs)
    path = Path(out) if out is not None else root / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page)
    tmp.replace(path)
    return path, list(figures)
