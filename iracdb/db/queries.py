"""Read-only queries over the catalogue, returning plain rows (lists of dicts) for the CLI and for users.

The listings of ``iracdb aors`` and ``iracdb runs`` live in :mod:`iracdb.db.listing` (no ORM: those commands start
quickly) and are given here too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select, text

from iracdb.columns import AOR_COLUMN_NAMES, AOR_COLUMNS
from iracdb.db.listing import AOR_LIST_COLUMNS as AOR_LIST_COLUMNS
from iracdb.db.listing import RUN_LIST_COLUMNS as RUN_LIST_COLUMNS
from iracdb.db.listing import annuli_text as annuli_text
from iracdb.db.listing import check_channel
from iracdb.db.listing import list_aors as list_aors
from iracdb.db.listing import list_runs as list_runs
from iracdb.db.listing import radii_text as radii_text
from iracdb.db.models import Aor, Exposure, File, RejectedFile, Run
from iracdb.db.views import AOR_ORDER, AOR_VIEW
from iracdb.errors import NoSuchAor, NoSuchRun
from iracdb.fitsio import KINDS

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
    check_channel(channel)
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


def _kind_order(kind: str) -> int:
    return KINDS.index(kind) if kind in KINDS else len(KINDS)
