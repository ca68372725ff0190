"""A read-only PostgreSQL login role for ``iracdb sql`` (``iracdb db create-reader NAME``).

``iracdb sql`` refuses to run as a role that a read-only transaction cannot contain (a superuser first of all:
see :mod:`iracdb.db.postgresql`). This makes the role it wants, the way database administrators make a reporting
role: LOGIN and nothing else (NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS), read-only by default,
CONNECT on the archive's database, USAGE on its schema and SELECT on its tables and views, plus default privileges
so that the tables and views that the same administrator's later ``iracdb db upgrade`` adds are readable too.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from iracdb.db.backend import backend_for
from iracdb.db.postgresql import PRIVILEGED_PG_ROLES
from iracdb.errors import BadOption, UserError

#: A reader's name: a plain lower-case SQL identifier (no quoting needed in URLs, psql or pg_hba.conf), at most 63
#: bytes (PostgreSQL's limit); names starting with ``pg_`` are PostgreSQL's own.
_ROLE_NAME = re.compile(r"^(?!pg_)[a-z_][a-z0-9_]{0,62}$")

#: The role's attributes, privileges and memberships that would make ``iracdb sql`` refuse it.
_PG_ROLE_STATE = """
SELECT r.rolsuper, r.rolcreaterole, r.rolbypassrls, r.rolreplication, r.rolcreatedb,
       r.rolname IN (session_user, current_user),
       (SELECT string_agg(g.rolname, ', ' ORDER BY g.rolname) FROM pg_roles g
        WHERE g.oid <> r.oid AND pg_has_role(r.oid, g.oid, 'MEMBER')
          AND (g.rolsuper OR g.rolcreaterole OR g.rolbypassrls OR g.rolreplication OR g.rolname = ANY(%s)))
FROM pg_roles r WHERE r.rolname = %s
"""


class ReaderSetupError(UserError):
    """A reader role that cannot be created as asked (SQLite, a name taken by a privileged role, no permission)."""


@dataclass(frozen=True)
class Reader:
    """A read-only login role made by :func:`create_reader`.

    Attributes
    ----------
    name : str
        The role's name.
    created : bool
        True when the role was created, False when an existing reader was brought up to date.
    url : str
        The database URL to connect as the role, any password shown as ``***``.
    schema : str
        The schema whose tables and views the role may read.
    n_relations : int
        How many tables and views it may read there.
    """

    name: str
    created: bool
    url: str
    schema: str
    n_relations: int


def create_reader(engine: Engine, name: str, *, password: str | None = None) -> Reader:
    """Create (or bring up to date) a PostgreSQL login role that may only read the archive.

    Safe to run again (after ``iracdb db upgrade``, or to change the password): an existing role of that name is
    updated, as long as it is not privileged (it is never stripped of privileges: that is refused instead).

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The archive, connected as a role that may create roles and grant on its tables (its owner with CREATEROLE,
        or a superuser).
    name : str
        The reader's name: lower-case letters, digits and ``_``, not starting with a digit or ``pg_``.
    password : str, optional
        Its password (sent to the server only as a SCRAM-SHA-256 verifier). None: leave it as it is (no password
        for a new role: peer, certificate or trust authentication).

    Returns
    -------
    Reader

    Raises
    ------
    ReaderSetupError
        SQLite (no roles to create), a name held by a privileged role or by the connected role, or the database
        refused (no permission to create roles or to grant).
    iracdb.errors.BadOption
        A name that is not a plain identifier.
    """
    if not backend_for(engine).has_roles:
        raise ReaderSetupError("SQLite has no roles: iracdb sql already reads a SQLite file through an authorizer "
                               "that refuses every write; give it the same --db")
    if not _ROLE_NAME.match(name):
        raise BadOption(f"reader name {name!r}: use lower-case letters, digits and _ (at most 63, not starting "
                        "with a digit or pg_)")
    import psycopg
    from psycopg import sql

    raw = engine.raw_connection()
    try:
        conn: psycopg.Connection[Any] = raw.driver_connection  # type: ignore[assignment]
        conn.rollback()
        conn.autocommit = False
        conn.read_only = False
        role = sql.Identifier(name)
        try:
            with conn.cursor() as cursor:
                cursor.execute(_PG_ROLE_STATE, (list(PRIVILEGED_PG_ROLES), name))
                state = cursor.fetchone()
                if state is not None:
                    _refuse_privileged(name, *state)
                    cursor.execute(sql.SQL("ALTER ROLE {} WITH LOGIN").format(role))
                else:
                    cursor.execute(sql.SQL("CREATE ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                                           "NOREPLICATION NOBYPASSRLS").format(role))
                if password is not None:
                    # Only a verifier crosses the wire, and lands in a server log if statements are logged (as
                    # psql's \password does).
                    verifier = conn.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256")
                    cursor.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
                        role, sql.Literal(verifier.decode("ascii"))))
                # psql and other clients with this URL start read-only too (iracdb sql does whatever the setting).
                cursor.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(role))
                cursor.execute("SELECT current_database(), current_schema()")
                database, schema = cursor.fetchone()  # type: ignore[misc]
                if schema is None:
                    raise ReaderSetupError("the connection has no current schema (search_path): cannot tell where "
                                           "the archive's tables are")
                for statement in (
                    "GRANT CONNECT ON DATABASE {database} TO {role}",
                    "GRANT USAGE ON SCHEMA {schema} TO {role}",
                    "GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}",  # tables and views
                    # Tables and views this role (the one migrating) creates there later: readable too.
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {role}",
                ):
                    cursor.execute(sql.SQL(statement).format(database=sql.Identifier(database),
                                                             schema=sql.Identifier(schema), role=role))
                cursor.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                               "WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'p', 'f') "
                               "AND has_table_privilege(%s, c.oid, 'SELECT')", (schema, name))
                (n_relations,) = cursor.fetchone()  # type: ignore[misc]
            conn.commit()
        except psycopg.Error as exc:
            diag = getattr(exc, "diag", None)
            message = (diag.message_primary if diag is not None else None) or str(exc).splitlines()[0]
            raise ReaderSetupError(f"cannot set up reader role {name!r}: {message} (connect as the archive's owner "
                                   "with CREATEROLE, or as a superuser)") from None
    finally:
        with contextlib.suppress(psycopg.Error):
            raw.driver_connection.rollback()  # type: ignore[union-attr]
        raw.close()
    # URL.set() cannot remove the administrator's password: replace both fields.
    url = engine.url._replace(username=name, password=password)
    return Reader(name=name, created=state is None, url=url.render_as_string(hide_password=True), schema=schema,
                  n_relations=int(n_relations))


def _refuse_privileged(name: str, superuser: bool, createrole: bool, bypassrls: bool, replication: bool,
                       createdb: bool, connected: bool, privileged_groups: str | None) -> None:
    """An existing role is made a reader only if it is one already, bar the grants: never strip a role of powers."""
    powers = [text for flag, text in ((superuser, "a superuser"), (createrole, "CREATEROLE"),
                                      (bypassrls, "BYPASSRLS"), (replication, "REPLICATION"), (createdb, "CREATEDB"),
                                      (connected, "the role connected now"),
                                      (bool(privileged_groups), f"a member of {privileged_groups}")) if flag]
    if powers:
        raise ReaderSetupError(f"role {name!r} exists and is not a plain reader ({', '.join(powers)}): choose "
                               "another NAME")


__all__ = ["Reader", "ReaderSetupError", "create_reader"]
