"""``syno search``, ``syno demo`` and ``syno show`` (registered in :mod:`syno.cli`).

Heavy imports (torch, the synthesis space) happen inside the commands, so ``syno --help`` stays fast.
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import typer

from syno.cli_errors import fail as _fail, interrupted, one_line  # one error path for the whole CLI

MODELS_HELP = "resnet18, resnet34, resnext29_2x64d, efficientnet_v2_s, densenet121, gpt2, tiny (digits)"


def parse_duration(text: str | None) -> float | None:
    """``90``, ``90s``, ``3m``, ``1.5h`` -> seconds."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*", str(text))
    if not m:
        raise typer.BadParameter(f"{text!r} is not a duration (e.g. 180, 180s, 3m, 2h)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _overrides(sets: list[str]) -> dict[str, Any]:
    from .options import parse_value

    out: dict[str, Any] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--set {item!r} is not key=value (e.g. --set train.epochs=1)")
        out[key.strip()] = parse_value(value)
    return out




class _Progress:
    """Rich progress: kernels evaluated, best accuracy/reward, elapsed, ETA.

    ``enabled=False`` (``--quiet``) prints nothing per kernel. Without a terminal (a log file, a
    pipe) there is no bar, whose 80-column render was cut off there; each kernel is one plain line.
    """

    def __init__(self, options, enabled: bool = True):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.console = Console(stderr=True)
        self.enabled = enabled
        self.bar = enabled and self.console.is_terminal
        self.options = options
        r = options.run
        self.by_time = r.max_evaluations is None and r.budget_seconds is not None
        cols = [SpinnerColumn(), TextColumn("[bold]search {task.fields[model]}"), BarColumn()]
        cols += [TextColumn("{task.fields[kernels]} kernels")] if self.by_time else [MofNCompleteColumn()]
        cols += [TextColumn("{task.fields[best]}"), TextColumn("elapsed"), TimeElapsedColumn(),
                 TextColumn("ETA"), TimeRemainingColumn()]
        self.progress = Progress(*cols, console=self.console, disable=not self.bar, transient=False)
        self.task = None
        self.start = time.monotonic()
        self.base = 0
        self.loss = options.reward.target == "loss"

    def on_start(self, runner, restored: dict) -> None:
        r = self.options.run
        self.base = len(runner.records)
        if restored.get("kernels"):
            self.console.print(f"resumed {runner.store.root}: {restored['kernels']} kernels "
                               f"({restored['replayed']} replayed into the search), "
                               f"{restored['reissue']} interrupted kernels to evaluate again", soft_wrap=True)
        for line in restored.get("skipped", []):  # kernels kept on disk but not replayed (one line each)
            self.console.print(f"warning: {line}", highlight=False, markup=False)
        total = r.budget_seconds if self.by_time else r.max_evaluations
        self.task = self.progress.add_task("search", total=total, completed=0 if self.by_time else self.base,
                                           model=self.options.model, kernels=self.base,
                                           best=self._best(runner))
        self.start = time.monotonic()

    def _best(self, runner) -> str:
        b = runner.best()
        if b is None:
            return "best: -"
        metric = f"loss {b.result.loss:.4f}" if self.loss else f"acc {b.result.accuracy:.4f}"
        return f"best: {metric} (reward {b.reward:.3f})"

    def __call__(self, kind: str, data) -> None:
        if self.task is None:
            return
        runner = data if kind == "tick" else None
        if kind == "kernel":
            if not self.enabled:
                return
            rec = data
            status = rec.result.status
            what = (f"loss {rec.result.loss:.4f}" if self.loss else f"acc {rec.result.accuracy:.4f}") \
                if rec.result.ok else f"{status}"
            speedup = rec.result.extra.get("speedup")  # measured before training (syno.search.latency)
            what += f"  {speedup:.2f}x" if isinstance(speedup, (int, float)) else ""
            line = f"  {rec.name}  {what}  ({rec.result.time:.1f} s)"
            if self.bar:
                self.progress.console.print(line, highlight=False, markup=False)
            else:
                typer.echo(line, err=True)
            return
        upd = {"kernels": len(runner.records), "best": self._best(runner)}
        if self.by_time:
            upd["completed"] = min(time.monotonic() - self.start, self.options.run.budget_seconds)
        else:
            upd["completed"] = len(runner.records)
        self.progress.update(self.task, **upd)

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)


def _run(options, resume: bool, rebuild_state: bool, quiet: bool, top: int, **evaluator: Any) -> None:
    from rich.console import Console

    from .evaluator import EvaluatorError
    from .leaderboard import print_leaderboard
    from .run import run_search
    from .session import SessionError, SessionStore

    prog = _Progress(options, enabled=not quiet)
    try:
        with prog:
            summary = run_search(options, resume=resume, rebuild_state=rebuild_state, on_event=prog,
                                 on_start=prog.on_start, **evaluator)
    except (SessionError, EvaluatorError, ValueError) as exc:
        _fail(exc)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM (syno.cli_errors.Terminated)
        interrupted(exc, f"syno search {options.model} --session {options.directory} --resume")
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:  # a log file: no 80-column squeeze
        console = Console(width=160)
    console.print(f"[bold]{summary.new}[/] kernels evaluated in this run ({summary.evaluated} in the session; "
                  f"stopped: {summary.stop_reason or 'done'})")
    print_leaderboard(SessionStore(options.directory), top=top, console=console)
    if summary.best is not None:
        console.print(f"best kernel: {Path(options.directory) / summary.best.name}")


def search(
    model: str = typer.Argument(..., metavar="MODEL", help=f"model preset: {MODELS_HELP}"),
    set_: list[str] = typer.Option([], "--set", "-s", help="override any option, key=value with dotted keys "
                                   "(train.epochs=1, synth.depth=10, reward.acc_lower=0.3, mcts.exploration=2); "
                                   "repeatable"),
    session: Optional[str] = typer.Option(None, "--session", help="session directory "
                                          "(default results/<model>-session)"),
    resume: bool = typer.Option(False, "--resume", help="continue the session in --session"),
    rebuild_state: bool = typer.Option(False, "--rebuild-state", help="with --resume: ignore state.json and "
                                       "rebuild the search state from the kernel directories"),
    algorithm: Optional[str] = typer.Option(None, "--algorithm", help="mcts (default) or random"),
    budget: Optional[str] = typer.Option(None, "--budget", help="wall-clock budget of this run (e.g. 3m, 2h)"),
    max_kernels: Optional[int] = typer.Option(None, "--max-kernels", "-n", help="stop at this many kernels in the "
                                              "session"),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", help="evaluation processes (0: inline); "
                                          "with --executor ray: at most this many actors (default: the cluster's "
                                          "free GPUs, or CPUs)"),
    executor: str = typer.Option("local", "--executor", help="local: worker processes on this machine; ray: Ray "
                                 "actors on a cluster (pip install syno[ray]; docs/ray.md)"),
    address: Optional[str] = typer.Option(None, "--address", help="with --executor ray: auto (the cluster started "
                                          "here with `ray start --head`) or HOST:PORT of its head; default: a "
                                          "private Ray instance on this machine"),
    timeout: Optional[str] = typer.Option(None, "--kernel-timeout", help="kill a kernel's worker after this long"),
    seed: Optional[int] = typer.Option(None, "--seed", help="search seed (MCTS and random)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="proxy training epochs (train.epochs)"),
    device: Optional[str] = typer.Option(None, "--device", help="training device (train.device): auto, cpu, cuda"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="dataset directory"),
    objective: Optional[str] = typer.Option(None, "--objective", help="accuracy (default; the original's reward) "
                                            "or speed (accuracy reward x measured speedup; objective.*)"),
    min_speedup: Optional[float] = typer.Option(None, "--min-speedup", help="kernels measured slower than this "
                                                "speedup over the original model are not trained (status slow)"),
    show_options: bool = typer.Option(False, "--show-options", help="print the resolved options as JSON and exit"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display"),
    top: int = typer.Option(20, "--top", "-k", help="leaderboard rows to print at the end"),
) -> None:
    """Search MODEL's placeholder layers for fast, accurate operators (MCTS over the synthesis space).

    Every evaluated kernel is written to the session directory at once; a killed search continues
    with --resume, losing no evaluated kernel.
    """
    from .options import build_options
    from .run import load_session_options, resume_options
    from .session import SessionError, SessionStore

    if executor not in ("local", "ray"):
        _fail(f"--executor {executor!r}: choose local or ray")
    if address is not None and executor != "ray":
        _fail("--address needs --executor ray")
    if executor == "ray":  # before the session directory is created
        from .ray_executor import RayNotInstalledError, import_ray

        try:
            import_ray()
        except RayNotInstalledError as exc:
            _fail(exc)
    overrides = _overrides(set_)
    explicit = {"algorithm": algorithm, "run.budget_seconds": parse_duration(budget),
                "run.max_evaluations": max_kernels, "run.workers": workers,
                "run.kernel_timeout": parse_duration(timeout), "mcts.seed": seed, "random.seed": seed,
                "train.epochs": epochs, "train.device": device, "data_dir": data_dir,
                "objective.kind": objective, "objective.min_speedup": min_speedup}
    overrides.update({k: v for k, v in explicit.items() if v is not None})
    try:
        if resume:
            directory = session or f"results/{model}-session"
            store = SessionStore(directory)
            stored = load_session_options(store)
            if stored.model != model:
                _fail(f"{directory} is a {stored.model!r} session, not {model!r}")
            options = resume_options(stored, {**overrides, "session_dir": directory}, kernels=len(store.kernel_dirs()))
        else:
            if session is not None:
                overrides["session_dir"] = session
            options = build_options(model, overrides)
    except SessionError as exc:
        _fail(exc)
    except ValueError as exc:  # pydantic ValidationError is a ValueError
        _fail(f"invalid options: {one_line(exc)}")
    if show_options:
        import json

        typer.echo(json.dumps(options.to_json_dict(), indent=1))
        return
    ray_kw = {"executor": "ray", "address": address, "max_workers": workers} if executor == "ray" else {}
    _run(options, resume=resume, rebuild_state=rebuild_state, quiet=quiet, top=top, **ray_kw)


def demo(
    budget: str = typer.Option("3m", "--budget", help="wall-clock budget (e.g. 90s, 3m)"),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", help="evaluation processes "
                                          "(default: 1 per 2 CPU cores, at least 1)"),
    session: Optional[str] = typer.Option(None, "--session", help="session directory "
                                          "(default results/demo-<time>)"),
    seed: int = typer.Option(0, "--seed"),
    set_: list[str] = typer.Option([], "--set", "-s", help="override options as in `syno search`"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display"),
) -> None:
    """A few-minute search on this CPU: the tiny CNN on scikit-learn's digits (shipped, offline).

    Synthesizes operators for the tiny CNN's 3x3 conv layers, trains each for 5 epochs and the best
    eighth (ASHA) for 15, and prints the leaderboard, highest rung first (--set fidelity.enabled=false:
    one epoch per kernel; see docs/search.md). Continue the session with
    `syno search tiny --session DIR --resume`.
    """
    import os

    from .options import build_options

    overrides = _overrides(set_)
    cores = os.cpu_count() or 1
    w = workers if workers is not None else max(1, cores // 2)
    overrides.setdefault("run.workers", w)
    # one torch thread per worker: with two OpenMP threads on a busy 2-core machine an epoch took 28 s
    # instead of 1.9 s (threads spinning at barriers while the other is descheduled; docs/search.md)
    overrides.setdefault("run.threads", 1)
    # the model's speedup only (the leaderboard's column): timing every placeholder site as well took 1.2 of
    # the 1.6 s each kernel spent in latency timing, a quarter of a rung-0 evaluation (benchmarks/README.md
    # "Proxy fidelity"); `syno search tiny` keeps the per-site records
    overrides.setdefault("latency.sites", False)
    overrides.setdefault("run.budget_seconds", parse_duration(budget))
    overrides.setdefault("run.drain_seconds", 20.0)
    overrides.setdefault("mcts.seed", seed)
    overrides.setdefault("random.seed", seed)
    overrides.setdefault("session_dir", session or f"results/demo-{datetime.now():%Y%m%d-%H%M%S}")
    try:
        options = build_options("tiny", overrides)
    except ValueError as exc:
        _fail(f"invalid options: {one_line(exc)}")
    typer.echo(f"syno demo: searching operators for the tiny CNN on digits for {budget} "
               f"({options.run.workers} worker(s)); session {options.directory}", err=True)
    _run(options, resume=False, rebuild_state=False, quiet=quiet, top=15)


def show(
    session: str = typer.Argument(..., metavar="SESSION", help="session directory (e.g. results/resnet18-session)"),
    top: int = typer.Option(20, "--top", "-k", help="rows (0: all)"),
    failed: bool = typer.Option(False, "--failed", help="also list failed kernels"),
    as_json: bool = typer.Option(False, "--json", help="print the rows as JSON"),
    sort: str = typer.Option("reward", "--sort", help="rank by reward or by measured speedup"),
    min_speedup: Optional[float] = typer.Option(None, "--min-speedup", help="only kernels measured at least this "
                                                "much faster than the original model"),
) -> None:
    """Leaderboard of a search session: kernels ranked by reward, with MACs/params relative to the model."""
    from .leaderboard import leaderboard_rows, print_leaderboard
    from .session import SessionError, SessionStore

    store = SessionStore(session)
    if not Path(session).is_dir():
        _fail(f"{session}: no such directory")
    try:
        if as_json:
            import json

            rows = leaderboard_rows(store, include_failed=failed, min_speedup=min_speedup, sort=sort)
            typer.echo(json.dumps(rows if top <= 0 else [r for r in rows if r["rank"] is None or r["rank"] <= top],
                                  indent=1, default=lambda x: None))
        else:
            print_leaderboard(store, top=top, include_failed=failed, min_speedup=min_speedup, sort=sort)
    except (SessionError, ValueError) as exc:
        _fail(exc)
