"""``iracdb reduce``: options parsed here, the work done by :func:`iracdb.reduce.reduce`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from iracdb.choices import (
    BACKGROUND_METHODS,
    BEST_CRITERIA,
    CENTROID_METHODS,
    CORRECTION_SETS,
    FILE_TYPES,
    REJECT_RULES,
    SUBARRAY_MODES,
)
from iracdb.cli.app import (
    ChannelOption,
    DbOption,
    OutputFormat,
    _choice_enum,
    _choice_help,
    _Command,
    _database,
    _metavar,
    _print_rows,
    app,
    stderr,
    stdout,
    summary_table_columns,
)

if TYPE_CHECKING:  # built at run time from the library's choices; to a type checker, any StrEnum
    FileType: TypeAlias = StrEnum
    BestChoice: TypeAlias = StrEnum
    BackgroundChoice: TypeAlias = StrEnum
    CorrectionsChoice: TypeAlias = StrEnum
    SubarrayChoice: TypeAlias = StrEnum
else:
    FileType = _choice_enum("FileType", FILE_TYPES)
    BestChoice = _choice_enum("BestChoice", BEST_CRITERIA)
    BackgroundChoice = _choice_enum("BackgroundChoice", BACKGROUND_METHODS)
    CorrectionsChoice = _choice_enum("CorrectionsChoice", CORRECTION_SETS)
    SubarrayChoice = _choice_enum("SubarrayChoice", SUBARRAY_MODES)


class _ReduceCommand(_Command):
    """``iracdb reduce``: ``--annulus IN OUT`` may be repeated (typer has no repeatable two-value option, so the
    two values are passed on as one, ``"IN OUT"``, and read by :func:`iracdb.reduce.keywords.reduce_settings`)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, _paired(args))
        ctx.meta["iracdb.args"] = list(args)  # as typed
        return rest


def _paired(args: list[str]) -> list[str]:
    """``--annulus IN OUT`` as ``--annulus "IN OUT"`` (anything after ``--`` untouched)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        if args[i] == "--":
            return out + args[i:]
        if args[i] == "--annulus" and i + 2 < len(args) and not args[i + 2].startswith("--"):
            out += ["--annulus", f"{args[i + 1]} {args[i + 2]}"]
            i += 3
            continue
        out.append(args[i])
        i += 1
    return out


@app.command(cls=_ReduceCommand)
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
    radius: Annotated[
        str, typer.Option("--radius", metavar="PX|LIST|START:STOP:STEP",
                          help="Aperture radius, pixels: a number, a list 2,2.5,3, a range 2:4:0.5 (stop included) "
                               "or beta:SCALE:OFFSET (SCALE x sqrt(noise pixels) + OFFSET per image); mixed in a "
                               "list. Several radii, annuli or centroid methods make a grid: one aperture each.")
    ] = "3",
    annulus: Annotated[
        list[str] | None,
        typer.Option("--annulus", metavar="IN OUT", show_default=False,
                     help="Background annulus radii, pixels (repeatable) [default: 3 7]."),
    ] = None,
    centroid: Annotated[
        str,
        typer.Option("--centroid", metavar=_metavar(CENTROID_METHODS) + "[,...]",
                     help=_choice_help("Centroid method, or a list of them", CENTROID_METHODS)),
    ] = "box",
    best_by: Annotated[
        BestChoice,
        typer.Option("--best-by", metavar=_metavar(BEST_CRITERIA),
                     help=_choice_help("How each AOR's best aperture is chosen", BEST_CRITERIA)),
    ] = BestChoice("binned-rms"),
    best_bin: Annotated[
        int, typer.Option("--bin", metavar="N", help="Images per bin of the binned-rms score (64: one cube).")
    ] = 64,
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
    keep_first_frame: Annotated[
        bool, typer.Option("--keep-first-frame",
                           help="Let plane 0 of each subarray cube (it reads low) into the summaries, unflagged.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option("--workers", "-j", metavar="N", show_default=False,
                     help="Local worker processes [default: the CPU cores this process may use; 1: measure in "
                          "this process]."),
    ] = None,
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
    from iracdb.api import Archive
    from iracdb.db import queries
    from iracdb.reduce.keywords import reduce_settings

    with _database(db) as engine:
        options, execution = reduce_settings(
            target=target, targets_file=targets_file, auto=auto, aor=aor, object=object, channel=channel,
            file_type=file_type.value, radius=radius, annulus=annulus, centroid=centroid,
            background=background.value, corrections=corrections.value, aperture_correction=aperture_correction,
            reject=reject, subarray=subarray.value, workers=workers,
            keep_first_frame=keep_first_frame, best_by=best_by.value, best_bin=best_bin, scheduler=scheduler,
            resume=resume,
            command_line=reduction.mask_command_line(_command_line(ctx)),
        )
        columns = (TextColumn("reducing AORs"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=stderr, disable=not stderr.is_terminal, transient=True) as bar:
            task = bar.add_task("reduce", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = Archive.from_engine(engine).reduce_with(run_name, options, execution, progress=progress).report
        assert report is not None
        for note in report.notes:
            stderr.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
        for path, reason in report.unreadable:
            stderr.print(f"unreadable: {path}: {reason}", markup=False, highlight=False, soft_wrap=True)
        if report.already_complete:
            stdout.print(f"run {report.name!r} is already complete (same parameters); nothing to do", markup=False)
        rows = queries.run_summary(engine, report.name, best_only=True)
        shown = summary_table_columns(queries.aperture_count(engine, report.name))
        _print_rows(rows, shown, OutputFormat.table, title=f"run {report.name}: per-AOR summary",
                    more=f"`iracdb summary {report.name} --wide` shows them")
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
