"""The ``iracdb`` command line (typer only): parse, open the database, call one library function, print.

Every :class:`iracdb.errors.UserError` becomes one line on stderr and its exit status; anything else is a bug and
shows a traceback.
"""

from __future__ import annotations

import typer

from iracdb import __version__

app = typer.Typer(
    name="iracdb",
    help="A database-backed reduction archive for Spitzer/IRAC Level-1 aperture photometry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"iracdb {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """A database-backed reduction archive for Spitzer/IRAC Level-1 aperture photometry."""
