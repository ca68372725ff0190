"""Alembic environment for iracdb.

The engine comes from ``config.attributes["engine"]`` (set by iracdb.db.migrate) or, when Alembic is run by hand
(``alembic -c alembic.ini upgrade head``), from ``IRACDB_DB_URL`` / ``sqlalchemy.url``.
"""

from alembic import context
from sqlalchemy import Connection

from iracdb.config import resolve_db_url
from iracdb.db.backend import backend_for
from iracdb.db.engine import make_engine
from iracdb.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place: batch mode recreates tables instead.
        render_as_batch=backend_for(connection).alter_in_batches,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # iracdb.db.migrate passes the connection that holds the migration lock
        run_migrations(connection)
        return
    engine = config.attributes.get("engine")
    if engine is None:
        engine = make_engine(config.get_main_option("sqlalchemy.url") or resolve_db_url(None))
    with engine.begin() as connection:
        run_migrations(connection)


if context.is_offline_mode():
    raise SystemExit("iracdb migrations run online only (they need a connection)")
run_migrations_online()
