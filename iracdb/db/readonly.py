"""Read-only SQL on the archive (``iracdb sql "SELECT ..."``), enforced by the database itself on both backends.

No keyword is parsed here: the database refuses anything but a read. Rows are streamed: they are fetched in batches
as the caller iterates, never all at once, and fetching stops at the row limit. How each database is made to refuse
writes is its backend's job (:meth:`iracdb.db.backend.Backend.read_only`):

- **SQLite** (:mod:`iracdb.db.sqlite`): ``PRAGMA query_only``, an authorizer that allows only reads, and a
  progress handler that cancels the statement after :data:`STATEMENT_TIMEOUT_S`; all removed before the connection
  goes back to the pool.
- **PostgreSQL** (:mod:`iracdb.db.postgresql`): never as a role that could get round a read-only transaction (a
  superuser, CREATEROLE, BYPASSRLS, REPLICATION, or a member of a role that reads or writes server files:
  :class:`PrivilegedRole`; ``iracdb db create-reader`` makes a role that passes); in a ``READ ONLY`` transaction
  with a statement timeout, one statement only, rows streamed in chunks; the connection is discarded afterwards.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine

from iracdb.db.backend import backend_for
from iracdb.db.postgresql import PRIVILEGED_PG_ROLES, READER_HINT, refuse_privileged_role
from iracdb.errors import BadOption, PrivilegedRole, QueryError, ReadOnlyViolation

#: Longest a statement may run (on either backend) before it is cancelled [s]; the time spent streaming its rows
#: counts. A module constant, read at each call, so a test can lower it.
STATEMENT_TIMEOUT_S: float = 300

#: Rows fetched per round (SQLite ``fetchmany``, PostgreSQL chunked streaming): a batch is all that is held.
FETCH_BATCH_ROWS = 1000


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
    backend = backend_for(engine)
    if not sql.strip():
        raise QueryError(f"no SQL given; {backend.query_hint()}")
    # At most max_rows + 1 rows are ever wanted: fetch no more than that per round.
    batch = FETCH_BATCH_ROWS if max_rows is None else min(FETCH_BATCH_ROWS, max_rows + 1)
    with backend.read_only(sql, batch=batch, timeout_s=STATEMENT_TIMEOUT_S) as (columns, rows):
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
