"""Opening a database: one engine per URL, SQLite configured to behave like PostgreSQL."""

from __future__ import annotations

import sqlite3

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from iracdb.errors import BadOption

#: How long a SQLite writer waits for another writer's lock before giving up [s].
SQLITE_BUSY_TIMEOUT_S = 60


#: What a database URL looks like, for messages about one that is not (which never repeat it: it may hold a password).
EXPECTED_URL = "expected sqlite:///FILE or postgresql+psycopg://USER@HOST/DB"


def safe_url(url: str) -> str:
    """The URL as it may be shown to people: any password replaced by ``***``; an unparseable one not at all."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        return "<unparseable database URL>"


def make_engine(url: str) -> Engine:
    """An engine for ``url``: ``sqlite:///path`` or ``postgresql+psycopg://user@host/db``.

    SQLite gets foreign keys on, a write-ahead log (readers never block the writer) and a busy timeout, so that
    it enforces the same constraints as PostgreSQL and tolerates a second process.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        # Never echo the value (nor the exception, which may quote it): it may hold a password.
        raise BadOption(f"not a database URL ({EXPECTED_URL})") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_immediate)
        return engine
    if backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True)
    raise BadOption(f"unsupported database {safe_url(url)}: iracdb works with SQLite and PostgreSQL")


def _configure_sqlite(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see _begin_immediate).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _begin_immediate(connection: Connection) -> None:
    # Take SQLite's write lock when a transaction starts, not at its first write: a reader that later writes can
    # then never fail with "database is locked" (waiting for the busy timeout instead), as PostgreSQL would wait.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
