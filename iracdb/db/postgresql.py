"""PostgreSQL as iracdb uses it (through psycopg 3): advisory locks, binary COPY, server-side cursors, and read-only
execution that the server enforces.

- **Locks**: advisory locks, by fixed keys (schema, ingest) or a key derived from a run's name.
- **Bulk insert**: ``COPY ... FROM STDIN (FORMAT BINARY)``: some 6x faster than text COPY (no float -> text
  conversion); the types must match the columns exactly.
- **Snapshot**: a ``REPEATABLE READ, READ ONLY`` transaction; big results through server-side (named) cursors.
- **Read-only execution**: the statement never runs as a role that could get round a read-only transaction: a
  superuser (who may ``SET ROLE`` back to itself, read server files, run programs), a role with CREATEROLE,
  BYPASSRLS or REPLICATION, or a member of ``pg_read_server_files``, ``pg_write_server_files``,
  ``pg_execute_server_program`` or ``pg_read_all_data`` (which reads the password hashes in ``pg_authid``). Such a
  connection is refused with :class:`~iracdb.errors.PrivilegedRole` before the statement is sent; ``iracdb db
  create-reader`` makes a role that passes (:mod:`iracdb.db.reader`). The statement runs in a ``READ ONLY``
  transaction that has already taken its snapshot (so it cannot be switched to read-write), with a statement
  timeout, through the extended query protocol (one statement only, so ``COMMIT; DELETE ...`` cannot run), its rows
  streamed in chunks. A statement that ends the transaction is refused. The transaction is rolled back and the
  connection is closed, not returned to the pool, so no session state (settings, advisory locks, prepared
  statements) outlives the call.

psycopg is imported only where it is used: iracdb works without it on SQLite.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import queue
import re
import threading
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    Engine,
    Float,
    Integer,
    SmallInteger,
    String,
    Table,
    text,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.engine import URL

from iracdb.db.backend import BATCH_ROWS, Backend, Opened, Snapshot, read_only_refused, statement_cancelled
from iracdb.db.engine import create_checked_engine
from iracdb.errors import BadOption, DatabaseError, PrivilegedRole, QueryError, ReadOnlyViolation, UserError

if TYPE_CHECKING:
    from iracdb.db.pgbinary import ColumnArrays

#: Advisory-lock key held while the schema is created or migrated.
SCHEMA_LOCK_KEY = 0x1AC_DB_00
#: Advisory-lock key that serialises ingest write transactions.
INGEST_LOCK_KEY = 0x1AC_DB_01

#: Predefined roles whose members may read or write server files, run programs on the server, or read every table
#: including the password hashes in ``pg_authid``: ``iracdb sql`` refuses to run as one.
PRIVILEGED_PG_ROLES = ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program",
                       "pg_read_all_data")

#: How to get a role that ``iracdb sql`` accepts (the end of every :class:`~iracdb.errors.PrivilegedRole` message).
READER_HINT = ("connect as a read-only login role instead: create one with `iracdb db create-reader NAME --db "
               "ADMIN_URL`, then give its URL with --db or $IRACDB_READER_URL")

#: The first role (the role ``who`` itself first) that ``who`` is, or may become with SET ROLE, and that can get round
#: a read-only transaction. pg_has_role(..., 'MEMBER') counts indirect memberships, and a superuser is a member of
#: every role.
_PRIVILEGED_ROLE = """
SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolbypassrls, r.rolreplication
FROM pg_roles r
WHERE pg_has_role({who}, r.oid, 'MEMBER')
  AND (r.rolsuper OR r.rolcreaterole OR r.rolbypassrls OR r.rolreplication OR r.rolname = ANY(%s))
ORDER BY r.rolname <> {who}, r.rolsuper DESC, r.rolname
LIMIT 1
"""

#: What the members of :data:`PRIVILEGED_PG_ROLES` may do, for messages.
_PREDEFINED_POWERS = {
    "pg_read_server_files": "reads server files",
    "pg_write_server_files": "writes server files",
    "pg_execute_server_program": "runs programs on the server",
    "pg_read_all_data": "reads every table, pg_authid's password hashes too",
}

#: Binary COPY type of each SQLAlchemy column type (subclasses first: BigInteger and SmallInteger are Integers).
_COPY_TYPES = ((BigInteger, "int8"), (SmallInteger, "int2"), (Integer, "int4"), (Float, "float8"),
               (Boolean, "bool"), (String, "text"))


#: Sets default_toast_compression to lz4 for the rest of the transaction if the server has lz4, else leaves it.
_LZ4_IF_BUILT_IN = ("SELECT set_config('default_toast_compression', 'lz4', true) FROM pg_settings "
                    "WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)")


def run_lock_key(name: str) -> int:
    """The advisory-lock key of a run name: 64 bits of its SHA-256 (a signed bigint)."""
    digest = hashlib.sha256(f"iracdb run {name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresqlSnapshot(Snapshot):
    """A repeatable-read, read-only transaction; big results through server-side cursors."""

    def __init__(self, raw: Any) -> None:
        super().__init__(raw)
        self._cursors = 0
        cursor = raw.cursor()
        try:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        finally:
            cursor.close()

    streams_columns = True

    def _sql(self, sql: str) -> str:
        return re.sub(r":(\w+)", r"%(\1)s", sql)

    def column_batches(self, sql: str, kinds: Sequence[str], *, size: int = BATCH_ROWS,
                       **params: Any) -> Generator[list[ColumnArrays], None, None]:
        """Through ``COPY (sql) TO STDOUT (FORMAT BINARY)``, parsed by :func:`iracdb.db.pgbinary.parse_rows`: the
        server sends binary values (no text to parse) and no Python object is made per value.

        The COPY runs inside a savepoint: a COPY left before its end (the caller closed this generator, or it
        failed) is cancelled by psycopg, which aborts the transaction; rolled back to the savepoint, the snapshot
        goes on, with the same data, for the next query."""
        cursor = self.raw.cursor()
        try:
            cursor.execute("SAVEPOINT iracdb_copy")
            try:
                yield from _copy_batches(cursor, f"COPY ({self._sql(sql)}) TO STDOUT (FORMAT BINARY)", params,
                                         kinds, size)
            except BaseException:  # GeneratorExit included: the caller stopped reading
                cursor.execute("ROLLBACK TO SAVEPOINT iracdb_copy")
                raise
            cursor.execute("RELEASE SAVEPOINT iracdb_copy")
        finally:
            cursor.close()

    def _stream_cursor(self, size: int) -> Any:
        self._cursors += 1
        cursor = self.raw.cursor(name=f"iracdb_export_{self._cursors}")
        cursor.itersize = size
        return cursor


class PostgresqlBackend(Backend):
    """PostgreSQL through psycopg 3 (see the module's documentation)."""

    name = "postgresql"
    has_roles = True
    catalogue_sql = ("SELECT table_type, table_name FROM information_schema.tables "
                     "WHERE table_schema = current_schema() ORDER BY table_type, table_name")

    @classmethod
    def make_engine(cls, url: URL, *, create: bool) -> Engine:
        if url.host and "@" in url.host:
            # SQLAlchemy and libpq end the password at its first "@": the rest would be looked up as a host name.
            raise BadOption("the database URL has an unencoded '@' in its password: write each '@' in the "
                            "password as %40")
        if url.get_driver_name() != "psycopg":
            url = url.set(drivername="postgresql+psycopg")
        return create_checked_engine(url, pool_pre_ping=True)

    # --- locks ---------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def schema_lock(self) -> Iterator[Connection]:
        key = {"key": SCHEMA_LOCK_KEY}
        with self.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), key)
            connection.commit()
            try:
                yield connection
            finally:
                connection.rollback()
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), key)
                connection.commit()

    def ingest_lock(self, conn: Connection) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": INGEST_LOCK_KEY})

    @contextlib.contextmanager
    def run_lock(self, name: str) -> Iterator[bool]:
        key = {"key": run_lock_key(name)}
        with self.engine.connect() as conn:
            locked = bool(conn.execute(text("SELECT pg_try_advisory_lock(:key)"), key).scalar_one())
            conn.commit()
            try:
                yield locked
            finally:
                if locked:
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), key)
                    conn.commit()

    # --- writing -------------------------------------------------------------------------------------------------

    def _insert(self, table: Table) -> Any:
        return pg_dialect.insert(table)

    writes_behind = True

    def relax_durability(self, conn: Connection) -> None:
        # A commit then returns without its WAL flush (~4 ms each on the development machine's disk).
        conn.exec_driver_sql("SET LOCAL synchronous_commit TO off")

    def compress_text_cheaply(self, conn: Connection) -> None:
        # lz4 only where the server was built with it (it is then one of the setting's values); a transaction-local
        # setting, so no schema change: the columns keep the default compression, which this setting chooses.
        conn.exec_driver_sql(_LZ4_IF_BUILT_IN)

    def insert_rows(self, conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
        # Binary COPY: one round trip, no statement per row (ingest's files: ~2x faster than executemany).
        import psycopg
        from sqlalchemy.exc import DBAPIError

        if not rows:
            return
        columns = list(rows[0])
        try:
            self.bulk_insert(conn, table, columns, [tuple(row[name] for name in columns) for row in rows])
        except psycopg.Error as exc:  # raised by the driver itself: made what SQLAlchemy's execute would raise
            raise DBAPIError.instance(f"COPY {table.name}", None, exc, psycopg.Error, dialect=conn.dialect) from exc

    def bulk_insert(self, conn: Connection, table: Table, columns: Sequence[str],
                    rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        types = _copy_types(table, tuple(columns))
        raw: Any = conn.connection.driver_connection  # a psycopg.Connection
        sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
        with raw.cursor() as cursor, cursor.copy(sql) as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)

    def bulk_insert_arrays(self, conn: Connection, table: Table, columns: Mapping[str, Any]) -> None:
        """Binary COPY built by numpy from the arrays (:func:`iracdb.db.pgbinary.encode_rows`), without a Python
        value per field: some 10x faster on the client than :meth:`bulk_insert`'s rows."""
        import numpy as np

        from iracdb.db.pgbinary import encode_rows

        names = tuple(columns)
        arrays = [np.asarray(columns[name]) for name in names]
        if not arrays or len(arrays[0]) == 0:
            return
        stream = encode_rows(arrays, _copy_types(table, names))
        raw: Any = conn.connection.driver_connection  # a psycopg.Connection
        with raw.cursor() as cursor, cursor.copy(
                f"COPY {table.name} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(stream)

    # --- reading -------------------------------------------------------------------------------------------------

    def _begin_snapshot(self, raw: Any) -> Snapshot:
        return PostgresqlSnapshot(raw)

    @contextlib.contextmanager
    def read_only(self, sql: str, *, batch: int, timeout_s: float) -> Iterator[Opened]:
        import psycopg

        raw = self._connect()
        try:
            conn: psycopg.Connection[Any] = raw.driver_connection
            conn.rollback()
            conn.autocommit = False
            conn.read_only = True  # psycopg starts the transaction with BEGIN READ ONLY
            with conn.cursor() as cursor:
                # Take the transaction's snapshot now: after the first query it can no longer become read-write.
                cursor.execute("SELECT set_config('statement_timeout', %s, true)", (f"{round(timeout_s * 1000)}ms",))
                refuse_privileged_role(cursor)
                # stream() sends the statement through the extended query protocol, which takes exactly one
                # statement (no "COMMIT; ..."), and receives its rows in chunks (libpq >= 17) or one by one, never
                # all at once.
                size = batch if batch > 1 and psycopg.capabilities.has_stream_chunked() else 1
                rows = self._rows(conn, cursor.stream(sql, size=size), timeout_s)
                try:
                    first = next(rows, None)  # the statement runs; its columns come with its first rows
                    columns = _columns(conn, cursor, sql)
                    yield columns, _chain(first, rows)
                finally:
                    rows.close()  # stops the statement if it still runs (psycopg cancels it)
        finally:
            with contextlib.suppress(psycopg.Error):  # the connection is discarded anyway
                raw.driver_connection.rollback()
            # Never return this connection to the pool: whatever the statement did to the session goes with it.
            raw.invalidate()
            raw.close()

    def _rows(self, conn: Any, stream: Iterator[tuple[Any, ...]],
              timeout_s: float) -> Generator[tuple[Any, ...], None, None]:
        """The rows of ``cursor.stream(...)``, its errors turned into UserErrors; at the end, refuse a statement
        that ended the read-only transaction."""
        import psycopg

        try:
            yield from stream
        except psycopg.Error as exc:
            # psycopg's own ProgrammingError (no SQLSTATE) "the operation in stream() didn't produce a result": the
            # statement ran but returns no rows (SET, COMMIT ...): no rows, and the check below.
            if not (isinstance(exc, psycopg.ProgrammingError) and exc.sqlstate is None):
                raise self._error(conn, exc, timeout_s) from None
        finally:
            stream.close()  # type: ignore[attr-defined]  # a generator: cancels a statement that still runs
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
            raise ReadOnlyViolation(read_only_refused("the statement ended the read-only transaction"))

    def _error(self, conn: Any, exc: Any, timeout_s: float) -> UserError:
        """The UserError for a psycopg error raised by the user's statement."""
        import psycopg

        diag = getattr(exc, "diag", None)
        message = (diag.message_primary if diag is not None else None) or (str(exc).splitlines() or [""])[0]
        if exc.sqlstate is None and isinstance(exc, psycopg.OperationalError):  # e.g. the connection was lost
            return DatabaseError(f"the database connection failed while running the statement: {message}")
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return ReadOnlyViolation(f"statement refused: role {conn.info.user!r} may only read the archive's "
                                     f"tables and views (the database said: {message})")
        if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction | psycopg.errors.ActiveSqlTransaction |
                      psycopg.errors.InvalidTransactionState):
            return ReadOnlyViolation(read_only_refused(message))
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return QueryError(f"{statement_cancelled(timeout_s)} (the database said: {message})")
        if "multiple commands" in message:
            return QueryError(f"iracdb sql runs one statement at a time ({message})")
        return QueryError(f"{message}; {self.query_hint()}")


@functools.cache
def _copy_types(table: Table, columns: tuple[str, ...]) -> list[str]:
    """The binary COPY type of each of ``columns`` of ``table`` (binary COPY needs them exactly)."""
    dialect = pg_dialect.dialect()
    types = []
    for name in columns:
        kind = table.c[name].type
        kind = kind.load_dialect_impl(dialect) if hasattr(kind, "load_dialect_impl") else kind
        if isinstance(kind, DateTime):
            types.append("timestamptz" if kind.timezone else "timestamp")
            continue
        copy_type = next((copy_type for sa_type, copy_type in _COPY_TYPES if isinstance(kind, sa_type)), None)
        if copy_type is None:
            raise TypeError(f"{table.name}.{name}: no binary COPY type for {kind!r}")
        types.append(copy_type)
    return types


def _columns(conn: Any, cursor: Any, sql: str) -> tuple[str, ...]:
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


def _copy_messages(copy: Any, connection: Any) -> Iterator[Any]:
    """The messages of a COPY TO (psycopg ``Copy``), to the end of the COPY.

    Those libpq has already received are taken from it one C call each (``PGconn.get_copy_data``, not waiting);
    psycopg's ``Copy.read``, which waits for the socket (and lets Ctrl-C cancel the statement), only when libpq
    holds none: psycopg's own iteration costs about 1 us of Python per message, most of reading the rows.
    """
    from psycopg import errors, pq

    pgconn = connection.pgconn
    get = pgconn.get_copy_data
    while True:
        nbytes, data = get(1)
        if nbytes > 0:
            yield data
        elif nbytes == 0:
            data = copy.read()
            if not data:  # psycopg has seen the end and taken the COPY's result
                return
            yield data
        else:  # the end, seen here: take the COPY's results (all: libpq is idle only then), as psycopg would
            results = []
            while (result := pgconn.get_result()) is not None:
                results.append(result)
            for result in results:
                if result.status != pq.ExecStatus.COMMAND_OK:
                    raise errors.error_from_result(result, encoding=connection.info.encoding)
            return


def _copy_batches(cursor: Any, copy_sql: str, params: Mapping[str, Any], kinds: Sequence[str],
                  size: int) -> Generator[list[ColumnArrays], None, None]:
    """The rows of a binary COPY TO, ``size`` at a time, as columns (see :meth:`PostgresqlSnapshot.column_batches`)."""
    from iracdb.db import pgbinary

    with cursor.copy(copy_sql, params) as copy:
        # Read to its end (the COPY ends only then), in another thread: see _read_ahead.
        # At most one batch of messages waits (in smaller lists: less memory held at once).
        read = _read_ahead(_copy_messages(copy, cursor.connection), max(1, size // _READ_AHEAD_CHUNKS))
        with contextlib.closing(read) as chunks:
            rows: list[Any] = []
            first = True
            for chunk in chunks:
                if first:
                    # The first message holds the file header (and the first row, if any); the last is the trailer.
                    first = False
                    head = pgbinary.strip_header(chunk[0])
                    chunk = [head, *chunk[1:]] if len(head) else chunk[1:]
                rows += chunk
                while len(rows) > size:
                    yield pgbinary.parse_rows(rows[:size], kinds)
                    del rows[:size]
            if rows and bytes(rows[-1]) == pgbinary.TRAILER:
                rows.pop()
            for start in range(0, len(rows), size):
                yield pgbinary.parse_rows(rows[start: start + size], kinds)


#: Chunks of COPY messages that :func:`_read_ahead` holds, at most, ahead of their reader.
_READ_AHEAD_CHUNKS = 4


def _read_ahead(messages: Iterator[Any], size: int,
                depth: int = _READ_AHEAD_CHUNKS) -> Generator[list[Any], None, None]:
    """``messages`` in lists of up to ``size``, read by another thread up to ``depth`` lists ahead of the caller.

    The server can only run ahead of its reader by what the socket buffers hold (a few hundred kB): while this
    process parses and converts a batch, a COPY read in the same thread would stop the server. Read by a thread
    that does nothing else, the server's work and this process's overlap. The thread ends with the messages, or
    at the next list once this generator is closed; it is joined before this generator returns, so the caller may
    use the connection again.
    """
    filled: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    reader = threading.Thread(target=_read_into, args=(messages, size, filled, stop), name="iracdb-copy-reader",
                              daemon=True)
    reader.start()
    try:
        while (item := filled.get())[0] == "chunk":
            yield item[1]
        if item[0] == "error":
            raise item[1]
    finally:
        stop.set()
        while reader.is_alive():  # free a place for a reader waiting to put its last item, then wait for it
            with contextlib.suppress(queue.Empty):
                filled.get(timeout=0.05)
        reader.join()


def _read_into(messages: Iterator[Any], size: int, filled: queue.Queue[tuple[str, Any]],
               stop: threading.Event) -> None:
    """:func:`_read_ahead`'s thread: lists of ``size`` messages into ``filled``, then ``("end", None)``, or
    ``("error", exception)``; stops early once ``stop`` is set."""
    try:
        while not stop.is_set() and (chunk := list(itertools.islice(messages, size))):
            while not stop.is_set():
                with contextlib.suppress(queue.Full):
                    filled.put(("chunk", chunk), timeout=0.1)
                    break
        filled.put(("end", None))
    except BaseException as exc:  # raised again in the caller's thread
        filled.put(("error", exc))


def _chain(first: tuple[Any, ...] | None, rows: Iterator[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    if first is not None:
        yield first
        yield from rows


def refuse_privileged_role(cursor: Any) -> None:
    """Raise :class:`~iracdb.errors.PrivilegedRole` when the session (its session or current user) is, or may
    become, a role that a read-only transaction does not contain.

    Parameters
    ----------
    cursor : psycopg.Cursor
        A cursor on the connection the statement will run on.

    Raises
    ------
    iracdb.errors.PrivilegedRole
        The role is a superuser, has CREATEROLE, BYPASSRLS or REPLICATION, or is a member (directly or not) of such a
        role or of one of :data:`PRIVILEGED_PG_ROLES`.
    """
    for who in ("session_user", "current_user"):
        cursor.execute("SELECT " + who)
        (name,) = cursor.fetchone()
        cursor.execute(_PRIVILEGED_ROLE.format(who=who), (list(PRIVILEGED_PG_ROLES),))
        row = cursor.fetchone()
        if row is not None:
            raise PrivilegedRole(f"iracdb sql will not run as PostgreSQL role {name!r}: {_why(name, *row)}; "
                                 f"{READER_HINT}")


def _why(name: str, role: str, superuser: bool, createrole: bool, bypassrls: bool, replication: bool) -> str:
    powers = [power for flag, power in ((superuser, "is a superuser"), (createrole, "has CREATEROLE"),
                                      (bypassrls, "has BYPASSRLS"), (replication, "has REPLICATION")) if flag]
    what = " and ".join(powers[:1] if superuser else powers) or _PREDEFINED_POWERS.get(
        role, "may get round a read-only transaction")
    return f"it {what}" if role == name else f"it is a member of {role!r}, which {what}"


#: The backend this module implements (see :func:`iracdb.db.backend.backend_class`).
BACKEND = PostgresqlBackend

__all__ = ["BACKEND", "INGEST_LOCK_KEY", "PRIVILEGED_PG_ROLES", "READER_HINT", "SCHEMA_LOCK_KEY",
           "PostgresqlBackend", "PostgresqlSnapshot", "refuse_privileged_role", "run_lock_key"]
