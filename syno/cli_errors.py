"""One error-reporting path for the whole ``syno`` command line.

Every failure a user can cause (bad option, missing data, a refused pickle, a damaged session) ends
as ONE line on stderr, ``error: <what, naming the culprit>``, and a non-zero exit status; the Python
traceback is printed only with ``syno --debug ...`` or ``SYNO_DEBUG=1``. Ctrl-C and SIGTERM end a
command with one line, plus how to resume it when the command can resume.

:class:`SynoGroup` is the click group behind :data:`syno.cli.app`. It wraps the commands (not each
command separately) so a new command gets the same behaviour for free, under the console script and
under ``typer.testing.CliRunner`` alike (both go through ``main``).

Exit codes: 2 bad input (usage, options, files, data), 1 unexpected internal error, 130 Ctrl-C,
143 SIGTERM.
"""

from __future__ import annotations

import os
import pickle
import shlex
import signal
import sys
from contextlib import contextmanager
from typing import Any, Iterator, NoReturn

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer >= 0.2x vendors click
from typer._click.globals import get_current_context
from typer.core import TyperGroup
from typer.exceptions import Abort, Exit

__all__ = ["SynoGroup", "Terminated", "fail", "one_line", "interrupted", "debug_enabled", "EXIT_INPUT",
           "EXIT_INTERNAL", "EXIT_INTERRUPT", "EXIT_TERM"]

EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPT, EXIT_TERM = 2, 1, 130, 143
DEBUG_ENV = "SYNO_DEBUG"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so every ``finally`` (closing worker pools,
    writing state) runs and the same resume hint is printed. A KeyboardInterrupt subclass on
    purpose: code that already handles Ctrl-C handles SIGTERM too."""


def debug_enabled() -> bool:
    """``syno --debug`` (the running command's root context) or ``SYNO_DEBUG=1``."""
    if os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        return True
    ctx = get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().params.get("debug"))


def _validation_line(exc: Exception) -> str:
    """A pydantic ValidationError as ``field: message (got value)`` items, no URL, one line."""
    parts = []
    for err in exc.errors():  # type: ignore[attr-defined]
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "__root__")
        msg = err.get("msg", "invalid")
        got = err.get("input")
        item = f"{loc}: {msg}" if loc else msg
        if err.get("type") not in ("missing",) and not isinstance(got, (dict, list)):
            item += f" (got {got!r})"
        parts.append(item)
    return "; ".join(parts) or str(exc).splitlines()[0]


def one_line(exc: BaseException | str) -> str:
    """The message of ``exc`` on one line (pydantic errors itemized, other newlines folded)."""
    if not isinstance(exc, str):
        try:
            from pydantic import ValidationError
        except ImportError:  # pragma: no cover - pydantic is a dependency
            ValidationError = ()  # type: ignore[assignment]
        if isinstance(exc, ValidationError):
            return _validation_line(exc)
        text = str(exc)
        if isinstance(exc, KeyError) and exc.args:  # str(KeyError) is a bare repr of the key
            text = f"missing key {exc.args[0]!r}"
        if isinstance(exc, pickle.UnpicklingError) or not text:
            text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    else:
        text = exc
    # a traceback inside a message (a worker's, a kernel's) is for --debug, not for the one line
    text = text.split("Traceback (most recent call last)")[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "; ".join(lines)


def fail(msg: BaseException | str, code: int = EXIT_INPUT) -> NoReturn:
    """Print ``error: msg`` (one line) on stderr and exit with ``code``.

    Given the exception itself, in debug mode it is re-raised instead: the full traceback.
    """
    if isinstance(msg, BaseException) and debug_enabled():
        detail = getattr(msg, "detail", "")  # e.g. a worker's traceback (EvaluatorError)
        if detail:
            typer.echo(detail, err=True)
        raise msg
    typer.echo(f"error: {one_line(msg)}", err=True)
    raise Exit(code)


def interrupted(exc: KeyboardInterrupt, resume: str | None = None) -> NoReturn:
    """End a command on Ctrl-C / SIGTERM with one line, naming the command that resumes it."""
    what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
    typer.echo(f"\n{what}" + (f"; resume with: {resume}" if resume else ""), err=True)
    raise Exit(EXIT_TERM if isinstance(exc, Terminated) else EXIT_INTERRUPT)


# Exceptions whose message is the whole story for a user: bad values, files, data, sessions.
def _input_errors() -> tuple[type[BaseException], ...]:
    out: list[type[BaseException]] = [ValueError, OSError, pickle.UnpicklingError, EOFError]
    try:
        from syno.search.session import SessionError
        from syno.search.evaluator import EvaluatorError

        out += [SessionError, EvaluatorError]
    except ImportError:  # pragma: no cover
        pass
    return tuple(out)


@contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    """While a command runs, SIGTERM raises :class:`Terminated` in the main thread."""
    def handler(signum: int, frame: Any) -> None:
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. an embedding application): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _resume_hint(ctx: typer.Context) -> str | None:
    """``syno <the same arguments> --resume`` for commands that have a ``--resume`` flag."""
    sub = ctx.meta.get("syno.subcommand")
    if sub is None or not any(p.name == "resume" for p in sub.params):
        return None
    args = list(ctx.meta.get("syno.argv", []))
    if "--resume" not in args:
        args.append("--resume")
    return "syno " + shlex.join(args)


class SynoGroup(TyperGroup):
    """Typer group with the error policy of the module docstring."""

    def make_context(self, info_name: str | None, args: list[str], parent: typer.Context | None = None,
                     **extra: Any) -> typer.Context:
        argv = list(args)
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        ctx.meta["syno.argv"] = argv
        return ctx

    def resolve_command(self, ctx: typer.Context, args: list[str]):
        name, cmd, rest = super().resolve_command(ctx, args)
        ctx.meta["syno.subcommand"] = cmd
        return name, cmd, rest

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            with _sigterm_as_exception():
                return super().invoke(ctx)
        except (Exit, ClickException, Abort):
            raise
        except KeyboardInterrupt as exc:
            interrupted(exc, _resume_hint(ctx))
        except Exception as exc:  # noqa: BLE001 - the one place where every failure becomes one line
            if isinstance(exc, _input_errors()):
                fail(exc)
            if debug_enabled():
                raise
            fail(f"internal error, {type(exc).__name__}: {one_line(exc)} "
                 f"(rerun with `syno --debug ...` or {DEBUG_ENV}=1 for the traceback)", EXIT_INTERNAL)

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as exc:  # bare `syno`: the help, as before
            exc.show()
            sys.exit(exc.exit_code)
        except ClickException as exc:
            sub = exc.ctx.command_path.split()[1:] if getattr(exc, "ctx", None) is not None else []
            where = " ".join(["syno", *sub])  # not argv[0]: `python -m`, test runners name it otherwise
            typer.echo(f"error: {one_line(exc.format_message())} (see `{where} --help`)", err=True)
            sys.exit(exc.exit_code)
        except Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)
