"""Exports of a reduction run, with its full provenance, written in bounded memory.

:func:`export_run` writes, into one folder, the two tables of a run and two provenance files:

``RUN_aor_data.EXT``
    The ``aor_photometry`` view of the run (one row per AOR x channel x target), ordered by AORKEY, channel and
    target, without the ``run`` column.
``RUN_img_data.EXT``
    The ``image_photometry`` view of the run (one row per measured image and target), in the order of
    :data:`iracdb.db.views.IMAGE_ORDER`, without the ``run`` column; the ``flag_*`` columns decode ``flags``.
``RUN_log.txt``
    A human-readable account, like the 2018 pipeline's log: parameters, per-AOR results, problem AORs, comments
    and the whole provenance, including every input file.
``RUN_provenance.json``
    The same provenance, machine-readable (see :func:`run_provenance`), plus what this export wrote.

This module fetches; :mod:`iracdb.export_formats` writes the table files and :mod:`iracdb.export_log` the log.

``RUN`` is the run's name made safe for file names, one to one (:func:`iracdb.outputs.file_stem`: every byte outside
``[A-Za-z0-9._-]`` percent-encoded, so ``a/b`` is ``a%2Fb`` and never ``a_b``'s name); ``EXT`` is ``csv``,
``parquet``, ``ecsv`` or ``vot`` (VOTable). Columns, units and meanings are those of :mod:`iracdb.db.views`:
integers are int64, floats float64 (written with full round-trip precision), text strings, ``used`` and the
``flag_*`` columns booleans. A NULL (the database stores a value that could not be measured as NULL, never NaN)
is written as missing: an empty CSV field, a Parquet null, a masked ECSV or VOTable value (VOTable has no missing
text: a NULL text is an empty string there). Parquet, ECSV and VOTable carry each column's unit and description
and the provenance (Parquet schema metadata, ECSV ``meta``, VOTable INFO), all but the list of input files, which
is in ``RUN_provenance.json`` and ``RUN_log.txt``. VOTable units are VOUnit; ``%`` has no VOUnit form, so
``spread_pct`` has no unit there and says ``[%]`` in its description.

Rows are streamed: on PostgreSQL the image rows by a binary ``COPY ... TO STDOUT`` parsed straight into numpy
columns (:mod:`iracdb.db.pgbinary`: no Python object per value; about twice as fast as fetching rows; the COPY
is read by a thread of its own, so that the server works on while a batch is parsed) and the
per-AOR rows by a server-side cursor, ``fetchmany`` on SQLite; converted batch by batch to Arrow record batches and
written, so memory does not grow with the size of the run. Formatting CSV (the shortest round-trip text of each
float) costs more than fetching: CSV batches are formatted by several threads at once and written in order. The
image rows are read from ``measurements`` itself, as the view reads them, with the text columns ``target`` and
``file`` looked up by ``target_index`` and ``input_id`` (dictionary-encoded: a path is not copied per row) and
``used`` and ``flag_*`` decoded from ``flags`` here: the same values, fetched for a fraction of the cost (a text
value costs a Python string per row). All queries of one export read one
consistent snapshot of the database (a read-only repeatable-read transaction on PostgreSQL, one read transaction
on SQLite, which does not block writers in WAL mode). Every file is written under a temporary name
(``.NAME.PID.partial``) and renamed into place only once all of them are complete: a failed export leaves no
truncated file behind, and the temporary files of a killed export are removed by the next export of the run. An
existing file is replaced only when asked to (``overwrite``), and a file of the database being read never is.

The database URL is only ever shown with its password masked (:func:`iracdb.db.engine.safe_url`).
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
from sqlalchemy import Engine

from iracdb import __version__
from iracdb.choices import EXPORT_FORMATS
from iracdb.columns import AOR_COLUMNS, IMAGE_COLUMNS, Column
from iracdb.config import default_workers
from iracdb.db import views
from iracdb.db.backend import Snapshot, backend_for, collector_paused, database_files
from iracdb.db.engine import mask_secrets, safe_url
from iracdb.db.pgbinary import ColumnArrays
from iracdb.db.queries import get_run
from iracdb.errors import BadOption, UserError
from iracdb.export_formats import WRITERS, TableWriter
from iracdb.export_log import AOR_LINE_COLUMNS, AorLine, write_log
from iracdb.flags import NOT_USED, Flag
from iracdb.outputs import (
    cannot_write,
    check_outputs,
    create_partial,
    discard_partial,
    file_stem,
    make_folder,
    open_for_writing,
    place,
    remove_stale_partials,
)

#: File name extension of the two tables in each format.
EXTENSIONS = {"csv": "csv", "parquet": "parquet", "ecsv": "ecsv", "votable": "vot"}

Progress = Callable[[int, int], None]

# --------------------------------------------------------------------------------------------------------------
# The exported columns and their Arrow types
# --------------------------------------------------------------------------------------------------------------

#: Columns decoded from ``flags`` here (bit by bit) rather than fetched from the view: the same values, less I/O.
_FLAG_BITS: dict[str, int] = {f"flag_{member.name.lower()}": int(member) for member in Flag if member and member.name}
#: Arrow type of each registry storage type.
_ARROW_TYPES = {"int": pa.int64(), "bigint": pa.int64(), "float": pa.float64(), "text": pa.string(),
                "bool": pa.bool_()}
#: ``image_photometry`` columns computed here from other columns, as the view computes them (the registry's
#: ``view`` columns): ``target`` (the target's name, from ``target_index``), ``file`` (the input's path, from
#: ``input_id``), ``used`` (:data:`iracdb.flags.NOT_USED`) and ``flag_*`` (from ``flags``). Each text value fetched
#: costs a Python string per row, more than the rest of the row. Every other column has the same name in
#: ``measurements``.
_IMAGE_DERIVED = frozenset(c.name for c in IMAGE_COLUMNS if c.source == "view")
#: Rows per batch of a COPY stream (:meth:`Snapshot.column_batches`): fewer, larger batches cost less per row.
_COPY_BATCH_ROWS = 20_000
#: Threads that encode batches at once, for a writer that allows it (:attr:`TableWriter.parallel_encode`), at
#: most: no more than the cores the process may use. More than 4 gain nothing: the fetch is then the bottleneck.
_ENCODE_THREADS = 4
#: Batches fetched and not yet written, at most (each of :data:`_COPY_BATCH_ROWS` rows at most).
_PENDING_BATCHES = 4
#: Kind of each registry storage type that :meth:`Snapshot.column_batches` streams (text is not fixed-width).
_KINDS = {"int": "int", "bigint": "int", "float": "float", "bool": "bool"}


# Arrow arrays to and from numpy without pyarrow's pa.array, pa.scalar and Array.to_numpy: the first call of any of
# those in a process imports pandas (0.3-0.4 s of CPU, in every export, before its first row), which an export
# does not use. Array.from_buffers and the buffers themselves do not.


def _bitmap(flags: np.ndarray) -> pa.Buffer:
    """A boolean numpy array as an Arrow bitmap (bit i of byte i // 8, least significant first)."""
    return pa.py_buffer(np.packbits(flags, bitorder="little"))


def _arrow(values: np.ndarray, arrow_type: pa.DataType, valid: np.ndarray | None = None) -> pa.Array:
    """An int64, float64 or bool numpy array as an Arrow array of that type; ``valid``: where it is not NULL (None:
    nowhere NULL)."""
    data = _bitmap(values) if values.dtype == np.bool_ else pa.py_buffer(np.ascontiguousarray(values))
    return pa.Array.from_buffers(arrow_type, len(values), [None if valid is None else _bitmap(valid), data])


def _numpy(array: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """An int64 or bool Arrow array's values (0 or False where NULL) and where it is not NULL (None: nowhere NULL)."""
    n, offset = len(array), array.offset
    if n == 0:
        return np.zeros(0, dtype=np.bool_ if pa.types.is_boolean(array.type) else np.int64), None
    validity, data = array.buffers()[:2]

    def bits(buffer: pa.Buffer) -> np.ndarray:
        return np.unpackbits(np.frombuffer(buffer, dtype=np.uint8), count=offset + n,
                             bitorder="little")[offset:].astype(np.bool_)

    if pa.types.is_boolean(array.type):
        values = bits(data)
    elif array.type == pa.int64():
        values = np.frombuffer(data, dtype=np.int64, count=n, offset=offset * 8)
    else:
        raise TypeError(f"no numpy view of {array.type}")
    if validity is None or array.null_count == 0:
        return values, None
    valid = bits(validity)
    return np.where(valid, values, np.zeros(1, dtype=values.dtype)), valid


def _from_python(items: Sequence[Any], arrow_type: pa.DataType) -> pa.Array:
    """A few Python values (None: NULL) as an Arrow array of ``arrow_type`` (string, int64, float64 or bool)."""
    valid = np.array([item is not None for item in items], dtype=np.bool_)
    validity = None if valid.all() else valid
    if pa.types.is_string(arrow_type):
        encoded = [b"" if item is None else str(item).encode("utf-8") for item in items]
        offsets = np.zeros(len(items) + 1, dtype=np.int32)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        return pa.Array.from_buffers(arrow_type, len(items), [None if validity is None else _bitmap(validity),
                                                              pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])
    dtype = {pa.int64(): np.int64, pa.float64(): np.float64, pa.bool_(): np.bool_}[arrow_type]
    return _arrow(np.array([0 if item is None else item for item in items], dtype=dtype), arrow_type, validity)


def _best_condition(image: str, aperture: str) -> str:
    """``AND`` the row is of its AOR, channel and target's best aperture: ``image`` names the table (alias) of
    the run and the image's keys, ``aperture`` the one of ``aperture_id``."""
    return (f"AND EXISTS (SELECT 1 FROM aor_summaries AS s WHERE s.run_id = {image}.run_id "
            f"AND s.aorkey = {image}.aorkey AND s.channel = {image}.channel AND s.target_index = {image}.target_index "
            f"AND s.aperture_id = {aperture}.aperture_id AND s.best) ")


@dataclass(frozen=True)
class _Table:
    """One exported table: its view, its columns (no ``run``), their Arrow schema and the SQL that streams it.

    ``base``: read the rows from that base table (``measurements``) of the run's id rather than from the view of
    the run's name (the same column names), computing :data:`_IMAGE_DERIVED` here.
    """

    key: str
    view: str
    columns: tuple[Column, ...]
    order: tuple[str, ...]
    base: str | None = None
    schema: pa.Schema = field(init=False)
    fetched: tuple[str, ...] = field(init=False)
    types: dict[str, str] = field(init=False)  # registry storage type of each column

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", {column.name: column.type for column in self.columns})
        fields = []
        for column in self.columns:
            metadata = {"unit": column.unit, "description": column.description}
            fields.append(pa.field(column.name, self.arrow_type(column.name), metadata=metadata))
        object.__setattr__(self, "schema", pa.schema(fields))
        if self.base:
            fetched = (*(n for n in self.names if n not in _IMAGE_DERIVED), "input_id")
        else:
            decoded = set(_FLAG_BITS) if "flags" in self.names else set()
            fetched = tuple(n for n in self.names if n not in decoded)
        object.__setattr__(self, "fetched", fetched)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def arrow_type(self, name: str) -> pa.DataType:
        if name == "input_id":
            return pa.int64()
        return _ARROW_TYPES[self.types[name]]

    def sql(self, *, best_only: bool = False, by_id: bool = False) -> str:
        """The query of the run's rows, in order; its parameter ``run`` is the run's id for a ``base`` table, else
        its name. ``best_only``: the rows of each AOR, channel and target's best aperture only.

        ``by_id`` (a ``base`` table whose run's image rows are in id order, :func:`image_id_range`): read the two
        result tables in the order of their primary keys, between the ids ``low`` and ``high``, which the
        database merges without a sort (a join ordered by the view's columns sorts every row: on PostgreSQL
        it doubled the server's time of a 1,000,000-row export)."""
        if not self.base:
            return (f"SELECT {', '.join(self.fetched)} FROM {self.view} WHERE run = :run "
                    f"{'AND best ' if best_only else ''}ORDER BY {', '.join(self.order)}")
        if by_id:
            prefix = {c.name: "f" if c.per_aperture else "i" for c in IMAGE_COLUMNS}
            selected = ", ".join(f"{prefix.get(n, 'i')}.{n}" for n in self.fetched)
            best = _best_condition("i", "f") if best_only else ""
            return (f"SELECT {selected} FROM measured_images AS i JOIN aperture_fluxes AS f ON f.image_id = i.id "
                    "WHERE i.run_id = :run AND i.id BETWEEN :low AND :high AND f.image_id BETWEEN :low AND :high "
                    f"{best}ORDER BY i.id, f.aperture_id")
        selected = ", ".join(f"m.{n}" for n in self.fetched)
        best = _best_condition("m", "m") if best_only else ""
        return (f"SELECT {selected} FROM {self.base} AS m WHERE m.run_id = :run {best}"
                f"ORDER BY {', '.join(f'm.{n}' for n in self.order)}")

    def to_batch(self, rows: Sequence[tuple[Any, ...]], *, bools_as_ints: bool,
                 names: _Names | None = None) -> pa.RecordBatch:
        """Database rows (in :attr:`fetched` order) as a record batch of :attr:`schema`.

        A ``base`` table's rows go to Arrow in one call, as a struct array (C++, no Python loop over rows or
        values); the per-AOR rows, few, column by column (:func:`_from_python`). ``bools_as_ints``: the database
        gives booleans as 0/1 (SQLite), not True/False (PostgreSQL); ``names``: the run's target names and input
        paths, for a ``base`` table.
        """
        if not self.base:  # the per-AOR rows (few): column by column, without pa.array (see _arrow)
            columns = list(zip(*rows, strict=True)) if rows else [()] * len(self.fetched)
            return self._assemble({name: _from_python(values, self.arrow_type(name))
                                   for name, values in zip(self.fetched, columns, strict=True)}, names)
        fetched_type = pa.struct([
            pa.field(name, pa.int8() if bools_as_ints and self.arrow_type(name) == pa.bool_()
                     else self.arrow_type(name)) for name in self.fetched
        ])
        struct = pa.array(rows, type=fetched_type)
        return self._assemble(dict(zip(self.fetched, struct.flatten(), strict=True)), names)

    @property
    def kinds(self) -> tuple[str, ...] | None:
        """The kind (``int``, ``float``, ``bool``) of each fetched column, for :meth:`Snapshot.column_batches`;
        None when one is text (it cannot be streamed as fixed-width columns)."""
        kinds = tuple(_KINDS.get("bigint" if name == "input_id" else self.types[name]) for name in self.fetched)
        return None if None in kinds else tuple(k for k in kinds if k is not None)

    def columns_to_batch(self, columns: Sequence[ColumnArrays], *, names: _Names | None = None) -> pa.RecordBatch:
        """Fetched columns (numpy values and validity, in :attr:`fetched` order) as a record batch of
        :attr:`schema`."""
        by_name = {name: _arrow(values, self.arrow_type(name), valid)
                   for name, (values, valid) in zip(self.fetched, columns, strict=True)}
        return self._assemble(by_name, names)

    def _assemble(self, by_name: dict[str, pa.Array], names: _Names | None) -> pa.RecordBatch:
        """The batch of the exported columns from the fetched ones (``target``, ``file``, ``used`` and ``flag_*``
        computed here)."""
        flags = _numpy(by_name["flags"])[0] if "flags" in by_name else None
        if self.base:
            assert names is not None and flags is not None
            by_name["target"] = names.targets.take(by_name["target_index"])
            by_name["file"] = names.paths.take(by_name["input_id"])
            by_name.update(names.aperture_columns(by_name["aperture_id"]))
            measured = _numpy(by_name["flux_mjy"].is_valid())[0]
            by_name["used"] = _arrow(((flags & int(NOT_USED)) == 0) & measured, pa.bool_())
        arrays = []
        for name in self.names:
            if name in by_name:
                array = by_name[name]
                arrays.append(array.cast(pa.bool_()) if array.type == pa.int8() else array)
            else:  # a flag_* column: decoded from `flags`, as the view does
                assert flags is not None
                arrays.append(_arrow((flags & _FLAG_BITS[name]) != 0, pa.bool_()))
        schema = self.schema
        for i, array in enumerate(arrays):
            if pa.types.is_dictionary(array.type):  # text looked up by key: see _Lookup.take
                schema = schema.set(i, schema.field(i).with_type(array.type))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)


class _UnknownKeys(Exception):
    """Keys a :meth:`_Lookup.refusing` lookup does not hold."""

    def __init__(self, keys: list[int]) -> None:
        super().__init__(keys)
        self.keys = keys


class _Lookup:
    """Text values by integer key (a target's name by ``target_index``, an input's path by ``run_inputs.id``): what
    the view's LEFT JOINs give, taken in numpy. ``missing(keys)`` gives ``(key, text)`` of keys not yet known."""

    def __init__(self, items: Sequence[tuple[int, str | None]],
                 missing: Callable[[list[int]], Sequence[tuple[int, str | None]]] | None = None) -> None:
        self._missing = missing
        self._set(dict(items))

    def _set(self, items: dict[int, str | None]) -> None:
        self._items = items
        self._keys = np.array(sorted(items), dtype=np.int64)
        self._values = _from_python([items[int(k)] for k in self._keys], pa.string())

    def refusing(self) -> _Lookup:
        """The same items, raising :class:`_UnknownKeys` for a key not among them instead of looking it up."""

        def refuse(keys: list[int]) -> Sequence[tuple[int, str | None]]:
            raise _UnknownKeys(keys)

        return _Lookup(list(self._items.items()), refuse)

    def fetch(self, keys: list[int]) -> dict[int, str | None]:
        """Look ``keys`` up with the ``missing`` this lookup was made with (None for a key not found)."""
        assert self._missing is not None
        return {**dict.fromkeys(keys), **dict(self._missing(keys))}

    def add(self, items: dict[int, str | None]) -> None:
        self._set({**self._items, **items})

    def take(self, keys: pa.Array) -> pa.DictionaryArray:
        """The text of each key; NULL for a NULL or unknown key. Dictionary-encoded: a path is not copied per row
        (the writers decode it, but for CSV, which writes it as it is)."""
        values, valid = _numpy(keys)
        known = np.ones(len(values), dtype=np.bool_) if valid is None else valid
        where = np.searchsorted(self._keys, values)
        found = known & (where < len(self._keys))
        found[found] = self._keys[where[found]] == values[found]
        if self._missing is not None and not found[known].all():
            new = np.unique(values[known & ~found]).tolist()
            self._set({**self._items, **dict.fromkeys(new), **dict(self._missing(new))})
            return self.take(keys)
        return pa.DictionaryArray.from_arrays(_arrow(where.astype(np.int64, copy=False), pa.int64(), found),
                                              self._values)


#: The image columns that describe the row's aperture (``a.NAME`` in the view), by column name: NAME.
_APERTURE_FIELDS = {c.name: c.expression[2:] for c in IMAGE_COLUMNS
                    if c.source == "view" and c.expression.startswith("a.")}


@dataclass(frozen=True)
class _Names:
    """A run's target names, input paths and apertures, for the image rows read from ``measurements``."""

    targets: _Lookup
    paths: _Lookup
    apertures: list[dict[str, Any]] = field(default_factory=list)  # run_apertures rows by aperture_id

    def aperture_columns(self, aperture_ids: pa.Array) -> dict[str, pa.Array]:
        """The aperture's columns (radius, annulus, centroid) of each row, as the view's join gives them."""
        ids = np.array([a["aperture_id"] for a in self.apertures], dtype=np.int64)
        keys = _numpy(aperture_ids)[0]
        where = np.searchsorted(ids, keys)
        found = where < len(ids)
        found[found] = ids[where[found]] == keys[found]
        index = _arrow(where.astype(np.int64, copy=False), pa.int64(), found)
        columns = {}
        for name, source in _APERTURE_FIELDS.items():
            values = _from_python([a[source] for a in self.apertures], _ARROW_TYPES[_IMAGE_TABLE.types[name]])
            columns[name] = (pa.DictionaryArray.from_arrays(index, values) if pa.types.is_string(values.type)
                             else values.take(index))
        return columns

    @classmethod
    def of_run(cls, snap: Snapshot, run_id: int) -> _Names:
        targets = snap.rows("SELECT target_index, name FROM run_targets WHERE run_id = :run", run=run_id)
        paths = snap.rows("SELECT id, path FROM run_inputs WHERE run_id = :run", run=run_id)

        def other_paths(ids: list[int]) -> list[tuple[int, str]]:  # inputs of another run: never in practice
            found = snap.rows(f"SELECT id, path FROM run_inputs WHERE id IN ({', '.join(map(str, ids))})")
            return [(r["id"], r["path"]) for r in found]

        apertures = snap.rows(f"SELECT aperture_id, {', '.join(sorted(set(_APERTURE_FIELDS.values())))} "
                              "FROM run_apertures WHERE run_id = :run ORDER BY aperture_id", run=run_id)
        return cls(_Lookup([(r["target_index"], r["name"]) for r in targets]),
                   _Lookup([(r["id"], r["path"]) for r in paths], other_paths), apertures)


_AOR_TABLE = _Table("aor", views.AOR_VIEW, tuple(c for c in AOR_COLUMNS if c.exported and c.name != "run"),
                    views.AOR_ORDER)
_IMAGE_TABLE = _Table("img", views.IMAGE_VIEW, tuple(c for c in IMAGE_COLUMNS if c.exported and c.name != "run"),
                      views.IMAGE_ORDER, base="measurements")

# --------------------------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    """A timestamp as ISO 8601 UTC (SQLite hands back naive values or text; iracdb writes them in UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return str(value.astimezone(UTC).isoformat())


def _masked(text: str | None) -> str | None:
    return None if text is None else mask_secrets(text)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _inputs_summary(snap: Snapshot, run_id: int) -> dict[str, Any]:
    rows = snap.rows("SELECT kind, count(*) AS n, sum(size_bytes) AS b FROM run_inputs WHERE run_id = :run "
                     "GROUP BY kind ORDER BY kind", run=run_id)
    return {
        "count": sum(int(r["n"]) for r in rows),
        "total_bytes": sum(int(r["b"] or 0) for r in rows),
        "by_kind": {r["kind"]: {"count": int(r["n"]), "bytes": int(r["b"] or 0)} for r in rows},
    }


def _inputs(snap: Snapshot, run_id: int) -> Iterator[dict[str, Any]]:
    """Every input file of the run, by path, streamed."""
    sql = "SELECT path, kind, size_bytes, sha256 FROM run_inputs WHERE run_id = :run ORDER BY path"
    for batch in snap.batches(sql, size=10_000, run=run_id):
        for path, kind, size, sha in batch:
            yield {"path": path, "kind": kind, "size_bytes": int(size), "sha256": sha}


def _columns_doc(table: _Table) -> list[dict[str, str]]:
    return [{"name": c.name, "unit": c.unit, "description": c.description} for c in table.columns]


def _provenance(engine: Engine, snap: Snapshot, run: dict[str, Any]) -> dict[str, Any]:
    """Everything about a run except its list of input files (see :func:`run_provenance`)."""
    run_id = run["id"]
    targets = snap.rows("SELECT target_index, name, ra_deg, dec_deg, aorkey, object FROM run_targets "
                        "WHERE run_id = :run ORDER BY target_index", run=run_id)
    units = snap.rows("SELECT aorkey, channel, status, n_exposures, n_images, finished_at FROM run_units "
                      "WHERE run_id = :run ORDER BY aorkey, channel", run=run_id)
    for unit in units:
        unit["finished_at"] = _iso(unit["finished_at"])
    missions = snap.rows("SELECT DISTINCT mission FROM aor_summaries WHERE run_id = :run AND mission IS NOT NULL "
                         "ORDER BY mission", run=run_id)
    versions = _loads(run["versions_json"]) or {}
    return {
        "run": {
            "name": run["name"], "status": run["status"], "created_at": _iso(run["created_at"]),
            "started_at": _iso(run["started_at"]), "finished_at": _iso(run["finished_at"]),
            "n_units": run["n_units"], "n_units_done": run["n_units_done"], "n_images": run["n_images"],
            "n_flagged": run["n_flagged"], "n_outliers": run["n_outliers"], "message": _masked(run["message"]),
        },
        "parameters": _loads(run["params_json"]),
        "params_hash": run["params_hash"],
        "resolved": _loads(run["resolved_json"]),
        "software": {"iracdb_version": run["software_version"], "git_revision": run["git_revision"],
                     "versions": versions},
        "execution": _masked(run["execution"]),
        "host": run["host"],
        "user": run["user_name"],
        "pid": run["pid"],
        # Masked on the way out too: a run recorded by an older iracdb may hold a URL's password parameter.
        "command_line": _masked(run["command_line"]),
        "database": safe_url(engine.url),
        "channels": sorted({int(u["channel"]) for u in units}),
        "missions": [m["mission"] for m in missions],
        "targets": targets,
        "units": units,
        "inputs_summary": _inputs_summary(snap, run_id),
        "columns": {"aor_data": _columns_doc(_AOR_TABLE), "img_data": _columns_doc(_IMAGE_TABLE)},
    }


def run_provenance(engine: Engine, run_name: str, *, with_inputs: bool = True) -> dict[str, Any]:
    """Where a run's numbers come from, as a JSON-able dict.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The catalogue.
    run_name : str
        The run.
    with_inputs : bool
        Include ``inputs``, the list of every input file (``path``, ``kind``, ``size_bytes`` [bytes], ``sha256``);
        ``inputs_summary`` (count, total bytes, per kind) is always there.

    Returns
    -------
    dict
        ``run`` (name, status, created/started/finished times as ISO 8601 UTC, counts, message), ``parameters``
        (as given), ``params_hash``, ``resolved`` (as applied per mission and channel), ``software`` (iracdb
        version, git revision, package versions), ``execution``, ``host``, ``user``, ``pid``, ``command_line``
        (passwords masked), ``database`` (URL, password masked), ``channels``, ``missions``, ``targets`` (with
        ICRS coordinates [deg]), ``units`` (status of each AOR x channel), ``inputs_summary``, ``columns`` (name,
        unit, description of each exported column) and, with ``with_inputs``, ``inputs``.

    Raises
    ------
    iracdb.errors.NoSuchRun
        No run has that name.
    """
    run = get_run(engine, run_name)
    with backend_for(engine).snapshot() as snap:
        provenance = _provenance(engine, snap, run)
        if with_inputs:
            provenance["inputs"] = list(_inputs(snap, run["id"]))
    return provenance


# --------------------------------------------------------------------------------------------------------------
# The export
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    """What ``iracdb.export.export_run`` wrote.

    Attributes
    ----------
    run : str
        The run's name.
    status : str
        The run's status when exported (``complete``, ``interrupted``, ``failed`` or ``running``).
    out_dir : Path
        The folder written into.
    files : tuple of Path
        Every file written, in the order written (aor table, image table, log, provenance).
    n_aor_rows, n_image_rows : int
        Rows of the two tables.
    """

    run: str
    status: str
    out_dir: Path
    files: tuple[Path, ...]
    n_aor_rows: int
    n_image_rows: int


def export_file_names(stem: str) -> tuple[str, ...]:
    """Every file name an export of the run of file stem ``stem`` (:func:`file_stem`) writes, in any format."""
    return (*(f"{stem}_{table}_data.{ext}" for ext in EXTENSIONS.values() for table in ("aor", "img")),
            f"{stem}_log.txt", f"{stem}_provenance.json")


@dataclass
class _FlagCounts:
    """Images per flag bit of each (aorkey, channel, target_index, aperture_id), counted while the image rows stream
    past."""

    counts: dict[tuple[int, int, int, int], dict[str, int]] = field(default_factory=dict)

    def add(self, batch: pa.RecordBatch) -> None:
        flags = _numpy(batch.column("flags"))[0]
        flagged = flags != 0
        if not flagged.any():
            return
        # Each distinct (key, flags) of the batch once, with its number of rows: one sort of opaque 40-byte values
        # (np.unique(axis=0) compares column by column, many times slower), then a loop over the few distinct ones.
        rows = np.stack([*(_numpy(batch.column(n))[0][flagged]
                           for n in ("aorkey", "channel", "target_index", "aperture_id")),
                         flags[flagged].astype(np.int64, copy=False)], axis=1)
        distinct, n_rows = np.unique(rows.view(np.dtype((np.void, rows.itemsize * 5))).reshape(-1),
                                     return_counts=True)
        per_key: dict[tuple[int, int, int, int], list[int]] = {}
        for (aorkey, channel, target_index, aperture_id, bits), n in zip(
                distinct.view(np.int64).reshape(-1, 5).tolist(), n_rows.tolist(), strict=True):
            tally = per_key.setdefault((aorkey, channel, target_index, aperture_id), [0] * len(_MEMBERS))
            for i, (_, value) in enumerate(_MEMBERS):
                if bits & value:
                    tally[i] += n
        for key, tally in per_key.items():  # each key's flags in the order of Flag, as the log lists them
            entry = self.counts.setdefault(key, {})
            for (name, _), n in zip(_MEMBERS, tally, strict=True):
                if n:
                    entry[name] = entry.get(name, 0) + n


#: Each flag bit's name (lower case) and value, in the order of :class:`Flag`.
_MEMBERS = tuple((member.name.lower(), int(member)) for member in Flag if member and member.name)


def _batches(snap: Snapshot, table: _Table, run: dict[str, Any], names: _Names | None,
             best_only: bool = False, ids: tuple[int, int] | None = None) -> Generator[pa.RecordBatch, None, None]:
    """The table's rows of ``run`` as record batches: streamed as numpy columns where the database can
    (:meth:`Snapshot.column_batches`: PostgreSQL's binary COPY, no Python object per value), else as rows.
    ``ids``: the run's image id range (:func:`image_id_range`), for a ``base`` table read in id order."""
    key = run["id"] if table.base else run["name"]
    params: dict[str, Any] = {"run": key}
    if ids is not None:
        params.update(low=ids[0], high=ids[1])
    sql = table.sql(best_only=best_only, by_id=ids is not None)
    kinds = table.kinds
    if snap.streams_columns and kinds is not None:
        yield from _copied_batches(snap, table, kinds, sql, params, names)
        return
    for rows in snap.batches(sql, **params):
        yield table.to_batch(rows, bools_as_ints=snap.booleans_as_integers, names=names)


def image_id_range(snap: Snapshot, run_id: int) -> tuple[int, int] | None:
    """The ids of a run's image rows, ``(low, high)``, when reading them in id order is reading them in order:
    each unit's rows are numbered in order from its id x 2^32 (:func:`iracdb.reduce.store.unit_image_ids`), so
    this holds when the run's units were numbered in AOR and channel order, as iracdb plans them. None otherwise
    (the rows are then read in the view's order)."""
    units = snap.rows("SELECT id, aorkey, channel FROM run_units WHERE run_id = :run ORDER BY id", run=run_id)
    keys = [(u["aorkey"], u["channel"]) for u in units]
    if not units or keys != sorted(keys):
        return None
    return units[0]["id"] * views.IMAGE_IDS_PER_UNIT, (units[-1]["id"] + 1) * views.IMAGE_IDS_PER_UNIT - 1


def _image_row_count(snap: Snapshot, run_id: int, ids: tuple[int, int] | None) -> int:
    """The run's image rows: counted in ``aperture_fluxes``' primary key alone when the run's image ids (``ids``,
    :func:`image_id_range`) are a range no other run's fall in (the join of ``measurements`` reads both tables:
    1.5 s for 1,000,000 rows)."""
    if ids is not None:
        first, last = (value // views.IMAGE_IDS_PER_UNIT for value in ids)
        others = snap.scalar("SELECT count(*) FROM run_units WHERE id BETWEEN :first AND :last AND run_id <> :run",
                             first=first, last=last, run=run_id)
        if not others:
            return int(snap.scalar("SELECT count(*) FROM aperture_fluxes WHERE image_id BETWEEN :low AND :high",
                                   low=ids[0], high=ids[1]))
    return int(snap.scalar("SELECT count(*) FROM measurements WHERE run_id = :run", run=run_id))


def _copied_batches(snap: Snapshot, table: _Table, kinds: tuple[str, ...], sql: str, params: dict[str, Any],
                    names: _Names | None) -> Generator[pa.RecordBatch, None, None]:
    """:func:`_batches` through :meth:`Snapshot.column_batches`.

    No other query can run on the connection while a COPY streams: an input path that the run's own inputs do not
    hold (another run's input: never in practice) ends the COPY, is looked up, and the COPY starts again, in the
    same snapshot and order, past the rows already given.
    """
    paths = None if names is None else names.paths.refusing()
    copied = None if names is None or paths is None else _Names(names.targets, paths, names.apertures)
    given = 0
    while True:
        seen = 0
        try:
            with contextlib.closing(snap.column_batches(sql, kinds, size=_COPY_BATCH_ROWS, **params)) as stream:
                for columns in stream:
                    seen += len(columns[0][0]) if columns else 0
                    if seen > given:
                        yield table.columns_to_batch(columns, names=copied)
                        given = seen
            return
        except _UnknownKeys as exc:
            assert names is not None and paths is not None
            paths.add(names.paths.fetch(exc.keys))


def _write_table(snap: Snapshot, table: _Table, run: dict[str, Any], writer: TableWriter, *,
                 on_batch: Callable[[pa.RecordBatch], None] | None = None, best_only: bool = False,
                 ids: tuple[int, int] | None = None) -> int:
    """Stream a table's rows of ``run`` (its ``runs`` record) into ``writer``; the rows written (``ids``: see
    :func:`_batches`).

    Encoding and writing run in other threads while the next batch is fetched and converted (Arrow's CSV and
    Parquet writers release the GIL): batches are encoded by one thread per usable core (at most
    :data:`_ENCODE_THREADS`) where the writer allows it (:attr:`TableWriter.parallel_encode`), else by one, and
    written in order by one. At most :data:`_PENDING_BATCHES` batches wait, so memory stays bounded.
    """
    n = 0
    pending: deque[Future[None]] = deque()
    encoders = min(_ENCODE_THREADS, default_workers()) if writer.parallel_encode else 1
    with (collector_paused(),
          ThreadPoolExecutor(max_workers=encoders, thread_name_prefix="iracdb-encode") as encode,
          ThreadPoolExecutor(max_workers=1, thread_name_prefix="iracdb-write") as write):
        try:
            names = _Names.of_run(snap, run["id"]) if table.base else None
            # Closed before the snapshot is.
            with contextlib.closing(_batches(snap, table, run, names, best_only, ids)) as batches:
                for batch in batches:
                    while len(pending) >= _PENDING_BATCHES:
                        pending.popleft().result()
                    encoded = encode.submit(writer.encode, batch)
                    pending.append(write.submit(_write_encoded, writer, encoded))
                    n += batch.num_rows
                    if on_batch is not None:
                        on_batch(batch)
            while pending:
                pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
    return n


def _write_encoded(writer: TableWriter, encoded: Future[Any]) -> None:
    writer.write_encoded(encoded.result())


def export_run(engine: Engine, run_name: str, out_dir: Path, fmt: str = "csv", *, overwrite: bool = False,
               progress: Progress | None = None, best_only: bool = False) -> ExportResult:
    """Export a run's per-AOR and per-image results, its log and its provenance into ``out_dir``.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The catalogue.
    run_name : str
        The run to export; any status (an interrupted run exports what it has, with its status recorded).
    out_dir : Path
        Folder to write into; created if missing. Temporary files that an earlier, killed export of this run left
        there are removed.
    fmt : {"csv", "parquet", "ecsv", "votable"}
        Format of the two tables (see :data:`EXPORT_FORMATS`); the log is text and the provenance JSON either way.
    overwrite : bool
        Replace files of an earlier export of the run; without it, an existing file stops the export before
        anything is written.
    progress : callable, optional
        Called as ``progress(image_rows_written, image_rows_total)`` after each batch of image rows. Without
        it, the image rows are not counted beforehand.
    best_only : bool
        Only each AOR, channel and target's best aperture: one AOR row each, and that aperture's image rows
        (default: every aperture of the run's grid).

    Returns
    -------
    ExportResult

    Raises
    ------
    iracdb.errors.NoSuchRun
        No run has that name.
    iracdb.errors.BadOption
        ``fmt`` is not one of :data:`EXPORT_FORMATS`.
    iracdb.errors.OutputExists
        Without ``overwrite``: a file of the export exists already (nothing is written).
    iracdb.errors.CannotWrite
        ``out_dir`` is not a folder or cannot be created, a file cannot be written (no permission, disk full, ...)
        or would be a file of the database being read (nothing is left half written).
    """
    if fmt not in EXPORT_FORMATS:
        raise BadOption(f"unknown export format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    run = get_run(engine, run_name)
    out_dir = Path(out_dir)
    stem, ext = file_stem(run["name"]), EXTENSIONS[fmt]
    finals = [out_dir / f"{stem}_aor_data.{ext}", out_dir / f"{stem}_img_data.{ext}",
              out_dir / f"{stem}_log.txt", out_dir / f"{stem}_provenance.json"]
    check_outputs(finals, overwrite=overwrite, protected=database_files(engine.url))
    make_folder(out_dir)
    remove_stale_partials(out_dir, export_file_names(stem))
    exported_at = datetime.now(UTC).isoformat()
    temps: list[Path] = []
    try:
        for final in finals:
            temps.append(create_partial(final))
        try:
            n_aor, n_image = _write_files(engine, run, fmt, temps, finals, out_dir, exported_at, progress,
                                          best_only)
        except UserError:
            raise
        except OSError as exc:  # no space left, the folder removed meanwhile, ...
            raise cannot_write(f"the export of run {run['name']!r} into {out_dir}", exc) from None
        for temp, final in zip(temps, finals, strict=True):
            place(temp, final, overwrite=overwrite)
    finally:
        for temp in temps:
            discard_partial(temp)
    return ExportResult(run=run["name"], status=run["status"], out_dir=out_dir, files=tuple(finals),
                        n_aor_rows=n_aor, n_image_rows=n_image)


def _write_files(engine: Engine, run: dict[str, Any], fmt: str, temps: list[Path], finals: list[Path],
                 out_dir: Path, exported_at: str, progress: Progress | None, best_only: bool = False
                 ) -> tuple[int, int]:
    """Write the export's four files under their temporary names ``temps``; the rows of the two tables."""
    with backend_for(engine).snapshot() as snap:
        provenance = _provenance(engine, snap, run)
        embedded = {**provenance, "export": {"date": exported_at, "format": fmt, "iracdb_version": __version__,
                                             "best_only": best_only}}
        writer_class = WRITERS[fmt]

        writer = writer_class(temps[0], _AOR_TABLE, embedded)
        try:
            n_aor = _write_table(snap, _AOR_TABLE, run, writer, best_only=best_only)
        finally:
            writer.close()

        ids = image_id_range(snap, run["id"])
        # Counted only to report progress: the count reads every key of the run's rows (0.15-0.2 s of the
        # server's, before the first row is sent, for 1,000,000 rows).
        total = _image_row_count(snap, run["id"], ids) if progress is not None else 0
        flag_counts = _FlagCounts()
        done = 0

        def on_image_batch(batch: pa.RecordBatch) -> None:
            nonlocal done
            flag_counts.add(batch)
            done += batch.num_rows
            if progress is not None:
                progress(done, total)

        writer = writer_class(temps[1], _IMAGE_TABLE, embedded)
        try:
            n_image = _write_table(snap, _IMAGE_TABLE, run, writer, on_batch=on_image_batch, best_only=best_only,
                                   ids=ids)
        finally:
            writer.close()
        if progress is not None and n_image == 0:
            progress(0, total)

        export_info = {"date": exported_at, "format": fmt, "iracdb_version": __version__,
                       "out_dir": str(out_dir.resolve()), "files": [p.name for p in finals],
                       "n_aor_rows": n_aor, "n_image_rows": n_image, "best_only": best_only}
        with open_for_writing(temps[2], "w", encoding="utf-8") as log:
            write_log(log, provenance, export_info, _aor_lines(snap, run["name"]), flag_counts.counts,
                      _inputs(snap, run["id"]))
        with open_for_writing(temps[3], "w", encoding="utf-8") as out:
            _write_provenance_json(out, snap, run["id"], {**provenance, "export": export_info})
    return n_aor, n_image


def _write_provenance_json(out: IO[str], snap: Snapshot, run_id: int, provenance: dict[str, Any]) -> None:
    """The provenance as indented JSON, the (possibly huge) list of inputs streamed last."""
    head = json.dumps(provenance, indent=2)
    assert head.endswith("\n}")
    out.write(head[:-2])
    out.write(',\n  "inputs": [')
    first = True
    for item in _inputs(snap, run_id):
        out.write("\n    " if first else ",\n    ")
        out.write(json.dumps(item))
        first = False
    out.write("\n  ]\n}\n" if not first else "]\n}\n")


# --------------------------------------------------------------------------------------------------------------
# The log: fetched here, formatted by iracdb.export_log
# --------------------------------------------------------------------------------------------------------------


def _aor_lines(snap: Snapshot, run_name: str) -> Iterator[AorLine]:
    """The run's per-AOR rows that the log shows, in the view's order, streamed."""
    sql = (f"SELECT {', '.join(AOR_LINE_COLUMNS)} FROM {views.AOR_VIEW} WHERE run = :run AND best "
           "ORDER BY aorkey, channel, target_index")
    for batch in snap.batches(sql, run=run_name):
        yield from (AorLine(*row) for row in batch)


__all__ = ["EXPORT_FORMATS", "EXTENSIONS", "ExportResult", "export_file_names", "export_run", "file_stem",
           "run_provenance"]
