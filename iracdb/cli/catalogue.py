"""``iracdb db ...``, ``ingest``, ``aors``, ``exposures``, ``rejected``: the schema and the catalogue."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from iracdb.cli.app import (
    EXIT_SOME_REJECTED,
    ChannelOption,
    ColumnsOption,
    DbOption,
    FormatOption,
    OutputFormat,
    WideOption,
    _chosen_columns,
    _Command,
    _database,
    _errors_to_exit,
    _print_rows,
    app,
    db_app,
    stderr,
    stdout,
)
from iracdb.config import default_workers
from iracdb.db.engine import safe_url
from iracdb.errors import BadOption

# --- database schema ------------------------------------------------------------------------------------------


@db_app.command("upgrade", cls=_Command)
def db_upgrade(
    revision: Annotated[str, typer.Argument(metavar="REVISION", help="Target revision (head: the newest).")] = "head",
    db: DbOption = None,
) -> None:
    """Migrate the database schema to the newest revision (or REVISION)."""
    from iracdb.db import migrate

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
    from iracdb.db import migrate

    with _database(db, ensure=False) as engine:
        migrate.downgrade(engine, revision)
        after = migrate.current_revision(engine)
        stdout.print(f"{safe_url(str(engine.url))}: schema now {after or '(empty)'}", markup=False)


@db_app.command("current", cls=_Command)
def db_current(db: DbOption = None) -> None:
    """Print the database's schema revision and the newest this iracdb knows."""
    from iracdb.db import migrate

    with _database(db, ensure=False) as engine:
        current = migrate.current_revision(engine)
        head = migrate.head_revision(engine)
        state = "up to date" if current == head else "run `iracdb db upgrade`"
        stdout.print(f"{safe_url(str(engine.url))}: {current or '(empty)'} (newest {head}; {state})", markup=False)


@db_app.command("check", cls=_Command)
def db_check(db: DbOption = None) -> None:
    """Check that the models and the migrations describe the same schema (alembic check)."""
    from iracdb.db import migrate

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
        int | None,
        typer.Option("--workers", "-j", metavar="N", show_default=False,
                     help="Processes reading headers in parallel [default: the CPU cores this process may use; "
                          "1: all in this process; 2: a second process reads and checksums the files while this "
                          "one parses the headers and writes; 3 or more: that many processes read and parse]."),
    ] = None,
    db: DbOption = None,
) -> None:
    """Catalogue every IRAC Level-1 file under each PATH: AORs, exposures, files and their headers.

    Re-ingesting is cheap and safe: unchanged files (same size and mtime) are not read, changed files are re-read,
    moved files (same checksum, new path) get their new path. Files that cannot be catalogued are listed with the
    reason and recorded; the exit status is then 4 (0 when every file was catalogued).
    """
    from iracdb.api import Archive

    workers = default_workers() if workers is None else workers
    with _database(db, create=True) as engine:
        columns = (TextColumn("reading"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=stderr, disable=not stderr.is_terminal, transient=True) as bar:
            task = bar.add_task("ingest", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            summary = Archive.from_engine(engine).ingest([str(p) for p in paths], workers=workers, progress=progress)
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
    columns: ColumnsOption = None,
    wide: WideOption = False,
    db: DbOption = None,
) -> None:
    """List catalogued AORs: one row per AOR and channel."""
    from iracdb.db import listing  # not queries: no ORM set-up for a listing

    with _database(db) as engine:
        shown = _chosen_columns(columns, listing.AOR_LIST_COLUMNS, listing.AOR_LIST_COLUMNS)
        rows = listing.list_aors(engine, object=object, channel=channel, program=program, mission=mission)
        _print_rows(rows, shown, fmt, title="AORs", wide=wide)


@app.command(cls=_Command)
def exposures(
    aorkey: Annotated[int, typer.Argument(metavar="AORKEY", help="The AOR (its AORKEY).")],
    channel: ChannelOption = None,
    fmt: FormatOption = OutputFormat.table,
    columns: ColumnsOption = None,
    wide: WideOption = False,
    db: DbOption = None,
) -> None:
    """List the exposures of one AOR, with the kinds of file catalogued for each."""
    from iracdb.db import queries

    with _database(db) as engine:
        shown = _chosen_columns(columns, queries.EXPOSURE_LIST_COLUMNS, queries.EXPOSURE_LIST_COLUMNS)
        rows = queries.list_exposures(engine, aorkey, channel=channel)
        _print_rows(rows, shown, fmt, title=f"AOR {aorkey}", wide=wide)


@app.command(cls=_Command)
def rejected(fmt: FormatOption = OutputFormat.table, wide: WideOption = False, db: DbOption = None) -> None:
    """List the files ingest could not catalogue, with the reasons."""
    from iracdb.db import queries

    with _database(db) as engine:
        _print_rows(queries.list_rejected(engine), ("path", "reason"), fmt, title="Rejected files", wide=wide,
                    more="--wide or --format csv to show them")
