"""The listings that start quickly (``iracdb aors``, ``iracdb runs``): plain SQL, without the ORM.

Importing :mod:`iracdb.db.models` sets up SQLAlchemy's ORM (0.3-0.5 s), more than these commands take otherwise: the
statements here name the tables and columns that models.py defines (the schema itself is defined there only).
:mod:`iracdb.db.queries` gives these functions too.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import DateTime, Engine, text

from iracdb.choices import CHANNELS, MISSIONS
from iracdb.errors import BadOption

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
    check_channel(channel)
    conditions = []
    params: dict[str, Any] = {}
    if object is not None:
        # A substring, its LIKE wildcards taken literally (escaped with "/").
        escaped = object.lower().replace("/", "//").replace("%", "/%").replace("_", "/_")
        conditions.append("lower(a.object) LIKE :object ESCAPE '/'")
        params["object"] = f"%{escaped}%"
    for name, value, column in (("channel", channel, "e.channel"), ("program", program, "a.program_id"),
                                ("mission", mission, "a.mission")):
        if value is not None:
            conditions.append(f"{column} = :{name}")
            params[name] = value
    where = f"WHERE {' AND '.join(conditions)}\n" if conditions else ""
    statement = text(
        "SELECT a.aorkey, e.channel, a.object, a.program_id, a.read_mode, a.mission, min(e.date_obs) AS date_obs, "
        "min(e.mjd_obs) AS first_mjd, max(e.mjd_obs) AS last_mjd, count(DISTINCT e.id) AS n_exposures, "
        "count(f.id) AS n_files\n"
        "FROM aors AS a JOIN exposures AS e ON e.aorkey = a.aorkey LEFT OUTER JOIN files AS f ON f.exposure_id = e.id\n"
        f"{where}"
        "GROUP BY a.aorkey, e.channel, a.object, a.program_id, a.read_mode, a.mission\n"
        "ORDER BY min(e.mjd_obs), a.aorkey, e.channel"
    )
    images = text("SELECT aorkey, channel, sum(n_planes) AS n_images FROM exposures GROUP BY aorkey, channel")
    with engine.connect() as conn:
        counts = {(r.aorkey, r.channel): int(r.n_images) for r in conn.execute(images)}
        rows = [dict(row._mapping) for row in conn.execute(statement, params)]
    for row in rows:
        row["n_images"] = counts.get((row["aorkey"], row["channel"]), 0)
    return [{column: row[column] for column in AOR_LIST_COLUMNS} for row in rows]


def list_runs(engine: Engine) -> list[dict[str, Any]]:
    """One row per reduction run, oldest first: its state, counts and the parameters that tell runs apart.

    ``aors`` counts the run's AOR x channel units (``done/planned`` while unfinished); ``images`` counts image rows;
    ``radius_px`` and ``annulus_px`` are the aperture and background annulus radii [pixels]; ``ap_corr`` is the
    aperture-correction choice (auto, none or a factor); ``targets`` names the targets.
    """
    statement = text(
        "SELECT name, status, created_at, n_units, n_units_done, n_images, n_flagged, n_outliers, params_json "
        "FROM runs ORDER BY created_at, id"
    ).columns(created_at=DateTime(timezone=True))  # read as SQLAlchemy stores it (SQLite: as text)
    with engine.connect() as conn:
        runs = conn.execute(statement).mappings().all()
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


def check_channel(channel: int | None) -> None:
    if channel is not None and channel not in CHANNELS:
        raise BadOption(f"--channel must be 1, 2, 3 or 4, not {channel}")


__all__ = ["AOR_LIST_COLUMNS", "RUN_LIST_COLUMNS", "annuli_text", "check_channel", "list_aors", "list_runs",
           "radii_text"]
