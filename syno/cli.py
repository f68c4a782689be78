"""The one syno command line: each command is a thin wrapper over the package API."""

from __future__ import annotations

import typer

app = typer.Typer(help="syno: synthesize neural operators and search for fast, accurate ones.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)


@app.command()
def baseline(
    model: str = typer.Argument(..., help="zoo model: tiny, resnet18, resnet34, resnext29_2x64d, "
                                          "efficientnet_v2_s, densenet121, gpt2"),
    dataset: str = typer.Argument(..., help="digits (embedded), cifar100, imagenet, lm1b"),
    data_dir: str | None = typer.Option(None, "--data-dir", help="dataset directory (default $SYNO_DATA_DIR or ~/data)"),
    out: str = typer.Option("baseline-out", "--out", help="output directory for baseline.json"),
    epochs: int | None = typer.Option(None, "--epochs", help="vision epochs (default 100)"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    lr: float | None = typer.Option(None, "--lr"),
    time_budget: float | None = typer.Option(None, "--time-budget", help="wall-clock limit in seconds"),
    max_iters: int | None = typer.Option(None, "--max-iters", help="lm1b: training steps (0 = unlimited)"),
    seq_len: int | None = typer.Option(None, "--seq-len", help="lm1b: sequence length (default 2048)"),
    image_size: int | None = typer.Option(None, "--image-size", help="resize images (e.g. 224 as the original)"),
    model_opt: list[str] = typer.Option([], "--model-opt", help="model option key=value (e.g. n_layer=4), repeatable"),
    device: str = typer.Option("auto", "--device"),
    seed: int = typer.Option(42, "--seed"),
    compile: bool = typer.Option(False, "--compile/--no-compile"),
    amp: bool | None = typer.Option(None, "--amp/--no-amp", help="default: on for CUDA"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train an unmodified zoo MODEL on DATASET; write OUT/baseline.json (accuracy/loss, MACs, params, time)."""
    import json

    from syno.train.baseline import run_baseline
    from syno.train.options import LMTrainOptions, VisionTrainOptions

    kwargs = {}
    for item in model_opt:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--model-opt {item!r} is not key=value")
        kwargs[key] = json.loads(value) if value[:1] in "-0123456789tfn[{" else value
    common = dict(device=device, seed=seed, compile=compile, amp=amp, progress=progress)
    given = {k: v for k, v in dict(batch_size=batch_size, lr=lr, time_budget_s=time_budget).items() if v is not None}
    if dataset == "lm1b":
        given.update({k: v for k, v in dict(max_iters=max_iters, seq_len=seq_len).items() if v is not None})
        options = LMTrainOptions(**common, **given)
    else:
        if epochs is not None:
            given["epochs"] = epochs
        options = VisionTrainOptions(**common, **given)
    try:
        record = run_baseline(model, dataset, out, options, data_dir=data_dir, image_size=image_size,
                              model_kwargs=kwargs)
    except (FileNotFoundError, ValueError, TypeError) as e:  # missing data, unknown names: one clear line
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    metric = "loss" if dataset == "lm1b" else "accuracy"
    typer.echo(json.dumps({k: record[k] for k in ("model", "dataset", metric, "flops", "params", "time_s", "status")}))


from syno.bench.cli import bench as _bench  # noqa: E402  (light: heavy imports happen inside the command)

app.command("bench")(_bench)

from syno.report.cli import plot as _plot, report as _report  # noqa: E402  (matplotlib loads inside)

app.command("plot")(_plot)
app.command("report")(_report)

from syno.search.cli import demo as _demo, search as _search, show as _show  # noqa: E402  (torch loads inside)

app.command("search")(_search)
app.command("demo")(_demo)
app.command("show")(_show)


from syno.post.cli import (quantize as _quantize, reevaluate as _reevaluate, select as _select,  # noqa: E402
                           train_custom as _train_custom)

app.command("select")(_select)
app.command("reevaluate")(_reevaluate)
app.command("train-custom")(_train_custom)
app.command("quantize")(_quantize)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
