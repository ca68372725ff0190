"""Read-only queries over the catalogue, returning plain rows (lists of dicts) for the CLI and for users."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, distinct, func, select, text

from iracdb.columns import AOR_COLUMN_NAMES, AOR_COLUMNS
from iracdb.db.models import CHANNELS, MISSIONS, Aor, Exposure, File, RejectedFile, Run
from iracdb.db.views import AOR_ORDER, AOR_VIEW
from iracdb.errors import BadOption, NoSuchAor, NoSuchRun
from iracdb.fitsio import KINDS

#: Columns of :func:`list_aors` rows, in display order.
AOR_LIST_COLUMNS = (
    "aorkey",
    "channel",
    "object",
    "program_id",
    "read_mode",
    "mission",
    "date_obs",
    "first_mjd",
    "last_mjd",
    "n_exposures",
    "n_images",
    "n_files",
)
#: Columns of :func:`list_exposures` rows, in display order.
EXPOSURE_LIST_COLUMNS = (
    "aorkey",
    "channel",
    "expid",
    "dcenum",
    "date_obs",
    "mjd_obs",
    "read_mode",
    "n_planes",
    "frame_time_s",
    "exposure_time_s",
    "hdr_frame",
    "cycle_num",
    "dither_pos",
    "dither_scale",
    "kinds",
)


def list_aors(
    engine: Engine,
    *,
    object: str | None = None,
    channel: int | None = None,
    program: int | None = None,
    mission: str | None = None,
) -> list[dict[str, Any]]:
    """One row per catalogued (AOR, channel), oldest first.

    ``object`` matches a case-insensitive substring of OBJECT; ``mission`` is 'cryo' or 'warm'.
    ``date_obs`` is the DATE_OBS (UTC) of the channel's first exposure; ``n_images`` counts subarray planes.
    """
    if mission is not None and mission not in MISSIONS:
        raise BadOption(f"--mission must be 'cryo' or 'warm', not {mission!r}")
    _check_channel(channel)
    statement = (
        select(
            Aor.aorkey,
            Exposure.channel,
            Aor.object,
            Aor.program_id,
            Aor.read_mode,
            Aor.mission,
            func.min(Exposure.date_obs).label("date_obs"),
            func.min(Exposure.mjd_obs).label("first_mjd"),
            func.max(Exposure.mjd_obs).label("last_mjd"),
            func.count(distinct(Exposure.id)).label("n_exposures"),
            func.count(File.id).label("n_files"),
        )
        .join(Exposure, Exposure.aorkey == Aor.aorkey)
        .outerjoin(File, File.exposure_id == Exposure.id)
        .group_by(Aor.aorkey, Exposure.channel, Aor.object, Aor.program_id, Aor.read_mode, Aor.mission)
        .order_by(func.min(Exposure.mjd_obs), Aor.aorkey, Exposure.channel)
    )
    if object is not None:
        statement = statement.where(func.lower(Aor.object).contains(object.lower(), autoescape=True))
    if channel is not None:
        statement = statement.where(Exposure.channel == channel)
    if program is not None:
        statement = statement.where(Aor.program_id == program)
    if mission is not None:
        statement = statement.where(Aor.mission == mission)
    images = select(Exposure.aorkey, Exposure.channel, func.sum(Exposure.n_planes).label("n_images")).group_by(
        Exposure.aorkey, Exposure.channel
    )
    with engine.connect() as conn:
        counts = {(r.aorkey, r.channel): int(r.n_images) for r in conn.execute(images)}
        rows = [dict(row._mapping) for row in conn.execute(statement)]
    for row in rows:
        row["n_images"] = counts.get((row["aorkey"], row["channel"]), 0)
    return [{column: row[column] for column in AOR_LIST_COLUMNS} for row in rows]


#: Columns of :func:`list_runs` rows, in display order.
RUN_LIST_COLUMNS = (
    "name",
    "status",
    "created",
    "aors",
    "images",
    "flagged",
    "outliers",
    "file_type",
    "targets",
    "radius_px",
    "annulus_px",
    "centroid",
    "background",
    "corrections",
    "ap_corr",
    "reject",
)
#: Columns of :func:`run_summary` rows: the ``aor_photometry`` view's, without the run's name.
RUN_SUMMARY_COLUMNS = tuple(column for column in AOR_COLUMN_NAMES if column != "run")
#: Its boolean columns (``best``): SQLite, which has no boolean type, returns them as 0/1.
_BOOLEAN_SUMMARY_COLUMNS = tuple(c.name for c in AOR_COLUMNS if c.type == "bool" and c.name in RUN_SUMMARY_COLUMNS)


def find_run(engine: Engine, name: str) -> dict[str, Any] | None:
    """The ``runs`` record of ``name``, or None if there is none."""
    with engine.connect() as conn:
        row = conn.execute(select(Run).where(Run.name == name)).mappings().first()
    return None if row is None else dict(row)


def get_run(engine: Engine, name: str) -> dict[str, Any]:
    """The ``runs`` record of ``name``; raises :class:`~iracdb.errors.NoSuchRun` (naming recent runs) if none."""
    run = find_run(engine, name)
    if run is None:
        with engine.connect() as conn:
            names = conn.execute(select(Run.name).order_by(Run.id.desc()).limit(5)).scalars().all()
        known = f"; recent runs: {', '.join(names)}" if names else "; there are no runs yet"
        raise NoSuchRun(f"no run named {name!r}{known} (see `iracdb runs`)")
    return run


def list_runs(engine: Engine) -> list[dict[str, Any]]:
    """One row per reduction run, oldest first: its state, counts and the parameters that tell runs apart.

    ``aors`` counts the run's AOR x channel units (``done/planned`` while unfinished); ``images`` counts image rows;
    ``radius_px`` and ``annulus_px`` are the aperture and background annulus radii [pixels]; ``ap_corr`` is the
    aperture-correction choice (auto, none or a factor); ``targets`` names the targets.
    """
    with engine.connect() as conn:
        runs = conn.execute(select(Run).order_by(Run.created_at, Run.id)).mappings().all()
    rows = []
    for run in runs:
        params = json.loads(run["params_json"])
        done, planned = run["n_units_done"], run["n_units"]
        rows.append({
            "name": run["name"],
            "status": run["status"],
            "created": run["created_at"].strftime("%Y-%m-%d %H:%M:%S"),
            "aors": planned if done == planned else f"{done}/{planned}",
            "images": run["n_images"],
            "flagged": run["n_flagged"],
            "outliers": run["n_outliers"],
            "file_type": params.get("file_type"),
            "targets": ",".join(target.get("name") or "?" for target in params.get("targets", [])),
            "radius_px": radii_text(params.get("radius_px")),
            "annulus_px": annuli_text(params.get("annulus_in_px"), params.get("annulus_out_px")),
            "centroid": params.get("centroid"),
            "background": params.get("background"),
            "corrections": params.get("corrections"),
            "ap_corr": params.get("aperture_correction"),
            "reject": params.get("reject"),
        })
    return rows


def radii_text(value: Any) -> Any:
    """A run's radius as recorded: a number (one aperture), or its grid as ``2,2.5,3``."""
    if isinstance(value, (list, tuple)):
        return ",".join(v if isinstance(v, str) else f"{v:g}" for v in value)
    return value


def annuli_text(inner: Any, outer: Any) -> str:
    """A run's annuli as recorded: ``3-7``, or ``3-7,5-10`` for several."""
    ins, outs = (inner, outer) if isinstance(inner, (list, tuple)) else ([inner], [outer])
    return ",".join(f"{a:g}-{b:g}" for a, b in zip(ins, outs, strict=True))


def run_summary(engine: Engine, run_name: str, *, aorkey: int | None = None, best_only: bool = False
                ) -> list[dict[str, Any]]:
    """The per-AOR results of a run (the ``aor_photometry`` view), one row per AOR x channel x target x aperture
    (``best_only``: the best aperture's row only, one per AOR x channel x target).

    Fluxes are in mJy: ``flux_mjy`` is the mean of the used images, ``flux_err_mjy`` the error of that mean,
    ``std_mjy`` the sample standard deviation, ``spread_pct`` = 100 x std / mean; times are MJD (UTC) and
    barycentric MJD. Raises :class:`~iracdb.errors.NoSuchRun` or, for an ``aorkey`` the run lacks, ``NoSuchAor``.
    """
    get_run(engine, run_name)
    where = "run = :run" + ("" if aorkey is None else " AND aorkey = :aorkey") + (" AND best" if best_only else "")
    query = text(f"SELECT {', '.join(RUN_SUMMARY_COLUMNS)} FROM {AOR_VIEW} WHERE {where} "
                 f"ORDER BY {', '.join(AOR_ORDER)}")
    with engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(query, {"run": run_name, "aorkey": aorkey})]
        for row in rows:
            for name in _BOOLEAN_SUMMARY_COLUMNS:
                row[name] = None if row[name] is None else bool(row[name])
        if aorkey is not None and not rows:
            keys = conn.execute(text(f"SELECT DISTINCT aorkey FROM {AOR_VIEW} WHERE run = :run ORDER BY aorkey"),
                                {"run": run_name}).scalars().all()
            shown = ", ".join(str(key) for key in keys[:10]) + (", ..." if len(keys) > 10 else "")
            raise NoSuchAor(f"AOR {aorkey} is not in run {run_name!r} (its AORs: {shown or 'none'})")
    return rows


def aperture_count(engine: Engine, run_name: str) -> int:
    """How many apertures a run measures (its grid: radii x annuli x centroid methods; 1 for most runs)."""
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM run_apertures AS a JOIN runs AS r ON r.id = a.run_id "
                                     "WHERE r.name = :run"), {"run": run_name}).scalar_one())


def list_exposures(engine: Engine, aorkey: int, *, channel: int | None = None) -> list[dict[str, Any]]:
    """One row per exposure of ``aorkey`` (ordered by channel, EXPID, DCENUM), with the kinds of its files."""
    _check_channel(channel)
    statement = (
        select(Exposure.__table__)
        .where(Exposure.aorkey == aorkey)
        .order_by(Exposure.channel, Exposure.expid, Exposure.dcenum)
    )
    if channel is not None:
        statement = statement.where(Exposure.channel == channel)
    kinds_statement = (
        select(File.exposure_id, File.kind)
        .join(Exposure, File.exposure_id == Exposure.id)
        .where(Exposure.aorkey == aorkey)
    )
    with engine.connect() as conn:
        exposures = [dict(row._mapping) for row in conn.execute(statement)]
        kinds: dict[int, list[str]] = {}
        for exposure_id, kind in conn.execute(kinds_statement):
            kinds.setdefault(exposure_id, []).append(kind)
        if not exposures:
            known = conn.execute(select(Aor.aorkey).where(Aor.aorkey == aorkey)).first()
            if known is None:
                raise NoSuchAor(f"AOR {aorkey} is not in the catalogue (see `iracdb aors`)")
    rows = []
    for exposure in exposures:
        row = {column: exposure.get(column) for column in EXPOSURE_LIST_COLUMNS if column != "kinds"}
        row["kinds"] = ",".join(sorted(kinds.get(exposure["id"], []), key=_kind_order))
        rows.append(row)
    return rows


def list_rejected(engine: Engine) -> list[dict[str, Any]]:
    """Every file the catalogue holds as rejected, with its reason."""
    with engine.connect() as conn:
        rows = conn.execute(select(RejectedFile.path, RejectedFile.reason).order_by(RejectedFile.path))
        return [dict(row._mapping) for row in rows]


def _check_channel(channel: int | None) -> None:
    if channel is not None and channel not in CHANNELS:
        raise BadOption(f"--channel must be 1, 2, 3 or 4, not {channel}")


def _kind_order(kind: str) -> int:
    return KINDS.index(kind) if kind in KINDS else len(KINDS)
