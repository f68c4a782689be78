from __future__ import annotations

import pytest
import torch

from .builders import build_all


@pytest.fixture(scope="session")
def report_inputs(tmp_path_factory):
    """A digits search session, a tiny baseline, a bench CSV and LM loss logs, all written by the real
    writers (see builders.py); about a minute on one CPU thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; keep the trainings lean
    try:
        return build_all(tmp_path_factory.mktemp("report-inputs"))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def all_paths(report_inputs):
    paths = [report_inputs["session"], report_inputs["baseline"], report_inputs["bench"], report_inputs["lm"]]
    return paths + [report_inputs[k] for k in ("reeval", "quantize") if report_inputs[k] is not None]


@pytest.fixture(scope="session")
def plotted(report_inputs, all_paths, tmp_path_factory):
    from syno.report import collect, plot_all

    out = tmp_path_factory.mktemp("figures")
    results = plot_all(collect(all_paths), out)
    return out, {r.name: r for r in results}
