"""Every method of the backend interface (:mod:`iracdb.db.backend`), on both backends, against real databases."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    select,
    text,
)
from sqlalchemy.engine import make_url

from iracdb.db import postgresql
from iracdb.db.backend import Backend, backend_class, backend_for, database_files
from iracdb.db.engine import make_engine
from iracdb.db.models import Aor, IngestEvent, RejectedFile
from iracdb.db.postgresql import INGEST_LOCK_KEY, SCHEMA_LOCK_KEY, run_lock_key
from iracdb.db.sqlite import SqliteBackend
from iracdb.errors import PrivilegedRole, QueryError, ReadOnlyViolation

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
#: How long a thread that should be waiting for a lock is given to (wrongly) get through [s].
WAIT_S = 0.5


@pytest.fixture
def db(engine: Engine) -> Backend:
    """The backend of the test's database."""
    return backend_for(engine)


@pytest.fixture
def scratch(engine: Engine) -> Iterator[Table]:
    """A table of every column type iracdb bulk-inserts (not part of the archive's schema: dropped afterwards)."""
    table = Table(
        "scratch_bulk", MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("big", BigInteger), Column("small", SmallInteger), Column("value", Float), Column("label", Text),
        Column("code", String(8)), Column("ok", Boolean),
    )
    table.create(engine)
    yield table
    table.drop(engine)


ROWS = [
    (1, 2**62, 7, 0.1, "a", "warm", True),
    (2, -(2**40), -3, -1e-300, "é/ü", "cryo", False),
    (3, None, None, None, None, None, None),
    (4, 0, 0, 1.7976931348623157e308, "", "", True),
]


def _in_thread(target: Any) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    """Run ``target`` in a thread; an event set when it returns, and any exception it raised."""
    done, errors = threading.Event(), []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # re-raised by the test
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done, errors


# --- opening -----------------------------------------------------------------------------------------------------


def test_the_backend_of_an_engine_and_of_a_connection(backend: str, engine: Engine, db: Backend) -> None:
    assert db.name == backend and db.engine is engine
    with engine.connect() as conn:
        assert type(backend_for(conn)) is type(db)
    assert backend_class(backend) is type(db)
    assert backend_class("mysql") is None
    assert db.has_roles is (backend == "postgresql")
    assert db.alter_in_batches is (backend == "sqlite")


def test_the_catalogue_statement_lists_the_archive(db: Backend, engine: Engine) -> None:
    with engine.connect() as conn:
        listed = {row[1] for row in conn.execute(text(db.catalogue_sql))}
    assert {"measurements", "image_photometry", "aor_photometry"} <= listed
    assert db.query_hint().endswith(db.catalogue_sql)


def test_sqlite_engines_behave_like_postgresql(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    engine = SqliteBackend.make_engine(make_url(f"sqlite:///{path}"), create=True)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        with engine.begin():  # a transaction holds the write lock from its start (BEGIN IMMEDIATE)
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
            finally:
                other.close()
    finally:
        engine.dispose()


def test_database_files() -> None:
    assert database_files(make_url("sqlite:////data/a.sqlite")) == tuple(
        Path("/data/a.sqlite" + suffix) for suffix in ("", "-wal", "-shm", "-journal"))
    assert database_files(make_url("sqlite:///file:/data/a.sqlite?mode=ro&uri=true"))[0] == Path("/data/a.sqlite")
    assert database_files(make_url("sqlite://")) == ()
    assert database_files(make_url("postgresql+psycopg://u@h/db")) == ()


# --- locks -------------------------------------------------------------------------------------------------------


def test_the_lock_keys_are_those_of_earlier_versions() -> None:
    """An older iracdb and this one, on one database, take the same advisory locks."""
    assert (SCHEMA_LOCK_KEY, INGEST_LOCK_KEY) == (0x1AC_DB_00, 0x1AC_DB_01)
    assert run_lock_key("held") == -6793805583877115901
    assert run_lock_key("a/b é") == 7349549644777439957


def test_schema_lock_makes_a_second_migration_wait(db: Backend, engine: Engine) -> None:
    with db.schema_lock() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
        if db.name == "postgresql":
            _, done, errors = _in_thread(lambda: db.schema_lock().__enter__().close())
            assert not done.wait(WAIT_S), "a second schema lock was granted while the first was held"
    if db.name == "postgresql":
        assert done.wait(10) and not errors
        with engine.connect() as other:  # and nothing is left locked
            assert other.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": SCHEMA_LOCK_KEY}).scalar_one()
            other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": SCHEMA_LOCK_KEY})


def test_ingest_transactions_take_turns(db: Backend, engine: Engine) -> None:
    """A second write transaction that takes the ingest lock waits until the first one ends (PostgreSQL: the
    advisory lock; SQLite: every transaction holds the write lock)."""
    order: list[str] = []

    def second() -> None:
        with engine.begin() as conn:
            db.ingest_lock(conn)
            order.append("second")

    with engine.begin() as conn:
        db.ingest_lock(conn)
        thread, done, errors = _in_thread(second)
        assert not done.wait(WAIT_S), "a second ingest transaction ran while the first held the lock"
        order.append("first")
    assert done.wait(10) and not errors
    thread.join()
    assert order == ["first", "second"]


def test_run_lock(db: Backend) -> None:
    with db.run_lock("r1") as first:
        assert first is True
        with db.run_lock("r2") as other_name:
            assert other_name is True
        results: list[bool] = []

        def again() -> None:
            with db.run_lock("r1") as held:
                results.append(held)

        thread, done, errors = _in_thread(again)
        assert done.wait(10) and not errors, "trying the lock must not wait"
        thread.join()
        # PostgreSQL: held by the first session. SQLite needs no such lock (its writers take turns).
        assert results == [db.name == "sqlite"]
    with db.run_lock("r1") as after:
        assert after is True


# --- writing -----------------------------------------------------------------------------------------------------


def test_insert_new_leaves_existing_rows_alone(db: Backend, engine: Engine) -> None:
    table = Aor.__table__
    with engine.begin() as conn:
        db.insert_new(conn, table, [{"aorkey": 1, "object": "A", "updated_at": NOW}])
        db.insert_new(conn, table, [{"aorkey": 1, "object": "changed", "updated_at": NOW},
                                         {"aorkey": 2, "object": "B", "updated_at": NOW}])
        rows = conn.execute(select(table.c.aorkey, table.c.object).order_by(table.c.aorkey)).all()
    assert [tuple(r) for r in rows] == [(1, "A"), (2, "B")]


def test_upsert_updates_only_the_columns_asked(db: Backend, engine: Engine) -> None:
    table = RejectedFile.__table__
    first = {"path": "/a", "reason": "old", "size_bytes": 1, "mtime_ns": 2, "rejected_at": NOW, "ingest_id": None}
    with engine.begin() as conn:
        db.upsert(conn, table, [first], key=["path"], update=["reason", "mtime_ns"])
        db.upsert(conn, table, [{**first, "reason": "new", "size_bytes": 10, "mtime_ns": 20},
                                     {**first, "path": "/b"}], key=["path"], update=["reason", "mtime_ns"])
        rows = conn.execute(select(table.c.path, table.c.reason, table.c.size_bytes, table.c.mtime_ns)
                            .order_by(table.c.path)).all()
    assert [tuple(r) for r in rows] == [("/a", "new", 1, 20), ("/b", "old", 1, 2)]


def test_insert_returning_gives_the_new_rows_in_order(db: Backend, engine: Engine) -> None:
    table = IngestEvent.__table__
    rows = [{"started_at": NOW, "roots": f'["/{i}"]', "software_version": "t"} for i in (3, 1, 2)]
    with engine.begin() as conn:
        returned = db.insert_returning(conn, table, rows, ["id", "roots"])
        assert db.insert_returning(conn, table, [], ["id"]) == []
        stored = dict(conn.execute(select(table.c.id, table.c.roots)).all())
    assert [r.roots for r in returned] == ['["/3"]', '["/1"]', '["/2"]']
    assert {r.id: r.roots for r in returned} == stored


def test_bulk_insert_round_trips_every_type(db: Backend, engine: Engine, scratch: Table) -> None:
    names = [c.name for c in scratch.columns]
    with engine.begin() as conn:
        db.bulk_insert(conn, scratch, names, ROWS)
        db.bulk_insert(conn, scratch, names, [])
        stored = [tuple(r) for r in conn.execute(select(scratch).order_by(scratch.c.id))]
    if db.name == "sqlite":  # SQLite has no boolean type
        stored = [(*r[:-1], None if r[-1] is None else bool(r[-1])) for r in stored]
    assert stored == ROWS


def test_bulk_insert_arrays_round_trips_numbers_and_nulls(db: Backend, engine: Engine, scratch: Table) -> None:
    """Columns as numpy arrays (NaN is NULL, also in an integer column given as floats), several NULL patterns,
    extreme values: stored exactly (on PostgreSQL a binary COPY built by numpy, grouped by NULL pattern)."""
    rng = np.random.default_rng(7)
    n = 500
    value = rng.normal(size=n) * 10.0 ** rng.integers(-300, 300, size=n)
    value[::7] = np.nan
    value[1] = 5e-324
    small = rng.integers(-32768, 32767, size=n).astype(np.float64)
    small[::5] = np.nan
    big = rng.integers(-2**62, 2**62, size=n)
    big[2] = 2**63 - 1
    ids = np.arange(n)
    with engine.begin() as conn:
        db.bulk_insert_arrays(conn, scratch, {"id": ids, "big": big, "small": small, "value": value})
        db.bulk_insert_arrays(conn, scratch, {"id": ids[:0], "value": value[:0]})
        stored = conn.execute(select(scratch.c.id, scratch.c.big, scratch.c.small, scratch.c.value)
                              .order_by(scratch.c.id)).all()
    assert [r[0] for r in stored] == ids.tolist()
    assert [r[1] for r in stored] == big.tolist()
    assert [r[2] for r in stored] == [None if np.isnan(v) else int(v) for v in small.tolist()]
    assert [r[3] for r in stored] == [None if np.isnan(v) else v for v in value.tolist()]  # bit for bit


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_bulk_insert_arrays_refuses_what_its_column_cannot_hold(db: Backend, engine: Engine, scratch: Table) -> None:
    with engine.begin() as conn, pytest.raises(ValueError, match="outside the range"):
        db.bulk_insert_arrays(conn, scratch, {"id": np.arange(2), "small": np.array([1, 40000])})
    with engine.begin() as conn, pytest.raises(ValueError, match="non-integer"):
        db.bulk_insert_arrays(conn, scratch, {"id": np.arange(2), "small": np.array([1.0, 2.5])})


def test_bulk_insert_rolls_back_with_its_transaction(db: Backend, engine: Engine, scratch: Table) -> None:
    names = [c.name for c in scratch.columns]
    def insert_then_fail() -> None:
        with engine.begin() as conn:
            db.bulk_insert(conn, scratch, names, ROWS)
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        insert_then_fail()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM scratch_bulk")).scalar_one() == 0


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_binary_copy_refuses_a_column_type_it_cannot_send(engine: Engine) -> None:
    table = Table("scratch_blobs", MetaData(), Column("blob", LargeBinary))
    with engine.begin() as conn, pytest.raises(TypeError, match=r"scratch_blobs\.blob: no binary COPY type"):
        backend_for(engine).bulk_insert(conn, table, ["blob"], [(b"x",)])


def test_insert_rows_round_trips_dicts_with_times(db: Backend, engine: Engine) -> None:
    """insert_rows (ingest's files; binary COPY on PostgreSQL) stores what SQLAlchemy's own insert would."""
    table = RejectedFile.__table__
    rows = [{"path": f"/x/{i}.fits", "reason": "r\u00e9ason", "size_bytes": 2**40 + i, "mtime_ns": -i,
             "rejected_at": NOW, "ingest_id": None} for i in range(3)]
    with engine.begin() as conn:
        db.insert_rows(conn, table, rows)
        db.insert_rows(conn, table, [])
        conn.execute(table.insert(), [{**rows[0], "path": "/by/sqlalchemy.fits"}])
        stored = [r._asdict() for r in conn.execute(select(table).order_by(table.c.id))]
    for row in stored:  # SQLite keeps no time zone: its times read back naive (as UTC here)
        if row["rejected_at"].tzinfo is None:
            row["rejected_at"] = row["rejected_at"].replace(tzinfo=UTC)
    assert [{k: v for k, v in r.items() if k != "id"} for r in stored[:3]] == rows
    # The same time, read back the same way, whichever insert stored it.
    assert stored[0]["rejected_at"] == stored[3]["rejected_at"]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_insert_rows_refused_by_the_database_raises_sqlalchemys_error(engine: Engine) -> None:
    from sqlalchemy.exc import IntegrityError

    row = {"path": "/x.fits", "reason": "r", "size_bytes": 1, "mtime_ns": 1, "rejected_at": NOW, "ingest_id": None}
    with engine.begin() as conn, pytest.raises(IntegrityError, match="duplicate key"):
        backend_for(engine).insert_rows(conn, RejectedFile.__table__, [row, row])


# --- reading -----------------------------------------------------------------------------------------------------


def test_a_snapshot_reads_one_state_without_blocking_writers(db: Backend, engine: Engine,
                                                             scratch: Table) -> None:
    names = [c.name for c in scratch.columns]
    with engine.begin() as conn:
        db.bulk_insert(conn, scratch, names, ROWS)
    with db.snapshot() as snap:
        assert snap.scalar("SELECT count(*) FROM scratch_bulk") == 4
        # a writer commits meanwhile, in another thread, without waiting for the snapshot to end
        def write() -> None:
            with engine.begin() as conn:
                db.bulk_insert(conn, scratch, names, [(5, 1, 1, 1.0, "x", "x", True)])

        thread, done, errors = _in_thread(write)
        assert done.wait(10) and not errors
        thread.join()
        assert snap.scalar("SELECT count(*) FROM scratch_bulk") == 4
        assert snap.scalar("SELECT count(*) FROM scratch_bulk WHERE id > :id", id=100) == 0
        assert snap.scalar("SELECT label FROM scratch_bulk WHERE id = :nothing", nothing=-1) is None
        assert snap.rows("SELECT id, label, ok FROM scratch_bulk WHERE id <= :id ORDER BY id", id=2) == [
            {"id": 1, "label": "a", "ok": True}, {"id": 2, "label": "é/ü", "ok": False}]
        batches = list(snap.batches("SELECT id, ok FROM scratch_bulk ORDER BY id", size=3))
        assert [[row[0] for row in batch] for batch in batches] == [[1, 2, 3], [4]]
        assert type(batches[0][0][1]) is (int if snap.booleans_as_integers else bool)
        # two streams open at once (the export reads input paths while it writes rows)
        outer = snap.batches("SELECT id FROM scratch_bulk WHERE id > :id ORDER BY id", size=2, id=1)
        assert [r[0] for r in next(outer)] == [2, 3]
        assert [list(b) for b in snap.batches("SELECT id FROM scratch_bulk WHERE id = 1", size=5)] == [[(1,)]]
        assert [[r[0] for r in b] for b in outer] == [[4]]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM scratch_bulk")).scalar_one() == 5


@pytest.fixture
def reader(reader_url: str, scratch: Table) -> Iterator[Backend]:
    """The backend of the test's database connected as ``iracdb sql`` connects (PostgreSQL: a read-only role)."""
    engine = make_engine(reader_url)
    yield backend_for(engine)
    engine.dispose()


def test_read_only_streams_rows(reader: Backend, engine: Engine, scratch: Table) -> None:
    with engine.begin() as conn:
        backend_for(engine).bulk_insert(conn, scratch, [c.name for c in scratch.columns], ROWS)
    with reader.read_only("SELECT id, label FROM scratch_bulk ORDER BY id", batch=2, timeout_s=30) as (columns, rows):
        assert columns == ("id", "label")
        assert [tuple(row) for row in rows] == [(r[0], r[4]) for r in ROWS]
    with reader.read_only("SELECT id FROM scratch_bulk WHERE id < 0", batch=1, timeout_s=30) as (columns, rows):
        assert columns == ("id",) and list(rows) == []


@pytest.mark.parametrize("statement", ["DELETE FROM scratch_bulk", "CREATE TABLE t (x integer)",
                                       "INSERT INTO scratch_bulk (id) VALUES (9)"])
def test_read_only_refuses_writes(reader: Backend, statement: str) -> None:
    with pytest.raises(ReadOnlyViolation, match="refused"), reader.read_only(statement, batch=10, timeout_s=30) as (
            _, rows):
        list(rows)


def test_read_only_errors_name_the_catalogue(reader: Backend) -> None:
    with pytest.raises(QueryError, match=f"no_such_table.*{re.escape(reader.catalogue_sql)}$"), reader.read_only(
            "SELECT * FROM no_such_table", batch=10, timeout_s=30) as (_, rows):
        list(rows)


def test_read_only_cancels_at_the_time_limit(reader: Backend) -> None:
    slow = {"sqlite": "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT max(n) FROM c",
            "postgresql": "SELECT pg_sleep(30)"}[reader.name]
    start = time.monotonic()
    with pytest.raises(QueryError, match=r"^statement cancelled after 0.3 s"), reader.read_only(
            slow, batch=10, timeout_s=0.3) as (_, rows):
        list(rows)
    assert time.monotonic() - start < 20


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_read_only_refuses_a_superuser(engine: Engine) -> None:
    refused = pytest.raises(PrivilegedRole, match=f"is a superuser; {re.escape(postgresql.READER_HINT)}")
    with refused, backend_for(engine).read_only("SELECT 1", batch=1, timeout_s=30):
        pass
