"""The one syno command line: each command is a thin wrapper over the package API."""

from __future__ import annotations

import typer

app = typer.Typer(help="syno: synthesize neural operators and search for fast, accurate ones.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
