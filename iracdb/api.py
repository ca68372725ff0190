"""The Python API: an archive opened from Python, its runs, and results as astropy tables.

::

    import iracdb
    with iracdb.open("archive.sqlite") as arc:             # a path or URL; default as the CLI's
        arc.ingest("/data/irac", workers=2)
        run = arc.reduce("run5", target=(65.4695, 57.8172), radius=3, annulus=(3, 7))
        run.aors()                                          # astropy Table, units from the column registry
        run.export("out/", format="parquet"); run.plot("run5.png")

With more than one worker process (``workers``, by default the CPU cores this process may use), a file run as
``python script.py`` needs its calls under ``if __name__ == "__main__":``, as Python's ``multiprocessing``
requires (each worker process imports the script: without the guard it would run the script again, and die); in
Jupyter, or with ``workers=1``, nothing is needed.

The command line is a layer over this module: ``iracdb ingest``, ``reduce``, ``export``, ``plot``, ``compare``,
``show`` and ``sql`` call the methods below, so both always do the same thing. Library code prints nothing: a
progress bar (rich, on stderr or in Jupyter) shows only where ``progress`` asks for one. Errors are the
:mod:`iracdb.errors` exceptions, with the CLI's one-line messages.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iracdb.config import default_workers, resolve_db_url
from iracdb.db.engine import safe_url
from iracdb.errors import BadOption, DatabaseError

if TYPE_CHECKING:
    from astropy.table import Table
    from sqlalchemy import Engine

    from iracdb.compare import Comparison
    from iracdb.export import ExportResult
    from iracdb.ingest import IngestSummary
    from iracdb.reduce.options import Execution, ReduceOptions
    from iracdb.reduce.run import RunReport

#: ``progress``: True (a bar), False (none), None (a bar on a terminal or in Jupyter), or a callable called as
#: ``progress(done, total)``.
ProgressArg = bool | None | Callable[[int, int], None]


def open(url_or_path: str | os.PathLike[str] | None = None) -> Archive:
    """Open an archive: a SQLite file or a PostgreSQL database.

    Nothing is connected yet: the database is opened when first used. A SQLite file that does not exist is created
    only by :meth:`Archive.ingest` (every other method refuses it, as the CLI does: a missing file means a mistyped
    path); a brand-new database gets the schema; one whose schema is older than this iracdb is refused
    (:class:`~iracdb.errors.SchemaOutOfDate`: ``iracdb db upgrade`` migrates it).

    Parameters
    ----------
    url_or_path : str or path, optional
        ``sqlite:///FILE``, a plain file path, ``postgresql+psycopg://USER@HOST/DB`` (or ``postgresql://``), or
        ``sqlite://`` (in memory, gone when closed). Default: ``$IRACDB_DB_URL``, else ``./iracdb.sqlite``.

    Returns
    -------
    Archive
        Use it as a context manager (``with iracdb.open(...) as arc:``), or call :meth:`Archive.close`.

    Raises
    ------
    iracdb.errors.BadOption
        A malformed URL (the message never repeats it: it may hold a password).
    """
    given = None if url_or_path is None else os.fspath(url_or_path)
    return Archive(resolve_db_url(given), given=given)


class Archive:
    """An opened archive (see :func:`open`): the catalogue of AORs, exposures and files, and the runs.

    Attributes
    ----------
    url : str
        The database URL, password masked.
    """

    def __init__(self, url: str, *, given: str | None = None, engine: Engine | None = None) -> None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        from iracdb.db.engine import EXPECTED_URL

        try:
            make_url(url)
        except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
            raise BadOption(f"not a database URL ({EXPECTED_URL})") from None
        self._url = url
        self._given = given
        self._engine = engine
        self._owns_engine = engine is None
        self._closed = False

    @classmethod
    def from_engine(cls, engine: Engine) -> Archive:
        """An archive over an engine someone else opened and will dispose of (the command line's)."""
        return cls(engine.url.render_as_string(hide_password=False), engine=engine)

    @property
    def url(self) -> str:
        """The database URL, its password (if any) shown as ``***``."""
        return safe_url(self._url)

    def __repr__(self) -> str:
        return f"<iracdb.Archive {self.url}>"

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connections (an in-memory database is then gone)."""
        if self._engine is not None and self._owns_engine:
            self._engine.dispose()
            self._engine = None
        self._closed = True

    # --- the database --------------------------------------------------------------------------------------

    def engine(self, *, create: bool = False) -> Engine:
        """The SQLAlchemy engine (schema checked, and created on a brand-new database).

        Parameters
        ----------
        create : bool
            Whether a SQLite file that does not exist may be created.

        Raises
        ------
        iracdb.errors.DatabaseError
            The archive was closed (its runs and tables cannot be read any more: open it again).
        """
        if self._closed:
            raise DatabaseError(f"the archive {self.url} is closed: open it again with iracdb.open()")
        if self._engine is None:
            from iracdb.db import migrate
            from iracdb.db.engine import make_engine

            engine = make_engine(self._url, create=create)
            with self._errors():
                migrate.ensure_schema(engine)
            self._engine = engine
        return self._engine

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """A database that cannot be reached or used is :class:`~iracdb.errors.DatabaseError` (one line)."""
        from sqlalchemy.exc import OperationalError

        try:
            yield
        except OperationalError as exc:
            reason = str(exc.orig or exc).strip().splitlines()[0]
            raise DatabaseError(f"database {self.url}: {reason}") from exc

    # --- the catalogue -------------------------------------------------------------------------------------

    def ingest(self, path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, workers: int | None = None,
               progress: ProgressArg = None) -> IngestSummary:
        """Catalogue every IRAC Level-1 file under ``path`` (as ``iracdb ingest``).

        Parameters
        ----------
        path : path or list of paths
            Folders (walked recursively) and/or FITS files.
        workers : int, optional
            Processes reading headers (default: the CPU cores this process may use; 1: in this process; 2: a child
            process reads and checksums the files, and a second thread writes). Three or more, in a script: see the
            ``__main__`` guard in :mod:`iracdb.api`.
        progress : bool, callable or None
            A progress bar (None: on a terminal or in Jupyter), or ``progress(files_read, files_to_read)``.

        Returns
        -------
        iracdb.ingest.IngestSummary
            Counts (new, updated, moved, unchanged) and ``rejected``: (path, reason) of every file that could not
            be catalogued (every good file is catalogued all the same).
        """
        from iracdb.ingest import ingest

        paths = [path] if isinstance(path, str | os.PathLike) else list(path)
        engine = self.engine(create=True)
        with self._errors(), _progress(progress, "reading") as callback:
            return ingest(engine, [os.fspath(p) for p in paths],
                          workers=default_workers() if workers is None else workers, progress=callback)

    def aors(self, *, object: str | None = None, channel: int | None = None, program: int | None = None,
             mission: str | None = None) -> Table:
        """The catalogued AORs, one row per AOR and channel (as ``iracdb aors``): times in MJD, ``n_images``
        counting subarray planes.

        Parameters
        ----------
        object : str, optional
            OBJECT contains this text (case-insensitive).
        channel : int, optional
            IRAC channel 1-4.
        program : int, optional
            PROGID.
        mission : {"cryo", "warm"}, optional
        """
        from iracdb.api_tables import table_from_dicts
        from iracdb.db import queries

        with self._errors():
            rows = queries.list_aors(self.engine(), object=object, channel=channel, program=program,
                                     mission=mission)
        return table_from_dicts(rows, queries.AOR_LIST_COLUMNS)

    def exposures(self, aorkey: int, *, channel: int | None = None) -> Table:
        """The exposures of one AOR (as ``iracdb exposures``): times [MJD], frame and exposure times [s], dither
        keys and the kinds of file catalogued.

        Raises
        ------
        iracdb.errors.NoSuchAor
            The AOR is not catalogued.
        """
        from iracdb.api_tables import table_from_dicts
        from iracdb.db import queries

        with self._errors():
            rows = queries.list_exposures(self.engine(), aorkey, channel=channel)
        return table_from_dicts(rows, queries.EXPOSURE_LIST_COLUMNS)

    def rejected(self) -> Table:
        """The files ingest could not catalogue: ``path`` and ``reason``."""
        from iracdb.api_tables import table_from_dicts
        from iracdb.db import queries

        with self._errors():
            rows = queries.list_rejected(self.engine())
        return table_from_dicts(rows, ("path", "reason"))

    def runs(self) -> Table:
        """The reduction runs (as ``iracdb runs``): state, counts and the parameters that tell them apart
        (radii in pixels)."""
        from iracdb.api_tables import table_from_dicts
        from iracdb.db import queries

        with self._errors():
            rows = queries.list_runs(self.engine())
        return table_from_dicts(rows, queries.RUN_LIST_COLUMNS)

    # --- runs ----------------------------------------------------------------------------------------------

    def reduce(self, name: str, target: Any = None, *, progress: ProgressArg = None, **options: Any) -> Run:
        """Measure every image of the chosen AORs under the run ``name`` (as ``iracdb reduce``), or finish it.

        Parameters
        ----------
        name : str
            The run's unique name. The same name with the same options returns the finished run; with other
            options it is refused (runs are immutable).
        target : str, (float, float), SkyCoord, Table, or list, optional
            Where to measure: ``"RA DEC"`` (degrees or sexagesimal), ``(ra_deg, dec_deg)``, a
            :class:`~astropy.coordinates.SkyCoord` (with a proper motion and ``obstime``, each image is measured
            where the star was at that image's time, and the run records it), a table of targets, or ``"auto"``
            (:func:`iracdb.reduce.keywords.targets_from`).
        progress : bool, callable or None
            A progress bar over AOR units (None: on a terminal or in Jupyter), or ``progress(done, total)``.
        **options
            Every option of ``iracdb reduce`` as a keyword, named as there without the dashes
            (:func:`iracdb.reduce.keywords.reduce_settings`): ``aor``, ``object``, ``channel``, ``file_type``,
            ``targets_file``, ``auto``, ``radius`` [px], ``annulus`` (IN, OUT) [px], ``centroid``, ``background``,
            ``corrections``, ``aperture_correction``, ``reject``, ``subarray``, ``workers``, ``scheduler``,
            ``resume``. ``workers`` > 1 in a script: see the ``__main__`` guard in :mod:`iracdb.api`.

        Returns
        -------
        Run
            The run; ``Run.report`` says what this call did.

        Raises
        ------
        iracdb.errors.BadOption
            An unknown or impossible option, nothing to measure, an AOR not in the catalogue.
        iracdb.errors.RunConflict
            The name exists with other parameters, or is unfinished and ``resume`` was not asked for.
        iracdb.errors.RunInterrupted, iracdb.errors.ExecutionError
            Stopped by Ctrl-C, or the workers could not do the work (the run can be resumed).
        """
        from iracdb.reduce import mask_command_line
        from iracdb.reduce.keywords import check_keywords, reduce_settings

        check_keywords(options)
        # Recorded with the run: this process's command line, and that the run was made from Python.
        command_line = f"{mask_command_line(sys.argv)} (Python: iracdb.Archive.reduce)"
        settings = reduce_settings(target=target, command_line=command_line, **options)
        return self.reduce_with(name, *settings, progress=progress)

    def reduce_with(self, name: str, options: ReduceOptions, execution: Execution | None = None, *,
                    progress: ProgressArg = None) -> Run:
        """:meth:`reduce` with the options already made (:func:`iracdb.reduce.keywords.reduce_settings`): what
        ``iracdb reduce`` calls. Same returns and exceptions."""
        from iracdb.reduce.run import reduce

        engine = self.engine()
        with self._errors(), _progress(progress, "reducing AORs") as callback:
            report = reduce(engine, name, options, execution, progress=callback)
        return Run(self, report.name, report)

    def run(self, name: str) -> Run:
        """The existing run ``name``.

        Raises
        ------
        iracdb.errors.NoSuchRun
            No run has that name (the message names recent runs).
        """
        from iracdb.db import queries

        with self._errors():
            record = queries.get_run(self.engine(), name)
        return Run(self, record["name"])

    def compare(self, run_a: str, run_b: str) -> Table:
        """Per-AOR differences of run B from run A (as ``iracdb compare``): fluxes and differences in mJy and %,
        ``diff_sigma`` over the combined errors of the means.

        ``meta`` holds ``parameter_differences`` ((name, A, B) of the parameters that differ), ``only_a`` and
        ``only_b`` ((AORKEY, channel, target) found in one run only) and ``median_diff_pct`` [%].
        """
        comparison = self.comparison(run_a, run_b)
        from iracdb.api_tables import table_from_dicts
        from iracdb.compare import COMPARE_COLUMNS

        meta = {"run_a": run_a, "run_b": run_b, "parameter_differences": comparison.parameter_differences,
                "only_a": comparison.only_a, "only_b": comparison.only_b,
                "median_diff_pct": comparison.median_diff_pct}
        return table_from_dicts(comparison.rows, COMPARE_COLUMNS, meta=meta)

    def comparison(self, run_a: str, run_b: str) -> Comparison:
        """:meth:`compare` as plain rows (:class:`iracdb.compare.Comparison`)."""
        from iracdb.compare import compare_runs

        with self._errors():
            return compare_runs(self.engine(), run_a, run_b)

    def sql(self, text: str, *, max_rows: int | None = None) -> Table:
        """The rows of one read-only SQL statement (as ``iracdb sql``: the database itself refuses any write).

        The views ``image_photometry`` and ``aor_photometry`` hold every run's rows with the export's columns.
        When the archive was opened without a URL, ``$IRACDB_READER_URL`` (a read-only role) comes first, as
        for ``iracdb sql``. On PostgreSQL, connect as a read-only role (``iracdb db create-reader``).

        Parameters
        ----------
        text : str
            One SQL statement.
        max_rows : int, optional
            At most this many rows (``meta['truncated']`` says whether there were more).

        Raises
        ------
        iracdb.errors.ReadOnlyViolation
            The statement would write.
        iracdb.errors.QueryError
            Bad SQL, more than one statement, or cancelled after 300 s.
        iracdb.errors.PrivilegedRole
            PostgreSQL connected as a superuser or a similar role.
        """
        from iracdb.api_tables import table_from_rows
        from iracdb.db.readonly import stream_read_only

        if max_rows is not None and max_rows < 1:
            raise BadOption(f"--max-rows must be at least 1, not {max_rows}")
        with self._read_only_engine() as engine, self._errors(), \
                stream_read_only(engine, text, max_rows=max_rows) as result:
            table = table_from_rows(result.columns, result)
        table.meta["truncated"] = result.truncated
        return table

    @contextmanager
    def _read_only_engine(self) -> Iterator[Engine]:
        """The engine ``sql`` reads through: this archive's, unless ``$IRACDB_READER_URL`` names another database
        (an archive opened without a URL); never creates or migrates a schema."""
        from iracdb.db.engine import make_engine

        url = resolve_db_url(self._given, reader=True)
        if url == self._url and self._engine is not None:
            yield self._engine
            return
        engine = make_engine(url, create=False)
        try:
            yield engine
        finally:
            engine.dispose()


class Run:
    """A reduction run of an :class:`Archive` (:meth:`Archive.reduce`, :meth:`Archive.run`).

    Attributes
    ----------
    archive : Archive
        The archive the run is in.
    name : str
        The run's name.
    report : iracdb.reduce.RunReport or None
        What the :meth:`Archive.reduce` call that returned this run did (None from :meth:`Archive.run`).
    """

    def __init__(self, archive: Archive, name: str, report: RunReport | None = None) -> None:
        self.archive = archive
        self.name = name
        self.report = report

    def __repr__(self) -> str:
        return f"<iracdb.Run {self.name!r} of {self.archive.url}>"

    @property
    def status(self) -> str:
        """``complete``, ``running``, ``interrupted`` or ``failed``."""
        from iracdb.db import queries

        return str(queries.get_run(self.archive.engine(), self.name)["status"])

    @property
    def provenance(self) -> dict[str, Any]:
        """Everything recorded about the run (``iracdb.export.run_provenance``): parameters as given and as
        resolved (proper motions [mas/yr] and their epoch [MJD] with the targets), software versions, host, user,
        command line, targets (ICRS [deg]), units, and every input file with its size [bytes] and SHA-256."""
        return self.get_provenance(with_inputs=True)

    def get_provenance(self, *, with_inputs: bool = True) -> dict[str, Any]:
        """:attr:`provenance`; without ``with_inputs``, only the summary of the input files (``iracdb show``)."""
        from iracdb.export import run_provenance

        with self.archive._errors():
            return run_provenance(self.archive.engine(), self.name, with_inputs=with_inputs)

    def _meta(self) -> dict[str, Any]:
        provenance = self.get_provenance(with_inputs=False)
        provenance.pop("columns", None)
        return provenance

    def aors(self, aorkey: int | None = None, *, columns: Sequence[str] | None = None,
             best_only: bool = False) -> Table:
        """The per-AOR table (the ``aor_photometry`` view; the export's ``RUN_aor_data``), one row per AOR x
        channel x target: fluxes in mJy (``flux_mjy`` the mean of the used images, ``flux_err_mjy`` the error of
        the mean), times in MJD; the run's provenance in ``meta``.

        Parameters
        ----------
        aorkey : int, optional
            Only this AOR.
        columns : sequence of str, optional
            Only these columns (any of ``iracdb.columns.AOR_COLUMN_NAMES`` but ``run``).
        best_only : bool
            Only the row of each AOR, channel and target's best aperture (a run with an aperture grid has one row
            per aperture; ``best`` marks the chosen one).
        """
        return self._table("aor", aorkey, None, columns, self._meta(), best_only=best_only)

    def images(self, aorkey: int | None = None, *, columns: Sequence[str] | None = None,
               best_only: bool = False) -> Table:
        """The per-image table (the ``image_photometry`` view; the export's ``RUN_img_data``), one row per image
        (frame, subarray plane or cube median) and target: positions in pixels, fluxes in mJy, ``flags`` and
        their ``flag_*`` booleans, ``used``; the run's provenance in ``meta``.

        For a large run, pick ``columns`` or read it AOR by AOR with :meth:`iter_images` (bounded memory).
        ``best_only``: only the rows of each AOR's best aperture (a run with an aperture grid has one row per image
        and aperture).
        """
        return self._table("image", aorkey, None, columns, self._meta(), best_only=best_only)

    def iter_images(self, *, columns: Sequence[str] | None = None) -> Iterator[Table]:
        """The per-image table one AOR x channel at a time (in AORKEY, channel order): memory bounded by the
        largest AOR, whatever the size of the run."""
        from sqlalchemy import text

        from iracdb.db.views import AOR_VIEW

        meta = self._meta()
        with self.archive._errors(), self.archive.engine().connect() as conn:
            keys = conn.execute(text(f"SELECT DISTINCT aorkey, channel FROM {AOR_VIEW} WHERE run = :run "
                                     "ORDER BY aorkey, channel"), {"run": self.name}).all()
        for aorkey, channel in keys:
            yield self._table("image", aorkey, channel, columns, meta)

    def _table(self, which: str, aorkey: int | None, channel: int | None, columns: Sequence[str] | None,
               meta: dict[str, Any], *, best_only: bool = False) -> Table:
        from iracdb.api_tables import REGISTRY, table_from_rows
        from iracdb.db import queries, views
        from iracdb.db.backend import backend_for

        available = [name for name in REGISTRY[which] if name != "run"]
        chosen = list(columns) if columns is not None else available
        unknown = [name for name in chosen if name not in available]
        if unknown or not chosen:
            raise BadOption(f"unknown column {', '.join(map(repr, unknown))}; choose from {', '.join(available)}"
                            if unknown else "name at least one column")
        view, order = (views.IMAGE_VIEW, views.IMAGE_ORDER) if which == "image" else (views.AOR_VIEW, views.AOR_ORDER)
        params: dict[str, Any] = {"run": self.name}
        if aorkey is not None:
            params["aorkey"] = aorkey
        if channel is not None:
            params["channel"] = channel
        where = " AND ".join(f"{key} = :{key}" for key in params)
        if best_only:
            where += " AND best" if which == "aor" else f" AND {views.BEST_IMAGES}"
        sql = f"SELECT {', '.join(chosen)} FROM {view} WHERE {where} ORDER BY {', '.join(order)}"
        engine = self.archive.engine()
        with self.archive._errors():
            queries.get_run(engine, self.name)
            with backend_for(engine).snapshot() as snap:
                rows = [row for batch in snap.batches(sql, **params)
                        for row in batch]
        return table_from_rows(chosen, rows, registry=which, meta=meta)

    def export(self, folder: str | os.PathLike[str], format: str = "csv", *, overwrite: bool = False,
               best_only: bool = False, progress: ProgressArg = None) -> ExportResult:
        """Write the run's two tables, log and provenance into ``folder`` (as ``iracdb export``).

        Parameters
        ----------
        folder : path
            Created if missing.
        format : {"csv", "parquet", "ecsv", "votable"}
            Format of the two tables.
        overwrite : bool
            Replace the files of an earlier export of the run.
        best_only : bool
            Only each AOR's best aperture (a run with an aperture grid has rows for every aperture).
        progress : bool, callable or None
            A progress bar over image rows (None: on a terminal or in Jupyter), or ``progress(done, total)``.

        Returns
        -------
        iracdb.export.ExportResult
            The files written and the row counts.

        Raises
        ------
        iracdb.errors.OutputExists
            A file of the export exists and ``overwrite`` is False (nothing is written).
        iracdb.errors.CannotWrite
            The folder cannot be created or written.
        """
        from iracdb.export import export_run

        engine = self.archive.engine()
        with self.archive._errors(), _progress(progress, "exporting image rows") as callback:
            return export_run(engine, self.name, Path(folder), format, overwrite=overwrite, progress=callback,
                              best_only=best_only)

    def plot(self, path: str | os.PathLike[str] | None = None, *, aor: int | None = None, grid: bool = False,
             overwrite: bool = False) -> Path:
        """Draw the run overview (or with ``aor``, that AOR's light curve) into ``path`` (as ``iracdb plot``).

        Parameters
        ----------
        path : path, optional
            ``.png``, ``.pdf`` or ``.svg``; default ``RUN_overview.png`` or ``RUN_aor_AORKEY.png`` here.
        aor : int, optional
            The AOR whose light curve and pixel-phase diagnostic to draw.
        grid : bool
            Draw the aperture grid instead (as ``iracdb plot --grid``): score against radius per annulus and
            centroid with the best marked, the best aperture's RMS against bin size, and flux against plane index
            (default file ``RUN_grid.png``).
        overwrite : bool
            Replace an existing file (never the database).

        Returns
        -------
        pathlib.Path
            The file written.
        """
        from iracdb import plots

        engine = self.archive.engine()
        default = plots.default_grid_plot_path(self.name) if grid else plots.default_plot_path(self.name, aor)
        out = Path(path) if path is not None else default
        with self.archive._errors():
            if grid:
                return plots.plot_grid(engine, self.name, out, aorkey=aor, overwrite=overwrite)
            if aor is None:
                return plots.plot_overview(engine, self.name, out, overwrite=overwrite)
            return plots.plot_aor(engine, self.name, aor, out, overwrite=overwrite)


@contextmanager
def _progress(progress: ProgressArg, label: str) -> Iterator[Callable[[int, int], None] | None]:
    """The callback to give a library function: the caller's own, a rich progress bar on stderr (or in Jupyter),
    or none."""
    if callable(progress):
        yield progress
        return
    from rich.console import Console

    console = Console(stderr=True)
    if progress is False or (progress is None and not (console.is_terminal or console.is_jupyter)):
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


__all__ = ["Archive", "Run", "open"]
