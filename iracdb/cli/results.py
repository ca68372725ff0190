"""``iracdb runs``, ``show``, ``summary``, ``export``, ``sql``, ``plot``, ``compare``: answers about runs."""

from __future__ import annotations

import csv
import itertools
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from iracdb.choices import (
    EXPORT_FORMATS,
)
from iracdb.cli.app import (
    ColumnsOption,
    DbOption,
    FormatOption,
    OutputFormat,
    OverwriteOption,
    WideOption,
    _cell,
    _choice_enum,
    _choice_help,
    _chosen_columns,
    _Command,
    _csv_value,
    _database,
    _errors_to_exit,
    _metavar,
    _print_rows,
    _print_sections,
    app,
    stderr,
    stdout,
    summary_table_columns,
)
from iracdb.errors import BadOption

# --- results: runs, summaries, exports, SQL, plots, comparisons -------------------------------------------------

if TYPE_CHECKING:  # built at run time from the library's choices; to a type checker, any StrEnum
    ExportFormat: TypeAlias = StrEnum
else:
    ExportFormat = _choice_enum("ExportFormat", EXPORT_FORMATS)

RunArgument = Annotated[str, typer.Argument(metavar="RUN", help="The run's name (see `iracdb runs`).")]


@app.command(cls=_Command)
def runs(
    fmt: FormatOption = OutputFormat.table,
    columns: ColumnsOption = None,
    wide: WideOption = False,
    db: DbOption = None,
) -> None:
    """List the reduction runs: state, counts and the parameters that tell them apart."""
    from iracdb.db import listing  # not queries: no ORM set-up for a listing

    with _database(db) as engine:
        shown = _chosen_columns(columns, listing.RUN_LIST_COLUMNS, listing.RUN_LIST_COLUMNS)
        _print_rows(listing.list_runs(engine), shown, fmt, title="Runs", wide=wide)


class ShowFormat(StrEnum):
    table = "table"
    json = "json"


@app.command(cls=_Command)
def show(
    run_name: RunArgument,
    fmt: Annotated[
        ShowFormat, typer.Option("--format", "-f", metavar="table|json", help="table (readable) or json.")
    ] = ShowFormat.table,
    columns: Annotated[
        bool, typer.Option("--columns", help="Also list the export's columns (name, unit, description).")
    ] = False,
    db: DbOption = None,
) -> None:
    """Show a run: its parameters as given and as applied, its counts and its provenance (software, host, command
    line, inputs). json gives all of it, with the export's columns."""
    from iracdb.api import Archive

    with _database(db) as engine:
        provenance = Archive.from_engine(engine).run(run_name).get_provenance(with_inputs=False)
    if fmt is ShowFormat.json:
        sys.stdout.write(json.dumps(provenance, indent=1, default=str) + "\n")
        return
    _print_sections(_show_sections(provenance, with_columns=columns))


def _show_sections(provenance: dict[str, Any], *, with_columns: bool) -> list[tuple[str, list[tuple[str, str]]]]:
    """(title, [(name, value)]) sections of ``iracdb show``'s table, from :func:`iracdb.export.run_provenance`."""
    rest = dict(provenance)
    run = rest.pop("run")
    name = run["name"]
    parameters = rest.pop("parameters")
    resolved = dict(rest.pop("resolved"))
    per_channel = resolved.pop("per_mission_channel", {})
    photometry = dict(resolved.pop("photometry", {}))
    # The photometry core's own aperture_correction is always 'none': the correction is applied per mission and
    # channel after it (the sections below), so showing it beside those values only confuses.
    photometry.pop("aperture_correction", None)
    units = rest.pop("units")
    catalogue = rest.pop("columns", {})
    statuses: dict[str, int] = {}
    for unit in units:
        statuses[unit["status"]] = statuses.get(unit["status"], 0) + 1
    unit_text = ", ".join(f"{count} {status}" for status, count in statuses.items()) or "none"
    sections = [
        (f"run {name}", [*_flatten({k: v for k, v in run.items() if k != "name"}),
                         ("units", f"{unit_text} AOR x channel (per AOR: iracdb summary {name})"),
                         ("params_hash", rest.pop("params_hash"))]),
        ("parameters, as given", list(_flatten(parameters))),
        ("parameters, as resolved", [*_flatten(resolved), *_flatten(photometry, "photometry")]),
    ]
    for key, applied in per_channel.items():
        mission, _, channel = key.partition(":")
        sections.append((f"applied to {mission} {channel}", list(_flatten(applied))))
    sections.append(("software", list(_flatten(rest.pop("software")))))
    inputs = rest.pop("inputs_summary")
    sections.append(("provenance", list(_flatten(rest))))
    sections.append(("inputs (files read)", list(_flatten(inputs))))
    if with_columns:
        for table, described in catalogue.items():
            sections.append((f"columns of RUN_{table}", [
                (column["name"], f"[{column['unit']}] {column['description']}" if column["unit"]
                 else column["description"]) for column in described]))
    return sections


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


BestOnlyOption = Annotated[
    bool, typer.Option("--best-only", help="Only each AOR's best aperture (default: every aperture of the grid).")
]


@app.command(cls=_Command)
def summary(
    run_name: RunArgument,
    aor: Annotated[int | None, typer.Option("--aor", metavar="AORKEY", help="Only this AOR.")] = None,
    best_only: BestOnlyOption = False,
    fmt: FormatOption = OutputFormat.table,
    columns: ColumnsOption = None,
    wide: WideOption = False,
    db: DbOption = None,
) -> None:
    """The per-AOR results of a run: mean, median and spread of the used images' fluxes [mJy].

    flux_mjy is the mean, flux_err_mjy the error of the mean (std / sqrt(n_used)), std_mjy the sample standard
    deviation; csv and json carry every column of the aor_photometry view (--columns picks any of them).
    """
    from iracdb.db import queries

    with _database(db) as engine:
        rows = queries.run_summary(engine, run_name, aorkey=aor, best_only=best_only)
        default = (summary_table_columns(queries.aperture_count(engine, run_name)) if fmt is OutputFormat.table
                   else queries.RUN_SUMMARY_COLUMNS)
        shown = _chosen_columns(columns, default, queries.RUN_SUMMARY_COLUMNS)
    _print_rows(rows, shown, fmt, title=f"run {run_name}: per-AOR photometry", wide=wide)


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
    best_only: BestOnlyOption = False,
    db: DbOption = None,
) -> None:
    """Write a run's per-AOR and per-image tables, its log and its provenance into DIR.

    Files: RUN_aor_data, RUN_img_data (.csv, .parquet, .ecsv or .vot), RUN_log.txt (parameters, problem AORs,
    provenance, inputs) and RUN_provenance.json; RUN is the run's name with any character other than letters,
    digits, '.', '_' and '-' percent-encoded (a/b -> a%2Fb). Rows are streamed, so any size of run exports in
    bounded memory. An existing file is replaced only with --overwrite.
    """
    from iracdb.api import Archive

    with _database(db) as engine:
        columns = (TextColumn("exporting image rows"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=stderr, disable=not stderr.is_terminal, transient=True) as bar:
            task = bar.add_task("export", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            # No bar to show (not a terminal): no callback, so the rows are not counted for it.
            result = Archive.from_engine(engine).run(run_name).export(
                out, fmt.value, overwrite=overwrite, best_only=best_only,
                progress=progress if stderr.is_terminal else False)
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
    wide: WideOption = False,
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
            _print_rows(rows, result.columns, fmt, title="", wide=wide,
                        more="--wide to show them, or select fewer columns")
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
    """CSV to stdout, a row at a time, values as the exports write them (:func:`_csv_value`: NULL as an empty field,
    booleans ``true``/``false``; SQLite has no boolean type, and gives a boolean expression as 0 or 1)."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(value) for value in row])


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
    grid: Annotated[
        bool, typer.Option("--grid", help="The aperture grid: score vs radius per annulus and centroid (best "
                                          "ringed), the best aperture's RMS vs bin size and flux vs plane (of --aor "
                                          "or the first AOR).")
    ] = False,
    overwrite: OverwriteOption = False,
    db: DbOption = None,
) -> None:
    """Plot a run: without --aor, the run overview (per-AOR flux vs time, like a calibration-star monitoring plot,
    and the pixel-phase diagnostic); with --aor, that AOR's light curve (outliers marked) and pixel-phase diagnostic.

    An existing file is replaced only with --overwrite; the database is never an output.
    """
    from iracdb.api import Archive

    with _database(db) as engine:
        written = Archive.from_engine(engine).run(run_name).plot(out, aor=aor, grid=grid, overwrite=overwrite)
    stdout.print(f"wrote {written}", markup=False, highlight=False, soft_wrap=True)


@app.command(cls=_Command)
def compare(
    run_a: Annotated[str, typer.Argument(metavar="RUN_A", help="The reference run.")],
    run_b: Annotated[str, typer.Argument(metavar="RUN_B", help="The run compared with it.")],
    fmt: FormatOption = OutputFormat.table,
    columns: ColumnsOption = None,
    wide: WideOption = False,
    db: DbOption = None,
) -> None:
    """Per-AOR differences between two runs (B - A, in mJy and %), and the parameters that differ.

    diff_sigma is the difference over the combined error of the two means.
    """
    from iracdb.api import Archive
    from iracdb.compare import COMPARE_COLUMNS

    with _database(db) as engine:
        shown = _chosen_columns(columns, COMPARE_COLUMNS, COMPARE_COLUMNS)
        comparison = Archive.from_engine(engine).comparison(run_a, run_b)
    if fmt is not OutputFormat.table:
        _print_rows(comparison.rows, shown, fmt, title="")
        return
    if comparison.parameter_differences:
        for name, value_a, value_b in comparison.parameter_differences:
            stdout.print(f"parameter {name}: {value_a!r} (A) -> {value_b!r} (B)", markup=False, highlight=False)
    else:
        stdout.print("the two runs have the same parameters", markup=False)
    _print_rows(comparison.rows, shown, fmt, title=f"{run_b} - {run_a}", wide=wide)
    for label, keys, name in (("only in A", comparison.only_a, run_a), ("only in B", comparison.only_b, run_b)):
        for aorkey, channel, target in keys:
            stdout.print(f"{label} ({name}): AOR {aorkey} ch{channel} {target}", markup=False, highlight=False)
    if comparison.median_diff_pct is not None:
        stdout.print(f"median difference: {comparison.median_diff_pct:+.4f} % over {len(comparison.rows)} AOR rows",
                     markup=False, highlight=False)
