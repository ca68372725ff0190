"""The command line's shared parts: the typer app, consoles, exit statuses, how commands open the database and turn
errors into one line, and how rows are printed (text from the database is always shown literally).

Every :class:`iracdb.errors.UserError` becomes one line on stderr and its exit status; anything else is a bug
and shows a traceback. Exit statuses: 0 success; 1 a bug (an uncaught exception, with its traceback); 2 a usage or
input error (bad option, unknown AOR); 3 a database error (cannot connect, schema out of date); 4 the command ran
but some input was rejected (``ingest`` or ``demo`` could not catalogue every file; every good file was still
catalogued); 130 interrupted (Ctrl-C); 143 ``reduce`` stopped by SIGTERM.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # typer's own (vendored) click
from typer.core import TyperCommand, TyperGroup

from iracdb import __version__
from iracdb.cli import tables
from iracdb.columns import AOR_COLUMNS
from iracdb.config import resolve_db_url
from iracdb.db.engine import mask_secrets, safe_url
from iracdb.errors import BadOption, DatabaseError, UserError

# The heavy libraries (SQLAlchemy, Alembic, astropy, numpy, ...) are imported inside the commands that use them, so
# that `iracdb --help` starts quickly; tests/test_cli_imports.py keeps it so.
if TYPE_CHECKING:
    from sqlalchemy import Engine


class _UsageLine(ClickException):
    """A mistake the option parser caught, shown as one line like every other error: ``iracdb: error: ...``."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        stderr.print(f"iracdb: error: {mask_secrets(self.message)}", markup=False, highlight=False, soft_wrap=True)


def _one_line(error: UsageError) -> _UsageLine:
    # click's own message keeps its suggestion ("Did you mean --workers?"); the help hint goes on the same line.
    hint = f" (see '{error.ctx.command_path} --help')" if error.ctx is not None else ""
    return _UsageLine(error.format_message() + hint)


class _Group(TyperGroup):
    """The command group whose parsing errors are one line (click prints three: ``Usage:``, ``Try ...``,
    ``Error: ...``). A subcommand is parsed inside its group's :meth:`invoke`, so this catches every level."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except UsageError as error:
            if isinstance(error, NoArgsIsHelpError):  # a bare `iracdb`: the help, as asked for
                raise
            raise _one_line(error) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as error:
            if isinstance(error, NoArgsIsHelpError):
                raise
            raise _one_line(error) from None


app = typer.Typer(
    name="iracdb",
    cls=_Group,
    help="A database-backed reduction archive for Spitzer/IRAC Level-1 aperture photometry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Manage the database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")

stdout = Console()
stderr = Console(stderr=True)
if not stdout.is_terminal:
    stdout.width = 250  # piped or captured: do not fold tables to 80 columns

#: Exit status when a command ran but some of its input was rejected (distinct from 1, an uncaught exception).
EXIT_SOME_REJECTED = 4
#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


class _Command(TyperCommand):
    """A typer command whose help shows arguments by their metavar alone: ``PATH...``, ``[DIR]``, ``AORKEY``.

    (typer would print ``{paths}...`` in the usage line and ``<list[Path]>`` beside each argument.)
    """

    # ctx: click's Context (typer vendors click privately, so it is typed Any here).
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        # Keep the arguments as given, for the record of the command line (sys.argv is wrong when called in-process).
        ctx.meta["iracdb.args"] = list(args)
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar or ""]
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                pieces.append(_argument_metavar(param) if param.required else f"[{_argument_metavar(param)}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return [piece for piece in pieces if piece]

    def format_options(self, ctx: Any, formatter: Any) -> None:  # formatter: click's HelpFormatter
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((_argument_metavar(param), record[1]))
            else:
                options.append(record)
        for title, records in (("Arguments", arguments), ("Options", options)):
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


def _argument_metavar(param: Any) -> str:  # a click Argument
    return param.metavar or (param.name or "").upper()


DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="URL",
        help="Database URL (sqlite:///FILE, a plain file path, or postgresql+psycopg://USER@HOST/DB). "
        "Default: $IRACDB_DB_URL, else ./iracdb.sqlite.",
        show_default=False,
    ),
]


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


FormatOption = Annotated[
    OutputFormat,
    typer.Option(
        "--format", "-f", metavar="table|csv|json", help="table (readable), csv or json (to stdout, snake_case)."
    ),
]
#: Permission to replace existing output files (`export`, `plot`).
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace existing output files (never the database).")
]
#: The IRAC channel filter of the listings.
ChannelOption = Annotated[int | None, typer.Option("--channel", metavar="N", help="IRAC channel 1-4.")]


@contextmanager
def _errors_to_exit() -> Iterator[None]:
    try:
        yield
    except UserError as exc:
        # Masked again here: a message may quote a driver's text, which could hold a URL or a password parameter.
        stderr.print(f"iracdb: error: {mask_secrets(str(exc))}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        # Ctrl-C outside a reduction (which says more itself): what was committed stays, nothing half-written is
        # left (exports write under temporary names), and the exit status says so.
        stderr.print("iracdb: interrupted (Ctrl-C); what was already committed is kept", markup=False,
                      highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None


@contextmanager
def _database(
    db: str | None, *, ensure: bool = True, create: bool = False, reader: bool = False
) -> Iterator[Engine]:
    """Open the database for one command, turning errors into exit statuses; closed at the end.

    With ``ensure``, a brand-new database gets the schema and an outdated one is refused. Only with ``create`` (the
    commands that write a catalogue or a schema) may a SQLite file that does not exist be created: for any other
    command a missing file is a mistyped --db. With ``reader`` (``iracdb sql``), ``$IRACDB_READER_URL`` is used
    before ``$IRACDB_DB_URL``.
    """
    from sqlalchemy.exc import OperationalError

    from iracdb.db import migrate
    from iracdb.db.engine import make_engine

    with _errors_to_exit():
        url = resolve_db_url(db, reader=reader)
        engine = make_engine(url, create=create)
        try:
            if ensure:
                migrate.ensure_schema(engine)
            yield engine
        except OperationalError as exc:
            reason = str(exc.orig or exc).strip().splitlines()[0]
            raise DatabaseError(f"database {safe_url(url)}: {reason}") from exc
        finally:
            engine.dispose()


def _print_rows(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    fmt: OutputFormat,
    title: str,
    *,
    wide: bool = False,
    more: str = "--wide or --columns to show them",
) -> None:
    """Print rows as json, csv or a table (on a terminal, the columns that fit: see :mod:`iracdb.cli.tables`)."""
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps([{c: row[c] for c in columns} for row in rows], indent=1, default=str) + "\n")
        return
    if fmt is OutputFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_csv_value(row[c]) for c in columns] for row in rows])
        return
    tables.print_table(stdout, rows, columns, title, cell=_cell, numeric=_numeric, wide=wide, more=more)


def _print_sections(sections: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> None:
    """Print (title, [(name, value)]) sections as records, a blank line between them."""
    for index, (title, pairs) in enumerate(sections):
        if index:
            stdout.print()
        tables.print_record(stdout, pairs, title)


def _chosen_columns(requested: str | None, default: Sequence[str], available: Sequence[str]) -> Sequence[str]:
    """The columns named by ``--columns a,b,c`` (any of ``available``, in the order given), else ``default``."""
    if requested is None:
        return default
    chosen = [name.strip() for name in requested.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in available]
    if unknown or not chosen:
        raise BadOption(f"--columns: unknown column {', '.join(map(repr, unknown))}; choose from "
                        f"{', '.join(available)}" if unknown else "--columns: name at least one column")
    return chosen


#: `--columns` and `--wide` of the commands that print tables of rows.
ColumnsOption = Annotated[
    str | None,
    typer.Option("--columns", metavar="A,B,...", show_default=False,
                 help="Show these columns, in this order (any column of the csv format)."),
]
WideOption = Annotated[
    bool,
    typer.Option("--wide", help="On a terminal, show every column even when rows are wider than the terminal."),
]


def _numeric(rows: Sequence[dict[str, Any]], column: str) -> bool:
    return any(isinstance(row[column], int | float) and not isinstance(row[column], bool) for row in rows)


def _csv_value(value: Any) -> Any:
    """A value as the CSV exports write it: NULL empty, booleans ``true``/``false``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _cell(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return str(_csv_value(value))
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") if abs(value) < 1e7 else f"{value:.6g}"
    return str(value)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"iracdb {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """A database-backed reduction archive for Spitzer/IRAC Level-1 aperture photometry."""


def _choice_enum(name: str, choices: dict[str, str]) -> Any:
    """A StrEnum of the library's closed choices, for typer (which checks the value and lists the choices)."""
    return StrEnum(name, {value: value for value in choices})


def _choice_help(text: str, choices: dict[str, str]) -> str:
    """``text`` followed by what each choice means, from the library's definition."""
    return f"{text}: " + "; ".join(f"{value}: {meaning}" for value, meaning in choices.items()) + "."


def _metavar(choices: dict[str, str]) -> str:
    return "|".join(choices)


#: Table columns of `iracdb summary` (csv and json give every column of the aor_photometry view).
SUMMARY_TABLE_COLUMNS = tuple(c.name for c in sorted((c for c in AOR_COLUMNS if c.terminal), key=lambda c: c.terminal))
#: What tells the rows of a run's aperture grid apart, shown after the flux when a run has more than one aperture.
GRID_TABLE_COLUMNS = ("radius_spec", "annulus_in_px", "annulus_out_px", "centroid", "best", "score")


def summary_table_columns(n_apertures: int) -> tuple[str, ...]:
    """:data:`SUMMARY_TABLE_COLUMNS`, with the aperture's columns after the flux for a run of ``n_apertures`` > 1
    (otherwise a grid's rows, or its best ones, would not say which aperture they are)."""
    if n_apertures <= 1:
        return SUMMARY_TABLE_COLUMNS
    at = SUMMARY_TABLE_COLUMNS.index("flux_mjy") + 1
    return (*SUMMARY_TABLE_COLUMNS[:at], *GRID_TABLE_COLUMNS, *SUMMARY_TABLE_COLUMNS[at:])
