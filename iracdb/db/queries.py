"""Read-only queries over the catalogue, returning plain rows (lists of dicts) for the CLI and for users."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, distinct, func, select

from iracdb.db.models import CHANNELS, MISSIONS, Aor, Exposure, File, RejectedFile
from iracdb.errors import BadOption, NoSuchAor
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
