"""Rows from the database as :class:`astropy.table.Table`: the Python API's result type.

Columns of the run views take their type, unit and description from the column registry (:mod:`iracdb.columns`);
other columns (the catalogue's listings, ``sql`` results) get a type from their values and, for the catalogue's
listings, a unit from :data:`LISTING_UNITS`. A NULL is a masked value (never the string ``'None'``, never NaN
standing for "not measured"), so ``table.to_pandas()`` gives NaN, ``<NA>`` or None as pandas does for missing data.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from astropy import units as u
from astropy.table import Column as TableColumn
from astropy.table import MaskedColumn, Table

from iracdb.columns import AOR_COLUMNS, IMAGE_COLUMNS, Column

#: The registry's columns by table: ``image`` (``image_photometry``) and ``aor`` (``aor_photometry``).
REGISTRY: dict[str, dict[str, Column]] = {
    "image": {column.name: column for column in IMAGE_COLUMNS if column.exported},
    "aor": {column.name: column for column in AOR_COLUMNS if column.exported},
}

#: Units (astropy strings) and meanings of the catalogue listings' columns that are quantities or need saying.
LISTING_UNITS: dict[str, tuple[str, str]] = {
    "first_mjd": ("d", "MJD_OBS of the first exposure (UTC)"),
    "last_mjd": ("d", "MJD_OBS of the last exposure (UTC)"),
    "mjd_obs": ("d", "MJD_OBS: start of the exposure (UTC)"),
    "frame_time_s": ("s", "FRAMTIME: frame time"),
    "exposure_time_s": ("s", "EXPTIME: effective exposure time"),
    "radius_px": ("pix", "aperture radius"),
    "flux_a_mjy": ("mJy", "mean flux density in run A"),
    "flux_b_mjy": ("mJy", "mean flux density in run B"),
    "diff_mjy": ("mJy", "flux B - flux A"),
    "diff_pct": ("%", "100 (B - A) / A"),
    "err_a_mjy": ("mJy", "error of the mean in run A"),
    "err_b_mjy": ("mJy", "error of the mean in run B"),
    "diff_sigma": ("", "(B - A) over the combined errors of the two means"),
}

_NUMPY_TYPES = {"int": np.int64, "bigint": np.int64, "float": np.float64, "bool": np.bool_, "text": np.str_}


def table_from_rows(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    registry: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Table:
    """A table of ``rows`` (tuples in the order of ``columns``).

    Parameters
    ----------
    columns : sequence of str
        The column names.
    rows : iterable of sequence
        The rows; None is a missing value (masked).
    registry : {"image", "aor"}, optional
        Type, unit and description of each column from the column registry (a run's image or AOR table).
    meta : mapping, optional
        The table's ``meta`` (a run's provenance).
    """
    values: list[list[Any]] = [[] for _ in columns]
    for row in rows:
        for store, value in zip(values, row, strict=True):
            store.append(value)
    described = REGISTRY[registry] if registry else {}
    table = Table(meta=dict(meta or {}))
    for name, data in zip(columns, values, strict=True):
        table[name] = _column(name, data, described.get(name))
    return table


def table_from_dicts(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], **kwargs: Any) -> Table:
    """:func:`table_from_rows` of dict rows, taking ``columns`` from each."""
    return table_from_rows(columns, ([row[name] for name in columns] for row in rows), **kwargs)


def _column(name: str, data: list[Any], column: Column | None) -> TableColumn:
    if column is not None:
        kind: Any = _NUMPY_TYPES[column.type]
        unit, description = column.unit, column.description
    else:
        kind = _infer(data)
        unit, description = LISTING_UNITS.get(name, ("", ""))
    mask = [value is None for value in data]
    filler = {np.int64: 0, np.float64: np.nan, np.bool_: False, np.str_: ""}.get(kind, None)
    filled = [filler if missing else _plain(value) for value, missing in zip(data, mask, strict=True)]
    array = np.array(filled, dtype=kind) if kind is not object else _objects(filled)
    if kind is np.str_ and not len(array):
        array = array.astype("U1")
    made = MaskedColumn(array, name=name, mask=mask) if any(mask) else TableColumn(array, name=name)
    if unit:
        made.unit = u.Unit(unit)
    made.description = description or None
    return made


def _objects(values: list[Any]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def _infer(data: list[Any]) -> Any:
    """The numpy type of values from a query without a registry entry (object when they are mixed)."""
    present = [value for value in data if value is not None]
    kinds = {type(value) for value in present}
    if not kinds:
        return np.str_ if not data else np.float64
    if kinds <= {bool}:
        return np.bool_
    if kinds <= {int}:
        return np.int64
    if kinds <= {int, float, decimal.Decimal}:
        return np.float64
    if kinds <= {str, dt.datetime, dt.date}:
        return np.str_
    return object


__all__ = ["LISTING_UNITS", "REGISTRY", "table_from_dicts", "table_from_rows"]
