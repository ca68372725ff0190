"""The export's streaming parts: the binary COPY layout check compared word by word (pgbinary._all_match), the COPY
read ahead by another thread (postgresql._read_ahead), and the per-AOR flag counts of the log (export._FlagCounts),
each against a plain reference."""

from __future__ import annotations

import struct
import threading

import numpy as np
import psycopg
import pyarrow as pa
import pytest
from sqlalchemy import Engine, text

from iracdb.db import pgbinary
from iracdb.db.backend import backend_for
from iracdb.export import _FlagCounts
from iracdb.flags import Flag


def _message(fields: list[bytes | None]) -> bytes:
    out = struct.pack(">h", len(fields))
    for field in fields:
        out += struct.pack(">i", -1) if field is None else struct.pack(">i", len(field)) + field
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 101])
@pytest.mark.parametrize("odd", [None, 0, -1, "middle"])
def test_a_row_of_the_same_size_and_another_layout_is_read_with_its_own(n: int, odd: int | str | None) -> None:
    """Rows of 2 + 3 x 4 + 8 + 8 + 2 = 32 or, with a 2-byte field, 30 bytes (not a multiple of 8: the word-wise
    check pads the batch); one row (first, last, middle or none) has its NULL in another column of the same width."""
    kinds = ("int", "int", "int")
    for small in (False, True):
        third = struct.pack(">h", 9) if small else struct.pack(">q", 9)
        usual = [_message([struct.pack(">q", k), None, third]) for k in range(n)]
        other = _message([None, struct.pack(">q", -5), third])
        rows = list(usual)
        where = {None: None, 0: 0, -1: n - 1, "middle": n // 2}[odd]
        if where is not None:
            rows[where] = other
        (x, x_ok), (y, y_ok), (z, z_ok) = pgbinary.parse_rows(rows, kinds)
        def read(values: np.ndarray, valid: np.ndarray | None) -> list[int | None]:
            return [int(v) if ok else None for v, ok in zip(values, [True] * n if valid is None else valid,
                                                            strict=True)]

        assert read(x, x_ok) == [None if k == where else k for k in range(n)]
        assert read(y, y_ok) == [-5 if k == where else None for k in range(n)]
        assert z.tolist() == [9] * n and z_ok is None


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_copy_closed_early_leaves_the_snapshot_usable(engine: Engine) -> None:
    """The thread that reads the COPY ahead stops when its reader stops; psycopg cancels the COPY, and the
    snapshot, rolled back to before it, runs the next COPY and query; a COPY read to its end gives every row, in
    order. The same after a COPY that fails."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE many (k bigint NOT NULL, x double precision)"))
        conn.execute(text("INSERT INTO many SELECT g, g * 0.5 FROM generate_series(0, 99999) AS g"))
    sql = "SELECT k, x FROM many ORDER BY k"
    with backend_for(engine).snapshot() as snap:
        for _ in range(3):
            stream = snap.column_batches(sql, ("int", "float"), size=1000)
            first = next(stream)
            assert first[0][0].tolist() == list(range(1000))
            stream.close()
            assert not [t for t in threading.enumerate() if t.name == "iracdb-copy-reader"]
            assert snap.scalar("SELECT count(*) FROM many") == 100_000
        with pytest.raises(psycopg.errors.DivisionByZero):
            list(snap.column_batches("SELECT k, 1 / (k - 90000) FROM many ORDER BY k", ("int", "int"), size=1000))
        batches = list(snap.column_batches(sql, ("int", "float"), size=7000))
        assert snap.scalar("SELECT count(*) FROM many") == 100_000
    keys = np.concatenate([b[0][0] for b in batches])
    values = np.concatenate([b[1][0] for b in batches])
    assert keys.tolist() == list(range(100_000)) and np.array_equal(values, keys * 0.5)
    assert [len(b[0][0]) for b in batches] == [7000] * 14 + [2000]


def _reference(batches: list[pa.RecordBatch]) -> dict[tuple[int, int, int, int], dict[str, int]]:
    """Flag counts row by row, each key's flags in the order of Flag within a batch, later ones appended."""
    counts: dict[tuple[int, int, int, int], dict[str, int]] = {}
    members = [(m.name.lower(), int(m)) for m in Flag if m and m.name]
    for batch in batches:
        rows = batch.to_pylist()
        per_batch: dict[tuple[int, int, int, int], dict[str, int]] = {}
        for row in rows:
            if not row["flags"]:
                continue
            key = (row["aorkey"], row["channel"], row["target_index"], row["aperture_id"])
            entry = per_batch.setdefault(key, {name: 0 for name, _ in members})
            for name, bit in members:
                entry[name] += bool(row["flags"] & bit)
        for key, entry in per_batch.items():
            total = counts.setdefault(key, {})
            for name, n in entry.items():
                if n:
                    total[name] = total.get(name, 0) + n
    return counts


def test_flag_counts_equal_a_row_by_row_count() -> None:
    rng = np.random.default_rng(5)
    bits = np.array([int(m) for m in Flag if m and m.name])
    batches = []
    for size in (500, 1, 0, 2000):
        flags = np.where(rng.random(size) < 0.4, 0, 0)
        for _ in range(3):
            flags |= np.where(rng.random(size) < 0.3, rng.choice(bits, size), 0)
        batches.append(pa.RecordBatch.from_pydict({
            "aorkey": pa.array(rng.choice([4646681, 71000064, 2**40 + 3], size), pa.int64()),
            "channel": pa.array(rng.integers(1, 5, size), pa.int64()),
            "target_index": pa.array(rng.integers(0, 3, size), pa.int64()),
            "aperture_id": pa.array(rng.integers(0, 2, size), pa.int64()),
            "flags": pa.array(flags, pa.int64()),
        }))
    counted = _FlagCounts()
    for batch in batches:
        counted.add(batch)
    expected = _reference(batches)
    assert counted.counts == expected
    assert all(list(counted.counts[key]) == list(expected[key]) for key in expected)  # the log's order
    assert sum(sum(entry.values()) for entry in expected.values()) > 500
