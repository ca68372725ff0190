"""The reduction's writer paths: a text column among numpy columns in ``Backend.bulk_insert_arrays`` (the centroid
method of ``measured_images``, sent by binary COPY built with numpy on PostgreSQL), stored exactly on both backends."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import Column, Engine, Float, Integer, MetaData, Table, Text, select

from iracdb.db import pgbinary
from iracdb.db.backend import backend_for


@pytest.fixture
def labelled(engine: Engine) -> Iterator[Table]:
    """A scratch table with a text column between numbers (dropped afterwards)."""
    table = Table("scratch_labelled", MetaData(), Column("id", Integer, primary_key=True, autoincrement=False),
                  Column("label", Text), Column("value", Float), Column("n", Integer))
    table.create(engine)
    yield table
    table.drop(engine)


def test_bulk_insert_arrays_stores_a_text_column_exactly(engine: Engine, labelled: Table) -> None:
    rng = np.random.default_rng(3)
    n = 400
    choices = np.array(["com", "fwhm", "", "β-long name", None], dtype=object)
    label = choices[rng.integers(0, len(choices), size=n)]
    value = rng.normal(size=n) * 10.0 ** rng.integers(-300, 300, size=n)
    value[::6] = np.nan
    count = rng.integers(-1000, 1000, size=n).astype(np.float64)
    count[::9] = np.nan
    ids = rng.permutation(n)
    with engine.begin() as conn:
        backend_for(engine).bulk_insert_arrays(conn, labelled, {"id": ids, "label": label, "value": value, "n": count})
        stored = conn.execute(select(labelled).order_by(labelled.c.id)).all()
    order = np.argsort(ids)
    assert [r[0] for r in stored] == ids[order].tolist()
    assert [r[1] for r in stored] == label[order].tolist()
    assert [r[2] for r in stored] == [None if np.isnan(v) else v for v in value[order].tolist()]  # bit for bit
    assert [r[3] for r in stored] == [None if np.isnan(v) else int(v) for v in count[order].tolist()]


def test_encode_rows_groups_rows_by_text_value_and_nulls() -> None:
    """The stream holds every row once, each group one packed layout: the rows parsed back field by field."""
    label = np.array(["a", None, "bb", "a", "bb", None, ""], dtype=object)
    value = np.array([1.0, 2.0, np.nan, 4.0, 5.0, np.nan, 7.0])
    stream = pgbinary.encode_rows([np.arange(7), label, value], ["int4", "text", "float8"])
    body = memoryview(stream)[len(pgbinary.SIGNATURE) + 8:]
    rows, at = [], 0
    while int.from_bytes(body[at:at + 2], "big", signed=True) != -1:
        at += 2
        fields: list[bytes | None] = []
        for _ in range(3):
            length = int.from_bytes(body[at:at + 4], "big", signed=True)
            at += 4
            fields.append(None if length < 0 else bytes(body[at:at + length]))
            at += max(length, 0)
        rows.append(fields)
    assert bytes(body[at:]) == pgbinary.TRAILER
    decoded = sorted((int.from_bytes(i or b"", "big"), None if t is None else t.decode(),
                      None if v is None else float(np.frombuffer(v, ">f8")[0])) for i, t, v in rows)
    assert decoded == [(0, "a", 1.0), (1, None, 2.0), (2, "bb", None), (3, "a", 4.0), (4, "bb", 5.0), (5, None, None),
                       (6, "", 7.0)]
