"""Figure ``search-latency``: accuracy against the latency the search measured for every kernel.

One panel per session whose kernels carry a ``latency`` block (:mod:`syno.search.latency`): the
proxy accuracy of each trained kernel against its measured end-to-end forward latency, the Pareto
front (lower latency, higher accuracy), the original model's latency (the baseline the speedups are
relative to) as a dashed line, and kernels rejected as ``slow`` before training as crosses on the
bottom edge at their latency. The device, batch and dtype of the measurements are in the title.
"""

from __future__ import annotations

from .figures import MissingInput, PlotOptions, _pareto, _session_panels

__all__ = ["fig_search_latency"]


def _model_record(meta: dict) -> dict | None:
    from syno.search.latency import latency_records

    return next((r for r in latency_records(meta) if r.get("scope") == "model"
                 and r.get("mode", "forward") == "forward" and isinstance(r.get("ms"), (int, float))), None)


def fig_search_latency(inputs, opts: PlotOptions | None = None):
    panels = []
    for s in inputs.sessions:
        recs = [(k, _model_record(k.meta)) for k in s.kernels]
        recs = [(k, r) for k, r in recs if r is not None]
        if recs:
            panels.append((s, recs))
    if not panels:
        raise MissingInput("no kernel with a measured latency (search with latency.enabled, the default since "
                           "issue 16, records it in meta.json)")
    fig, axes, panels, notes = _session_panels(panels, 4.0)
    for ax, (s, recs) in zip(axes, panels):
        loss = s.target == "loss"
        xy, slow = [], []
        for k, r in recs:
            v = s.metric(k)
            if k.ok and v is not None:
                xy.append((float(r["ms"]), v if loss else 100 * v))
            elif k.status == "slow":
                slow.append(float(r["ms"]))
        if loss:  # the Pareto front wants "higher is better"
            front = [(x, -y) for x, y in _pareto([(x, -y) for x, y in xy])]
        else:
            front = _pareto(xy)
        if xy:
            ax.scatter([p[0] for p in xy], [p[1] for p in xy], s=16, color="#9ecae1", label=f"trained ({len(xy)})")
            ax.plot([p[0] for p in front], [p[1] for p in front], "-o", color="#08519c", ms=4, lw=1.4,
                    label="Pareto front")
        if slow:
            ax.scatter(slow, [0.03] * len(slow), marker="x", color="#d62728", s=18, clip_on=False,
                       transform=ax.get_xaxis_transform(), label=f"slow, not trained ({len(slow)})")
        base_ms = [r.get("baseline_ms") for _, r in recs if isinstance(r.get("baseline_ms"), (int, float))]
        if base_ms:
            ax.axvline(base_ms[0], color="black", ls="--", lw=0.9, label=f"original model {base_ms[0]:.3g} ms")
        b = inputs.baseline_for(s.model, s.dataset, metric="loss" if loss else "accuracy")
        if b is not None:
            bv = b.loss if loss else (100 * b.accuracy if b.accuracy is not None else None)
            if bv is not None:
                ax.axhline(bv, color="gray", ls=":", lw=0.9, label=f"baseline {bv:.2f}")
        xs = [p[0] for p in xy] + slow + base_ms[:1]
        ax.set_xlim(0, 1.08 * max(xs))  # the crosses drawn in axes coordinates do not autoscale
        r0 = recs[0][1]
        ax.set_title(f"{s.name}" + (f" · {s.model}" if s.model else "") +
                     f"\n{r0.get('device', '?')} · N={r0.get('batch')} · {r0.get('dtype', '')}", fontsize=8)
        ax.set_xlabel("measured latency, forward, end to end (ms)")
        ax.set_ylabel("proxy loss" if loss else "proxy accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Accuracy vs measured latency (search)")
    return fig, notes
