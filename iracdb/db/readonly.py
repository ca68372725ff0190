"""Read-only SQL on the archive (``iracdb sql "SELECT ..."``), enforced by the database itself on both backends.

No keyword is parsed here: the database refuses anything but a read. Rows are streamed: they are fetched in batches
as the caller iterates, never all at once, and fetching stops at the row limit.

- **SQLite**: the statement runs on a pooled connection with ``PRAGMA query_only = ON`` and an authorizer
  (:meth:`sqlite3.Connection.set_authorizer`) that allows only reading tables and views, calling functions and
  recursive CTEs, plus a few schema-describing pragmas (``table_info`` ...). Everything else is denied while the
  statement is compiled: INSERT/UPDATE/DELETE, CREATE/DROP/ALTER (temporary objects too), ATTACH, other PRAGMAs,
  transactions. The :mod:`sqlite3` module refuses more than one statement per call. A progress handler cancels the
  statement after :data:`STATEMENT_TIMEOUT_S`, as PostgreSQL's statement timeout does. The authorizer, the handler
  and the pragma are removed before the connection goes back to the pool (it is discarded if that fails).
- **PostgreSQL**: the statement never runs as a role that could get round a read-only transaction: a superuser
  (who may ``SET ROLE`` back to itself, read server files, run programs), a role with CREATEROLE, BYPASSRLS or
  REPLICATION, or a member of ``pg_read_server_files``, ``pg_write_server_files``, ``pg_execute_server_program``
  or ``pg_read_all_data`` (which reads the password hashes in ``pg_authid``). Such a connection is refused with
  :class:`PrivilegedRole` before the statement is sent; ``iracdb db create-reader`` makes a role that passes
  (:mod:`iracdb.db.reader`). The statement runs in a ``READ ONLY`` transaction that has already taken its snapshot
  (so it cannot be switched to read-write), with a statement timeout, through the extended query protocol (one
  statement only, so ``COMMIT; DELETE ...`` cannot run), its rows streamed in chunks. A statement that ends the
  transaction is refused. The transaction is rolled back and the connection is closed, not returned to the pool, so
  no session state (settings, advisory locks, prepared statements) outlives the call.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine

from iracdb.db.engine import is_sqlite, safe_url
from iracdb.errors import BadOption, DatabaseError, UserError

#: Longest a statement may run (on either backend) before it is cancelled [s]; the time spent streaming its rows
#: counts. A module constant, read at each call, so a test can lower it.
STATEMENT_TIMEOUT_S: float = 300

#: Rows fetched per round (SQLite ``fetchmany``, PostgreSQL chunked streaming): a batch is all that is held.
FETCH_BATCH_ROWS = 1000
#: SQLite virtual-machine instructions between two looks at the clock (a look costs far less than them).
_SQLITE_PROGRESS_STEPS = 10_000

#: Predefined PostgreSQL roles whose members may read or write server files, run programs on the server, or read
#: every table including the password hashes in ``pg_authid``: ``iracdb sql`` refuses to run as one.
PRIVILEGED_PG_ROLES = ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program",
                       "pg_read_all_data")

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

#: The first role (the role ``who`` itself first) that ``who`` is, or may become with SET ROLE, and that can get round
#: a read-only transaction. pg_has_role(..., 'MEMBER') counts indirect memberships, and a superuser is a member of
#: every role.
_PG_PRIVILEGED_ROLE = """
SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolbypassrls, r.rolreplication
FROM pg_roles r
WHERE pg_has_role({who}, r.oid, 'MEMBER')
  AND (r.rolsuper OR r.rolcreaterole OR r.rolbypassrls OR r.rolreplication OR r.rolname = ANY(%s))
ORDER BY r.rolname <> {who}, r.rolsuper DESC, r.rolname
LIMIT 1
"""

#: How to get a role that ``iracdb sql`` accepts (the end of every :class:`PrivilegedRole` message).
READER_HINT = ("connect as a read-only login role instead: create one with `iracdb db create-reader NAME --db "
               "ADMIN_URL`, then give its URL with --db or $IRACDB_READER_URL")


class ReadOnlyViolation(UserError):
    """A statement that would change the database (or the session), refused because ``iracdb sql`` is read-only."""


class QueryError(UserError):
    """A statement the database cannot run: a syntax error, an unknown table or column, more than one statement,
    or one cancelled at the time limit."""


class PrivilegedRole(UserError):
    """``iracdb sql`` connected to PostgreSQL as a role that a read-only transaction cannot contain (a superuser,
    CREATEROLE, BYPASSRLS, REPLICATION, or a member of a role that reads or writes server files)."""


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


class RowStream:
    """The rows of a running read-only query, fetched from the database as they are iterated (once).

    Attributes
    ----------
    columns : tuple of str
        Column names, in the query's order (known before the first row is read).
    truncated : bool
        True when the query had more than ``max_rows`` rows; known once the iteration has ended.
    """

    def __init__(self, columns: tuple[str, ...], rows: Iterator[tuple[Any, ...]], max_rows: int | None) -> None:
        self.columns = columns
        self.truncated = False
        self._rows: Iterator[tuple[Any, ...]] | None = rows
        self._max_rows = max_rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        rows, self._rows = self._rows, None
        if rows is None:
            raise RuntimeError("a RowStream can be iterated only once")
        for n, row in enumerate(rows):
            if self._max_rows is not None and n >= self._max_rows:
                self.truncated = True  # one row more than wanted was fetched: no more are
                return
            yield tuple(_plain(v) for v in row)


@contextlib.contextmanager
def stream_read_only(engine: Engine, sql: str, *, max_rows: int | None = None) -> Iterator[RowStream]:
    """Run one SQL statement that only reads, and stream its rows.

    The statement runs when the context is entered; its rows are fetched in batches of :data:`FETCH_BATCH_ROWS` as
    the :class:`RowStream` is iterated, and at most ``max_rows + 1`` are fetched (the one more tells truncation).
    Leaving the context stops the statement and releases the connection.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The archive (SQLite, or PostgreSQL connected as a role that can only read; see :class:`PrivilegedRole`).
    sql : str
        One statement, e.g. ``SELECT * FROM aor_photometry WHERE run = 'r1'``. A trailing semicolon is fine.
    max_rows : int, optional
        Yield at most this many rows (default: all).

    Yields
    ------
    RowStream
        The column names, then the rows as the caller iterates.

    Raises
    ------
    ReadOnlyViolation
        The database refused the statement because it would write (or change the session).
    QueryError
        No SQL, bad SQL (syntax, unknown table or column), more than one statement, or cancelled after
        :data:`STATEMENT_TIMEOUT_S` (also while rows are iterated).
    PrivilegedRole
        PostgreSQL connected as a superuser or another role that a read-only transaction does not contain.
    iracdb.errors.BadOption
        ``max_rows`` is negative.
    """
    if max_rows is not None and max_rows < 0:
        raise BadOption(f"the row limit must be 0 or more, not {max_rows}")
    if not sql.strip():
        raise QueryError(f"no SQL given; {_hint(engine)}")
    # At most max_rows + 1 rows are ever wanted: fetch no more than that per round.
    batch = FETCH_BATCH_ROWS if max_rows is None else min(FETCH_BATCH_ROWS, max_rows + 1)
    opened = _stream_sqlite(engine, sql, batch) if is_sqlite(engine) else _stream_postgresql(engine, sql, batch)
    with opened as (columns, rows):
        yield RowStream(columns, rows, max_rows)


def run_read_only(engine: Engine, sql: str, *, max_rows: int | None = None) -> QueryResult:
    """Run one SQL statement that only reads, and return its rows (held in memory: see :func:`stream_read_only`).

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The archive (SQLite, or PostgreSQL connected as a role that can only read; see :class:`PrivilegedRole`).
    sql : str
        One statement, e.g. ``SELECT * FROM aor_photometry WHERE run = 'r1'``. A trailing semicolon is fine.
    max_rows : int, optional
        Return at most this many rows (default: all).

    Returns
    -------
    QueryResult

    Raises
    ------
    ReadOnlyViolation, QueryError, PrivilegedRole, iracdb.errors.BadOption
        As :func:`stream_read_only`.
    """
    with stream_read_only(engine, sql, max_rows=max_rows) as stream:
        rows = list(stream)
    return QueryResult(columns=stream.columns, rows=rows, truncated=stream.truncated)


Opened = tuple[tuple[str, ...], Iterator[tuple[Any, ...]]]


def _connect(engine: Engine) -> Any:
    """A pooled DBAPI connection; :class:`DatabaseError` when the database cannot be reached (the driver's error
    comes through the pool unwrapped)."""
    try:
        return engine.raw_connection()
    except engine.dialect.loaded_dbapi.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DatabaseError(f"cannot open database {safe_url(str(engine.url))}: {reason}") from None


# --- SQLite -------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _stream_sqlite(engine: Engine, sql: str, batch: int) -> Iterator[Opened]:
    denied: list[str] = []
    timeout_s = STATEMENT_TIMEOUT_S
    deadline = time.monotonic() + timeout_s
    raw = _connect(engine)
    try:
        conn: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment]
        conn.execute("PRAGMA query_only = ON")
        conn.set_authorizer(_sqlite_authorizer(denied))
        # A non-zero return aborts the statement ("interrupted"), as PostgreSQL's statement_timeout does.
        timed_out: list[bool] = []

        def past_deadline() -> bool:
            if time.monotonic() > deadline:
                timed_out.append(True)
            return bool(timed_out)

        conn.set_progress_handler(past_deadline, _SQLITE_PROGRESS_STEPS)
        try:
            cursor = conn.cursor()
            try:
                with _sqlite_errors(engine, denied, timeout_s, timed_out):
                    cursor.execute(sql)
                # No description: e.g. only a comment, nothing to show.
                columns = tuple(str(d[0]) for d in cursor.description or ())
                yield columns, _sqlite_rows(engine, cursor, batch, denied, timeout_s, timed_out)
            finally:
                cursor.close()
        finally:
            _reset_sqlite(raw, conn)
    finally:
        raw.close()


def _sqlite_rows(engine: Engine, cursor: sqlite3.Cursor, batch: int, denied: list[str],
                 timeout_s: float, timed_out: list[bool]) -> Iterator[tuple[Any, ...]]:
    if cursor.description is None:
        return
    while True:
        with _sqlite_errors(engine, denied, timeout_s, timed_out):
            rows = cursor.fetchmany(batch)
        if not rows:
            return
        yield from rows


@contextlib.contextmanager
def _sqlite_errors(engine: Engine, denied: list[str], timeout_s: float, timed_out: list[bool]) -> Iterator[None]:
    """Turn a :mod:`sqlite3` error of the user's statement into a one-line :class:`UserError`.

    ``timed_out`` is not empty once the progress handler stopped the statement at its time limit; a statement
    interrupted before that was stopped by Ctrl-C (the KeyboardInterrupt raised inside the progress handler is
    swallowed by :mod:`sqlite3`, which only reports "interrupted"), so it is raised again here.
    """
    try:
        yield
    except sqlite3.Error as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if denied and "authoriz" in message:  # the authorizer's refusal ("not authorized", "... denied")
            raise ReadOnlyViolation(_refused(f"{message}: {denied[0]}")) from None
        if "readonly" in message:  # query_only ("attempt to write a readonly database")
            raise ReadOnlyViolation(_refused(message)) from None
        if "one statement at a time" in message:
            raise QueryError(f"iracdb sql runs one statement at a time ({message})") from None
        if message == "interrupted":  # only the progress handler interrupts this connection
            if not timed_out:
                raise KeyboardInterrupt from None
            raise QueryError(_cancelled(timeout_s)) from None
        raise QueryError(f"{message}; {_hint(engine)}") from None


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
    """Remove the authorizer, the progress handler and ``query_only`` before the connection returns to the pool;
    discard it if that fails."""
    try:
        conn.set_authorizer(None)
        conn.set_progress_handler(None, 0)
        conn.execute("PRAGMA query_only = OFF")
    except sqlite3.Error:
        raw.invalidate()


# --- PostgreSQL ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _stream_postgresql(engine: Engine, sql: str, batch: int) -> Iterator[Opened]:
    import psycopg  # only needed (and installed) for PostgreSQL

    timeout_s = STATEMENT_TIMEOUT_S
    raw = _connect(engine)
    try:
        conn: psycopg.Connection[Any] = raw.driver_connection  # type: ignore[assignment]
        conn.rollback()
        conn.autocommit = False
        conn.read_only = True  # psycopg starts the transaction with BEGIN READ ONLY
        with conn.cursor() as cursor:
            # Take the transaction's snapshot now: after the first query it can no longer become read-write.
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", (f"{round(timeout_s * 1000)}ms",))
            refuse_privileged_role(cursor)
            # stream() sends the statement through the extended query protocol, which takes exactly one statement
            # (no "COMMIT; ..."), and receives its rows in chunks (libpq >= 17) or one by one, never all at once.
            size = batch if batch > 1 and psycopg.capabilities.has_stream_chunked() else 1
            rows = _pg_rows(engine, conn, cursor.stream(sql, size=size), timeout_s)
            try:
                first = next(rows, None)  # the statement runs; its columns come with its first rows
                columns = _pg_columns(conn, cursor, sql)
                yield columns, _chain(first, rows)
            finally:
                rows.close()  # stops the statement if it still runs (psycopg cancels it)
    finally:
        with contextlib.suppress(psycopg.Error):  # the connection is discarded anyway
            raw.driver_connection.rollback()  # type: ignore[union-attr]
        # Never return this connection to the pool: whatever the statement did to the session goes with it.
        raw.invalidate()
        raw.close()


def _pg_rows(engine: Engine, conn: Any, stream: Iterator[tuple[Any, ...]],
             timeout_s: float) -> Iterator[tuple[Any, ...]]:
    """The rows of ``cursor.stream(...)``, its errors turned into :class:`UserError`; at the end, refuse a statement
    that ended the read-only transaction."""
    import psycopg

    try:
        yield from stream
    except psycopg.Error as exc:
        # psycopg's own ProgrammingError (no SQLSTATE) "the operation in stream() didn't produce a result": the
        # statement ran but returns no rows (SET, COMMIT ...): no rows, and the check below.
        if not (isinstance(exc, psycopg.ProgrammingError) and exc.sqlstate is None):
            raise _pg_error(engine, conn, exc, timeout_s) from None
    finally:
        stream.close()  # type: ignore[attr-defined]  # a generator: cancels a statement that still runs
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
        raise ReadOnlyViolation(_refused("the statement ended the read-only transaction"))


def _pg_columns(conn: Any, cursor: Any, sql: str) -> tuple[str, ...]:
    """The statement's column names: from its rows, or (no rows came) by describing the statement again."""
    import psycopg

    if cursor.description is not None:
        return tuple(column.name for column in cursor.description)
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
        return ()
    # psycopg keeps no description of an empty streamed result: parse the statement (which just ran) again as the
    # unnamed prepared statement, and describe it; nothing is executed.
    encoding = conn.info.encoding
    prepared = conn.pgconn.prepare(b"", sql.encode(encoding))
    if prepared.status != psycopg.pq.ExecStatus.COMMAND_OK:
        return ()
    described = conn.pgconn.describe_prepared(b"")
    return tuple((described.fname(i) or b"").decode(encoding) for i in range(described.nfields))


def _chain(first: tuple[Any, ...] | None, rows: Iterator[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    if first is not None:
        yield first
        yield from rows


def refuse_privileged_role(cursor: Any) -> None:
    """Raise :class:`PrivilegedRole` when the PostgreSQL session (its session or current user) is, or may become, a
    role that a read-only transaction does not contain.

    Parameters
    ----------
    cursor : psycopg.Cursor
        A cursor on the connection the statement will run on.

    Raises
    ------
    PrivilegedRole
        The role is a superuser, has CREATEROLE, BYPASSRLS or REPLICATION, or is a member (directly or not) of such a
        role or of one of :data:`PRIVILEGED_PG_ROLES`.
    """
    for who in ("session_user", "current_user"):
        cursor.execute("SELECT " + who)
        (name,) = cursor.fetchone()
        cursor.execute(_PG_PRIVILEGED_ROLE.format(who=who), (list(PRIVILEGED_PG_ROLES),))
        row = cursor.fetchone()
        if row is not None:
            raise PrivilegedRole(f"iracdb sql will not run as PostgreSQL role {name!r}: {_why(name, *row)}; "
                                 f"{READER_HINT}")


def _why(name: str, role: str, superuser: bool, createrole: bool, bypassrls: bool, replication: bool) -> str:
    powers = [text for flag, text in ((superuser, "is a superuser"), (createrole, "has CREATEROLE"),
                                      (bypassrls, "has BYPASSRLS"), (replication, "has REPLICATION")) if flag]
    what = " and ".join(powers[:1] if superuser else powers) or _PREDEFINED_POWERS.get(
        role, "may get round a read-only transaction")
    return f"it {what}" if role == name else f"it is a member of {role!r}, which {what}"


#: What the members of :data:`PRIVILEGED_PG_ROLES` may do, for messages.
_PREDEFINED_POWERS = {
    "pg_read_server_files": "reads server files",
    "pg_write_server_files": "writes server files",
    "pg_execute_server_program": "runs programs on the server",
    "pg_read_all_data": "reads every table, pg_authid's password hashes too",
}


def _pg_error(engine: Engine, conn: Any, exc: Any, timeout_s: float) -> UserError:
    """The :class:`UserError` for a psycopg error raised by the user's statement."""
    import psycopg

    diag = getattr(exc, "diag", None)
    message = (diag.message_primary if diag is not None else None) or (str(exc).splitlines() or [""])[0]
    if exc.sqlstate is None and isinstance(exc, psycopg.OperationalError):  # e.g. the connection was lost
        return DatabaseError(f"the database connection failed while running the statement: {message}")
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return ReadOnlyViolation(f"statement refused: role {conn.info.user!r} may only read the archive's tables "
                                 f"and views (the database said: {message})")
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction | psycopg.errors.ActiveSqlTransaction |
                  psycopg.errors.InvalidTransactionState):
        return ReadOnlyViolation(_refused(message))
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return QueryError(f"{_cancelled(timeout_s)} (the database said: {message})")
    if "multiple commands" in message:
        return QueryError(f"iracdb sql runs one statement at a time ({message})")
    return QueryError(f"{message}; {_hint(engine)}")


def _cancelled(timeout_s: float) -> str:
    return f"statement cancelled after {timeout_s:g} s (the time limit of iracdb sql)"


def _refused(reason: str) -> str:
    return f"statement refused: iracdb sql is read-only (the database said: {reason})"


def _hint(engine: Engine) -> str:
    listing = _SQLITE_LISTING if is_sqlite(engine) else _PG_LISTING
    return f"the views image_photometry and aor_photometry hold the results; list every table and view with: {listing}"


#: Value types that are plain already.
_PLAIN_TYPES = frozenset({int, float, str, bool, type(None), bytes})


def _plain(value: Any) -> Any:
    """A database value as plain Python: numbers, str, bool, bytes or None (dates as ISO 8601 text)."""
    if type(value) in _PLAIN_TYPES:  # most values: skip the checks below
        return value
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


__all__ = ["FETCH_BATCH_ROWS", "PRIVILEGED_PG_ROLES", "READER_HINT", "STATEMENT_TIMEOUT_S", "PrivilegedRole",
           "QueryError", "QueryResult", "ReadOnlyViolation", "RowStream", "refuse_privileged_role", "run_read_only",
           "stream_read_only"]
