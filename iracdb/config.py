"""Settings: where the database is, and defaults shared by the commands."""

import os
import re

from iracdb.errors import BadOption

#: Environment variable that names the database when ``--db`` is not given.
DB_URL_ENV = "IRACDB_DB_URL"
#: Environment variable that ``iracdb sql`` reads first: the URL of a read-only role (``iracdb db create-reader``).
READER_URL_ENV = "IRACDB_READER_URL"
#: The database used when neither ``--db`` nor ``IRACDB_DB_URL`` is given: a SQLite file in the current folder.
DEFAULT_DB_PATH = "iracdb.sqlite"

# A URL scheme with a mistyped separator: a colon without the "//" ("postgresql+psycopg:/alice:pw@host/db") or "//"
# without the colon ("postgresql+psycopg//alice:pw@host/db"). At least two characters before the colon, so that a
# Windows drive ("C:/data/x.sqlite") is still a path.
_MALFORMED_URL = re.compile(r"^[A-Za-z][\w+.-]+(:|//)")
# USER:PASSWORD@ without a scheme ("alice:pw@host/db"): a URL missing its scheme, not a file (a path that starts
# with "/" or "." is a path).
_USERINFO = re.compile(r":[^/]*@")
# A libpq connection string ("host=h dbname=d password=pw"), which iracdb does not take: it needs a URL.
_CONNINFO = re.compile(r"(?i)^\s*(host|hostaddr|port|dbname|user|password|passfile|service|sslmode)\s*=")


def default_workers() -> int:
    """The number of worker processes ``reduce`` and ``ingest`` use when ``--workers`` is not given: the CPU cores
    this process may run on (its affinity mask where the system has one, else every core; at least 1)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def resolve_db_url(cli_value: str | None, *, reader: bool = False) -> str:
    """The database URL to use: ``--db`` if given, else ``$IRACDB_DB_URL``, else ``sqlite:///./iracdb.sqlite``.

    With ``reader`` (``iracdb sql``), ``$IRACDB_READER_URL`` comes before ``$IRACDB_DB_URL``.

    A bare file path (no ``://``) is taken as a SQLite database file, unless it looks like a mistyped URL (a scheme
    with a malformed separator, ``postgresql+psycopg:/...`` or ``postgresql+psycopg//...``; ``USER:PASSWORD@``
    without a scheme) or a libpq connection string (``host=... password=...``): that is refused with BadOption,
    without repeating the value (it may hold a password).
    """
    names = (READER_URL_ENV, DB_URL_ENV) if reader else (DB_URL_ENV,)
    source, value = "--db", cli_value
    for name in names:
        if not value:
            source, value = f"${name}", os.environ.get(name)
    value = value or DEFAULT_DB_PATH
    if "://" not in value:
        if _MALFORMED_URL.match(value):
            raise BadOption(
                f"{source} looks like a database URL with a malformed scheme separator; expected scheme://... "
                "(sqlite:///FILE or postgresql+psycopg://USER@HOST/DB; for a file whose name has a colon: ./NAME)"
            )
        if not value.startswith(("/", ".")) and _USERINFO.search(value):
            raise BadOption(f"{source} looks like a database URL without its scheme (it has USER:...@); expected "
                            "postgresql+psycopg://USER@HOST/DB (for a file whose name has ':' and '@': ./NAME)")
        if _CONNINFO.match(value):
            raise BadOption(f"{source} looks like a libpq connection string (KEY=VALUE); iracdb needs a URL: "
                            "postgresql+psycopg://USER@HOST/DB")
        return f"sqlite:///{value}"
    if value.startswith("postgresql://") or value.startswith("postgres://"):
        # Always use psycopg 3, the driver iracdb depends on.
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    return value
