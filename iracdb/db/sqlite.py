"""SQLite as iracdb uses it: configured to behave like PostgreSQL, one writer at a time.

- **Engine**: foreign keys on, a write-ahead log (readers never block the writer, nor it them), a busy timeout, and
  every SQLAlchemy transaction begun with ``BEGIN IMMEDIATE``: a transaction holds the database's write lock from
  its start, so a reader that later writes never fails with "database is locked", and writers take turns as
  PostgreSQL's locks make them. That write lock is why the named locks below are no-ops.
- **Bulk insert**: ``executemany`` of one prepared INSERT.
- **Snapshot**: a deferred ``BEGIN`` on a raw connection: a read transaction that never blocks writers (WAL).
- **Read-only execution**: ``PRAGMA query_only``, an authorizer (:meth:`sqlite3.Connection.set_authorizer`) that
  allows only reading tables and views, calling functions and recursive CTEs, plus a few schema-describing pragmas
  (``table_info`` ...); everything else is denied while the statement is compiled: INSERT/UPDATE/DELETE,
  CREATE/DROP/ALTER (temporary objects too), ATTACH, other PRAGMAs, transactions. The :mod:`sqlite3` module refuses
  more than one statement per call. A progress handler cancels the statement at the time limit, as PostgreSQL's
  statement timeout does. The authorizer, the handler and the pragma are removed before the connection goes back
  to the pool (it is discarded if that fails).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, event
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL

from iracdb.config import DB_URL_ENV
from iracdb.db.backend import Backend, Opened, Snapshot, read_only_refused, statement_cancelled
from iracdb.db.engine import create_checked_engine
from iracdb.errors import BadOption, NoSuchDatabase, QueryError, ReadOnlyViolation

#: How long a SQLite writer waits for another writer's lock before giving up [s]. Read when an engine is made.
SQLITE_BUSY_TIMEOUT_S = 60

#: SQLite virtual-machine instructions between two looks at the clock in read-only execution (a look costs far
#: less than them).
_PROGRESS_STEPS = 10_000

#: Authorizer actions a read needs (SQLITE_SELECT, SQLITE_READ, SQLITE_FUNCTION, SQLITE_RECURSIVE).
_ALLOWED = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE})
#: Pragmas that only describe the schema, whatever their argument (a table or index name).
_READ_PRAGMAS = frozenset({"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
                           "foreign_key_list"})
#: Authorizer action codes -> readable names, for messages ("insert runs", "attach").
_ACTIONS = {
    getattr(sqlite3, f"SQLITE_{name}"): name.lower().replace("_", " ")
    for name in (
        "CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE", "CREATE_TEMP_TRIGGER",
        "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW", "DELETE", "DROP_INDEX", "DROP_TABLE",
        "DROP_TEMP_INDEX", "DROP_TEMP_TABLE", "DROP_TEMP_TRIGGER", "DROP_TEMP_VIEW", "DROP_TRIGGER", "DROP_VIEW",
        "INSERT", "PRAGMA", "READ", "SELECT", "TRANSACTION", "UPDATE", "ATTACH", "DETACH", "ALTER_TABLE",
        "REINDEX", "ANALYZE", "CREATE_VTABLE", "DROP_VTABLE", "FUNCTION", "SAVEPOINT", "RECURSIVE",
    )
}


class SqliteSnapshot(Snapshot):
    """A deferred read transaction: a snapshot in WAL mode, with no lock that blocks writers."""

    booleans_as_integers = True

    def __init__(self, raw: Any) -> None:
        super().__init__(raw)
        cursor = raw.cursor()
        try:
            cursor.execute("BEGIN")
        finally:
            cursor.close()


class SqliteBackend(Backend):
    """SQLite: one file, one writer at a time (see the module's documentation)."""

    name = "sqlite"
    alter_in_batches = True
    catalogue_sql = "SELECT type, name FROM sqlite_master ORDER BY type, name"

    @classmethod
    def make_engine(cls, url: URL, *, create: bool) -> Engine:
        if url.username is not None or url.password is not None or url.host or url.port:
            raise BadOption("a SQLite URL has no user, password or host: expected sqlite:///FILE (a relative path) "
                            "or sqlite:////FILE (an absolute one)")
        if not create:
            _require_file(url)
        engine = create_checked_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _configure)
        event.listen(engine, "begin", _begin_immediate)
        return engine

    @classmethod
    def files(cls, url: URL) -> tuple[Path, ...]:
        database = url.database
        if not database or database == ":memory:":
            return ()
        if database.startswith("file:"):  # a URI file name (?uri=true)
            database = database.removeprefix("file:").split("?")[0]
        return tuple(Path(database + suffix) for suffix in ("", "-wal", "-shm", "-journal"))

    @property
    def threads_share_database(self) -> bool:
        return bool(self.files(self.engine.url))  # a file (or a named, shared URI database), not sqlite://

    # Every transaction takes the write lock when it begins (BEGIN IMMEDIATE): writers already take turns.

    @contextlib.contextmanager
    def schema_lock(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            yield connection

    def ingest_lock(self, conn: Connection) -> None:
        pass

    @contextlib.contextmanager
    def run_lock(self, name: str) -> Iterator[bool]:
        yield True

    def _insert(self, table: Table) -> Any:
        return sqlite_dialect.insert(table)

    def bulk_insert(self, conn: Connection, table: Table, columns: Sequence[str],
                    rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        marks = ", ".join("?" * len(columns))
        conn.exec_driver_sql(f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})", list(rows))

    def _begin_snapshot(self, raw: Any) -> Snapshot:
        return SqliteSnapshot(raw)

    @contextlib.contextmanager
    def read_only(self, sql: str, *, batch: int, timeout_s: float) -> Iterator[Opened]:
        denied: list[str] = []
        deadline = time.monotonic() + timeout_s
        raw = self._connect()
        try:
            conn: sqlite3.Connection = raw.driver_connection
            conn.execute("PRAGMA query_only = ON")
            conn.set_authorizer(_authorizer(denied))
            # A non-zero return aborts the statement ("interrupted"), as PostgreSQL's statement_timeout does.
            timed_out: list[bool] = []

            def past_deadline() -> bool:
                if time.monotonic() > deadline:
                    timed_out.append(True)
                return bool(timed_out)

            conn.set_progress_handler(past_deadline, _PROGRESS_STEPS)
            try:
                cursor = conn.cursor()
                try:
                    with self._errors(denied, timeout_s, timed_out):
                        cursor.execute(sql)
                    # No description: e.g. only a comment, nothing to show.
                    columns = tuple(str(d[0]) for d in cursor.description or ())
                    yield columns, self._rows(cursor, batch, denied, timeout_s, timed_out)
                finally:
                    cursor.close()
            finally:
                _reset(raw, conn)
        finally:
            raw.close()

    def _rows(self, cursor: sqlite3.Cursor, batch: int, denied: list[str],
              timeout_s: float, timed_out: list[bool]) -> Iterator[tuple[Any, ...]]:
        if cursor.description is None:
            return
        while True:
            with self._errors(denied, timeout_s, timed_out):
                rows = cursor.fetchmany(batch)
            if not rows:
                return
            yield from rows

    @contextlib.contextmanager
    def _errors(self, denied: list[str], timeout_s: float, timed_out: list[bool]) -> Iterator[None]:
        """Turn a :mod:`sqlite3` error of the user's statement into a one-line UserError.

        ``timed_out`` is not empty once the progress handler stopped the statement at its time limit; a statement
        interrupted before that was stopped by Ctrl-C (the KeyboardInterrupt raised inside the progress handler is
        swallowed by :mod:`sqlite3`, which only reports "interrupted"), so it is raised again here.
        """
        try:
            yield
        except sqlite3.Error as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if denied and "authoriz" in message:  # the authorizer's refusal ("not authorized", "... denied")
                raise ReadOnlyViolation(read_only_refused(f"{message}: {denied[0]}")) from None
            if "readonly" in message:  # query_only ("attempt to write a readonly database")
                raise ReadOnlyViolation(read_only_refused(message)) from None
            if "one statement at a time" in message:
                raise QueryError(f"iracdb sql runs one statement at a time ({message})") from None
            if message == "interrupted":  # only the progress handler interrupts this connection
                if not timed_out:
                    raise KeyboardInterrupt from None
                raise QueryError(statement_cancelled(timeout_s)) from None
            raise QueryError(f"{message}; {self.query_hint()}") from None


def _require_file(url: URL) -> None:
    """Raise NoSuchDatabase if the SQLite file of ``url`` does not exist (an in-memory database always does)."""
    path = url.database
    if not path or path == ":memory:" or url.query.get("uri") in ("true", "1"):
        return  # in memory; or a "file:" URI (uri=true) whose mode=ro/rw/rwc says itself what may be created
    if not Path(path).exists():
        raise NoSuchDatabase(
            f"no database at {path}: the SQLite file does not exist (check --db or ${DB_URL_ENV}; "
            "`iracdb ingest` or `iracdb db upgrade` creates a new one)"
        )


#: Pages the write-ahead log may hold before a commit copies it into the database (SQLite's default: 1000, 4 MB).
#: A batch of ingested files (their header texts) is ~5 MB, so with the default every commit checkpointed, and
#: syncs; 10000 pages (~40 MB of log) checkpoint every ~1500 files instead, 10 % of the ingest time. The log is
#: still copied in and removed when the last connection closes.
WAL_AUTOCHECKPOINT_PAGES = 10000


def _configure(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see _begin_immediate).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    cursor.close()


def _begin_immediate(connection: Connection) -> None:
    # Take SQLite's write lock when a transaction starts, not at its first write: a reader that later writes can
    # then never fail with "database is locked" (waiting for the busy timeout instead), as PostgreSQL would wait.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _authorizer(denied: list[str]) -> Callable[[int, str | None, str | None, str | None, str | None], int]:
    """An authorizer that lets a statement read and nothing else; what it denies is appended to ``denied``."""

    def authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
        if action in _ALLOWED:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _READ_PRAGMAS:
            return sqlite3.SQLITE_OK
        what = " ".join(a for a in (_ACTIONS.get(action, f"action {action}"), arg1) if a)
        denied.append(what)
        return sqlite3.SQLITE_DENY

    return authorize


def _reset(raw: Any, conn: sqlite3.Connection) -> None:
    """Remove the authorizer, the progress handler and ``query_only`` before the connection returns to the pool;
    discard it if that fails."""
    try:
        conn.set_authorizer(None)
        conn.set_progress_handler(None, 0)
        conn.execute("PRAGMA query_only = OFF")
    except sqlite3.Error:
        raw.invalidate()


#: The backend this module implements (see :func:`iracdb.db.backend.backend_class`).
BACKEND = SqliteBackend

__all__ = ["BACKEND", "SQLITE_BUSY_TIMEOUT_S", "SqliteBackend", "SqliteSnapshot"]
