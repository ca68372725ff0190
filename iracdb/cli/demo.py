"""``iracdb synth`` and ``iracdb demo``: synthetic data and the whole job on it."""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from iracdb.cli.app import (
    EXIT_SOME_REJECTED,
    SUMMARY_TABLE_COLUMNS,
    OutputFormat,
    _Command,
    _errors_to_exit,
    _print_rows,
    app,
    stderr,
    stdout,
)

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
    from iracdb.db import queries
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
    _print_rows(result.aors, queries.AOR_LIST_COLUMNS, OutputFormat.table, title="AORs",
                more="`iracdb aors --wide` shows them")
    report = result.reduction
    done = "already complete" if report.already_complete else f"{report.n_images} image rows"
    say(f"3. reduced it as run {RUN_NAME!r} (brightest source near each pointing, 3 px aperture, 3-7 px annulus): "
        f"{done}")
    _print_rows(result.summary, SUMMARY_TABLE_COLUMNS, OutputFormat.table, title=f"run {RUN_NAME}: per-AOR photometry",
                more=f"`iracdb summary {RUN_NAME} --wide` shows them")
    ratios = [row["ratio"] for row in result.truth_check if row["ratio"] is not None]
    say("   checked against the truth table: ratio = flux_mjy / ap_corr / true flux (the synthetic stars lack the real "
        "PSF's far wings, which the published aperture correction restores, so it is divided out here):")
    _print_rows(result.truth_check, TRUTH_CHECK_COLUMNS, OutputFormat.table, title="measured vs injected",
                more="widen the terminal to show them")
    if ratios:
        say(f"   ratio {min(ratios):.4f} to {max(ratios):.4f} over {len(ratios)} AOR rows")
    say(f"4. exported it ({result.export.n_aor_rows} AOR rows, {result.export.n_image_rows} image rows):")
    for path in result.export.files:
        say(f"   {path}")
    say("5. plotted it:")
    for path in result.plots:
        say(f"   {path}")
    iracdb = _iracdb_command()
    say(f"Next: {iracdb} summary {RUN_NAME} --db {url}")
    say(f"      {iracdb} sql \"SELECT aorkey, channel, flux_mjy, flux_err_mjy FROM aor_photometry\" --db {url}")
    say(f"      (or open {url.removeprefix('sqlite:///')} with sqlite3)")
    if iracdb != "iracdb":
        activate = shlex.quote(_relative(Path(sys.executable).parent / "activate"))
        say(f"      (or run `source {activate}` once, and then plain `iracdb ...` works in this shell)")
    if summary_.n_rejected:
        raise typer.Exit(EXIT_SOME_REJECTED)


def _iracdb_command() -> str:
    """How to run this iracdb from the current folder, as a shell command: ``iracdb`` when that is on the PATH and is
    this installation's script, else the script's path (``.venv/bin/iracdb`` after ``make demo``), else
    ``PYTHON -m iracdb``. (``make demo`` does not activate the virtual environment, so plain ``iracdb`` would fail.)
    """
    script = Path(sys.executable).parent / "iracdb"  # the console script beside this Python (not resolved: a venv)
    on_path = shutil.which("iracdb")
    if on_path and script.is_file() and Path(on_path).resolve() == script.resolve():
        return "iracdb"
    if script.is_file():
        return shlex.quote(_relative(script))
    return f"{shlex.quote(_relative(Path(sys.executable)))} -m iracdb"


def _relative(path: Path) -> str:
    """``path`` relative to the current folder when it is inside it (``.venv/bin/iracdb``), else absolute."""
    absolute = os.path.abspath(path)
    try:
        relative = str(Path(absolute).relative_to(Path.cwd()))
    except ValueError:
        return absolute
    return relative if os.sep in relative else f".{os.sep}{relative}"  # a bare name would be looked up on the PATH
