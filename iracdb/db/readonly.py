"""Read-only SQL on the archive (``iracdb sql "SELECT ..."``), enforced by the database itself on both backends.

No keyword is parsed here: the database refuses anything but a read.

- **SQLite**: the statement runs on a pooled connection with ``PRAGMA query_only = ON`` and an authorizer
  (:meth:`sqlite3.Connection.set_authorizer`) that allows only reading tables and views, calling functions and
  recursive CTEs, plus a few schema-describing pragmas (``table_info`` ...). Everything else is denied while the
  statement is compiled: INSERT/UPDATE/DELETE, CREATE/DROP/ALTER (temporary objects too), ATTACH, other PRAGMAs,
  transactions. The :mod:`sqlite3` module refuses more than one statement per call. The authorizer and the pragma
  are removed before the connection goes back to the pool (it is discarded if that fails).
- **PostgreSQL**: the statement runs in a ``READ ONLY`` transaction that has already taken its snapshot (so it
  cannot be switched to read-write), with a statement timeout, through the extended query protocol (a prepared
  statement: one statement only, so ``COMMIT; DELETE ...`` cannot run). A statement that ends the transaction is
  refused. Connected as a superuser, the statement runs as the role ``pg_read_all_data`` (read every table,
  nothing else: no server files or programs). The transaction is rolled back and the connection is closed, not
  returned to the pool, so no session state (settings, advisory locks, prepared statements) outlives the call.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine

from iracdb.db.engine import is_sqlite
from iracdb.errors import BadOption, UserError

#: Longest a PostgreSQL statement may run before it is cancelled [s].
STATEMENT_TIMEOUT_S = 300

#: SQLite authorizer actions a read needs (SQLITE_SELECT, SQLITE_READ, SQLITE_FUNCTION, SQLITE_RECURSIVE).
_SQLITE_ALLOWED = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                             sqlite3.SQLITE_RECURSIVE})
#: Pragmas that only describe the schema, whatever their argument (a table or index name).
_SQLITE_READ_PRAGMAS = frozenset({"table_info", "table_xinfo", "table_list", "index_list", "index_info",
                                  "index_xinfo", "foreign_key_list"})
#: Authorizer action codes -> readable names, for messages ("insert runs", "attach").
_SQLITE_ACTIONS = {
    getattr(sqlite3, f"SQLITE_{name}"): name.lower().replace("_", " ")
    for name in (
        "CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE", "CREATE_TEMP_TRIGGER",
        "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW", "DELETE", "DROP_INDEX", "DROP_TABLE",
        "DROP_TEMP_INDEX", "DROP_TEMP_TABLE", "DROP_TEMP_TRIGGER", "DROP_TEMP_VIEW", "DROP_TRIGGER", "DROP_VIEW",
        "INSERT", "PRAGMA", "READ", "SELECT", "TRANSACTION", "UPDATE", "ATTACH", "DETACH", "ALTER_TABLE",
        "REINDEX", "ANALYZE", "CREATE_VTABLE", "DROP_VTABLE", "FUNCTION", "SAVEPOINT", "RECURSIVE",
    )
}

_SQLITE_LISTING = "SELECT type, name FROM sqlite_master ORDER BY type, name"
_PG_LISTING = ("SELECT table_type, table_name FROM information_schema.tables "
               "WHERE table_schema = current_schema() ORDER BY table_type, table_name")


class ReadOnlyViolation(UserError):
    """A statement that would change the database (or the session), refused because ``iracdb sql`` is read-only."""


class QueryError(UserError):
    """A statement the database cannot run: a syntax error, an unknown table or column, more than one statement."""


@dataclass(frozen=True)
class QueryResult:
    """The result of a read-only query.

    Attributes
    ----------
    columns : tuple of str
        Column names, in the query's order.
    rows : list of tuple
        The rows (at most ``max_rows``), values as plain Python: int, float, str, bool, bytes or None.
    truncated : bool
        True when the query had more than ``max_rows`` rows.
    """

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    truncated: bool


def run_read_only(engine: Engine, sql: str, *, max_rows: int | None = None) -> QueryResult:
    """Run one SQL statement that only reads, and return its rows.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The archive (SQLite or PostgreSQL).
    sql : str
        One statement, e.g. ``SELECT * FROM aor_photometry WHERE run = 'r1'``. A trailing semicolon is fine.
    max_rows : int, optional
        Return at most this many rows (default: all).

    Returns
    -------
    QueryResult

    Raises
    ------
    ReadOnlyViolation
        The database refused the statement because it would write (or change the session).
    QueryError
        No SQL, bad SQL (syntax, unknown table or column), more than one statement, or a timeout.
    iracdb.errors.BadOption
        ``max_rows`` is negative.
    """
    if max_rows is not None and max_rows < 0:
        raise BadOption(f"the row limit must be 0 or more, not {max_rows}")
    if not sql.strip():
        raise QueryError(f"no SQL given; {_hint(engine)}")
    if is_sqlite(engine):
        columns, rows = _run_sqlite(engine, sql, max_rows)
    else:
        columns, rows = _run_postgresql(engine, sql, max_rows)
    truncated = max_rows is not None and len(rows) > max_rows
    return QueryResult(columns=columns, rows=[tuple(_plain(v) for v in row) for row in rows[:max_rows]],
                       truncated=truncated)


Fetched = tuple[tuple[str, ...], list[tuple[Any, ...]]]


def _fetch(cursor: Any, max_rows: int | None) -> Fetched:
    """Column names and rows of an executed DBAPI cursor: all rows, or ``max_rows + 1`` (to tell truncation)."""
    if cursor.description is None:  # e.g. only a comment: nothing to show
        return (), []
    columns = tuple(str(d[0]) for d in cursor.description)
    rows = cursor.fetchall() if max_rows is None else cursor.fetchmany(max_rows + 1)
    return columns, [tuple(row) for row in rows]


def _run_sqlite(engine: Engine, sql: str, max_rows: int | None) -> Fetched:
    denied: list[str] = []
    raw = engine.raw_connection()
    try:
        conn: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment]
        conn.execute("PRAGMA query_only = ON")
        conn.set_authorizer(_sqlite_authorizer(denied))
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(sql)
                return _fetch(cursor, max_rows)
            finally:
                cursor.close()
        except sqlite3.Error as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if denied and "authoriz" in message:  # the authorizer's refusal ("not authorized", "... denied")
                raise ReadOnlyViolation(_refused(f"{message}: {denied[0]}")) from None
            if "readonly" in message:  # query_only ("attempt to write a readonly database")
                raise ReadOnlyViolation(_refused(message)) from None
            if "one statement at a time" in message:
                raise QueryError(f"iracdb sql runs one statement at a time ({message})") from None
            raise QueryError(f"{message}; {_hint(engine)}") from None
        finally:
            _reset_sqlite(raw, conn)
    finally:
        raw.close()


def _sqlite_authorizer(denied: list[str]) -> Callable[[int, str | None, str | None, str | None, str | None], int]:
    """An authorizer that lets a statement read and nothing else; what it denies is appended to ``denied``."""

    def authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
        if action in _SQLITE_ALLOWED:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _SQLITE_READ_PRAGMAS:
            return sqlite3.SQLITE_OK
        what = " ".join(a for a in (_SQLITE_ACTIONS.get(action, f"action {action}"), arg1) if a)
        denied.append(what)
        return sqlite3.SQLITE_DENY

    return authorize


def _reset_sqlite(raw: Any, conn: sqlite3.Connection) -> None:
    """Remove the authorizer and ``query_only`` before the connection returns to the pool; discard it if that
    fails."""
    try:
        conn.set_authorizer(None)
        conn.execute("PRAGMA query_only = OFF")
    except sqlite3.Error:
        raw.invalidate()


def _run_postgresql(engine: Engine, sql: str, max_rows: int | None) -> Fetched:
    import psycopg  # only needed (and installed) for PostgreSQL

    raw = engine.raw_connection()
    try:
        conn: psycopg.Connection[Any] = raw.driver_connection  # type: ignore[assignment]
        conn.rollback()
        conn.autocommit = False
        conn.read_only = True  # psycopg starts the transaction with BEGIN READ ONLY
        if conn.prepare_threshold is None:
            conn.prepare_threshold = 5  # prepare=True below is ignored when preparing is switched off
        with conn.cursor() as cursor:
            # Take the transaction's snapshot now: after the first query it can no longer become read-write.
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", (f"{STATEMENT_TIMEOUT_S}s",))
            _drop_superuser(cursor)
            try:
                # prepare=True: the extended query protocol, which takes exactly one statement (no "COMMIT; ...").
                cursor.execute(sql, prepare=True)
                fetched = _fetch(cursor, max_rows)
            except psycopg.Error as exc:
                raise _pg_error(engine, exc) from None
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
                raise ReadOnlyViolation(_refused("the statement ended the read-only transaction"))
        return fetched
    finally:
        with contextlib.suppress(psycopg.Error):  # the connection is discarded anyway
            raw.driver_connection.rollback()  # type: ignore[union-attr]
        # Never return this connection to the pool: whatever the statement did to the session goes with it.
        raw.invalidate()
        raw.close()


def _drop_superuser(cursor: Any) -> None:
    """Connected as a superuser, run as the predefined role ``pg_read_all_data`` (PostgreSQL 14+) for the rest of the
    transaction: a read-only transaction still lets a superuser write server files or run programs (``COPY ... TO
    PROGRAM``, ``lo_export``); that role may read every table and view, and do nothing else."""
    cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user "
                   "AND to_regrole('pg_read_all_data') IS NOT NULL")
    row = cursor.fetchone()
    if row is not None and row[0]:
        cursor.execute("SET LOCAL ROLE pg_read_all_data")


def _pg_error(engine: Engine, exc: Any) -> UserError:
    """The :class:`UserError` for a psycopg error raised by the user's statement."""
    import psycopg

    diag = getattr(exc, "diag", None)
    message = (diag.message_primary if diag is not None else None) or (str(exc).splitlines() or [""])[0]
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction | psycopg.errors.ActiveSqlTransaction |
                  psycopg.errors.InsufficientPrivilege | psycopg.errors.InvalidTransactionState):
        return ReadOnlyViolation(_refused(message))
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return QueryError(f"{message} (iracdb sql stops a statement after {STATEMENT_TIMEOUT_S} s)")
    if "multiple commands" in message:
        return QueryError(f"iracdb sql runs one statement at a time ({message})")
    return QueryError(f"{message}; {_hint(engine)}")


def _refused(reason: str) -> str:
    return f"statement refused: iracdb sql is read-only (the database said: {reason})"


def _hint(engine: Engine) -> str:
    listing = _SQLITE_LISTING if is_sqlite(engine) else _PG_LISTING
    return f"the views image_photometry and aor_photometry hold the results; list every table and view with: {listing}"


def _plain(value: Any) -> Any:
    """A database value as plain Python: numbers, str, bool, bytes or None (dates as ISO 8601 text)."""
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


__all__ = ["STATEMENT_TIMEOUT_S", "QueryError", "QueryResult", "ReadOnlyViolation", "run_read_only"]
