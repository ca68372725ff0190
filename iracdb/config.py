"""Settings: where the database is, and defaults shared by the commands."""

import os

#: Environment variable that names the database when ``--db`` is not given.
DB_URL_ENV = "IRACDB_DB_URL"
#: The database used when neither ``--db`` nor ``IRACDB_DB_URL`` is given: a SQLite file in the current folder.
DEFAULT_DB_PATH = "iracdb.sqlite"


def resolve_db_url(cli_value: str | None) -> str:
    """The database URL to use: ``--db`` if given, else ``$IRACDB_DB_URL``, else ``sqlite:///./iracdb.sqlite``.

    A bare file path (no ``://``) is taken as a SQLite database file.
    """
    value = cli_value or os.environ.get(DB_URL_ENV) or DEFAULT_DB_PATH
    if "://" not in value:
        return f"sqlite:///{value}"
    if value.startswith("postgresql://") or value.startswith("postgres://"):
        # Always use psycopg 3, the driver iracdb depends on.
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    return value
