"""The table files of an export, one writer per format, each taking Arrow record batches as they stream past.

CSV and Parquet are written by Arrow (Parquet carries the units, descriptions and provenance in its schema
metadata); ECSV gets astropy's header and VOTable a TABLEDATA header written here, then data lines built in Arrow
compute, batch by batch. See :mod:`iracdb.export` for what the tables hold.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from iracdb import __version__
from iracdb.columns import Column as RegistryColumn
from iracdb.outputs import open_for_writing

#: Rows per Parquet row group: batches are gathered into row groups this large.
ROW_GROUP_ROWS = 100_000
#: Rows Arrow's CSV writer formats at a time (its default, 1024, costs some 5-10 % more CPU per row).
_CSV_CHUNK_ROWS = 4096


class ExportedTable(Protocol):
    """What a writer needs of an exported table."""

    @property
    def key(self) -> str: ...  # "aor" or "img": the file is RUN_{key}_data

    @property
    def columns(self) -> tuple[RegistryColumn, ...]: ...

    @property
    def schema(self) -> pa.Schema: ...

    def arrow_type(self, name: str) -> pa.DataType: ...


def decoded(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with its dictionary-encoded columns decoded (the same values, names and field metadata)."""
    if not any(pa.types.is_dictionary(f.type) for f in batch.schema):
        return batch
    fields, arrays = [], []
    for field, array in zip(batch.schema, batch.columns, strict=True):
        if isinstance(array, pa.DictionaryArray):
            field, array = field.with_type(array.type.value_type), array.dictionary.take(array.indices)
        fields.append(field)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields, metadata=batch.schema.metadata))


class TableWriter:
    """A table file being written: record batches in (:meth:`write`), then :meth:`close`. A batch's text columns
    may come dictionary-encoded; the file holds their values (as :func:`decoded` gives them).

    :meth:`write` is :meth:`encode` (the costly part, that only reads the batch) then :meth:`write_encoded` (in
    file order). A writer whose :attr:`parallel_encode` is true may have several batches encoded at once, in other
    threads, while it writes the encoded batches in order.
    """

    #: :meth:`encode` may run in several threads at once (it reads only its batch and releases the GIL).
    parallel_encode = False

    def encode(self, batch: pa.RecordBatch) -> Any:
        """What :meth:`write_encoded` writes of ``batch`` (by default the batch, :func:`decoded`)."""
        return decoded(batch)

    def write_encoded(self, encoded: Any) -> None:
        raise NotImplementedError

    def write(self, batch: pa.RecordBatch) -> None:
        self.write_encoded(self.encode(batch))

    def close(self) -> None:
        raise NotImplementedError


class _CsvWriter(TableWriter):
    """Arrow's CSV writer, batch by batch into memory (no header), the text appended to the file in order: the same
    bytes as one Arrow ``CSVWriter`` given every batch, with the batches formatted in parallel (floats' shortest
    round-trip text is most of the cost)."""

    parallel_encode = True

    def __init__(self, path: Path, table: ExportedTable, meta: dict[str, Any]) -> None:
        self._options = pacsv.WriteOptions(include_header=False, quoting_style="needed", batch_size=_CSV_CHUNK_ROWS)
        # The header as Arrow writes it (each name quoted, quotes doubled), written here: Arrow would be given an
        # empty table, whose making imports pandas (0.3-0.4 s).
        header = ",".join('"' + name.replace('"', '""') + '"' for name in table.schema.names) + "\n"
        self._file = open_for_writing(path)
        self._file.write(header.encode("utf-8"))

    def encode(self, batch: pa.RecordBatch) -> pa.Buffer:
        # Arrow writes dictionary-encoded text as its values, for less than plain text costs.
        sink = pa.BufferOutputStream()
        pacsv.write_csv(batch, sink, write_options=self._options)
        return sink.getvalue()

    def write_encoded(self, encoded: pa.Buffer) -> None:
        self._file.write(encoded)

    def close(self) -> None:
        self._file.close()


class _ParquetWriter(TableWriter):
    def __init__(self, path: Path, table: ExportedTable, meta: dict[str, Any]) -> None:
        schema = table.schema.with_metadata({"iracdb_provenance": json.dumps(meta)})
        self._writer = pq.ParquetWriter(str(path), schema)
        self._schema = schema
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0

    def write_encoded(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._rows += batch.num_rows
        if self._rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            table = pa.Table.from_batches(self._pending).replace_schema_metadata(self._schema.metadata)
            self._writer.write_table(table, row_group_size=max(self._rows, 1))
        self._pending, self._rows = [], 0

    def close(self) -> None:
        try:
            self._flush()
        finally:
            self._writer.close()


def _as_text(array: pa.Array, null: str) -> pa.Array:
    """Numbers as their shortest round-trip text (Arrow's cast), NULL as ``null``."""
    return pc.fill_null(pc.cast(array, pa.string()), null)


class _EcsvWriter(TableWriter):
    """ECSV 1.0: astropy writes the header (dtypes, units, descriptions, provenance in ``meta``) of a table with
    no rows; the data lines follow batch by batch (space-separated, strings quoted, missing values ``""``)."""

    def __init__(self, path: Path, table: ExportedTable, meta: dict[str, Any]) -> None:
        from astropy.table import Column, Table

        header = Table(meta={"iracdb_provenance": meta})
        for column in table.columns:
            kind = table.arrow_type(column.name)
            dtype = {pa.int64(): np.int64, pa.float64(): np.float64, pa.string(): np.str_, pa.bool_(): np.bool_}[kind]
            header[column.name] = Column(np.zeros(0, dtype=dtype), unit=column.unit or None,
                                         description=column.description)
        text = io.StringIO()
        header.write(text, format="ascii.ecsv")
        self._file = open_for_writing(path, "w", encoding="utf-8", newline="\n")
        self._file.write(text.getvalue())

    def write_encoded(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        columns = []
        for array in batch.columns:
            if pa.types.is_string(array.type):
                quoted = pc.replace_substring(array, '"', '""')
                columns.append(pc.fill_null(pc.binary_join_element_wise('"', quoted, '"', ""), '""'))
            elif pa.types.is_boolean(array.type):
                columns.append(pc.if_else(array, "True", "False"))
            else:
                columns.append(_as_text(array, '""'))
        lines = pc.binary_join_element_wise(*columns, " ")
        self._file.write("\n".join(lines.to_pylist()))
        self._file.write("\n")

    def close(self) -> None:
        self._file.close()


_VO_TYPES = {pa.int64(): 'datatype="long"', pa.float64(): 'datatype="double"',
             pa.string(): 'datatype="char" arraysize="*"', pa.bool_(): 'datatype="boolean"'}


def _vounit(unit: str) -> str | None:
    """The unit in VOUnit syntax, or None when VOUnit cannot say it (``%``: dimensionless with a scale)."""
    if not unit:
        return None
    from astropy import units as u

    try:
        return str(u.Unit(unit).to_string("vounit"))
    except (ValueError, u.UnitsError):
        return None


class _VoTableWriter(TableWriter):
    """VOTable 1.4, TABLEDATA: FIELDs with unit (VOUnit) and DESCRIPTION, the provenance as INFO elements; rows
    streamed batch by batch (XML-escaped; an empty TD is a missing value)."""

    def __init__(self, path: Path, table: ExportedTable, meta: dict[str, Any]) -> None:
        self._file = open_for_writing(path, "w", encoding="utf-8", newline="\n")
        run = meta.get("run", {})
        out = ['<?xml version="1.0" encoding="utf-8"?>',
               '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3" '
               'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
               'xsi:schemaLocation="http://www.ivoa.net/xml/VOTable/v1.3 '
               'http://www.ivoa.net/xml/VOTable/VOTable-1.4.xsd">',
               f' <DESCRIPTION>iracdb run {xml_escape(str(run.get("name")))}: {table.key}_data</DESCRIPTION>',
               ' <RESOURCE type="results">']
        for name, value in (("run", run.get("name")), ("status", run.get("status")),
                            ("params_hash", meta.get("params_hash")), ("iracdb_version", __version__)):
            out.append(f"  <INFO name={quoteattr(name)} value={quoteattr(str(value))}/>")
        out.append(f'  <INFO name="iracdb_provenance" value={quoteattr(json.dumps(meta))}/>')
        out.append(f"  <TABLE name={quoteattr(table.key + '_data')}>")
        for column in table.columns:
            unit = _vounit(column.unit)
            description = column.description
            if column.unit and unit is None:
                description = f"{description} [{column.unit}]"
            unit_attr = f" unit={quoteattr(unit)}" if unit else ""
            out.append(f"   <FIELD name={quoteattr(column.name)} {_VO_TYPES[table.arrow_type(column.name)]}"
                       f"{unit_attr}><DESCRIPTION>{xml_escape(description)}</DESCRIPTION></FIELD>")
        out += ["   <DATA>", "    <TABLEDATA>", ""]
        self._file.write("\n".join(out))

    def write_encoded(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        columns = []
        for array in batch.columns:
            if pa.types.is_string(array.type):
                text = pc.replace_substring(array, "&", "&amp;")
                text = pc.replace_substring(pc.replace_substring(text, "<", "&lt;"), ">", "&gt;")
                columns.append(pc.fill_null(text, ""))
            elif pa.types.is_boolean(array.type):
                columns.append(pc.if_else(array, "T", "F"))
            else:
                columns.append(_as_text(array, ""))
        cells = pc.binary_join_element_wise(*columns, "</TD><TD>")
        lines = pc.binary_join_element_wise("<TR><TD>", cells, "</TD></TR>", "")
        self._file.write("\n".join(lines.to_pylist()))
        self._file.write("\n")

    def close(self) -> None:
        self._file.write("    </TABLEDATA>\n   </DATA>\n  </TABLE>\n </RESOURCE>\n</VOTABLE>\n")
        self._file.close()


#: The writer of each export format: ``WRITERS[fmt](path, table, provenance)``.
WRITERS: dict[str, Callable[[Path, ExportedTable, dict[str, Any]], TableWriter]] = {
    "csv": _CsvWriter, "parquet": _ParquetWriter, "ecsv": _EcsvWriter, "votable": _VoTableWriter,
}


__all__ = ["ROW_GROUP_ROWS", "WRITERS", "ExportedTable", "TableWriter", "decoded"]
