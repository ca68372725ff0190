"""Writing a run's results (the driver alone): a unit's inputs, rows, summaries and ``complete`` mark in one
transaction; rows in bulk through the database's backend (binary COPY on PostgreSQL); columns from the registry."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, bindparam, insert, select, update

from iracdb import best, summary
from iracdb.columns import AOR_COLUMNS
from iracdb.db.backend import backend_for
from iracdb.db.models import (
    APERTURE_LEVEL_COLUMNS,
    IMAGE_LEVEL_COLUMNS,
    AorSummary,
    ApertureFlux,
    Exposure,
    MeasuredImage,
    Run,
    RunInput,
    RunUnit,
)
from iracdb.db.views import IMAGE_IDS_PER_UNIT
from iracdb.flags import NOT_USED, SUMMARY_EXCLUDED, Flag
from iracdb.reduce.options import ReduceOptions, Target, parse_centroids
from iracdb.reduce.worker import ROW_COLUMNS, ChunkResult

#: The IRAC calibration aperture that ``--aperture-correction growth`` corrects to: radius, annulus in, out [px].
GROWTH_APERTURE = (10.0, 12.0, 20.0)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Unit:
    """A work unit as the driver plans it: one AOR and channel, its exposures and files, and its targets."""

    id: int
    aorkey: int
    channel: int
    exposures: tuple[dict[str, Any], ...]  # the planning rows: exposure facts + files
    targets: tuple[tuple[int, Target], ...]



#: The columns of a ``measured_images`` row and of an ``aperture_fluxes`` row, as the writer sends them.
_IMAGE_ROW_COLUMNS = ("id", "run_id", "exposure_id", "input_id", "centroid", *(c.name for c in IMAGE_LEVEL_COLUMNS))
#: The key of an image row within a unit (with the centroid method).
_IMAGE_KEY = ("expid", "dcenum", "plane", "target_index")


#: The stored per-AOR columns (:data:`iracdb.columns.AOR_COLUMNS`).
_STORED_AOR_COLUMNS = tuple(c for c in AOR_COLUMNS if c.stored and c.source != "key")


def aor_facts(exposures: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The AOR columns that come from the catalogue (``source="exposure"``), from a unit's exposures: the first
    exposure's OBJECT, DATE_OBS, mission, read mode and times, the first dither scale given, the number of distinct
    dither positions and the largest cycle number."""
    first = exposures[0] if exposures else {}
    dither_pos = {e["dither_pos"] for e in exposures if e["dither_pos"] is not None}
    cycles = [e["cycle_num"] for e in exposures if e["cycle_num"] is not None]
    scales = [e["dither_scale"] for e in exposures if e["dither_scale"]]
    return {
        "object": first.get("object"), "date_obs": first.get("date_obs"), "mission": first.get("mission"),
        "read_mode": first.get("read_mode"), "frame_time_s": first.get("frame_time_s"),
        "exposure_time_s": first.get("exposure_time_s"), "dither_scale": scales[0] if scales else None,
        "dither_positions": len(dither_pos) or None, "cycles": max(cycles) if cycles else None,
    }


def aperture_corrections(resolved: dict[str, Any], aperture_id: int, mission: str, channel: int) -> float | None:
    """The aperture correction a run applied to one aperture, mission and channel (None: none)."""
    key = f"{mission}:ch{channel}"
    apertures = resolved.get("apertures")
    if not apertures:  # a run made before grids: one aperture
        return resolved["per_mission_channel"].get(key, {}).get("aperture_correction")
    return apertures[aperture_id]["per_mission_channel"].get(key, {}).get("aperture_correction")


def growth_corrections(columns: dict[str, np.ndarray], options: ReduceOptions
                       ) -> tuple[dict[str, np.ndarray], dict[tuple[int, int], float | None]]:
    """``--aperture-correction growth`` on one unit's rows: each aperture's correction to the calibration aperture
    (:data:`GROWTH_APERTURE`, measured as extra apertures after the grid, one per centroid method) is the median,
    over the images usable in both (no :data:`~iracdb.flags.SUMMARY_EXCLUDED` bit, finite sums), of the ratio of
    their background-subtracted sums; it multiplies the aperture's fluxes and errors and is its ``ap_corr``. The
    calibration rows are then dropped. Returns the rows and the correction of each (target_index, aperture_id)
    (None, and ``NO_APERTURE_CORRECTION`` kept, when no image is usable in both)."""
    apertures = options.apertures()
    calibration = {c: len(apertures) + i for i, c in enumerate(parse_centroids(options.centroid))}
    flags = columns["flags"].astype(np.int64)
    usable = ((flags & int(SUMMARY_EXCLUDED)) == 0) & np.isfinite(columns["net_flux"])
    corrections: dict[tuple[int, int], float | None] = {}
    for target_index in np.unique(columns["target_index"]).tolist():
        target = columns["target_index"] == target_index
        for aperture in apertures:
            mine = np.flatnonzero(target & (columns["aperture_id"] == aperture.aperture_id))
            cal = np.flatnonzero(target & (columns["aperture_id"] == calibration[aperture.centroid]))
            both = usable[mine] & usable[cal]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = columns["net_flux"][cal][both] / columns["net_flux"][mine][both]
            ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
            value = float(np.median(ratio)) if ratio.size else None
            corrections[int(target_index), aperture.aperture_id] = value
            if value is not None:
                for name in ("flux_mjy", "flux_err_mjy"):
                    columns[name][mine] = columns[name][mine] * value
                columns["ap_corr"][mine] = value
                flags[mine] &= ~np.int64(Flag.NO_APERTURE_CORRECTION)
    columns["flags"] = flags
    keep = columns["aperture_id"] < len(apertures)
    return {name: values[keep] for name, values in columns.items()}, corrections


class Writer:
    """Writes a unit's inputs, rows, summaries and its ``complete`` mark in one transaction."""

    def __init__(self, engine: Engine, run_id: int, options: ReduceOptions, resolved: dict[str, Any]) -> None:
        self.engine = engine
        self.run_id = run_id
        self.options = options
        self.rule = summary.RejectRule.parse(options.reject)
        self.resolved = resolved
        self.backend = backend_for(engine)
        # The statements of every unit, built once (building and hashing them anew cost ~2 ms per unit in Python).
        self._inputs_query = (
            select(RunInput.path, RunInput.id)
            .join(Exposure, Exposure.id == RunInput.exposure_id)
            .where(RunInput.run_id == run_id, Exposure.aorkey == bindparam("unit_aorkey"),
                   Exposure.channel == bindparam("unit_channel"))
        )
        self._insert_summaries = insert(AorSummary)
        self._unit_complete = (
            update(RunUnit).where(RunUnit.id == bindparam("unit_id"))
            .values(status="complete", n_images=bindparam("unit_n_images"),
                    finished_at=bindparam("unit_finished_at", type_=RunUnit.__table__.c.finished_at.type))
        )
        self._run_counts = (
            update(Run).where(Run.id == run_id).values(
                n_units_done=Run.n_units_done + 1, n_images=Run.n_images + bindparam("add_images"),
                n_flagged=Run.n_flagged + bindparam("add_flagged"),
                n_outliers=Run.n_outliers + bindparam("add_outliers"),
            )
        )

    def write_unit(self, unit: Unit, results: list[ChunkResult]) -> None:
        columns = (
            {name: np.concatenate([r.columns[name] for r in results]) for name in ROW_COLUMNS}
            if results else {name: np.zeros(0) for name in ROW_COLUMNS}
        )
        growth: dict[tuple[int, int], float | None] = {}
        if self.options.aperture_choice() == "growth":
            columns, growth = growth_corrections(columns, self.options)
        summaries, flags = self._summaries(unit, columns, growth)
        columns["flags"] = flags
        n = len(flags)
        excluded = int(((flags & int(summary.SUMMARY_EXCLUDED)) != 0).sum())
        outliers = int(((flags & int(Flag.OUTLIER)) != 0).sum())
        with self.engine.begin() as conn:
            self.backend.relax_durability(conn)  # the run's final mark makes it durable
            input_ids = self._write_inputs(conn, unit)
            science = {e["id"]: input_ids[e["files"][self.options.file_type]["path"]] for e in unit.exposures}
            self._write_rows(conn, unit, columns, science)
            if summaries:
                conn.execute(self._insert_summaries, summaries)
            conn.execute(self._unit_complete,
                         {"unit_id": unit.id, "unit_n_images": n, "unit_finished_at": utc_now()})
            conn.execute(self._run_counts, {"add_images": n, "add_flagged": excluded, "add_outliers": outliers})

    def _summaries(self, unit: Unit, columns: dict[str, np.ndarray], growth: dict[tuple[int, int], float | None]
                   ) -> tuple[list[dict[str, Any]], np.ndarray]:
        """One ``aor_summaries`` row per target and aperture (the registry's stored AOR columns), the best aperture
        of each target marked, and the flags with outliers."""
        flags = columns["flags"].astype(np.int64)
        facts = aor_facts(unit.exposures)
        mission = facts["mission"]
        choice = self.resolved["per_mission_channel"].get(f"{mission}:ch{unit.channel}", {"correction": "none"})
        apertures = self.options.apertures()
        groups = _row_groups(columns["target_index"], columns["aperture_id"])
        empty = np.zeros(0, dtype=np.int64)
        finite_flux = np.isfinite(columns["flux_mjy"])
        rows = []
        for target_index, _target in unit.targets:
            target_rows = []
            for aperture in apertures:
                mine = groups.get((target_index, aperture.aperture_id), empty)  # row numbers, ascending
                stats = summary.summarize(
                    columns["flux_mjy"][mine], columns["flux_err_mjy"][mine], columns["mjd"][mine],
                    columns["bmjd"][mine], flags[mine], self.rule,
                )
                flags[mine] = summary.with_outlier_flags(flags[mine], stats.outlier)
                used = mine[((flags[mine] & int(NOT_USED)) == 0) & finite_flux[mine]]
                run_values = {**choice, "aperture_correction": growth.get((target_index, aperture.aperture_id))
                              if growth else aperture_corrections(self.resolved, aperture.aperture_id, mission,
                                                                  unit.channel)}
                row = self._summary_row(unit, target_index, aperture.aperture_id, stats, facts, run_values)
                row["score"] = _null_if_nan(best.score(self.options.best_by, columns["mjd"][used],
                                                       columns["flux_mjy"][used], self.options.best_bin))
                target_rows.append(row)
            radii = [math.inf if a.radius_px is None else a.radius_px for a in apertures]
            chosen = best.choose_best([math.nan if r["score"] is None else r["score"] for r in target_rows], radii)
            for position, row in enumerate(target_rows):
                row["best"] = position == chosen
            rows.extend(target_rows)
        return rows, flags

    def _summary_row(self, unit: Unit, target_index: int, aperture_id: int, stats: summary.AorStats,
                     facts: dict[str, Any], run_values: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {"run_id": self.run_id, "aorkey": unit.aorkey, "channel": unit.channel,
                               "target_index": target_index, "aperture_id": aperture_id}
        for column in _STORED_AOR_COLUMNS:
            if column.source == "summary":
                value = getattr(stats, column.name)
                row[column.name] = _null_if_nan(value) if column.type == "float" else value
            elif column.source == "exposure":
                row[column.name] = facts[column.name]
            elif column.source == "run":
                row[column.name] = run_values.get(column.origin)
        return row

    def _write_inputs(self, conn: Connection, unit: Unit) -> dict[str, int]:
        rows = [
            {"run_id": self.run_id, "exposure_id": e["id"], "kind": kind, "path": f["path"],
             "size_bytes": f["size_bytes"], "sha256": f["sha256"]}
            for e in unit.exposures for kind, f in sorted(e["files"].items())
        ]
        if not rows:
            return {}
        # A bulk insert (binary COPY on PostgreSQL), then the ids read back through the unit's exposures, in two
        # short statements. (INSERT ... RETURNING in parameter order was one statement with a placeholder per value,
        # which psycopg parses anew in Python each time, ~10 ms per unit; on SQLite, a statement per row.)
        self.backend.insert_rows(conn, RunInput.__table__, rows)
        inputs = conn.execute(self._inputs_query, {"unit_aorkey": unit.aorkey, "unit_channel": unit.channel})
        return {path: input_id for path, input_id in inputs}

    def _write_rows(
        self, conn: Connection, unit: Unit, columns: dict[str, np.ndarray], science: dict[int, int]
    ) -> None:
        """The unit's rows: one ``measured_images`` row per image, target and centroid method (the image's own
        values, from its first aperture of that method), then one ``aperture_fluxes`` row per aperture."""
        n = len(columns["flags"])
        if n == 0:
            return
        centroids = [aperture.centroid for aperture in self.options.apertures()]
        method_of = {name: code for code, name in enumerate(dict.fromkeys(centroids))}
        method = np.array([method_of[name] for name in centroids], dtype=np.int64)[columns["aperture_id"].astype(
            np.int64)]
        keys = np.stack([*(columns[name].astype(np.int64) for name in _IMAGE_KEY), method], axis=1)
        unique, first, image_of_row = _unique_rows(keys)
        _check_image_level(columns, first, image_of_row)
        names = np.array(list(method_of), dtype=object)
        image_ids = unit_image_ids(unit.id, len(first))
        n_images = len(first)
        input_ids = [science.get(e) for e in columns["exposure_id"][first].astype(np.int64).tolist()]
        image_values: dict[str, np.ndarray] = {
            "id": image_ids, "run_id": np.full(n_images, self.run_id, dtype=np.int64),
            "aorkey": np.full(n_images, unit.aorkey, dtype=np.int64),
            "channel": np.full(n_images, unit.channel, dtype=np.int64),
            # NaN is NULL (an exposure whose science file is not among the unit's inputs: none in practice)
            "input_id": (np.array(input_ids, dtype=np.int64) if None not in input_ids
                         else np.array([np.nan if i is None else i for i in input_ids], dtype=np.float64)),
            "exposure_id": columns["exposure_id"][first],
            "centroid": names[unique[:, -1]],
        }
        for column in IMAGE_LEVEL_COLUMNS:
            if column.name not in image_values:
                image_values[column.name] = columns[column.name][first]
        # Binary COPY built from the arrays on PostgreSQL (no Python value per field), executemany on SQLite.
        self.backend.bulk_insert_arrays(conn, MeasuredImage.__table__,
                                        {name: image_values[name] for name in _IMAGE_ROW_COLUMNS})
        # In key order (image, aperture): each row goes to the end of the primary key's B-tree, not between others.
        in_key_order = np.lexsort((columns["aperture_id"], image_of_row))
        fluxes = {"image_id": image_ids[image_of_row][in_key_order]}
        fluxes.update((column.name, columns[column.name][in_key_order]) for column in APERTURE_LEVEL_COLUMNS)
        # Binary COPY built from the arrays on PostgreSQL, executemany on SQLite.
        self.backend.bulk_insert_arrays(conn, ApertureFlux.__table__, fluxes)


def unit_image_ids(unit_id: int, n: int) -> np.ndarray:
    """The ids of a unit's ``n`` image rows, in the canonical order (exposure, plane, target, centroid method).

    Units are planned (``run_units`` ids given) in AOR and channel order, so ordering a run's image rows by id, and
    each image's aperture rows by ``aperture_id``, is the canonical order of the results: the export reads them
    so, as a merge of the two tables' primary keys (:func:`iracdb.export.image_id_range`), with no sort.
    """
    if n >= IMAGE_IDS_PER_UNIT:
        raise ValueError(f"an AOR and channel with {n:,} image rows: more than {IMAGE_IDS_PER_UNIT:,} are not stored")
    return unit_id * IMAGE_IDS_PER_UNIT + np.arange(n, dtype=np.int64)


def _unique_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct rows of an integer array in ascending (lexicographic) order, the index of each one's first
    occurrence and each row's place among them: ``np.unique(keys, axis=0, return_index=True,
    return_inverse=True)``, from one lexsort (``np.unique`` with ``axis`` compares rows as opaque bytes, 10x
    slower)."""
    order = np.lexsort(keys.T[::-1])  # stable: the first occurrence of a key comes first
    ordered = keys[order]
    new_key = np.r_[True, (ordered[1:] != ordered[:-1]).any(axis=1)]
    starts = np.flatnonzero(new_key)
    place = np.empty(len(keys), dtype=np.int64)
    place[order] = np.cumsum(new_key) - 1
    return ordered[starts], order[starts], place


def _check_image_level(columns: dict[str, np.ndarray], first: np.ndarray, image_of_row: np.ndarray) -> None:
    """Every aperture of an image (and centroid method) must carry the same image-level values, since only the
    first is stored: a difference would be a bug in the photometry, and is refused rather than lost."""
    if len(first) == len(image_of_row):  # one row per image (one aperture per centroid method): nothing to differ
        return
    for column in IMAGE_LEVEL_COLUMNS:
        if column.name in ("aorkey", "channel"):
            continue
        values = columns[column.name]
        stored = values[first][image_of_row]
        if not np.array_equal(values, stored, equal_nan=values.dtype.kind == "f"):
            raise RuntimeError(f"internal error: the apertures of one image differ in {column.name}, an image-level "
                               "column (iracdb.columns); nothing of this AOR was written")


def _row_groups(target_index: np.ndarray, aperture_id: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """The row numbers (ascending) of each (target index, aperture id) among a unit's rows, found in one sort."""
    keyed = np.flatnonzero(np.isfinite(target_index) & np.isfinite(aperture_id))  # (a row without a key: none)
    if keyed.size == 0:
        return {}
    targets = target_index[keyed].astype(np.int64)
    ids = aperture_id[keyed].astype(np.int64)
    by_key = np.lexsort((ids, targets))  # stable: ascending row numbers within a group
    order = keyed[by_key]
    keys = np.stack([targets[by_key], ids[by_key]], axis=1)
    starts = np.flatnonzero(np.r_[True, (keys[1:] != keys[:-1]).any(axis=1)])
    ends = np.r_[starts[1:], len(order)]
    return {(int(keys[a, 0]), int(keys[a, 1])): order[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)}


def _null_if_nan(value: float) -> float | None:
    """NaN -> NULL (a value that could not be computed is missing, never a NaN)."""
    return None if value is None or not math.isfinite(value) else float(value)
