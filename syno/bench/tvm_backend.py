"""Optional TVM backend (``pip install 'syno[tvm]'``, apache-tvm >= 0.27): Relax import + MetaSchedule.

The model is exported with ``torch.export`` and imported with
``tvm.relax.frontend.torch.from_exported_program`` (weights become constants). With
``trials == 0`` it is built with TVM's default pipeline (its untuned default schedules); with
``trials > 0`` it goes through ``relax.pipeline.static_shape_tuning_pipeline`` (MetaSchedule
tuning of every fused TIR function, ``max_trials_global=trials``, records in ``work_dir``, then
``MetaScheduleApplyDatabase``), as the original's ``export_relax.py`` + ``MetaScheduleTuner``
did (reference §4.1) but without an RPC tracker: the local machine is both builder and runner.
Tuning runs in a spawned child process (MetaSchedule also needs ``psutil`` and ``xgboost``).
With apache-tvm 0.27.0.post1 that child segfaults inside TVM (``tvm::ffi::ToJSONGraph``) even for
a single conv, so ``trials > 0`` currently yields an error row; ``trials == 0`` works.

When ``tvm`` is not importable, :func:`tvm_available` says why and the ``tvm`` backend is skipped.
"""

from __future__ import annotations

import importlib
import multiprocessing
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

__all__ = ["tvm_available", "compile_tvm", "TVMCompiled", "tvm_target"]


def tvm_available() -> tuple[bool, str]:
    """(True, version) or (False, the reason with the install hint)."""
    try:
        tvm = importlib.import_module("tvm")
        importlib.import_module("tvm.relax.frontend.torch")
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable"
        return False, (f"apache-tvm is not importable ({type(exc).__name__}: {exc}); "
                       "install it with: pip install 'syno[tvm]'")
    return True, getattr(tvm, "__version__", "unknown")


@dataclass
class TVMCompiled:
    run: Callable[[], object]
    config: str
    compile_s: float
    backend: str = "tvm"


def tvm_target(device: torch.device):
    import tvm

    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return tvm.target.Target({"kind": "cuda", "arch": f"sm_{major}{minor}"},
                                 host={"kind": "llvm"})
    return tvm.target.Target({"kind": "llvm", "num-cores": torch.get_num_threads()})


def _import(model: nn.Module, x: torch.Tensor):
    from tvm.relax.frontend.torch import from_exported_program

    with torch.no_grad():
        ep = torch.export.export(model, (x,))
    return from_exported_program(ep, keep_params_as_input=False)


def _tune_worker(model: nn.Module, x: torch.Tensor, work_dir: str, trials: int, per_task: int,
                 device: str) -> None:
    from tvm import relax

    # The model arrives as a Process argument, from the parent's memory: no file on disk is ever
    # unpickled (torch.load(weights_only=False) of a work_dir file would run whatever code it holds).
    mod = _import(model, x)
    relax.pipeline.static_shape_tuning_pipeline(total_trials=trials, target=tvm_target(torch.device(device)),
                                                work_dir=work_dir, max_trials_per_task=per_task)(mod)


def compile_tvm(model: nn.Module, example: torch.Tensor, *, trials: int = 0, work_dir: str | Path | None = None,
                max_trials_per_task: int | None = None, log=None) -> TVMCompiled:
    """Export, (tune,) build ``model`` for ``example``'s device; ``run()`` does one inference."""
    ok, why = tvm_available()
    if not ok:
        raise RuntimeError(why)
    import tvm
    from tvm import relax

    device = example.device
    t0 = time.perf_counter()
    cpu_model = model.eval().to("cpu")
    x_cpu = example.detach().to("cpu")
    mod = _import(cpu_model, x_cpu)
    target = tvm_target(device)
    if trials > 0:
        wd = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="syno_tvm_"))
        wd.mkdir(parents=True, exist_ok=True)
        if log:
            log(f"tvm: MetaSchedule tuning, {trials} trials, records in {wd}")
        # Tuning runs in a child process: a crash inside TVM (seen: a segfault in
        # tvm::ffi::ToJSONGraph with apache-tvm 0.27.0.post1) becomes an error row, not a dead run.
        proc = multiprocessing.get_context("spawn").Process(
            target=_tune_worker, args=(cpu_model, x_cpu, str(wd), trials, max_trials_per_task or trials,
                                       str(device)))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"MetaSchedule tuning process failed (exit code {proc.exitcode}); logs in {wd}/logs")
        # total_trials=0: no tuning, only MetaScheduleApplyDatabase over the child's records.
        mod = relax.pipeline.static_shape_tuning_pipeline(total_trials=0, target=target, work_dir=str(wd))(mod)
    ex = tvm.compile(mod, target=target)
    dev = tvm.cuda(device.index or 0) if device.type == "cuda" else tvm.cpu()
    vm = relax.VirtualMachine(ex, dev)
    inp = tvm.runtime.tensor(x_cpu.numpy(), dev)
    main = vm["main"]

    if device.type == "cuda":
        def run():
            out = main(inp)
            dev.sync()
            return out
    else:
        def run():
            return main(inp)

    run()
    run()
    return TVMCompiled(run=run, config=f"tvm-{tvm.__version__}+trials={trials}",
                       compile_s=time.perf_counter() - t0)
