"""Int8 post-training quantization of a zoo model with and without a found operator.

Method (checked on torch 2.14, CPU): PyTorch 2 Export quantization (``prepare_pt2e``/``convert_pt2e``
with ``X86InductorQuantizer``) is no longer part of torch itself (it moved to the separate
``torchao`` package, which this project does not depend on), so this uses **FX graph mode
quantization** (``torch.ao.quantization.quantize_fx``), which is still in torch 2.14 and produces
real int8 kernels (fbgemm/oneDNN through the ``x86`` backend) in eager execution:

* ``prepare_fx`` with the backend's default static qconfig (per-channel symmetric int8 weights,
  histogram-observed uint8 activations), conv+BN(+ReLU) folded;
* calibration: forward passes over ``calib_batches`` training batches (observers only);
* ``convert_fx``: quantized Conv/Linear/add-ReLU modules.

A synthesized operator (:class:`syno.codegen.torch.SynoModule`) has no int8 kernel, so it is kept
*non-traceable*: it runs in fp32 between a dequantize and a quantize, while everything around it
is int8. (The original only *simulated* int8 with fake-quant modules for accuracy, and took the int8
latency from a TVM build of torchvision's quantized ResNet-18; here both numbers come from the same
executable model.)

Latency is measured side by side (:func:`compare_latency`): the models run interleaved, round
after round, on the same input, so machine load affects all of them alike; the median per model is
reported with the int8/fp32 ratio.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from syno.train.classifier import evaluate_classifier

__all__ = ["quantize_fx", "compare_latency", "quantize_experiment", "Fp32Island", "QUANT_FILE"]

QUANT_FILE = "quantize.json"


def _non_traceable_classes() -> list[type]:
    classes: list[type] = []
    try:
        from syno.codegen.torch import SynoModule

        classes.append(SynoModule)
    except ImportError:  # pragma: no cover
        pass
    return classes


class Fp32Island(nn.Module):
    """Runs a module that has no int8 kernel in fp32 inside a quantized model.

    FX quantization hands it the dequantized output of an int8 conv, which is channels-last; the
    generated einsum code is much faster on a contiguous tensor, so it gets one."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.contiguous())


def _wrap_islands(model: nn.Module, classes: tuple[type, ...]) -> None:
    for parent in list(model.modules()):
        if isinstance(parent, Fp32Island):
            continue
        for name, child in list(parent.named_children()):
            if isinstance(child, classes):
                setattr(parent, name, Fp32Island(child))


def quantize_fx(model: nn.Module, calib_batches, *, backend: str = "x86",
                leaf_classes: list[type] | None = None) -> nn.Module:
    """An int8 copy of ``model`` (eval mode), calibrated on the input tensors of ``calib_batches``.

    ``calib_batches``: an iterable of input tensors or ``(input, label)`` pairs (at least one).
    ``leaf_classes``: module classes kept in fp32 and not traced into (default: generated operators).
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if backend not in torch.backends.quantized.supported_engines:
        raise ValueError(f"quantized engine {backend!r} unavailable; have {torch.backends.quantized.supported_engines}")
    torch.backends.quantized.engine = backend
    batches = [b[0] if isinstance(b, (tuple, list)) else b for b in calib_batches]
    if not batches:
        raise ValueError("calibration needs at least one batch")
    m = copy.deepcopy(model).cpu().eval()
    leaves = tuple(leaf_classes if leaf_classes is not None else _non_traceable_classes())
    if leaves:
        _wrap_islands(m, leaves)
    custom = PrepareCustomConfig().set_non_traceable_module_classes([Fp32Island])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FX quantization announces its own deprecation on every call
        prepared = prepare_fx(m, get_default_qconfig_mapping(backend), (batches[0].cpu(),),
                              prepare_custom_config=custom)
        with torch.no_grad():
            for x in batches:
                prepared(x.cpu())
        q = convert_fx(prepared)
    return q.eval()


@torch.no_grad()
def compare_latency(models: dict[str, nn.Module], x: torch.Tensor, *, rounds: int = 30, warmup: int = 3,
                    min_round_s: float = 0.0, threads: int | None = None) -> dict[str, dict[str, float]]:
    """Median / mean / min milliseconds per forward of each model, measured interleaved.

    Every round times each model once, in a rotating order (so none always runs first after the
    others), after ``warmup`` untimed calls each. ``min_round_s`` repeats a call within a round until
    that much time has passed (for very fast models). ``threads`` sets ``torch.set_num_threads``."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        names = list(models)
        for m in models.values():
            m.eval()
            for _ in range(warmup):
                m(x)
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for n in order:
                reps, t0 = 0, time.perf_counter()
                while True:
                    models[n](x)
                    reps += 1
                    if time.perf_counter() - t0 >= min_round_s:
                        break
                times[n].append((time.perf_counter() - t0) / reps * 1e3)
        return {n: {"median_ms": statistics.median(t), "mean_ms": statistics.fmean(t), "min_ms": min(t),
                    "rounds": len(t)} for n, t in times.items()}
    finally:
        torch.set_num_threads(old)


def quantize_experiment(model_name: str, dataset: str, out: str | Path, *, kernel_dir: str | Path | None = None,
                        operator: str | None = None, data=None, data_dir: str | Path | None = None,
                        image_size: int | None = None, model_kwargs: dict[str, Any] | None = None,
                        overrides: dict[str, Any] | None = None, resume: bool = False, calib_batches: int = 8,
                        calib_batch_size: int = 32, latency_batch: int = 1, latency_rounds: int = 30,
                        threads: int | None = None, backend: str = "x86", factory=None,
                        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train (or resume) ``model_name`` on ``dataset`` without and with an operator, quantize both to
    int8, and report fp32/int8 accuracy and side-by-side CPU latency; writes ``out/quantize.json``.

    The operator comes from a kernel directory (``kernel_dir``, its serialized IR) or a hand-built
    one by name (``operator``: ``operator1``, ``stacked_conv``). Each variant is trained with the
    dataset's reevaluation recipe (:func:`syno.post.reevaluate.recipe`, ``overrides`` applied) and
    checkpointed under ``out/train-<variant>/``: with ``resume`` a finished training is reused.
    """
    from .custom import custom_operator
    from syno.session import read_kernel_dir, write_json_atomic
    from syno.train.pipeline import load_task_data

    from .reevaluate import recipe, train_operator

    say = log or (lambda _m: None)
    if dataset == "lm1b" or model_name == "gpt2":
        raise ValueError("quantize supports the vision models (static int8 of convs/linears)")
    if kernel_dir is not None and operator is not None:
        raise ValueError("give either kernel_dir or operator, not both")
    op = None
    op_label = None
    if kernel_dir is not None:
        rec = read_kernel_dir(kernel_dir)
        op, op_label = rec.operator(), rec.name
    elif operator is not None:
        op, op_label = custom_operator(operator), operator
    if data is None:  # before OUT is created: missing data leaves nothing behind
        data = load_task_data(dataset, data_dir, image_size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    options, extra = recipe(dataset, **(overrides or {}))
    options = options.model_copy(update={"device": "cpu" if options.device == "auto" and not torch.cuda.is_available()
                                         else options.device})
    variants: dict[str, Any] = {"original": None}
    if op is not None:
        variants["operator"] = op
    report: dict[str, Any] = {"format": "syno.quantize/1", "model": model_name, "dataset": dataset,
                              "operator": op_label, "operator_hash": op.hash if op is not None else None,
                              "method": f"torch.ao FX graph mode static int8 ({backend} engine); generated "
                                        f"operators stay fp32", "backend": backend,
                              "calibration": {"batches": calib_batches, "batch_size": calib_batch_size},
                              "options": options.model_dump(), "variants": {}}
    x_lat = torch.randn(latency_batch, data.in_channels, data.image_size, data.image_size)
    calib = []
    for i, (x, _) in enumerate(data.train_batches(calib_batch_size, seed=1234, epoch=0, drop_last=False)):
        if i >= calib_batches:
            break
        calib.append(x.cpu())
    timed: dict[str, nn.Module] = {}
    for name, vop in variants.items():
        say(f"{name}: training {model_name} on {dataset}")
        tr, fields, model = train_operator(vop, model_name, dataset, data, out / f"train-{name}", options=options,
                                           extra=extra, resume=resume, model_kwargs=model_kwargs, factory=factory)
        if tr.status not in ("ok",):
            raise RuntimeError(f"training the {name} model stopped: {tr.status} {tr.reason}")
        model = model.cpu().eval()
        _, acc32 = evaluate_classifier(model, data, batch_size=256)
        say(f"{name}: fp32 accuracy {acc32:.4f}; quantizing")
        qmodel = quantize_fx(model, calib, backend=backend)
        _, acc8 = evaluate_classifier(qmodel, data, batch_size=256)
        say(f"{name}: int8 accuracy {acc8:.4f}")
        report["variants"][name] = {"fp32_accuracy": acc32, "int8_accuracy": acc8,
                                    "accuracy_drop": acc32 - acc8, "train_accuracy_metric": fields.get("accuracy"),
                                    "flops": fields.get("flops"), "params": fields.get("params"),
                                    "train_status": tr.status, "epochs": tr.epochs}
        timed[f"{name}/fp32"] = model
        timed[f"{name}/int8"] = qmodel
    say(f"latency: {len(timed)} models side by side, {latency_rounds} rounds, batch {latency_batch}")
    lat = compare_latency(timed, x_lat, rounds=latency_rounds, threads=threads)
    for name in variants:
        v = report["variants"][name]
        v["fp32_ms"] = lat[f"{name}/fp32"]["median_ms"]
        v["int8_ms"] = lat[f"{name}/int8"]["median_ms"]
        v["int8_over_fp32"] = v["int8_ms"] / v["fp32_ms"]
    if "operator" in variants:
        base = lat["original/fp32"]["median_ms"]
        for k in ("operator/fp32", "operator/int8", "original/int8"):
            report.setdefault("relative_to_original_fp32", {})[k] = lat[k]["median_ms"] / base
    report["latency"] = {"batch": latency_batch, "input": list(x_lat.shape), "rounds": latency_rounds,
                         "threads": threads or torch.get_num_threads(), "per_model": lat}
    write_json_atomic(out / QUANT_FILE, report)
    return report
