"""PostgreSQL's binary COPY parsed into numpy columns (iracdb.db.pgbinary, PostgresqlSnapshot.column_batches): the
same values and NULLs as the rows the driver fetches, whatever the mix of NULLs, widths and batch boundaries."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from sqlalchemy import Engine, text

from iracdb.db import pgbinary
from iracdb.db.backend import Snapshot, backend_for

KINDS = ("int", "int", "int", "float", "float", "bool", "int")
CREATE = ("CREATE TABLE wide (i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision, b boolean, "
          "k integer NOT NULL)")


def _rows(n: int) -> list[dict[str, object]]:
    """Rows with every column NULL in some of them, in several patterns, and extreme values."""
    rng = np.random.default_rng(14)
    rows = []
    for k in range(n):
        row: dict[str, object] = {
            "i2": int(rng.integers(-32768, 32767)), "i4": int(rng.integers(-2**31, 2**31 - 1)),
            "i8": int(rng.integers(-2**63, 2**63 - 1)), "f4": float(np.float32(rng.normal() * 1e30)),
            "f8": float(rng.normal() * 10.0 ** rng.integers(-300, 300)), "b": bool(rng.integers(2)), "k": k}
        for name in ("i2", "i4", "i8", "f4", "f8", "b"):
            if rng.random() < 0.2:
                row[name] = None
        rows.append(row)
    rows[0].update(i8=2**63 - 1, f8=5e-324, i2=-32768)
    rows[1].update(i2=None, i4=None, i8=None, f4=None, f8=None, b=None)
    return rows


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("size", [1, 7, 5000])
def test_column_batches_equal_the_fetched_rows(engine: Engine, size: int) -> None:
    rows = _rows(300)
    with engine.begin() as conn:
        conn.execute(text(CREATE))
        conn.execute(text("INSERT INTO wide VALUES (:i2, :i4, :i8, :f4, :f8, :b, :k)"), rows)
    names = ("i2", "i4", "i8", "f4", "f8", "b", "k")
    with backend_for(engine).snapshot() as snap:
        assert snap.streams_columns
        sql = f"SELECT {', '.join(names)} FROM wide WHERE k >= :low ORDER BY k"
        batches = list(snap.column_batches(sql, KINDS, size=size, low=0))
    assert [len(b[0][0]) for b in batches[:-1]] == [size] * (len(batches) - 1)
    for j, name in enumerate(names):
        values = np.concatenate([b[j][0] for b in batches])
        valid = np.concatenate([np.ones(len(b[j][0]), bool) if b[j][1] is None else b[j][1] for b in batches])
        assert values.dtype == pgbinary.KINDS[KINDS[j]]
        expected = [row[name] for row in rows]
        assert valid.tolist() == [v is not None for v in expected], name
        got = [v.item() if ok else None for v, ok in zip(values, valid, strict=True)]
        assert got == expected, name  # exact: float32 values widen to float64 exactly, others are bit for bit


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_no_rows_and_a_text_column(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text(CREATE))
        conn.execute(text("INSERT INTO wide (k) VALUES (1)"))
    with backend_for(engine).snapshot() as snap:
        assert list(snap.column_batches("SELECT k FROM wide WHERE k > :k", ("int",), k=5)) == []
        with pytest.raises(ValueError, match="fixed-width int"):
            list(snap.column_batches("SELECT CAST('abc' AS text) FROM wide", ("int",)))
        # the connection is usable afterwards: the snapshot reads on
        assert snap.scalar("SELECT count(*) FROM wide") == 1


def _message(fields: list[bytes | None]) -> bytes:
    out = struct.pack(">h", len(fields))
    for field in fields:
        out += struct.pack(">i", -1) if field is None else struct.pack(">i", len(field)) + field
    return out


def test_parse_rows_of_handmade_messages() -> None:
    rows = [_message([struct.pack(">q", 5), struct.pack(">d", 1.5), b"\x01"]),
            _message([None, struct.pack(">d", -0.0), None]),
            _message([struct.pack(">i", -7), None, b"\x00"]),  # a 4-byte integer (an `integer` column)
            _message([struct.pack(">q", 2**62), struct.pack(">d", math.inf), b"\x01"])]
    (ints, ints_ok), (floats, floats_ok), (bools, bools_ok) = pgbinary.parse_rows(rows, ("int", "float", "bool"))
    assert ints.tolist() == [5, 0, -7, 2**62] and ints_ok is not None and ints_ok.tolist() == [1, 0, 1, 1]
    assert floats.tolist()[0] == 1.5 and math.copysign(1, floats[1]) == -1 and floats[3] == math.inf
    assert floats_ok is not None and floats_ok.tolist() == [1, 1, 0, 1]
    assert bools.tolist() == [True, False, False, True] and bools_ok is not None and bools_ok.tolist() == [1, 0, 1, 1]
    assert pgbinary.parse_rows(rows[:1], ("int", "float", "bool"))[0][1] is None  # no NULL: no mask


def test_bad_streams_are_refused() -> None:
    with pytest.raises(ValueError, match="PGCOPY"):
        pgbinary.strip_header(b"COPY\n" + bytes(20))
    header = pgbinary.SIGNATURE + struct.pack(">ii", 0, 3) + b"abc"
    assert bytes(pgbinary.strip_header(header + b"row")) == b"row"
    with pytest.raises(ValueError, match="2 fields, expected 3"):
        pgbinary.parse_rows([_message([b"\x01", b"\x00"])], ("bool", "bool", "bool"))
    with pytest.raises(ValueError, match="longer than its fields"):
        pgbinary.parse_rows([_message([b"\x01"]) + b"x"], ("bool",))


def test_rows_of_one_size_and_different_layouts() -> None:
    """Rows of the same length whose NULLs are in different columns are each read with their own layout (a batch
    of one layout is read in one piece, a mixed one row group by row group)."""
    a = _message([struct.pack(">q", 1), None, struct.pack(">q", 10)])
    b = _message([None, struct.pack(">q", 2), struct.pack(">q", 20)])
    c = _message([struct.pack(">q", 3), struct.pack(">q", 4), struct.pack(">q", 30)])
    assert len(a) == len(b) != len(c)
    (x, x_ok), (y, y_ok), (z, z_ok) = pgbinary.parse_rows([a, b, c, b, a], ("int", "int", "int"))
    assert x.tolist() == [1, 0, 3, 0, 1] and x_ok is not None and x_ok.tolist() == [1, 0, 1, 0, 1]
    assert y.tolist() == [0, 2, 4, 2, 0] and y_ok is not None and y_ok.tolist() == [0, 1, 1, 1, 0]
    assert z.tolist() == [10, 20, 30, 20, 10] and z_ok is None
    (x, x_ok), (y, y_ok), _ = pgbinary.parse_rows([b, b], ("int", "int", "int"))
    assert x_ok is not None and not x_ok.any() and x.tolist() == [0, 0] and y.tolist() == [2, 2] and y_ok is None


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_an_error_during_the_copy_is_raised_and_leaves_the_connection_usable(engine: Engine) -> None:
    import psycopg

    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE many (k integer NOT NULL)"))
        conn.execute(text("INSERT INTO many SELECT generate_series(0, 29999)"))
    seen: list[int] = []

    def read(snap: Snapshot) -> None:
        for batch in snap.column_batches("SELECT k, 1 / (k - 25000) FROM many ORDER BY k", ("int", "int"), size=1000):
            seen.append(len(batch[0][0]))

    with backend_for(engine).snapshot() as snap:
        with pytest.raises(psycopg.errors.DivisionByZero):
            read(snap)
        assert sum(seen) <= 25000
    with engine.connect() as conn:  # the pooled connection went back in a usable state
        assert conn.execute(text("SELECT count(*) FROM many")).scalar_one() == 30000
