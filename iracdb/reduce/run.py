"""A run's life: plan it, record it, execute its work units, finish it.

A run is planned once: its parameters (as given and as resolved), provenance, targets and work units (one per AOR
and channel) are written before any image is measured. Work units are measured by workers that only compute
(:func:`iracdb.reduce.worker.measure_chunk`), in this process, in a local process pool or on a Dask distributed
cluster (:mod:`iracdb.workers`); this process alone writes (:mod:`iracdb.reduce.store`). Each unit's rows, its
summaries and its ``complete`` mark are committed in one transaction, so a run killed at any moment holds only
complete AORs, and ``--resume`` finishes the pending ones with the recorded parameters, giving the same rows as an
uninterrupted run."""

from __future__ import annotations

import getpass
import json
import math
import os
import platform
import signal
import socket
import subprocess
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, Engine, and_, case, func, insert, or_, select, update

from iracdb import __version__, summary, workers
from iracdb.db import queries
from iracdb.db.backend import backend_for
from iracdb.db.engine import mask_secrets
from iracdb.db.models import Exposure, File, Run, RunAperture, RunTarget, RunUnit
from iracdb.errors import BadOption, ExecutionError, RunConflict, RunInterrupted, RunTerminated
from iracdb.fitsio import UNCERTAINTY_KIND
from iracdb.flags import Flag
from iracdb.photometry import apcorr
from iracdb.photometry.centroid import CentroidMethod
from iracdb.reduce.options import (
    FULL_FRAME_PLANES,
    Aperture,
    Execution,
    ReduceOptions,
    object_matches,
    parse_centroids,
)
from iracdb.reduce.store import GROWTH_APERTURE, Unit, Writer, aperture_corrections, utc_now
from iracdb.reduce.worker import AUTO_SEARCH_RADIUS_PX, Chunk, ChunkResult, ExposureWork, FileRef, measure_chunk

#: full-array frames, ~25 MB of image, uncertainty and mask), so memory stays bounded whatever an AOR holds.
CHUNK_PIXELS = 1 << 21
#: How a target with a proper motion is placed on each image (recorded with the run, in ``resolved_json``).
PROPER_MOTION = ("targets with a proper motion are measured at their position at each exposure's MJD_OBS, "
                 "propagated from their epoch by linear space motion without parallax or radial velocity "
                 "(iracdb.photometry.motion.propagate; equal to astropy's apply_space_motion without them)")
#: Chunks in flight per worker: enough to keep workers busy, few enough to bound the driver's memory.
CHUNKS_IN_FLIGHT_PER_WORKER = 2



@dataclass
class RunReport:
    """What ``iracdb.reduce.reduce`` did."""

    name: str
    status: str
    n_units: int
    n_units_done: int
    n_units_this_time: int
    n_images: int
    n_flagged: int
    n_outliers: int
    unreadable: list[tuple[str, str]]
    notes: list[str]
    already_complete: bool = False


Progress = Callable[[int, int], None]

#: While :func:`reduce` runs, SIGINT and SIGTERM are acted on only at safe points (never inside a database call):
#: once the run exists, it is then marked ``interrupted``.
_STOP = workers.StopSignals()


@_STOP
def reduce(
    engine: Engine,
    run_name: str,
    options: ReduceOptions,
    execution: Execution | None = None,
    *,
    progress: Progress | None = None,
) -> RunReport:
    """Create (or, with ``execution.resume``, finish) the run ``run_name`` and measure its pending work units.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The catalogue (schema up to date).
    run_name : str
        The run's unique name.
    options : ReduceOptions
        Selection, targets and photometry choices.
    execution : Execution, optional
        Workers, scheduler, resume, command line (default: serial, no resume).
    progress : callable, optional
        Called as ``progress(units_done, units_total)`` after each unit is committed.

    Returns
    -------
    RunReport

    Raises
    ------
    iracdb.errors.RunConflict
        The name exists with other parameters, or is unfinished and ``resume`` was not asked for, or another
        live process is running it.
    iracdb.errors.BadOption
        Nothing selected, an AOR not in the catalogue, an impossible choice.
    iracdb.errors.RunInterrupted
        Ctrl-C (SIGINT): the run is marked ``interrupted``; committed AORs stay.
    iracdb.errors.RunTerminated
        SIGTERM: the same, exit status 143.
    iracdb.errors.ExecutionError
        The workers could not do the work (a Dask cluster without workers, a lost scheduler, a dead worker
        process): the run is marked ``failed`` with the reason; committed AORs stay.
    """
    execution = execution or Execution()
    name = run_name.strip()
    if not name:
        raise BadOption("--run-name must not be empty")
    with _run_lock(engine, name, options):
        run = queries.find_run(engine, name)
        created = None if run is not None else _create_run(engine, name, options, execution)
        if created is None and run is None:
            # Another process created it between our look and our write (SQLite; PostgreSQL holds the name lock).
            run = queries.find_run(engine, name)
        if created is not None:
            run_id, notes = created
        else:
            assert run is not None
            _check_same(run, options)
            if run["status"] == "complete":
                return _report(engine, run["id"], 0, [], [], already_complete=True)
            _refuse_live(run)
            if not execution.resume:
                raise RunConflict(
                    f"run {name!r} exists and is {run['status']} ({run['n_units_done']} of {run['n_units']} AOR "
                    f"units done); add --resume to finish it, or choose another --run-name"
                )
            run_id, notes = run["id"], []
            _take_over(engine, run, execution)
        return _execute_run(engine, run_id, options, execution, progress, notes)


@contextmanager
def _run_lock(engine: Engine, name: str, options: ReduceOptions) -> Iterator[None]:
    """Hold the run name's lock while this process creates and reduces it (PostgreSQL: a session advisory lock,
    across hosts), so that no other process creates, resumes or takes it over at the same time: one that tries is
    refused at once, in one line (:class:`~iracdb.errors.RunConflict`), and the lock goes with the connection if
    this process dies. SQLite needs no such lock: its run creation re-reads the name in a write transaction (which
    SQLite serialises), and :func:`_refuse_live` and :func:`_take_over` check the host and process id."""
    with backend_for(engine).run_lock(name) as locked:
        if locked:
            yield
            return
        run = queries.find_run(engine, name)
        if run is None:
            raise RunConflict(f"run {name!r} is being created by another process right now")
        _check_same(run, options)
        if run["status"] == "complete":  # finished, its process about to let go: nothing to lock
            yield
            return
        raise RunConflict(f"run {name!r} is being reduced by process {run['pid']} on {run['host']} right now")


def _refuse_live(run: dict[str, Any]) -> None:
    """Refuse a run that a live process on this host is reducing (another process created or resumed it)."""
    name, pid, host = run["name"], run["pid"], run["host"]
    if (run["status"] == "running" and host == socket.gethostname() and pid and pid != os.getpid()
            and workers.pid_alive(pid)):
        raise RunConflict(f"run {name!r} is being reduced by process {pid} on {host} right now")


def _check_same(run: dict[str, Any], options: ReduceOptions) -> None:
    if run["params_hash"] == options.params_hash():
        return
    old = json.loads(run["params_json"])
    new = json.loads(options.to_json())
    differ = [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new))
              if old.get(key) != new.get(key)]
    raise RunConflict(
        f"run {run['name']!r} already exists with other parameters ({'; '.join(differ)}); runs are immutable: "
        "choose another --run-name"
    )


def software_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that shape the numbers."""
    versions = {"python": platform.python_version(), "iracdb": __version__}
    for package in ("numpy", "astropy", "photutils", "scipy", "sqlalchemy", "alembic", "psycopg", "distributed"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_revision() -> str | None:
    """The git commit of the iracdb source when it runs from a checkout (``-dirty`` with local changes)."""
    source = Path(__file__).resolve().parents[2]  # the checkout: iracdb/reduce/run.py -> ../../..
    if not (source / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def mask_command_line(argv: Sequence[str]) -> str:
    """The command line as one shell-quoted string, every secret in it replaced by ``***``.

    Each argument is masked on its own (:func:`iracdb.db.engine.mask_secrets`): a URL's password, even in
    ``--db=URL`` or a malformed URL, and ``password``/``sslpassword``/``passfile`` parameters. ``shlex.split`` gives
    the arguments back, so the recorded line can be run again once the password is filled in.
    """
    import shlex

    return " ".join(shlex.quote(mask_secrets(arg, single=True)) for arg in argv)


@dataclass(frozen=True)
class _UnitPlan:
    aorkey: int
    channel: int
    mission: str
    object: str | None
    n_exposures: int
    naxis1: int | None = None  # the smallest image of the unit, pixels (None: not catalogued)
    naxis2: int | None = None


def _selection(options: ReduceOptions) -> list[Any]:
    """WHERE clauses on exposures (e) for the run's selection."""
    clauses: list[Any] = []
    if options.aorkeys:
        clauses.append(Exposure.aorkey.in_(options.aorkeys))
    if options.channel is not None:
        clauses.append(Exposure.channel == options.channel)
    return clauses


def _plan_units(conn: Connection, options: ReduceOptions) -> tuple[list[_UnitPlan], list[str]]:
    notes: list[str] = []
    if options.aorkeys:
        known = set(conn.execute(select(Exposure.aorkey).where(Exposure.aorkey.in_(options.aorkeys)).distinct())
                    .scalars())
        missing = sorted(set(options.aorkeys) - known)
        if missing:
            raise BadOption(f"AOR(s) {', '.join(map(str, missing))} not in the catalogue; `iracdb aors` lists them")
    has_file = select(File.id).where(File.exposure_id == Exposure.id, File.kind == options.file_type).exists()
    query = (
        select(Exposure.aorkey, Exposure.channel, func.min(Exposure.mission), func.min(Exposure.object),
               func.count(Exposure.id), func.min(Exposure.naxis1), func.min(Exposure.naxis2))
        .where(has_file, *_selection(options))
        .group_by(Exposure.aorkey, Exposure.channel)
        .order_by(Exposure.aorkey, Exposure.channel)
    )
    units = []
    for aorkey, channel, mission, object_, count, naxis1, naxis2 in conn.execute(query):
        if options.object is not None and not object_matches(object_, options.object):
            continue
        units.append(_UnitPlan(aorkey, channel, mission, object_, count, naxis1, naxis2))
    without = conn.execute(
        select(func.count(Exposure.id)).where(~has_file, *_selection(options))
    ).scalar_one()
    if without:
        notes.append(f"{without} selected exposure(s) have no {options.file_type} file and are not measured")
    no_target = [u for u in units if not any(t.applies_to(u.aorkey, u.object) for t in options.targets)]
    if no_target:
        notes.append(f"{len(no_target)} AOR-channel(s) have no target in the targets given and are not measured: "
                     + ", ".join(f"{u.aorkey}/ch{u.channel}" for u in no_target[:10])
                     + (" ..." if len(no_target) > 10 else ""))
        units = [u for u in units if u not in no_target]
    if not units:
        what = [f"AOR {', '.join(map(str, options.aorkeys))}" if options.aorkeys else "",
                f"object {options.object!r}" if options.object else "",
                f"channel {options.channel}" if options.channel else ""]
        chosen = ", ".join(w for w in what if w) or "the whole catalogue"
        raise BadOption(f"nothing to reduce: no {options.file_type} images with a target in {chosen}"
                        + (f" ({'; '.join(notes)})" if notes else ""))
    _check_apertures(options, units)
    notes += _overlap_notes(options)
    return units, notes


def _overlap_notes(options: ReduceOptions) -> list[str]:
    """A note for the apertures whose background annulus starts inside the aperture (its background then holds the
    star's own light): measured as asked, but rarely what was meant in a grid."""
    inside = [a for a in options.apertures() if a.radius_px is not None and a.annulus_in_px < a.radius_px]
    if not inside:
        return []
    shown = ", ".join(f"{a.radius_spec} px in {a.annulus_in_px:g}-{a.annulus_out_px:g} px" for a in inside[:5])
    return [f"{len(inside)} aperture(s) have a background annulus that starts inside the aperture, so their "
            f"background includes the star's light ({shown}{' ...' if len(inside) > 5 else ''})"]


def _max_aperture_px(naxis1: int, naxis2: int) -> float:
    """The largest aperture or annulus radius, pixels, that makes sense on a ``naxis1`` x ``naxis2`` image: its
    diagonal. A circle of that radius centred anywhere on the image (the target must be on it) already holds
    every pixel, so a larger one measures nothing more (32 x 32 subarray: 45.25 px; 256 x 256 frame: 362.04 px).
    """
    return math.hypot(naxis1, naxis2)


def _check_apertures(options: ReduceOptions, units: Sequence[_UnitPlan]) -> None:
    """Refuse an aperture or annulus larger than the smallest selected image can hold (see :func:`_max_aperture_px`),
    and a growth aperture correction on images the calibration aperture does not fit, before the run exists,
    naming that image."""
    sized = [u for u in units if u.naxis1 and u.naxis2]
    if not sized:
        return
    if options.aperture_choice() == "growth":
        small = [u for u in sized if min(u.naxis1, u.naxis2) < 2 * GROWTH_APERTURE[2] + 1]  # type: ignore[type-var,operator]
        if small:
            raise BadOption(
                f"--aperture-correction growth needs full-array data: the calibration aperture (10 px radius, 12-20 "
                f"px annulus) does not fit the {small[0].naxis1}x{small[0].naxis2}-pixel images of AOR "
                f"{small[0].aorkey} ch{small[0].channel} (select full-array AORs, or use auto or a value)")
    unit = min(sized, key=lambda u: _max_aperture_px(u.naxis1, u.naxis2))  # type: ignore[arg-type]
    limit = _max_aperture_px(unit.naxis1, unit.naxis2)  # type: ignore[arg-type]
    shown = math.floor(limit * 100) / 100  # rounded down: the value shown is itself accepted
    apertures = options.apertures()
    radius = max(options.photometry_params(None, a).radius_px for a in apertures)
    annulus = max(a.annulus_out_px for a in apertures)
    for what, value in (("aperture radius (--radius)", radius), ("annulus outer radius (--annulus)", annulus)):
        if value > limit:
            raise BadOption(
                f"the {what} {value:g} px does not fit the {unit.naxis1}x{unit.naxis2}-pixel images of AOR "
                f"{unit.aorkey} ch{unit.channel}: at most their diagonal, {shown:.2f} px (or select other AORs)"
            )


def _correction_set(options: ReduceOptions, mission: str, channel: int) -> dict[str, Any]:
    """The pixel-phase x array-location correction applied to one mission and channel."""
    if options.corrections == "none":
        return {"correction": "none", "correction_coefficients": None}
    coefficients = mission if options.corrections == "auto" else options.corrections
    correction = f"irac_aphot_corr:{coefficients}"
    if coefficients == "warm" and channel in (3, 4):
        correction = "none (warm ch3/ch4 cannot be corrected)"
    return {"correction": correction, "correction_coefficients": coefficients}


def _aperture_correction(options: ReduceOptions, aperture: Aperture, mission: str, channel: int
                         ) -> tuple[float | None, str]:
    """The aperture correction of one aperture for one mission and channel, and where it comes from."""
    choice = options.aperture_choice()
    if choice == "none":
        return None, "none (asked)"
    if choice == "growth":
        return None, ("growth: to the 10 px, 12-20 px calibration aperture by the median flux ratio over the used "
                      "images of each AOR and target (the AOR rows' ap_corr)")
    if choice != "auto":
        return float(choice), "given"
    if aperture.radius_px is None:
        return None, "none (no published value for a variable aperture)"
    apc = apcorr.lookup(mission, channel, aperture.radius_px, aperture.annulus_in_px, aperture.annulus_out_px)
    return apc, "published table" if apc is not None else "none (no published value for this aperture)"


def _resolve(options: ReduceOptions, missions_channels: Iterable[tuple[str, int]]) -> dict[str, Any]:
    """The choices as applied, per mission and channel: correction set, and per aperture of the grid the aperture
    correction (with its source); ``per_mission_channel`` holds aperture 0's, as runs before grids did."""
    keys = sorted(set(missions_channels))
    apertures: list[dict[str, Any]] = []
    for aperture in options.apertures():
        per: dict[str, Any] = {}
        for mission, channel in keys:
            apc, source = _aperture_correction(options, aperture, mission, channel)
            per[f"{mission}:ch{channel}"] = {"aperture_correction": apc, "aperture_correction_source": source}
        apertures.append({"aperture_id": aperture.aperture_id, "radius": aperture.radius_spec,
                          "annulus_px": [aperture.annulus_in_px, aperture.annulus_out_px],
                          "centroid": aperture.centroid, "per_mission_channel": per})
    per_mission_channel = {
        f"{mission}:ch{channel}": {**_correction_set(options, mission, channel),
                                   **apertures[0]["per_mission_channel"][f"{mission}:ch{channel}"]}
        for mission, channel in keys
    }
    moving = {"proper_motion": PROPER_MOTION} if any(t.moving for t in options.targets) else {}
    return {
        **moving,
        "per_mission_channel": per_mission_channel,
        "apertures": apertures,
        "best_by": options.best_by,
        "best_bin": options.best_bin,
        "reject": str(summary.RejectRule.parse(options.reject)),
        "summary_excluded_flags": [f.name for f in Flag if f and (summary.SUMMARY_EXCLUDED & f)],
        "time": "middle of the image: MJD_OBS + (plane + 0.5) * FRAMTIME / 86400",
        "auto_search_radius_px": AUTO_SEARCH_RADIUS_PX,
        "chunk_pixels": CHUNK_PIXELS,
        "photometry": asdict(options.photometry_params(None)),
    }


def _aperture_rows(run_id: int, options: ReduceOptions, resolved: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``run_apertures`` rows of a new run."""
    rows = []
    for aperture, recorded in zip(options.apertures(), resolved["apertures"], strict=True):
        corrections = {key: {"aperture_correction": value["aperture_correction"],
                             "source": value["aperture_correction_source"]}
                       for key, value in recorded["per_mission_channel"].items()}
        rows.append({
            "run_id": run_id, "aperture_id": aperture.aperture_id, "radius_px": aperture.radius_px,
            "radius_spec": aperture.radius_spec, "annulus_in_px": aperture.annulus_in_px,
            "annulus_out_px": aperture.annulus_out_px, "centroid": aperture.centroid,
            "aperture_correction_json": json.dumps(corrections, sort_keys=True),
        })
    return rows


def _create_run(
    engine: Engine, name: str, options: ReduceOptions, execution: Execution
) -> tuple[int, list[str]] | None:
    """Plan and record the run ``name``: its row, targets and pending units, in one transaction. None when a run
    of that name exists by now (created by another process since the caller looked)."""
    now = utc_now()
    with engine.begin() as conn:
        # On SQLite the transaction holds the write lock from its start (BEGIN IMMEDIATE): nobody can create the
        # run between this look and the insert. (PostgreSQL: the caller holds the run name's advisory lock.)
        if conn.execute(select(Run.id).where(Run.name == name)).first() is not None:
            return None
        units, notes = _plan_units(conn, options)
        resolved = _resolve(options, ((u.mission, u.channel) for u in units))
        if notes:
            resolved["notes"] = notes
        run_id = conn.execute(
            insert(Run).returning(Run.id),
            {
                "name": name, "status": "running", "params_json": options.to_json(),
                "params_hash": options.params_hash(), "resolved_json": json.dumps(resolved, sort_keys=True),
                "software_version": __version__, "git_revision": git_revision(),
                "versions_json": json.dumps(software_versions(), sort_keys=True), "host": socket.gethostname(),
                "user_name": _user(), "pid": os.getpid(), "command_line": execution.command_line,
                "execution": execution.describe(), "created_at": now, "started_at": now, "finished_at": None,
                "n_units": len(units), "n_units_done": 0, "n_images": 0, "n_flagged": 0, "n_outliers": 0,
                "message": "; ".join(notes) or None,
            },
        ).scalar_one()
        conn.execute(
            insert(RunTarget),
            [{"run_id": run_id, "target_index": i, "name": t.name, "ra_deg": t.ra_deg, "dec_deg": t.dec_deg,
              "aorkey": t.aorkey, "object": t.object} for i, t in enumerate(options.targets)],
        )
        conn.execute(insert(RunAperture), _aperture_rows(run_id, options, resolved))
        conn.execute(
            insert(RunUnit),
            [{"run_id": run_id, "aorkey": u.aorkey, "channel": u.channel, "status": "pending",
              "n_exposures": u.n_exposures, "n_images": None, "finished_at": None} for u in units],
        )
    return run_id, notes


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def _take_over(engine: Engine, run: dict[str, Any], execution: Execution) -> None:
    """Mark a resumed run running again by this process, unless a live process on this host still runs it."""
    if (run["status"] == "running" and run["host"] == socket.gethostname() and run["pid"]
            and workers.pid_alive(run["pid"])):
        if run["pid"] != os.getpid():
            raise RunConflict(f"run {run['name']!r} is being reduced by process {run['pid']} on this host")
    with engine.begin() as conn:
        conn.execute(
            update(Run).where(Run.id == run["id"]).values(
                status="running", pid=os.getpid(), host=socket.gethostname(), started_at=utc_now(), finished_at=None,
                execution=execution.describe(),
            )
        )



def _execute_run(
    engine: Engine,
    run_id: int,
    options: ReduceOptions,
    execution: Execution,
    progress: Progress | None,
    notes: list[str],
) -> RunReport:
    with engine.connect() as conn:
        run = conn.execute(select(Run).where(Run.id == run_id)).mappings().one()
        pending = conn.execute(
            select(RunUnit.id, RunUnit.aorkey, RunUnit.channel)
            .where(RunUnit.run_id == run_id, RunUnit.status == "pending")
            .order_by(RunUnit.aorkey, RunUnit.channel)
        ).all()
    resolved = json.loads(run["resolved_json"])
    execution = _sized(engine, run_id, execution)
    total, done0 = run["n_units"], run["n_units_done"]
    behind = _WriteBehind(Writer(engine, run_id, options, resolved))
    unreadable: list[tuple[str, str]] = []
    done = 0
    if progress:
        progress(done0, total)
    resume = f"`iracdb reduce --run-name {run['name']} --resume ...` with the same options finishes it"
    try:
        _STOP.check()  # a signal that arrived while the run was being planned
        # closing(): the pool or cluster is stopped before the run is marked, whatever ends the loop.
        with closing(_run_units(engine, pending, options, resolved, execution, _STOP)) as units:
            for unit, results in units:
                unreadable.extend(item for result in results for item in result.unreadable)
                done += behind.submit(unit, results)
                if progress:
                    progress(done0 + done, total)
                _STOP.check()
        done += behind.wait()
        if progress:
            progress(done0 + done, total)
        _STOP.check()
    except KeyboardInterrupt as exc:
        done += behind.settle()
        terminated = getattr(exc, "signum", signal.SIGINT) == signal.SIGTERM
        how = "stopped by SIGTERM" if terminated else "interrupted by the user (Ctrl-C)"
        _finish(engine, run_id, "interrupted", how)
        raise (RunTerminated if terminated else RunInterrupted)(
            f"run {run['name']!r} {'stopped by SIGTERM' if terminated else 'interrupted'}: {done0 + done} of "
            f"{total} AOR units are complete and kept; {resume}"
        ) from None
    except ExecutionError as exc:
        done += behind.settle()
        _finish(engine, run_id, "failed", str(exc)[:2000])
        raise ExecutionError(
            f"run {run['name']!r} failed: {exc}; {done0 + done} of {total} AOR units are complete and kept; {resume}"
        ) from exc
    except BaseException as exc:
        behind.settle()
        _finish(engine, run_id, "failed", f"{type(exc).__name__}: {exc}"[:2000])
        raise
    finally:
        behind.close()
    _finish(engine, run_id, "complete", None)
    return _report(engine, run_id, done, unreadable, notes)


def _sized(engine: Engine, run_id: int, execution: Execution) -> Execution:
    """``execution``, or the serial one when the run's pending units hold less work than
    ``Execution.min_images_for_pool`` (subarray planes; a full-array frame counts as ``FULL_FRAME_PLANES``;
    recorded with the run)."""
    if execution.scheduler is not None or execution.workers == 1 or execution.min_images_for_pool <= 0:
        return execution
    full_array = or_(Exposure.read_mode == "FULL", Exposure.areadmod == 0)
    weight = case((full_array, FULL_FRAME_PLANES), else_=1)
    pending_images = (
        select(func.coalesce(func.sum(Exposure.n_planes * weight), 0))
        .select_from(RunUnit)
        .join(Exposure, and_(Exposure.aorkey == RunUnit.aorkey, Exposure.channel == RunUnit.channel))
        .where(RunUnit.run_id == run_id, RunUnit.status == "pending")
    )
    with engine.connect() as conn:
        images = conn.execute(pending_images).scalar_one()
    if images >= execution.min_images_for_pool:
        return execution
    serial = replace(execution, workers=1)
    with engine.begin() as conn:
        conn.execute(update(Run).where(Run.id == run_id).values(execution=serial.describe()))
    return serial


class _WriteBehind:
    """Writes each unit in a second thread while the next is measured, one write at a time.

    The database's part of a write (PostgreSQL's server process; SQLite's C code, which releases the GIL) then
    overlaps the measurement instead of following it. A unit counts as done once its transaction has committed:
    :meth:`submit` and :meth:`wait` return how many units they saw committed (0 or 1). A write that fails raises
    in :meth:`submit` or :meth:`wait`; on the way out of a run that failed or was interrupted, :meth:`settle`
    waits for the write in flight without raising, so no write outlives the run's final mark.
    """

    def __init__(self, writer: Writer) -> None:
        self._writer = writer
        self._threaded = writer.backend.writes_behind
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iracdb-writer")
        self._pending: Future[None] | None = None

    def submit(self, unit: Unit, results: list[ChunkResult]) -> int:
        """Start writing ``unit`` once the previous write has committed; the units committed meanwhile (written
        at once, in this thread, where the backend does not write behind)."""
        if not self._threaded:
            self._writer.write_unit(unit, results)
            return 1
        committed = self.wait()
        self._pending = self._pool.submit(self._writer.write_unit, unit, results)
        return committed

    def wait(self) -> int:
        """Wait for the write in flight (its error raised here); the units it committed."""
        if self._pending is None:
            return 0
        try:
            self._pending.result()
        finally:  # kept while waiting: an interrupt meanwhile leaves it for settle()
            if self._pending.done():
                self._pending = None
        return 1

    def settle(self) -> int:
        """:meth:`wait`, its error swallowed: the run is failing or stopping already."""
        try:
            return self.wait()
        except Exception:  # the run's own error is the one reported
            return 0

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _finish(engine: Engine, run_id: int, status: str, message: str | None) -> None:
    values: dict[str, Any] = {"status": status, "finished_at": utc_now()}
    if message is not None:
        values["message"] = message
    with engine.begin() as conn:
        conn.execute(update(Run).where(Run.id == run_id).values(**values))


def _report(
    engine: Engine, run_id: int, done: int, unreadable: list[tuple[str, str]], notes: list[str],
    *, already_complete: bool = False,
) -> RunReport:
    with engine.connect() as conn:
        run = conn.execute(select(Run).where(Run.id == run_id)).mappings().one()
    return RunReport(
        name=run["name"], status=run["status"], n_units=run["n_units"], n_units_done=run["n_units_done"],
        n_units_this_time=done, n_images=run["n_images"], n_flagged=run["n_flagged"],
        n_outliers=run["n_outliers"], unreadable=unreadable, notes=notes, already_complete=already_complete,
    )


#: Pending units whose exposures are read from the catalogue in one query (one round trip per batch, not per unit).
UNITS_PER_QUERY = 64
_FILE_FIELDS = ("path", "size_bytes", "mtime_ns", "sha256")


def _units_exposures(engine: Engine, unit_rows: Sequence[Any], options: ReduceOptions) -> list[list[dict[str, Any]]]:
    """Each unit's exposures with their science file and companions, ordered by EXPID, DCENUM (one query for the
    batch of units; an exposure without the science file is left out)."""
    kinds = (options.file_type, UNCERTAINTY_KIND[options.file_type], "bimsk")
    exposure_fields = (
        Exposure.aorkey, Exposure.channel, Exposure.id, Exposure.expid, Exposure.dcenum, Exposure.n_planes,
        Exposure.mjd_obs, Exposure.bmjd_obs, Exposure.frame_time_s, Exposure.exposure_time_s, Exposure.mission,
        Exposure.read_mode, Exposure.object, Exposure.date_obs, Exposure.dither_pos, Exposure.dither_scale,
        Exposure.cycle_num,
    )
    names = [column.key for column in exposure_fields[2:]]
    wanted = {(row.aorkey, row.channel) for row in unit_rows}
    query = (
        select(*exposure_fields, File.kind, File.path, File.size_bytes, File.mtime_ns, File.sha256)
        .join(File, and_(File.exposure_id == Exposure.id, File.kind.in_(kinds)))
        .where(Exposure.aorkey.in_(sorted({key for key, _ in wanted})),
               Exposure.channel.in_(sorted({channel for _, channel in wanted})))
        .order_by(Exposure.aorkey, Exposure.channel, Exposure.expid, Exposure.dcenum, File.kind)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    n_exposure = len(exposure_fields)
    by_unit: dict[tuple[int, int], dict[int, dict[str, Any]]] = {key: {} for key in wanted}
    for row in rows:
        exposures = by_unit.get((row[0], row[1]))
        if exposures is None:  # an AOR and channel of the batch's AORs that is not one of its units
            continue
        entry = exposures.get(row[2])
        if entry is None:
            entry = exposures[row[2]] = {**dict(zip(names, row[2:n_exposure], strict=True)), "files": {}}
        entry["files"][row[n_exposure]] = dict(zip(_FILE_FIELDS, row[n_exposure + 1:], strict=True))
    return [[e for e in by_unit[row.aorkey, row.channel].values() if options.file_type in e["files"]]
            for row in unit_rows]


def _chunks(unit: Unit, options: ReduceOptions, resolved: dict[str, Any]) -> list[Chunk]:
    exposures = unit.exposures
    mission = exposures[0]["mission"]
    choice = resolved["per_mission_channel"][f"{mission}:ch{unit.channel}"]
    apertures = tuple(
        options.photometry_params(aperture_corrections(resolved, a.aperture_id, mission, unit.channel), a)
        for a in options.apertures()
    )
    if options.aperture_choice() == "growth":  # the calibration aperture of each centroid method, measured last
        radius, r_in, r_out = GROWTH_APERTURE
        apertures += tuple(replace(apertures[0], radius_px=radius, radius_beta=None, annulus_in_px=r_in,
                                   annulus_out_px=r_out, centroid=cast(CentroidMethod, c), aperture_correction="none")
                           for c in parse_centroids(options.centroid))
    correction_mission = choice["correction_coefficients"] or mission
    works = []
    for e in exposures:
        files = e["files"]

        def ref(kind: str, files: dict[str, Any] = files) -> FileRef | None:
            f = files.get(kind)
            return None if f is None else FileRef(f["path"], f["size_bytes"], f["mtime_ns"])

        works.append(ExposureWork(
            exposure_id=e["id"], expid=e["expid"], dcenum=e["dcenum"], n_planes=e["n_planes"], mjd_obs=e["mjd_obs"],
            bmjd_obs=e["bmjd_obs"], frame_time_s=e["frame_time_s"], science=ref(options.file_type),  # type: ignore[arg-type]
            uncertainty=ref(UNCERTAINTY_KIND[options.file_type]), mask=ref("bimsk"),
        ))
    groups: list[list[ExposureWork]] = [[]]
    pixels = 0
    for work in works:
        size = work.n_planes * 256 * 256 if work.n_planes == 1 else work.n_planes * 32 * 32
        if groups[-1] and pixels + size > CHUNK_PIXELS:
            groups.append([])
            pixels = 0
        groups[-1].append(work)
        pixels += size
    return [
        Chunk(unit.id, i, len(groups), unit.channel, correction_mission, apertures, options.subarray, unit.targets,
              tuple(g), keep_first_frame=options.keep_first_frame)
        for i, g in enumerate(groups)
    ]


def _run_units(
    engine: Engine,
    pending: Sequence[Any],
    options: ReduceOptions,
    resolved: dict[str, Any],
    execution: Execution,
    stop: workers.StopSignals | None = None,
) -> Generator[tuple[Unit, list[ChunkResult]], None, None]:
    """Yield each pending unit with its measured chunks, as soon as all of a unit's chunks are back."""

    def units() -> Iterator[Unit]:
        for start in range(0, len(pending), UNITS_PER_QUERY):
            batch = pending[start:start + UNITS_PER_QUERY]
            for row, exposures in zip(batch, _units_exposures(engine, batch, options), strict=True):
                object_ = exposures[0]["object"] if exposures else None
                targets = tuple((i, t) for i, t in enumerate(options.targets) if t.applies_to(row.aorkey, object_))
                yield Unit(row.id, row.aorkey, row.channel, tuple(exposures), targets)

    waiting: dict[int, tuple[Unit, dict[int, ChunkResult], int]] = {}
    empty: list[Unit] = []  # units whose files all vanished from the catalogue: written with no rows

    def work() -> Iterator[Chunk]:
        for unit in units():
            chunks = _chunks(unit, options, resolved) if unit.exposures and unit.targets else []
            if chunks:
                waiting[unit.id] = (unit, {}, len(chunks))
            else:
                empty.append(unit)
            yield from chunks

    measured = workers.map_unordered(
        measure_chunk, work(), workers=execution.workers, scheduler=execution.scheduler,
        in_flight_per_worker=CHUNKS_IN_FLIGHT_PER_WORKER, preload=["iracdb.reduce.worker"], stop=stop,
    )
    for result in measured:
        while empty:
            yield empty.pop(0), []
        unit, results, expected = waiting[result.unit_id]
        results[result.index] = result
        if len(results) == expected:
            del waiting[result.unit_id]
            yield unit, [results[i] for i in range(expected)]
    yield from ((unit, []) for unit in empty)


