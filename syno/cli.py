"""The one syno command line: each command is a thin wrapper over the package API."""

from __future__ import annotations

import typer

from syno import __version__
from syno.cli_errors import SynoGroup, fail

# rich_markup_mode=None: plain click help. Rich markup ate "[ray]" in "pip install syno[ray]" and
# showed a "<bool>" metavar on flags; plain help prints help texts verbatim.
app = typer.Typer(cls=SynoGroup, help="syno: synthesize neural operators and search for fast, accurate ones.",
                  epilog="Docs: README.md and docs/*.md of the source tree (docs/cli.md: commands, flags, errors); "
                         "`syno COMMAND --help` for each command.",
                  no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"syno {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="print the Python traceback of an error (or SYNO_DEBUG=1)"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="print the version and exit"),
) -> None:
    """syno: synthesize neural operators and search for fast, accurate ones."""


@app.command()
def baseline(
    model: str | None = typer.Argument(None, metavar="MODEL", help="zoo model: tiny, resnet18, resnet34, resnext29_2x64d, "
                                                  "efficientnet_v2_s, densenet121, gpt2 (default: the --session's)"),
    dataset: str | None = typer.Argument(None, metavar="DATASET", help="digits (embedded), cifar100, imagenet, lm1b "
                                                    "(default: the --session's)"),
    session: str | None = typer.Option(None, "--session", help="search session: train with its recipe (model, "
                                       "dataset, image size, epochs, batch size, lr, ... as its kernels were "
                                       "trained); the options below still override"),
    data_dir: str | None = typer.Option(None, "--data-dir", help="dataset directory (default $SYNO_DATA_DIR or ~/data)"),
    out: str | None = typer.Option(None, "--out", "-o", help="output directory for baseline.json "
                                   "(default baseline-out, or the --session directory)"),
    epochs: int | None = typer.Option(None, "--epochs", help="vision epochs (default 100)"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    lr: float | None = typer.Option(None, "--lr"),
    time_budget: float | None = typer.Option(None, "--time-budget", help="wall-clock limit in seconds"),
    max_iters: int | None = typer.Option(None, "--max-iters", help="lm1b: training steps (0 = unlimited)"),
    seq_len: int | None = typer.Option(None, "--seq-len", help="lm1b: sequence length (default 2048)"),
    image_size: int | None = typer.Option(None, "--image-size", help="resize images (e.g. 224 as the original)"),
    model_opt: list[str] = typer.Option([], "--model-opt", help="model option key=value (e.g. n_layer=4), repeatable"),
    device: str | None = typer.Option(None, "--device", help="auto (default), cpu, cuda"),
    seed: int | None = typer.Option(None, "--seed", help="default 42"),
    compile: bool | None = typer.Option(None, "--compile/--no-compile"),
    amp: bool | None = typer.Option(None, "--amp/--no-amp", help="default: on for CUDA"),
    progress: bool | None = typer.Option(None, "--progress/--no-progress"),
) -> None:
    """Train an unmodified zoo MODEL on DATASET; write OUT/baseline.json (accuracy/loss, MACs, params, time).

    With --session, the baseline is trained exactly as that search trains its kernels, so the two
    compare side by side (a plain `syno baseline MODEL DATASET` uses the long default recipe).
    """
    import json

    from syno.train.baseline import run_baseline
    from syno.train.options import LMTrainOptions, VisionTrainOptions

    kwargs = {}
    for item in model_opt:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--model-opt {item!r} is not key=value")
        kwargs[key] = json.loads(value) if value[:1] in "-0123456789tfn[{" else value
    recipe: dict = {}
    dataset_kwargs: dict = {}
    if session is not None:
        s = _session_recipe(session, model, dataset)
        model, dataset, recipe = s["model"], s["dataset"], s["train"]
        data_dir = data_dir if data_dir is not None else s["data_dir"]
        image_size = image_size if image_size is not None else s["image_size"]
        kwargs = {**s["model_kwargs"], **kwargs}
        dataset_kwargs = s["dataset_kwargs"]
        out = out if out is not None else session
    if model is None or dataset is None:
        fail("give MODEL and DATASET, or --session SESSION")
    given = dict(device=device, seed=seed, compile=compile, amp=amp, progress=progress, batch_size=batch_size,
                 lr=lr, time_budget_s=time_budget)
    if dataset == "lm1b":
        given.update(max_iters=max_iters, seq_len=seq_len)
    else:
        given.update(epochs=epochs)
    recipe.update({k: v for k, v in given.items() if v is not None})
    options = (LMTrainOptions if dataset == "lm1b" else VisionTrainOptions).model_validate(recipe)
    try:
        record = run_baseline(model, dataset, out or "baseline-out", options, data_dir=data_dir,
                              image_size=image_size, model_kwargs=kwargs, dataset_kwargs=dataset_kwargs)
    except TypeError as e:  # an unknown --model-opt key; other input errors: syno.cli_errors.SynoGroup
        fail(e)
    metric = "loss" if dataset == "lm1b" else "accuracy"
    keys = ("model", "dataset", metric, "flops", "params", "time_s", "status")
    typer.echo(json.dumps({**{k: record[k] for k in keys},
                           **{k: record["options"].get(k) for k in ("epochs", "batch_size", "lr")
                              if k in record["options"]}}))


def _session_recipe(session: str, model: str | None, dataset: str | None) -> dict:
    """Model, data and training options of a search session (as its kernels were trained)."""
    from syno.search.run import load_session_options
    from syno.search.session import SessionStore

    opts = load_session_options(SessionStore(session))
    if opts.problem is not None:
        fail(f"{session} searched the {opts.model!r} problem, which trains no model: there is no recipe to follow")
    for what, given, stored in (("model", model, opts.model), ("dataset", dataset, opts.dataset)):
        if given is not None and given != stored:
            fail(f"{session} searched {what} {stored!r}, not {given!r} (drop the argument to use the session's)")
    return {"model": opts.model, "dataset": opts.dataset, "train": opts.train.model_dump(), "data_dir": opts.data_dir,
            "image_size": opts.image_size, "model_kwargs": dict(opts.model_kwargs),
            "dataset_kwargs": dict(opts.dataset_kwargs)}


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


from syno.codegen.plan_explain import plan_command as _plan  # noqa: E402  (torch loads inside)

app.command("plan")(_plan)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
