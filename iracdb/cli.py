"""The ``iracdb`` command line (typer only): parse, open the database, call one library function, print.

Every :class:`iracdb.errors.UserError` becomes one line on stderr and its exit status; anything else is a bug
and shows a traceback.

Exit statuses: 0 success; 1 a bug (an uncaught exception, with its traceback); 2 a usage or input error (bad
option, unknown AOR); 3 a database error (cannot connect, schema out of date); 4 the command ran but some input was
rejected (``ingest`` or ``demo`` could not catalogue every file; every good file was still catalogued).
"""

from __future__ import annotations

import csv
import functools
import itertools
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from typer.core import TyperCommand

from iracdb import __version__
from iracdb.choices import (
    BACKGROUND_METHODS,
    CENTROID_METHODS,
    CORRECTION_SETS,
    EXPORT_FORMATS,
    FILE_TYPES,
    REJECT_RULES,
    SUBARRAY_MODES,
)
from iracdb.config import resolve_db_url
from iracdb.db import migrate, queries
from iracdb.db.engine import make_engine, mask_secrets, safe_url
from iracdb.errors import BadOption, DatabaseError, UserError

app = typer.Typer(
    name="iracdb",
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


def _print_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: OutputFormat, title: str) -> None:
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps([{c: row[c] for c in columns} for row in rows], indent=1, default=str) + "\n")
        return
    if fmt is OutputFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if row[c] is None else row[c] for c in columns] for row in rows])
        return
    table = Table(title=Text(title), title_justify="left")
    for column in columns:
        table.add_column(Text(column), justify="right" if _numeric(rows, column) else "left", overflow="fold")
    for row in rows:
        table.add_row(*[Text(_cell(row[c])) for c in columns])
    stdout.print(table)
    if not rows:
        stdout.print("(no rows)")


def _numeric(rows: Sequence[dict[str, Any]], column: str) -> bool:
    return any(isinstance(row[column], int | float) and not isinstance(row[column], bool) for row in rows)


def _cell(value: Any) -> str:
    if value is None:
        return ""
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


# --- database schema ------------------------------------------------------------------------------------------


@db_app.command("upgrade", cls=_Command)
def db_upgrade(
    revision: Annotated[str, typer.Argument(metavar="REVISION", help="Target revision (head: the newest).")] = "head",
    db: DbOption = None,
) -> None:
    """Migrate the database schema to the newest revision (or REVISION)."""
    with _database(db, ensure=False, create=True) as engine:
        before = migrate.current_revision(engine)
        migrate.upgrade(engine, revision)
        after = migrate.current_revision(engine)
        stdout.print(f"{safe_url(str(engine.url))}: schema {before or '(empty)'} -> {after}", markup=False)


@db_app.command("downgrade", cls=_Command, context_settings={"ignore_unknown_options": True})
def db_downgrade(
    revision: Annotated[
        str, typer.Argument(metavar="REVISION", help="Target revision, e.g. -1 for one step back, or base.")
    ],
    db: DbOption = None,
) -> None:
    """Migrate the database schema down to REVISION (drops what later revisions added)."""
    with _database(db, ensure=False) as engine:
        migrate.downgrade(engine, revision)
        after = migrate.current_revision(engine)
        stdout.print(f"{safe_url(str(engine.url))}: schema now {after or '(empty)'}", markup=False)


@db_app.command("current", cls=_Command)
def db_current(db: DbOption = None) -> None:
    """Print the database's schema revision and the newest this iracdb knows."""
    with _database(db, ensure=False) as engine:
        current = migrate.current_revision(engine)
        head = migrate.head_revision(engine)
        state = "up to date" if current == head else "run `iracdb db upgrade`"
        stdout.print(f"{safe_url(str(engine.url))}: {current or '(empty)'} (newest {head}; {state})", markup=False)


@db_app.command("check", cls=_Command)
def db_check(db: DbOption = None) -> None:
    """Check that the models and the migrations describe the same schema (alembic check)."""
    with _database(db) as engine:
        migrate.check(engine)
        stdout.print("models and migrations agree")


@db_app.command("create-reader", cls=_Command)
def db_create_reader(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The role's name, e.g. iracdb_reader.")],
    password_env: Annotated[
        str | None,
        typer.Option("--password-env", metavar="VAR", help="Take the role's password from environment variable VAR."),
    ] = None,
    no_password: Annotated[
        bool,
        typer.Option("--no-password", help="Set no password (keep an existing one; or peer/certificate login)."),
    ] = False,
    db: DbOption = None,
) -> None:
    """Create (or update) a PostgreSQL login role that may only read the archive, for `iracdb sql`.

    Connect with --db as the archive's owner (with CREATEROLE) or a superuser. The role gets LOGIN and nothing else,
    SELECT on the archive's tables and views (and on those a later `iracdb db upgrade` by the same owner adds). Without
    --password-env or --no-password the password is asked for. Prints the role's URL (password as ***): give it to
    `iracdb sql` with --db or $IRACDB_READER_URL. Safe to run again.
    """
    import os

    from iracdb.db.reader import create_reader

    with _errors_to_exit():
        if password_env is not None and no_password:
            raise BadOption("give --password-env VAR or --no-password, not both")
        password: str | None = None
        if password_env is not None:
            password = os.environ.get(password_env) or None
            if password is None:
                raise BadOption(f"--password-env {password_env}: the environment variable is not set or empty")
        elif not no_password:
            if not sys.stdin.isatty():
                raise BadOption("no terminal to ask for the password on: give --password-env VAR or --no-password")
            password = typer.prompt(f"password for {name}", hide_input=True, confirmation_prompt=True)
    with _database(db) as engine:
        reader = create_reader(engine, name, password=password)
    say = functools.partial(stdout.print, markup=False, highlight=False, soft_wrap=True)
    say(f"{'created' if reader.created else 'updated'} read-only role {reader.name!r}: SELECT on "
        f"{reader.n_relations} tables and views in schema {reader.schema!r}")
    say(f"iracdb sql URL: {reader.url}  (--db URL, or export IRACDB_READER_URL=URL)")


# --- catalogue ------------------------------------------------------------------------------------------------


@app.command(cls=_Command)
def ingest(
    paths: Annotated[
        list[Path], typer.Argument(metavar="PATH...", help="Folders (walked recursively) and/or FITS files.")
    ],
    workers: Annotated[
        int, typer.Option("--workers", "-j", metavar="N", help="Processes reading headers in parallel.")
    ] = 1,
    db: DbOption = None,
) -> None:
    """Catalogue every IRAC Level-1 file under each PATH: AORs, exposures, files and their headers.

    Re-ingesting is cheap and safe: unchanged files (same size and mtime) are not read, changed files are re-read,
    moved files (same checksum, new path) get their new path. Files that cannot be catalogued are listed with the
    reason and recorded; the exit status is then 4 (0 when every file was catalogued).
    """
    from iracdb.ingest import ingest as run_ingest

    with _database(db, create=True) as engine:
        columns = (TextColumn("reading"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=stderr, disable=not stderr.is_terminal, transient=True) as bar:
            task = bar.add_task("ingest", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            summary = run_ingest(engine, [str(p) for p in paths], workers=workers, progress=progress)
        for path, reason in summary.rejected:
            stderr.print(f"rejected: {path}: {reason}", markup=False, highlight=False, soft_wrap=True)
        stdout.print(
            f"ingest #{summary.ingest_id}: {summary.n_seen} files seen: {summary.n_new} new, "
            f"{summary.n_updated} updated, {summary.n_moved} moved, {summary.n_unchanged} unchanged, "
            f"{summary.n_rejected} rejected",
            markup=False,
            highlight=False,
        )
    if summary.n_rejected:
        raise typer.Exit(EXIT_SOME_REJECTED)


@app.command(cls=_Command)
def aors(
    object: Annotated[
        str | None, typer.Option("--object", metavar="TEXT", help="OBJECT contains TEXT (case-insensitive).")
    ] = None,
    channel: ChannelOption = None,
    program: Annotated[int | None, typer.Option("--program", metavar="PROGID", help="Program ID (PROGID).")] = None,
    mission: Annotated[str | None, typer.Option("--mission", metavar="cryo|warm", help="Mission phase.")] = None,
    fmt: FormatOption = OutputFormat.table,
    db: DbOption = None,
) -> None:
    """List catalogued AORs: one row per AOR and channel."""
    with _database(db) as engine:
        rows = queries.list_aors(engine, object=object, channel=channel, program=program, mission=mission)
        _print_rows(rows, queries.AOR_LIST_COLUMNS, fmt, title="AORs")


@app.command(cls=_Command)
def exposures(
    aorkey: Annotated[int, typer.Argument(metavar="AORKEY", help="The AOR (its AORKEY).")],
    channel: ChannelOption = None,
    fmt: FormatOption = OutputFormat.table,
    db: DbOption = None,
) -> None:
    """List the exposures of one AOR, with the kinds of file catalogued for each."""
    with _database(db) as engine:
        rows = queries.list_exposures(engine, aorkey, channel=channel)
        _print_rows(rows, queries.EXPOSURE_LIST_COLUMNS, fmt, title=f"AOR {aorkey}")


@app.command(cls=_Command)
def rejected(fmt: FormatOption = OutputFormat.table, db: DbOption = None) -> None:
    """List the files ingest could not catalogue, with the reasons."""
    with _database(db) as engine:
        _print_rows(queries.list_rejected(engine), ("path", "reason"), fmt, title="Rejected files")


# --- reduction ------------------------------------------------------------------------------------------------


def _choice_enum(name: str, choices: dict[str, str]) -> Any:
    """A StrEnum of the library's closed choices, for typer (which checks the value and lists the choices)."""
    return StrEnum(name, {value: value for value in choices})


def _choice_help(text: str, choices: dict[str, str]) -> str:
    """``text`` followed by what each choice means, from the library's definition."""
    return f"{text}: " + "; ".join(f"{value}: {meaning}" for value, meaning in choices.items()) + "."


def _metavar(choices: dict[str, str]) -> str:
    return "|".join(choices)


if TYPE_CHECKING:  # built at run time from the library's choices; to a type checker, any StrEnum
    FileType: TypeAlias = StrEnum
    CentroidChoice: TypeAlias = StrEnum
    BackgroundChoice: TypeAlias = StrEnum
    CorrectionsChoice: TypeAlias = StrEnum
    SubarrayChoice: TypeAlias = StrEnum
    ExportFormat: TypeAlias = StrEnum
else:
    FileType = _choice_enum("FileType", FILE_TYPES)
    CentroidChoice = _choice_enum("CentroidChoice", CENTROID_METHODS)
    BackgroundChoice = _choice_enum("BackgroundChoice", BACKGROUND_METHODS)
    CorrectionsChoice = _choice_enum("CorrectionsChoice", CORRECTION_SETS)
    SubarrayChoice = _choice_enum("SubarrayChoice", SUBARRAY_MODES)
    ExportFormat = _choice_enum("ExportFormat", EXPORT_FORMATS)


@app.command(cls=_Command)
def reduce(
    ctx: typer.Context,
    run_name: Annotated[str, typer.Option("--run-name", "-n", metavar="NAME", help="The run's unique name.")],
    aor: Annotated[
        list[int] | None, typer.Option("--aor", metavar="AORKEY", help="Only this AOR (repeatable). Default: all.")
    ] = None,
    object: Annotated[
        str | None, typer.Option("--object", metavar="TEXT", help="Only AORs whose OBJECT contains TEXT.")
    ] = None,
    channel: ChannelOption = None,
    file_type: Annotated[
        FileType,
        typer.Option("--file-type", metavar=_metavar(FILE_TYPES), help=_choice_help("Which images", FILE_TYPES)),
    ] = FileType("bcd"),
    target: Annotated[
        list[str] | None,
        typer.Option("--target", metavar="'RA DEC'", help="Target position, degrees or sexagesimal (repeatable)."),
    ] = None,
    targets_file: Annotated[
        Path | None,
        typer.Option("--targets-file", metavar="CSV", help="Targets: columns ra, dec and optionally aorkey, object, "
                     "name (one row per target; a row with aorkey or object applies to those AORs only)."),
    ] = None,
    auto: Annotated[
        bool, typer.Option("--auto", help="Measure the brightest source near each frame's commanded pointing.")
    ] = False,
    radius: Annotated[float, typer.Option("--radius", metavar="PX", help="Aperture radius, pixels.")] = 3.0,
    annulus: Annotated[
        tuple[float, float], typer.Option("--annulus", metavar="IN OUT", help="Background annulus radii, pixels.")
    ] = (3.0, 7.0),
    centroid: Annotated[
        CentroidChoice,
        typer.Option("--centroid", metavar=_metavar(CENTROID_METHODS),
                     help=_choice_help("Centroid method", CENTROID_METHODS)),
    ] = CentroidChoice("moment"),
    background: Annotated[
        BackgroundChoice,
        typer.Option("--background", metavar=_metavar(BACKGROUND_METHODS),
                     help=_choice_help("Annulus background", BACKGROUND_METHODS)),
    ] = BackgroundChoice("median"),
    corrections: Annotated[
        CorrectionsChoice,
        typer.Option("--corrections", metavar=_metavar(CORRECTION_SETS),
                     help=_choice_help("Pixel-phase x array-location correction", CORRECTION_SETS)),
    ] = CorrectionsChoice("auto"),
    aperture_correction: Annotated[
        str,
        typer.Option("--aperture-correction", metavar="auto|VALUE|none",
                     help="auto: the published value for the aperture (none, recorded, if there is none)."),
    ] = "auto",
    reject: Annotated[
        str, typer.Option("--reject", metavar=_metavar(REJECT_RULES), help=_choice_help("Per-AOR outlier rule",
                                                                                          REJECT_RULES))
    ] = "sigma:3",
    subarray: Annotated[
        SubarrayChoice,
        typer.Option("--subarray", metavar=_metavar(SUBARRAY_MODES),
                     help=_choice_help("Subarray cubes", SUBARRAY_MODES)),
    ] = SubarrayChoice("planes"),
    workers: Annotated[int, typer.Option("--workers", "-j", metavar="N", help="Local worker processes.")] = 1,
    scheduler: Annotated[
        str | None,
        typer.Option("--scheduler", metavar="ADDRESS",
                     help="Dask distributed scheduler: tcp://HOST:8786, or local:N for a local cluster."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Finish an interrupted, failed or killed run of this name.")
    ] = False,
    db: DbOption = None,
) -> None:
    """Measure every image (every subarray plane) of the chosen AORs under a named run, and summarise each AOR.

    The run records its parameters, software versions and input files; its name cannot be reused with other
    parameters. Each AOR is committed whole: after Ctrl-C, SIGTERM or a crash, the same command with --resume
    finishes the run. Exit status: 0 done (also when the run was already complete), 2 bad option, 3 database, or
    the workers could not do the work (Dask cluster without workers, scheduler lost), 130 Ctrl-C, 143 SIGTERM.
    """
    from iracdb import reduce as reduction

    with _database(db) as engine:
        targets = [reduction.Target(name=_target_name(t), ra_deg=ra, dec_deg=dec)
                   for t in target or [] for ra, dec in [reduction.parse_sky_position(t)]]
        if targets_file is not None:
            targets += reduction.read_targets_file(targets_file)
        if auto:
            targets.append(reduction.Target(name="auto"))
        options = reduction.ReduceOptions(
            aorkeys=tuple(aor or ()), object=object, channel=channel, file_type=file_type.value,
            targets=tuple(targets), radius_px=radius, annulus_in_px=annulus[0], annulus_out_px=annulus[1],
            centroid=centroid.value, background=background.value, corrections=corrections.value,
            aperture_correction=aperture_correction, reject=reject, subarray=subarray.value,
        )
        execution = reduction.Execution(
            workers=workers, scheduler=scheduler, resume=resume,
            command_line=reduction.mask_command_line(_command_line(ctx)),
        )
        columns = (TextColumn("reducing AORs"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=stderr, disable=not stderr.is_terminal, transient=True) as bar:
            task = bar.add_task("reduce", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = reduction.reduce(engine, run_name, options, execution, progress=progress)
        for note in report.notes:
            stderr.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
        for path, reason in report.unreadable:
            stderr.print(f"unreadable: {path}: {reason}", markup=False, highlight=False, soft_wrap=True)
        if report.already_complete:
            stdout.print(f"run {report.name!r} is already complete (same parameters); nothing to do", markup=False)
        rows = queries.run_summary(engine, report.name)
        _print_rows(rows, SUMMARY_TABLE_COLUMNS, OutputFormat.table, title=f"run {report.name}: per-AOR summary")
        stdout.print(
            f"run {report.name!r}: {report.status}; {report.n_units_done} of {report.n_units} AOR units "
            f"({report.n_units_this_time} this time), {report.n_images} image rows, {report.n_flagged} flagged, "
            f"{report.n_outliers} outliers",
            markup=False, highlight=False,
        )


def _command_line(ctx: typer.Context) -> list[str]:
    """The running command as typed: ``iracdb``, the subcommand path and its arguments."""
    args = list(ctx.meta.get("iracdb.args", []))
    names = []
    node: Any = ctx
    while node is not None and node.parent is not None:  # the root's name may be "python -m iracdb"
        names.append(node.info_name or "")
        node = node.parent
    return ["iracdb", *reversed(names), *args]


def _target_name(text: str) -> str:
    return " ".join(text.replace(",", " ").split())


# --- results: runs, summaries, exports, SQL, plots, comparisons -------------------------------------------------

RunArgument = Annotated[str, typer.Argument(metavar="RUN", help="The run's name (see `iracdb runs`).")]
#: Table columns of `iracdb summary` (csv and json give every column of the aor_photometry view).
SUMMARY_TABLE_COLUMNS = (
    "aorkey", "channel", "target", "object", "date_obs", "mission", "read_mode", "n_total", "n_used", "n_rejected",
    "n_flagged", "flux_mjy", "flux_err_mjy", "median_flux_mjy", "std_mjy", "spread_pct",
)


@app.command(cls=_Command)
def runs(fmt: FormatOption = OutputFormat.table, db: DbOption = None) -> None:
    """List the reduction runs: state, counts and the parameters that tell them apart."""
    with _database(db) as engine:
        _print_rows(queries.list_runs(engine), queries.RUN_LIST_COLUMNS, fmt, title="Runs")


class ShowFormat(StrEnum):
    table = "table"
    json = "json"


@app.command(cls=_Command)
def show(
    run_name: RunArgument,
    fmt: Annotated[
        ShowFormat, typer.Option("--format", "-f", metavar="table|json", help="table (readable) or json.")
    ] = ShowFormat.table,
    db: DbOption = None,
) -> None:
    """Show every recorded parameter of a run and its provenance (software, host, command line, inputs)."""
    from iracdb.export import run_provenance

    with _database(db) as engine:
        provenance = run_provenance(engine, run_name, with_inputs=False)
    if fmt is ShowFormat.json:
        sys.stdout.write(json.dumps(provenance, indent=1, default=str) + "\n")
        return
    table = Table(title=Text(f"run {run_name}"), title_justify="left", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in _flatten(provenance):
        table.add_row(Text(key), Text(value))
    stdout.print(table)


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, text) pairs of a nested dict; lists of scalars on one line, lists of dicts one row each."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and any(isinstance(item, dict) for item in value):
        for index, item in enumerate(value):
            yield from _flatten(item, f"{prefix}[{index}]")
    elif isinstance(value, list):
        yield prefix, ", ".join(_cell(item) for item in value)
    else:
        yield prefix, _cell(value)


@app.command(cls=_Command)
def summary(
    run_name: RunArgument,
    aor: Annotated[int | None, typer.Option("--aor", metavar="AORKEY", help="Only this AOR.")] = None,
    fmt: FormatOption = OutputFormat.table,
    db: DbOption = None,
) -> None:
    """The per-AOR results of a run: mean, median and spread of the used images' fluxes [mJy].

    flux_mjy is the mean, flux_err_mjy the error of the mean (std / sqrt(n_used)), std_mjy the sample standard
    deviation; csv and json carry every column of the aor_photometry view.
    """
    with _database(db) as engine:
        rows = queries.run_summary(engine, run_name, aorkey=aor)
    columns = SUMMARY_TABLE_COLUMNS if fmt is OutputFormat.table else queries.RUN_SUMMARY_COLUMNS
    _print_rows(rows, columns, fmt, title=f"run {run_name}: per-AOR photometry")


@app.command(cls=_Command)
def export(
    run_name: RunArgument,
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Folder to write into (created if missing).")
    ] = Path("."),
    fmt: Annotated[
        ExportFormat,
        typer.Option("--format", "-f", metavar=_metavar(EXPORT_FORMATS),
                     help=_choice_help("Format of the two tables", EXPORT_FORMATS)),
    ] = ExportFormat("csv"),
    overwrite: OverwriteOption = False,
    db: DbOption = None,
) -> None:
    """Write a run's per-AOR and per-image tables, its log and its provenance into DIR.

    Files: RUN_aor_data, RUN_img_data (.csv, .parquet, .ecsv or .vot), RUN_log.txt (parameters, problem AORs,
    provenance, inputs) and RUN_provenance.json; RUN is the run's name with any character other than letters,
    digits, '.', '_' and '-' percent-encoded (a/b -> a%2Fb). Rows are streamed, so any size of run exports in
    bounded memory. An existing file is replaced only with --overwrite.
    """
    from iracdb.export import export_run

    with _database(db) as engine:
        columns = (TextColumn("exporting image rows"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=stderr, disable=not stderr.is_terminal, transient=True) as bar:
            task = bar.add_task("export", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = export_run(engine, run_name, out, fmt.value, overwrite=overwrite, progress=progress)
    if result.status != "complete":
        stderr.print(f"note: run {run_name!r} is {result.status}: the export holds only its finished AORs "
                     f"(finish it with `iracdb reduce --run-name {run_name} --resume ...`)",
                     markup=False, highlight=False, soft_wrap=True)
    for path in result.files:
        stdout.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
    stdout.print(f"run {run_name!r}: {result.n_aor_rows} AOR rows, {result.n_image_rows} image rows",
                 markup=False, highlight=False, soft_wrap=True)


#: `iracdb sql`'s --db: a read-only role's URL comes first.
ReaderDbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="URL",
        help="Database URL (sqlite:///FILE, a plain file path, or postgresql+psycopg://READER@HOST/DB: a read-only "
        "role, see `iracdb db create-reader`). Default: $IRACDB_READER_URL, else $IRACDB_DB_URL, else ./iracdb.sqlite.",
        show_default=False,
    ),
]


@app.command(cls=_Command)
def sql(
    query: Annotated[str, typer.Argument(metavar="QUERY", help="One SQL statement, e.g. \"SELECT * FROM runs\".")],
    max_rows: Annotated[
        int | None,
        typer.Option("--max-rows", metavar="N", help="Print at most N rows. Default: 1000 for table, all otherwise."),
    ] = None,
    fmt: FormatOption = OutputFormat.table,
    db: ReaderDbOption = None,
) -> None:
    """Run one read-only SQL query and print its rows; the database refuses any write.

    The views image_photometry and aor_photometry give every run's rows with the export's columns. csv and json are
    written as the rows arrive, so any number of rows prints in little memory. On PostgreSQL, connect as a read-only
    role (`iracdb db create-reader`): a superuser is refused. Exit status 2 when the query is refused or invalid, or
    cancelled after 300 s.
    """
    from iracdb.db.readonly import stream_read_only

    if max_rows is not None and max_rows < 1:
        with _errors_to_exit():
            raise BadOption(f"--max-rows must be at least 1, not {max_rows}")
    limit = max_rows if max_rows is not None else (1000 if fmt is OutputFormat.table else None)
    # ensure=False: a read-only command never creates or migrates a schema (a read-only role could not anyway).
    with _database(db, ensure=False, reader=True) as engine, stream_read_only(engine, query, max_rows=limit) as result:
        if fmt is OutputFormat.table:
            rows = [dict(zip(result.columns, row, strict=True)) for row in result]
            _print_rows(rows, result.columns, fmt, title="")
        else:
            try:
                (_write_csv if fmt is OutputFormat.csv else _write_json)(result.columns, result)
                sys.stdout.flush()
            except BrokenPipeError:  # `iracdb sql ... | head`: the reader has all it wants; stop the query
                _silence_stdout()
                return
    if result.truncated:
        stderr.print(f"note: only the first {limit} rows are shown (--max-rows)", markup=False, highlight=False)


def _write_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """CSV to stdout, a row at a time (NULL as an empty field)."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if value is None else value for value in row])


def _write_json(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A JSON array of objects to stdout, written a batch at a time: the same text as ``json.dumps(list, indent=1)``
    of all the rows."""
    encoder = json.JSONEncoder(indent=1, default=str)  # one encoder, a batch per call: the per-call cost is high
    rows = iter(rows)
    opening = "[\n"
    while batch := [dict(zip(columns, row, strict=True)) for row in itertools.islice(rows, 1000)]:
        text = encoder.encode(batch)  # "[\n {...},\n {...}\n]": keep what is between the brackets
        sys.stdout.write(opening + text[2:-2])
        opening = ",\n"
    sys.stdout.write("[]\n" if opening == "[\n" else "\n]\n")


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail on a closed pipe again."""
    import os

    with suppress(OSError, ValueError):  # ValueError: no file descriptor (e.g. captured in tests)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@app.command(cls=_Command)
def plot(
    run_name: RunArgument,
    aor: Annotated[
        int | None,
        typer.Option("--aor", metavar="AORKEY", help="Light curve and pixel-phase diagnostic of this AOR."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", metavar="FILE",
                     help="Where to write the figure: FILE.png, FILE.pdf or FILE.svg (the format). "
                          "Default: RUN_overview.png or RUN_aor_AORKEY.png here."),
    ] = None,
    overwrite: OverwriteOption = False,
    db: DbOption = None,
) -> None:
    """Plot a run: without --aor, the run overview (per-AOR flux vs time, like a calibration-star monitoring plot,
    and the pixel-phase diagnostic); with --aor, that AOR's light curve (outliers marked) and pixel-phase diagnostic.

    An existing file is replaced only with --overwrite; the database is never an output.
    """
    from iracdb import plots

    with _database(db) as engine:
        path = out or plots.default_plot_path(run_name, aor)
        if aor is None:
            written = plots.plot_overview(engine, run_name, path, overwrite=overwrite)
        else:
            written = plots.plot_aor(engine, run_name, aor, path, overwrite=overwrite)
    stdout.print(f"wrote {written}", markup=False, highlight=False, soft_wrap=True)


@app.command(cls=_Command)
def compare(
    run_a: Annotated[str, typer.Argument(metavar="RUN_A", help="The reference run.")],
    run_b: Annotated[str, typer.Argument(metavar="RUN_B", help="The run compared with it.")],
    fmt: FormatOption = OutputFormat.table,
    db: DbOption = None,
) -> None:
    """Per-AOR differences between two runs (B - A, in mJy and %), and the parameters that differ.

    diff_sigma is the difference over the combined error of the two means.
    """
    from iracdb.compare import COMPARE_COLUMNS, compare_runs

    with _database(db) as engine:
        comparison = compare_runs(engine, run_a, run_b)
    if fmt is not OutputFormat.table:
        _print_rows(comparison.rows, COMPARE_COLUMNS, fmt, title="")
        return
    if comparison.parameter_differences:
        for name, value_a, value_b in comparison.parameter_differences:
            stdout.print(f"parameter {name}: {value_a!r} (A) -> {value_b!r} (B)", markup=False, highlight=False)
    else:
        stdout.print("the two runs have the same parameters", markup=False)
    _print_rows(comparison.rows, COMPARE_COLUMNS, fmt, title=f"{run_b} - {run_a}")
    for label, keys, name in (("only in A", comparison.only_a, run_a), ("only in B", comparison.only_b, run_b)):
        for aorkey, channel, target in keys:
            stdout.print(f"{label} ({name}): AOR {aorkey} ch{channel} {target}", markup=False, highlight=False)
    if comparison.median_diff_pct is not None:
        stdout.print(f"median difference: {comparison.median_diff_pct:+.4f} % over {len(comparison.rows)} AOR rows",
                     markup=False, highlight=False)


# --- synthetic data and the demo --------------------------------------------------------------------------------


@app.command(cls=_Command)
def synth(
    out_dir: Annotated[
        Path, typer.Argument(metavar="OUT_DIR", help="Folder to write the archive into (created if missing).")
    ],
    seed: Annotated[
        int, typer.Option("--seed", metavar="N", help="Seed of every random choice; same seed, same bytes.")
    ] = 0,
    inject_response: Annotated[
        bool, typer.Option("--inject-response", help="Multiply the pixel-phase x array-location response in.")
    ] = False,
    noise: Annotated[bool, typer.Option("--noise/--no-noise", help="Add noise matching the uncertainties.")] = True,
    truth: Annotated[
        Path | None,
        typer.Option("--truth", metavar="FILE", help="Truth table CSV. Default: OUT_DIR_truth.csv beside OUT_DIR."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Write into a non-empty OUT_DIR and replace an existing truth table.")
    ] = False,
) -> None:
    """Write a synthetic IRAC archive (all channels, cryo and warm, full array and subarray) and its truth table.

    The truth table is written beside the archive, not in it, so that `iracdb ingest OUT_DIR` sees only FITS files.
    A non-empty OUT_DIR or an existing truth table is refused unless --overwrite is given.
    """
    from iracdb.outputs import check_outputs
    from iracdb.synth import write_archive

    truth = truth or out_dir.parent / f"{out_dir.name}_truth.csv"
    with _errors_to_exit():
        check_outputs([truth], overwrite=overwrite)  # before any file of the archive is written
        archive = write_archive(out_dir, seed=seed, inject_response=inject_response, noise=noise, truth_csv=False,
                                overwrite=overwrite)
        truth_path = archive.write_truth_csv(truth, overwrite=overwrite)
    stdout.print(
        f"wrote {len(archive.files)} files of {len(archive.aors)} AORs ({len(archive.truth)} images) to "
        f"{archive.root}; truth table: {truth_path}",
        markup=False,
        highlight=False,
    )


@app.command(cls=_Command)
def demo(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Where to put the demo's archive, database, export and plots.")
    ] = Path("demo"),
) -> None:
    """Run the whole job on synthetic data with an embedded SQLite database: synthesise an archive, ingest it,
    reduce it, export it and plot it, printing where everything is.

    Safe to run again on the same DIR. The exit status is 4 when some synthetic file could not be catalogued.
    """
    from iracdb.demo import RUN_NAME, TRUTH_CHECK_COLUMNS, run_demo

    with _errors_to_exit():
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=stderr, disable=not stderr.is_terminal, transient=True) as bar:
            tasks: dict[str, Any] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=None)
                bar.update(tasks[stage], completed=done, total=total)

            result = run_demo(directory, progress=progress)
    url = result.database_url
    say = functools.partial(stdout.print, markup=False, highlight=False, soft_wrap=True)
    say(f"1. wrote a synthetic IRAC archive: {result.n_files} files in {result.archive}")
    say(f"   (what is really in it, image by image: {result.truth_csv})")
    summary_ = result.ingest
    say(f"2. catalogued it in {url}: {summary_.n_new} new, {summary_.n_unchanged} unchanged, "
        f"{summary_.n_rejected} rejected")
    _print_rows(result.aors, queries.AOR_LIST_COLUMNS, OutputFormat.table, title="AORs")
    report = result.reduction
    done = "already complete" if report.already_complete else f"{report.n_images} image rows"
    say(f"3. reduced it as run {RUN_NAME!r} (brightest source near each pointing, 3 px aperture, 3-7 px annulus): "
        f"{done}")
    _print_rows(result.summary, SUMMARY_TABLE_COLUMNS, OutputFormat.table, title=f"run {RUN_NAME}: per-AOR photometry")
    ratios = [row["ratio"] for row in result.truth_check if row["ratio"] is not None]
    say("   checked against the truth table: ratio = flux_mjy / ap_corr / true flux (the synthetic stars lack the real "
        "PSF's far wings, which the published aperture correction restores, so it is divided out here):")
    _print_rows(result.truth_check, TRUTH_CHECK_COLUMNS, OutputFormat.table, title="measured vs injected")
    if ratios:
        say(f"   ratio {min(ratios):.4f} to {max(ratios):.4f} over {len(ratios)} AOR rows")
    say(f"4. exported it ({result.export.n_aor_rows} AOR rows, {result.export.n_image_rows} image rows):")
    for path in result.export.files:
        say(f"   {path}")
    say("5. plotted it:")
    for path in result.plots:
        say(f"   {path}")
    say(f"Next: iracdb summary {RUN_NAME} --db {url}")
    say(f"      iracdb sql \"SELECT aorkey, channel, flux_mjy, flux_err_mjy FROM aor_photometry\" --db {url}")
    say(f"      (or open {url.removeprefix('sqlite:///')} with sqlite3)")
    if summary_.n_rejected:
        raise typer.Exit(EXIT_SOME_REJECTED)
