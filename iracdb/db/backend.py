"""What differs between the databases iracdb works with, behind one interface (house style: a backend is an object,
not a branch).

:class:`Backend` names every operation whose SQL or driver calls differ between SQLite and PostgreSQL: engine
configuration, named locks, bulk inserts, inserts that skip or update existing rows, consistent read snapshots with
streamed rows, and read-only execution of a user's statement. :mod:`iracdb.db.sqlite` and
:mod:`iracdb.db.postgresql` implement it; :func:`backend_for` gives the one of an engine. Business logic (ingest,
reduce, export, migrations, ``iracdb sql``) calls these methods and never asks which database it runs on.

A third backend is one more module with a subclass, and one line in :data:`_MODULES`.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.engine import URL, Row

from iracdb.db.engine import safe_url
from iracdb.errors import DatabaseError

if TYPE_CHECKING:
    import numpy as np

    from iracdb.db.pgbinary import ColumnArrays

#: Module of each backend, by SQLAlchemy backend name (imported when first asked for).
_MODULES = {"sqlite": "iracdb.db.sqlite", "postgresql": "iracdb.db.postgresql"}

#: Rows :meth:`Snapshot.batches` fetches per round unless told otherwise (small batches stay in the CPU caches: 5,000
#: rows fetch some 10 % faster than 25,000, and need less memory).
BATCH_ROWS = 5_000


def _is_integer(table: Table, name: str) -> bool:
    try:
        return table.c[name].type.python_type is int
    except NotImplementedError:
        return False


def python_values(values: np.ndarray, *, integer: bool) -> list[Any]:
    """A column as Python values for a DBAPI driver: NaN becomes None, and an ``integer`` column's values ints."""
    import numpy as np

    if values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        if integer:
            if not bad.any():
                return values.astype(np.int64).tolist()
            return [None if b else int(v) for v, b in zip(values.tolist(), bad.tolist(), strict=True)]
        if bad.any():
            items = values.astype(object)
            items[bad] = None
            return list(items.tolist())
        return list(values.tolist())
    return list(values.tolist())


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off meanwhile (as it was before, after).

    Writing or fetching many rows creates hundreds of thousands of row tuples, none in a cycle, and every few hundred
    of them made would otherwise start a collection that walks them all again (some 6 % of an export's time, most
    of a grid unit's row building). Pausing it changes no result.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()

#: The result of :meth:`Backend.read_only`: the statement's column names, then its rows as they are fetched.
Opened = tuple[tuple[str, ...], Iterator[tuple[Any, ...]]]


class Snapshot:
    """One read-only transaction on a raw DBAPI connection: every query sees the same data.

    Raw, not through a SQLAlchemy ``Connection``: its queries bypass SQLAlchemy's per-row work (the export reads
    millions of rows), and on SQLite the engine begins every SQLAlchemy transaction with ``BEGIN IMMEDIATE`` (the
    write lock), which a reader must not hold. Queries name their parameters ``:name``.

    Attributes
    ----------
    booleans_as_integers : bool
        The driver gives booleans as 0 and 1 (SQLite), not as True and False.
    """

    booleans_as_integers: ClassVar[bool] = False
    #: :meth:`column_batches` is available: big results of integer, float and boolean columns come as numpy
    #: arrays, without a Python object per value.
    streams_columns: ClassVar[bool] = False

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def close(self) -> None:
        """End the transaction and give the connection back."""
        try:
            self.raw.rollback()
        finally:
            self.raw.close()

    def _sql(self, sql: str) -> str:
        """``sql`` in the driver's parameter style (``:name`` as written)."""
        return sql

    def _stream_cursor(self, size: int) -> Any:
        """A cursor that fetches a big result ``size`` rows at a time, never all of it at once."""
        return self.raw.cursor()

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        """A small query's rows, as dicts by column name."""
        cursor = self.raw.cursor()
        try:
            cursor.execute(self._sql(sql), params)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def scalar(self, sql: str, **params: Any) -> Any:
        """The first value of a query's first row (None without rows)."""
        cursor = self.raw.cursor()
        try:
            cursor.execute(self._sql(sql), params)
            row = cursor.fetchone()
            return None if row is None else row[0]
        finally:
            cursor.close()

    def batches(self, sql: str, *, size: int = BATCH_ROWS, **params: Any) -> Iterator[list[tuple[Any, ...]]]:
        """A big query's rows, ``size`` rows at a time (the last batch may be shorter); memory holds one batch."""
        cursor = self._stream_cursor(size)
        try:
            cursor.execute(self._sql(sql), params)
            while rows := cursor.fetchmany(size):
                yield rows
        finally:
            cursor.close()

    def column_batches(self, sql: str, kinds: Sequence[str], *, size: int = BATCH_ROWS,
                       **params: Any) -> Generator[list[ColumnArrays], None, None]:
        """A big query's rows as columns, ``size`` rows at a time (where :attr:`streams_columns`).

        Parameters
        ----------
        sql : str
            The query; every column it selects is an integer, a float or a boolean.
        kinds : sequence of {"int", "float", "bool"}
            The kind of each selected column.

        Yields
        ------
        list of (values, valid)
            Per column, its numpy values (int64, float64 or bool; 0 where NULL) and where they are not NULL
            (None when none is NULL in the batch).
        """
        raise NotImplementedError(f"{type(self).__name__} does not stream columns")


class Backend(ABC):
    """One database system as iracdb uses it. Get one with :func:`backend_for`.

    Attributes
    ----------
    name : str
        SQLAlchemy's name of the backend (``sqlite``, ``postgresql``).
    has_roles : bool
        The database has login roles (``iracdb db create-reader`` makes a read-only one).
    alter_in_batches : bool
        Alembic must alter a table by copying it (SQLite cannot ALTER most things in place).
    catalogue_sql : str
        A statement that lists every table and view, for messages that point to them.
    engine : sqlalchemy.Engine
        The database.
    """

    name: ClassVar[str]
    has_roles: ClassVar[bool] = False
    alter_in_batches: ClassVar[bool] = False
    catalogue_sql: ClassVar[str]

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- opening -------------------------------------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def make_engine(cls, url: URL, *, create: bool) -> Engine:
        """An engine for ``url`` (a URL of this backend), configured as iracdb needs.

        Parameters
        ----------
        url : sqlalchemy.engine.URL
            The parsed database URL.
        create : bool
            Whether a database that does not exist may be created on first connection.

        Raises
        ------
        iracdb.errors.BadOption
            The URL cannot be used (the message never repeats it: it may hold a password).
        iracdb.errors.NoSuchDatabase
            Without ``create``, the database does not exist.
        """

    @classmethod
    def files(cls, url: URL) -> tuple[Path, ...]:
        """The files that hold the database at ``url`` (whether they exist or not); none for a server's database or
        one in memory. Outputs must never overwrite them."""
        return ()

    def _connect(self) -> Any:
        """A pooled DBAPI connection; :class:`~iracdb.errors.DatabaseError` when the database cannot be reached
        (the driver's error comes through the pool unwrapped)."""
        try:
            return self.engine.raw_connection()
        except self.engine.dialect.loaded_dbapi.Error as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DatabaseError(f"cannot open database {safe_url(str(self.engine.url))}: {reason}") from None

    # --- locks ---------------------------------------------------------------------------------------------------

    @abstractmethod
    def schema_lock(self) -> contextlib.AbstractContextManager[Connection]:
        """A connection holding the database's schema lock (until the context ends): two processes that create
        or migrate the schema of one database at once take turns. The caller runs the migration on it."""

    @abstractmethod
    def ingest_lock(self, conn: Connection) -> None:
        """Take the ingest lock for the rest of ``conn``'s transaction: ingest write transactions take turns."""

    @abstractmethod
    def run_lock(self, name: str) -> contextlib.AbstractContextManager[bool]:
        """Try to lock the run name ``name`` for this process's session, without waiting; yields whether this
        session holds it (True also where the database needs no such lock: SQLite serialises every write
        transaction). The lock goes when the context ends, or with the connection if the process dies."""

    # --- writing -------------------------------------------------------------------------------------------------

    @abstractmethod
    def _insert(self, table: Table) -> Any:
        """The dialect's INSERT construct for ``table`` (it has ``on_conflict_do_nothing`` and ``..._do_update``)."""

    #: A reduction writes each unit in a second thread while the next is measured, and ingest reads files in a
    #: second thread while it writes (PostgreSQL: the server then works meanwhile). Not on SQLite: its connections
    #: are safest in the thread that opened them, and the gain is small there (the write is done in this process
    #: either way).
    writes_behind: ClassVar[bool] = False

    @property
    def threads_share_database(self) -> bool:
        """Whether a connection opened in another thread reaches this same database, so that a second thread may
        write to it (not so for SQLite in memory, ``sqlite://``: each thread's connection is a database of its own)."""
        return True

    def relax_durability(self, conn: Connection) -> None:
        """Let the transaction of ``conn`` commit without waiting for its log to reach the disk.

        A crash of the machine may then lose the last such transactions, whole (never a part of one), while the
        database stays consistent: what SQLite in WAL mode with ``synchronous=NORMAL`` (iracdb's setting) does for
        every transaction, so nothing to do there. A reduction's units use it; the run's final mark does not, and
        its commit makes every unit before it durable (the log is written in order).
        """
        return None

    def compress_text_cheaply(self, conn: Connection) -> None:
        """Let the transaction of ``conn`` compress the large text values it writes the cheapest way the database
        can (ingest writes ~25 kB of header text per file).

        PostgreSQL compresses such values (TOAST) with pglz unless told otherwise: some 0.5-1 ms of server time per
        file header, 3-6x what lz4 takes, for a result only ~15 % smaller. Values already stored, and reading, are
        unaffected (each value records how it was compressed). SQLite stores text as it is: nothing to do there.
        """
        return None

    def insert_rows(self, conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` (new rows, all with the same keys) the fastest way the database takes them."""
        if rows:
            conn.execute(table.insert(), list(rows))

    def insert_new(self, conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert those of ``rows`` whose unique keys are not in ``table`` yet; leave the others as they are."""
        conn.execute(self._insert(table).on_conflict_do_nothing(), list(rows))

    def upsert(self, conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], *, key: Sequence[str],
               update: Sequence[str]) -> None:
        """Insert ``rows``; a row whose ``key`` columns (a unique constraint) match an existing row updates that
        row's ``update`` columns instead."""
        statement = self._insert(table)
        statement = statement.on_conflict_do_update(
            index_elements=[table.c[name] for name in key],
            set_={name: statement.excluded[name] for name in update},
        )
        conn.execute(statement, list(rows))

    def insert_returning(self, conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]],
                         returning: Sequence[str]) -> list[Row[Any]]:
        """Insert ``rows``; the ``returning`` columns of each new row, in the order of ``rows``."""
        if not rows:
            return []
        statement = table.insert().returning(*(table.c[name] for name in returning), sort_by_parameter_order=True)
        return list(conn.execute(statement, list(rows)).all())

    @abstractmethod
    def bulk_insert(self, conn: Connection, table: Table, columns: Sequence[str],
                    rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert many ``rows`` (tuples of Python values in ``columns`` order, None for NULL) into ``table`` in
        ``conn``'s transaction, the fastest way the database takes them. Integer values of integer columns must be
        ints, of float columns floats; no date-times (SQLite would store them otherwise than SQLAlchemy does: use
        :meth:`insert_rows`)."""

    def bulk_insert_arrays(self, conn: Connection, table: Table, columns: Mapping[str, Any]) -> None:
        """Insert the rows given as columns (numpy arrays of one length, by column name; NaN is NULL, also in an
        integer column given as floats) into ``table`` in ``conn``'s transaction. This default turns them into
        tuples of Python values for :meth:`bulk_insert`; a backend may send the arrays without that step."""
        import numpy as np

        names = list(columns)
        values = [python_values(np.asarray(columns[name]), integer=_is_integer(table, name)) for name in names]
        with collector_paused():
            rows = list(zip(*values, strict=True))
            self.bulk_insert(conn, table, names, rows)

    # --- reading -------------------------------------------------------------------------------------------------

    @abstractmethod
    def _begin_snapshot(self, raw: Any) -> Snapshot:
        """A :class:`Snapshot` whose read-only transaction has begun on the DBAPI connection ``raw``."""

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """One consistent read-only view of the database for the whole context, that never blocks writers.

        Yields
        ------
        Snapshot
            Its queries all see the database as it was when the first of them ran.
        """
        raw = self.engine.raw_connection()
        try:
            snap = self._begin_snapshot(raw)
        except BaseException:
            raw.close()
            raise
        try:
            yield snap
        finally:
            snap.close()

    @abstractmethod
    def read_only(self, sql: str, *, batch: int, timeout_s: float) -> contextlib.AbstractContextManager[Opened]:
        """Run a user's statement so that the database itself refuses anything but a read; stream its rows.

        The statement runs when the context is entered; leaving it stops the statement and releases the
        connection, which keeps nothing of what the statement did.

        Parameters
        ----------
        sql : str
            One statement.
        batch : int
            Rows fetched from the database per round (at least 1).
        timeout_s : float
            The statement is cancelled after this long [s], time spent streaming its rows included.

        Yields
        ------
        tuple
            The column names, and an iterator of the rows (as the driver gives them).

        Raises
        ------
        iracdb.errors.ReadOnlyViolation, iracdb.errors.QueryError, iracdb.errors.PrivilegedRole
            As :func:`iracdb.db.readonly.stream_read_only` (also while the rows are iterated).
        iracdb.errors.DatabaseError
            The database cannot be reached.
        """

    def query_hint(self) -> str:
        """Where the results are, for a message about a statement that failed."""
        return ("the views image_photometry and aor_photometry hold the results; list every table and view with: "
                f"{self.catalogue_sql}")


def backend_class(name: str) -> type[Backend] | None:
    """The :class:`Backend` of the SQLAlchemy backend ``name`` (``sqlite``, ``postgresql``), None for one iracdb
    does not work with."""
    module = _MODULES.get(name)
    if module is None:
        return None
    backend: type[Backend] = importlib.import_module(module).BACKEND
    return backend


def backend_for(bind: Engine | Connection) -> Backend:
    """The :class:`Backend` of an engine (or of a connection's engine).

    Raises
    ------
    iracdb.errors.DatabaseError
        The engine is of a database iracdb does not work with (only possible with an engine iracdb did not make).
    """
    engine = bind.engine
    cls = backend_class(engine.dialect.name)
    if cls is None:
        raise DatabaseError(f"iracdb works with SQLite and PostgreSQL, not {engine.dialect.name}")
    return cls(engine)


def database_files(url: URL) -> tuple[Path, ...]:
    """The files of the database at ``url`` (those of a SQLite database and its ``-wal``, ``-shm`` and ``-journal``
    files, whether they exist or not; none for PostgreSQL or a database in memory): never an output."""
    cls = backend_class(url.get_backend_name())
    return () if cls is None else cls.files(url)


def read_only_refused(reason: str) -> str:
    """The message of a :class:`~iracdb.errors.ReadOnlyViolation`, with the database's ``reason``."""
    return f"statement refused: iracdb sql is read-only (the database said: {reason})"


def statement_cancelled(timeout_s: float) -> str:
    """The message of a statement cancelled at the time limit ``timeout_s`` [s]."""
    return f"statement cancelled after {timeout_s:g} s (the time limit of iracdb sql)"


__all__ = [
    "BATCH_ROWS",
    "Backend",
    "Opened",
    "Snapshot",
    "backend_class",
    "backend_for",
    "collector_paused",
    "database_files",
    "read_only_refused",
    "statement_cancelled",
]
