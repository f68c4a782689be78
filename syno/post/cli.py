"""``syno select | reevaluate | train-custom | quantize`` (registered in :mod:`syno.cli`).

Heavy imports happen inside the commands, so ``syno --help`` stays fast. Errors about inputs
(missing session, data, bad names) print one ``error:`` line and exit with status 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from syno.cli_errors import fail as _fail




def _kv(items: list[str], what: str) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} {item!r} is not key=value")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _say(quiet: bool):
    if quiet:
        return None
    return lambda msg: typer.echo(msg, err=True)


def _train_overrides(epochs, batch_size, lr, max_iters, time_budget, device, progress, sets) -> dict:
    given = dict(epochs=epochs, batch_size=batch_size, lr=lr, max_iters=max_iters, time_budget_s=time_budget,
                 device=device, progress=progress)
    out = {k: v for k, v in given.items() if v is not None}
    out.update(_kv(sets, "--set"))
    return out


_DATASET_HELP = "imagenet (ImageFolder), cifar100 (pickle dir), digits (embedded), lm1b (token files)"


def select(
    session: Path = typer.Argument(..., metavar="SESSION", help="search session directory"),
    top: int = typer.Option(10, "--top", "-k", help="number of kernels to keep"),
    min_flops_ratio: Optional[float] = typer.Option(None, "--min-flops-ratio", help="keep model FLOPs >= this x baseline"),
    max_flops_ratio: Optional[float] = typer.Option(None, "--max-flops-ratio", help="keep model FLOPs <= this x baseline"),
    baseline_flops: Optional[float] = typer.Option(None, "--baseline-flops",
                                                   help="baseline MACs/sample (default: the session's reference)"),
    dedup: bool = typer.Option(True, "--dedup/--no-dedup", help="drop same / near-same operators"),
    tol: float = typer.Option(0.05, "--tol", help="near-same: mutual fit residual below this"),
    steps: int = typer.Option(300, "--probe-steps", help="Adam steps of each fit"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output file (default SESSION/selected.json)"),
    min_speedup: Optional[float] = typer.Option(None, "--min-speedup", help="keep kernels measured at least this "
                                                "much faster than the original model (speedup the search recorded)"),
    sort: str = typer.Option("accuracy", "--sort", help="rank by accuracy (loss) or by measured speedup"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Pick the TOP most accurate kernels of SESSION inside a FLOPs window, without duplicates; write selected.json."""
    from syno.post.equivalence import ProbeConfig
    from syno.post.select import select_kernels, session_baseline_flops

    if baseline_flops is None and session.is_dir():  # the ratio `syno show` prints, window or not
        baseline_flops = session_baseline_flops(session)
    try:
        res = select_kernels(session, top, min_flops_ratio=min_flops_ratio, max_flops_ratio=max_flops_ratio,
                             baseline_flops=baseline_flops, dedup=dedup, probe=ProbeConfig(tol=tol, steps=steps),
                             out=out, log=_say(quiet), min_speedup=min_speedup,
                             rank_by={"accuracy": "metric", "loss": "metric"}.get(sort, sort))
    except (FileNotFoundError, ValueError) as e:
        _fail(e)
    for e in res["selected"]:
        ratio = f"{e['flops_ratio']:.3f}" if e.get("flops_ratio") is not None else "-"
        metric = e["accuracy"] if res["target"] == "accuracy" else e["loss"]
        speed = f"  speedup={e['speedup']:.3f}" if e.get("speedup") is not None else ""
        typer.echo(f"{e['rank']:>3}  {e['name']}  {res['target']}={metric:.4f}  flops_ratio={ratio}{speed}")
    c = res["counts"]
    typer.echo(f"selected {c['selected']} of {c['kernels']} kernels ({c['in_window']} in window, "
               f"{c['duplicates']} duplicates) -> {out or session / 'selected.json'}")


def reevaluate(
    session: Optional[Path] = typer.Argument(None, metavar="SESSION",
                                            help="search session directory (uses its selected.json if present)"),
    dataset: str = typer.Option(..., "--dataset", "-d", help=_DATASET_HELP),
    top: Optional[int] = typer.Option(None, "--top", "-k", help="how many kernels (default: all selected)"),
    kernels: List[Path] = typer.Option([], "--kernels", help="kernel directories instead of a session (repeatable)"),
    model: Optional[str] = typer.Option(None, "--model", help="zoo model (default: recorded in the kernel/session)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="write results to OUT/<kernel>/ instead of the kernel dirs"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
    image_size: Optional[int] = typer.Option(None, "--image-size"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    max_iters: Optional[int] = typer.Option(None, "--max-iters", help="lm1b: training steps (default 100000)"),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="seconds per kernel in this run; resume later"),
    device: Optional[str] = typer.Option(None, "--device"),
    sets: List[str] = typer.Option([], "--set", "-s", help="training option key=value (e.g. max_steps_per_epoch=5)"),
    model_opt: List[str] = typer.Option([], "--model-opt", help="model option key=value"),
    resume: bool = typer.Option(False, "--resume", help="skip finished kernels, continue from checkpoints"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Retrain chosen kernels on the full task; write reeval.json per kernel and reeval-<dataset>.json/.csv."""
    from syno.post.reevaluate import DATASETS, reevaluate as run

    if dataset not in DATASETS:
        _fail(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    if session is None and not kernels:
        _fail("give a SESSION or --kernels DIR")
    try:
        res = run(dataset, session=session, kernels=kernels, top=top, model=model, out=out, data_dir=data_dir,
                  image_size=image_size, model_kwargs=_kv(model_opt, "--model-opt") if model_opt else None,
                  overrides=_train_overrides(epochs, batch_size, lr, max_iters, time_budget, device, progress, sets),
                  resume=resume, log=_say(quiet))
    except (FileNotFoundError, ValueError) as e:
        _fail(e)
    for r in res["kernels"]:
        typer.echo(f"{r['name']}  {r['status']}  accuracy={r.get('accuracy')}  loss={r.get('loss')}")


def train_custom(
    model: str = typer.Argument(..., metavar="MODEL", help="zoo model, e.g. resnet18"),
    kernel: str = typer.Option(..., "--kernel", help="operator1 or stacked_conv"),
    dataset: str = typer.Option(..., "--dataset", "-d", help=_DATASET_HELP),
    out: Path = typer.Option(Path("custom-kernels"), "--out", "-o", help="directory for the kernel directory"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
    image_size: Optional[int] = typer.Option(None, "--image-size"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    time_budget: Optional[float] = typer.Option(None, "--time-budget"),
    device: Optional[str] = typer.Option(None, "--device"),
    sets: List[str] = typer.Option([], "--set", "-s", help="training option key=value"),
    model_opt: List[str] = typer.Option([], "--model-opt"),
    resume: bool = typer.Option(False, "--resume"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train MODEL with one of the paper's hand-written kernels; write a kernel directory under OUT."""
    from syno.post.custom import CUSTOM_KERNELS, train_custom as run
    from syno.post.reevaluate import DATASETS

    if kernel not in CUSTOM_KERNELS:
        _fail(f"unknown kernel {kernel!r}; choose from {', '.join(sorted(CUSTOM_KERNELS))}")
    if dataset not in DATASETS:
        _fail(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    try:
        meta = run(model, kernel, dataset, out, data_dir=data_dir, image_size=image_size,
                   model_kwargs=_kv(model_opt, "--model-opt"),
                   overrides=_train_overrides(epochs, batch_size, lr, None, time_budget, device, progress, sets),
                   resume=resume, log=_say(quiet))
    except (FileNotFoundError, ValueError) as e:
        _fail(e)
    typer.echo(json.dumps({k: meta.get(k) for k in ("kernel", "model", "dataset", "status", "accuracy", "loss",
                                                    "flops", "params")}))


def quantize(
    model: str = typer.Argument(..., metavar="MODEL", help="zoo vision model, e.g. resnet18"),
    dataset: str = typer.Option(..., "--dataset", "-d", help="imagenet, cifar100, digits"),
    kernel: Optional[Path] = typer.Option(None, "--kernel", help="kernel directory (its serialized operator)"),
    operator: Optional[str] = typer.Option(None, "--operator", help="hand-built operator: operator1, stacked_conv"),
    out: Path = typer.Option(Path("quantize-out"), "--out", "-o", help="output directory"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
    image_size: Optional[int] = typer.Option(None, "--image-size"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    device: Optional[str] = typer.Option(None, "--device", help="training device (quantized models run on CPU)"),
    sets: List[str] = typer.Option([], "--set", "-s", help="training option key=value"),
    model_opt: List[str] = typer.Option([], "--model-opt"),
    calib_batches: int = typer.Option(8, "--calib-batches"),
    latency_batch: int = typer.Option(1, "--latency-batch"),
    rounds: int = typer.Option(30, "--rounds", help="latency rounds (models interleaved)"),
    threads: Optional[int] = typer.Option(None, "--threads"),
    resume: bool = typer.Option(False, "--resume", help="reuse finished trainings in OUT"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Int8 post-training quantization of MODEL with and without an operator: accuracy and CPU latency."""
    from syno.models import VISION_MODEL_NAMES
    from syno.post.quantize import quantize_experiment
    from syno.post.reevaluate import DATASETS

    if kernel is not None and operator is not None:
        _fail("give --kernel or --operator, not both")
    # checked here, before anything is written: a typo must not leave an empty OUT behind
    if model not in VISION_MODEL_NAMES:
        _fail(f"unknown vision model {model!r}; choose from {', '.join(VISION_MODEL_NAMES)}")
    if dataset not in DATASETS or dataset == "lm1b":
        _fail(f"unknown dataset {dataset!r} for quantize; choose from imagenet, cifar100, digits")
    try:
        rep = quantize_experiment(model, dataset, out, kernel_dir=kernel, operator=operator, data_dir=data_dir,
                                  image_size=image_size, model_kwargs=_kv(model_opt, "--model-opt"),
                                  overrides=_train_overrides(epochs, batch_size, lr, None, None, device, progress,
                                                             sets),
                                  resume=resume, calib_batches=calib_batches, latency_batch=latency_batch,
                                  latency_rounds=rounds, threads=threads, log=_say(quiet))
    except (FileNotFoundError, ValueError) as e:
        _fail(e)
    for name, v in rep["variants"].items():
        typer.echo(f"{name:9s} fp32 acc {v['fp32_accuracy']:.4f}  int8 acc {v['int8_accuracy']:.4f}  "
                   f"fp32 {v['fp32_ms']:.2f} ms  int8 {v['int8_ms']:.2f} ms  int8/fp32 {v['int8_over_fp32']:.3f}")
    typer.echo(f"-> {out / 'quantize.json'}")
