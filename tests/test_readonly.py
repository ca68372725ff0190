"""`iracdb sql`'s library function: one read-only statement, refused by the database itself when it would write,
on both backends. Every refused statement must leave every table's rows and the schema as they were, and the
engine must go on writing normally afterwards.

On PostgreSQL the statements run as a read-only login role (``iracdb db create-reader``): a superuser is refused.
Rows are streamed: a huge result costs no memory, and a runaway statement is cancelled on both backends."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from iracdb import columns
from iracdb.db import readonly
from iracdb.db.engine import make_engine
from iracdb.db.reader import ReaderSetupError, create_reader
from iracdb.db.readonly import (
    PrivilegedRole,
    QueryError,
    QueryResult,
    ReadOnlyViolation,
    run_read_only,
    stream_read_only,
)
from iracdb.errors import BadOption
from iracdb.ingest import ingest
from iracdb.reduce import ReduceOptions, Target, reduce
from iracdb.synth import AorSpec, SynthArchive, write_archive


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


GAMMA = AorSpec(aorkey=72000000, channels=(1,), read_mode="FULL", n_exposures=2, mission="warm",
                object_name="GAMMA", ra_deg=65.4695, dec_deg=57.8172, flux_mjy=100.0)
DELTA = AorSpec(aorkey=72000256, channels=(2,), read_mode="FULL", n_exposures=2, mission="warm",
                object_name="DELTA", ra_deg=277.1303, dec_deg=26.8440, flux_mjy=50.0)
AUTO = ReduceOptions(targets=(Target(name="auto"),))
ROOT = Path(__file__).resolve().parents[1]

#: Writes and tricks refused on both backends (or, where the database reads them as bad syntax, QueryError).
WRITES = [
    "INSERT INTO run_targets (run_id, target_index, name) SELECT run_id, target_index + 10, name FROM run_targets",
    "UPDATE aor_summaries SET flux_mjy = 0",
    "DELETE FROM aperture_fluxes",
    "DELETE FROM runs",
    "CREATE TABLE scratch (x integer)",
    "CREATE TEMP TABLE scratch (x integer)",
    "CREATE VIEW scratch AS SELECT 1 AS x",
    "DROP TABLE measured_images",
    "DROP VIEW aor_photometry",
    "ALTER TABLE runs ADD COLUMN note text",
    "CREATE INDEX ix_scratch ON runs (host)",
    "WITH gone AS (DELETE FROM runs RETURNING id) SELECT count(*) FROM gone",
    "SELECT 1; DELETE FROM runs",
    "SELECT 1;\nDROP TABLE aperture_fluxes;",
    "COMMIT; DELETE FROM runs",
    "BEGIN; DELETE FROM runs",
    "COMMIT",
    "ROLLBACK",
]
#: Plain writes: the database must call them a write (ReadOnlyViolation), not a syntax problem.
PLAIN_WRITES = WRITES[:11]

POSTGRESQL_TRICKS = [
    "SET TRANSACTION READ WRITE",
    "SET TRANSACTION READ WRITE; DELETE FROM runs",
    "SELECT set_config('transaction_read_only', 'off', true)",
    "SELECT nextval(pg_get_serial_sequence('runs', 'id'))",
    "SELECT * FROM runs FOR UPDATE",
    "TRUNCATE runs CASCADE",
    "DO $$ BEGIN DELETE FROM runs; END $$",
    "EXPLAIN ANALYZE DELETE FROM runs",
    "COPY (SELECT 1) TO PROGRAM 'true'",
    "SELECT lo_export(0, '/tmp/iracdb_readonly_test')",
]

SQLITE_TRICKS = [
    "PRAGMA query_only = OFF",
    "PRAGMA foreign_keys = OFF",
    "PRAGMA user_version = 7",
    "PRAGMA journal_mode = DELETE",
    "ATTACH DATABASE '{tmp}/other.sqlite' AS other",
    "VACUUM",
    "VACUUM INTO '{tmp}/copy.sqlite'",
    "REINDEX",
    "ANALYZE",
    "SELECT load_extension('{tmp}/nothing')",
    "SELECT * FROM pragma_table_info('runs')",
]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    return write_archive(tmp_path_factory.mktemp("readonly") / "archive", [GAMMA, DELTA], seed=5, truth_csv=False)


@pytest.fixture
def reduced(engine: Engine, archive: SynthArchive) -> Engine:
    """A catalogue of two AORs (one channel each, two frames each), reduced once as run ``r1``."""
    assert ingest(engine, [str(archive.root)]).n_rejected == 0
    reduce(engine, "r1", AUTO)
    return engine


@pytest.fixture
def reader(reduced: Engine, reader_url: str) -> Iterator[Engine]:
    """``reduced`` as ``iracdb sql`` opens it: on PostgreSQL as a read-only role; on SQLite the very same engine
    (whose pool must not be poisoned by a refused statement)."""
    if is_sqlite(reduced):
        yield reduced
        return
    engine = make_engine(reader_url)
    yield engine
    engine.dispose()


def snapshot(engine: Engine) -> dict:
    """Every table's row count and columns, the views, the indexes (and SQLite's header settings)."""
    schema = inspect(engine)
    tables = sorted(schema.get_table_names())
    with engine.connect() as conn:
        state = {
            "tables": tables,
            "views": sorted(schema.get_view_names()),
            "temp": sorted(schema.get_temp_table_names()) if is_sqlite(engine) else [],
            "columns": {t: [c["name"] for c in schema.get_columns(t)] for t in tables},
            "indexes": {t: sorted(str(i["name"]) for i in schema.get_indexes(t)) for t in tables},
            "rows": {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in tables},
            "fluxes": conn.execute(text("SELECT sum(flux_mjy) FROM aor_summaries")).scalar_one(),
        }
        if is_sqlite(engine):
            for pragma in ("user_version", "journal_mode", "foreign_keys", "query_only"):
                state[pragma] = conn.exec_driver_sql(f"PRAGMA {pragma}").scalar_one()
    return state


def assert_refused(engine: Engine, reader: Engine, statement: str) -> None:
    before = snapshot(engine)
    with pytest.raises((ReadOnlyViolation, QueryError)) as refused:
        run_read_only(reader, statement)
    assert "\n" not in str(refused.value)
    assert snapshot(engine) == before
    # The pool is not poisoned: the library still writes through the same engine, and reads normally.
    reduce(engine, "after", AUTO)
    assert run_read_only(reader, "SELECT count(*) FROM aor_photometry WHERE run = 'after'").rows == [(2,)]


def test_views_have_their_documented_columns(reader: Engine) -> None:
    image = run_read_only(reader, "SELECT * FROM image_photometry ORDER BY aorkey, expid")
    assert image.columns == columns.IMAGE_COLUMN_NAMES
    assert len(image.rows) == 4 and not image.truncated
    aor = run_read_only(reader, "SELECT * FROM aor_photometry ORDER BY aorkey;")
    assert aor.columns == columns.AOR_COLUMN_NAMES
    assert [(row[1], row[2]) for row in aor.rows] == [(GAMMA.aorkey, 1), (DELTA.aorkey, 2)]
    assert all(isinstance(v, int | float | str | bool | None) for row in image.rows + aor.rows for v in row)


@pytest.mark.parametrize("statement", WRITES)
def test_writes_are_refused(reduced: Engine, reader: Engine, statement: str) -> None:
    assert_refused(reduced, reader, statement)


@pytest.mark.parametrize("statement", PLAIN_WRITES)
def test_plain_writes_are_read_only_violations(reader: Engine, statement: str) -> None:
    with pytest.raises(ReadOnlyViolation, match="refused: iracdb sql is read-only"):
        run_read_only(reader, statement)


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize("statement", POSTGRESQL_TRICKS)
def test_postgresql_tricks_are_refused(reduced: Engine, reader: Engine, statement: str) -> None:
    assert_refused(reduced, reader, statement)


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("statement", SQLITE_TRICKS)
def test_sqlite_tricks_are_refused(reduced: Engine, reader: Engine, statement: str, tmp_path: Path) -> None:
    assert_refused(reduced, reader, statement.format(tmp=tmp_path))
    assert list(tmp_path.glob("other*")) == [] and list(tmp_path.glob("copy*")) == []


def test_statement_prepared_before_by_the_library_is_still_refused(reduced: Engine, reader: Engine) -> None:
    """SQLite caches prepared statements per connection: one compiled before the authorizer must not slip by."""
    statement = "DELETE FROM runs WHERE name = 'no such run'"
    with reduced.begin() as conn:
        conn.exec_driver_sql(statement)
    with pytest.raises(ReadOnlyViolation):
        run_read_only(reader, statement)


def test_session_state_does_not_outlive_the_call(reduced: Engine, reader: Engine) -> None:
    """Whatever a permitted statement does to its session (here a PostgreSQL session lock, which a read-only
    transaction allows) is gone afterwards, and pooled connections are writable again."""
    if not is_sqlite(reduced):
        run_read_only(reader, "SELECT pg_advisory_lock(4242)")
        other = make_engine(reduced.url.render_as_string(hide_password=False))
        with other.connect() as conn:
            assert conn.execute(text("SELECT pg_try_advisory_lock(4242)")).scalar_one() is True
        other.dispose()
    with reduced.connect() as conn:
        if is_sqlite(reduced):
            assert conn.exec_driver_sql("PRAGMA query_only").scalar_one() == 0
        else:
            assert conn.execute(text("SHOW transaction_read_only")).scalar_one() == "off"
            assert conn.execute(text("SELECT current_user = session_user")).scalar_one() is True
    if not is_sqlite(reduced):
        run_read_only(reader, "SELECT set_config('search_path', 'nowhere', false)")
        with reader.connect() as conn:  # the reader's own pool: no role or setting left over
            assert conn.execute(text("SELECT current_user = session_user")).scalar_one() is True
            assert conn.execute(text("SHOW search_path")).scalar_one() != "nowhere"
    reduce(reduced, "after", AUTO)


@pytest.mark.parametrize(("max_rows", "n_rows", "truncated"), [(None, 4, False), (5, 4, False), (4, 4, False),
                                                               (3, 3, True), (0, 0, True)])
def test_max_rows(reader: Engine, max_rows: int | None, n_rows: int, truncated: bool) -> None:
    result = run_read_only(reader, "SELECT aorkey, expid FROM image_photometry ORDER BY aorkey, expid",
                           max_rows=max_rows)
    assert (len(result.rows), result.truncated) == (n_rows, truncated)
    assert result.rows == run_read_only(reader, "SELECT aorkey, expid FROM image_photometry ORDER BY aorkey, expid"
                                        ).rows[:n_rows]
    assert result.columns == ("aorkey", "expid")


def test_negative_max_rows_is_refused(reader: Engine) -> None:
    with pytest.raises(BadOption, match="0 or more"):
        run_read_only(reader, "SELECT 1", max_rows=-1)


def test_values_are_plain_python(reduced: Engine, reader: Engine) -> None:
    result = run_read_only(
        reader,
        "SELECT NULL AS missing, dither_scale, n_used, flux_mjy, target, avg(n_used) OVER () AS mean_used "
        "FROM aor_photometry ORDER BY aorkey",
    )
    assert result == QueryResult(columns=("missing", "dither_scale", "n_used", "flux_mjy", "target", "mean_used"),
                                 rows=result.rows, truncated=False)
    for missing, dither_scale, n_used, flux, target, mean_used in result.rows:
        assert missing is None and dither_scale is None
        assert type(n_used) is int and type(flux) is float and target == "auto"
        assert mean_used == 2 and type(mean_used) in (int, float)  # PostgreSQL's numeric is not a Decimal here
    used = run_read_only(reader, "SELECT used, flag_outlier FROM image_photometry").rows
    expected = (True, False) if not is_sqlite(reduced) else (1, 0)  # SQLite has no boolean type
    assert set(used) == {expected} and all(type(v) is type(expected[0]) for row in used for v in row)


@pytest.mark.parametrize(("statement", "match"), [
    ("SELECT * FROM no_such_table", "no_such_table.*list every table and view with: SELECT"),
    ("SELECT no_such_column FROM aor_photometry", "no_such_column"),
    ("SELEC 1", "syntax"),
    ("", "no SQL given"),
    ("  \n ", "no SQL given"),
    ("SELECT 1; SELECT 2", "one statement at a time"),
])
def test_bad_queries(reader: Engine, statement: str, match: str) -> None:
    with pytest.raises(QueryError, match=match) as error:
        run_read_only(reader, statement)
    assert "\n" not in str(error.value)


def test_refusals_are_user_errors_with_exit_status_2() -> None:
    assert ReadOnlyViolation("x").exit_code == 2 and QueryError("x").exit_code == 2


# --- PostgreSQL: never as a superuser, and the escape routes of a superuser session closed --------------------------

#: What a superuser's read-only transaction still let through (issue 10): each must fail as the reader, changing
#: nothing. {admin}: the superuser of the test server; {tmp}: a folder a server program would write into.
ESCAPES = [
    "SELECT set_config('role', '{admin}', true), current_user",
    "SET ROLE {admin}",
    "SET SESSION AUTHORIZATION {admin}",
    "SELECT query_to_xml('SELECT pg_read_file(''/etc/passwd'')', true, true, '')",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT pg_ls_dir('.')",
    "SELECT lo_import('/etc/passwd')",
    "DO $$ BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {tmp}/escaped'''; END $$",
    "COPY (SELECT 1) TO '{tmp}/escaped'",
    "SELECT rolname, rolpassword FROM pg_authid",
    "SELECT * FROM query_to_xml('SELECT rolpassword FROM pg_authid', true, true, '')",
]


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize("statement", ESCAPES)
def test_escape_routes_are_refused_for_the_reader(reduced: Engine, reader: Engine, statement: str,
                                                  tmp_path: Path) -> None:
    tmp_path.chmod(0o777)  # the server (another user) could write here if it were allowed to
    assert_refused(reduced, reader, statement.format(admin=reduced.url.username, tmp=tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize("statement", [ESCAPES[0], ESCAPES[7], "SELECT 1"])
def test_a_superuser_is_refused_before_the_statement_runs(reduced: Engine, statement: str, tmp_path: Path) -> None:
    """The issue's attack: as a superuser, one statement switched the role back and ran a program on the server."""
    tmp_path.chmod(0o777)
    before = snapshot(reduced)
    secret = reduced.url.set(password="s3cretPW")  # trust authentication ignores it
    engine = make_engine(secret.render_as_string(hide_password=False))
    try:
        with pytest.raises(PrivilegedRole) as refused:
            run_read_only(engine, statement.format(admin=reduced.url.username, tmp=tmp_path))
    finally:
        engine.dispose()
    message = str(refused.value)
    assert "\n" not in message and "s3cretPW" not in message
    assert f"role {reduced.url.username!r}: it is a superuser" in message
    assert "iracdb db create-reader NAME" in message and "$IRACDB_READER_URL" in message
    assert list(tmp_path.iterdir()) == [] and snapshot(reduced) == before


@pytest.fixture
def make_role(pg_server: Any, engine: Engine) -> Iterator[Callable[[str], str]]:
    """Make a role (LOGIN unless NOLOGIN; cluster-wide: a unique name, dropped at the end) from SQL options and
    memberships (``"CREATEROLE"``, ``"IN ROLE pg_read_server_files"``); returns its name."""
    made: list[str] = []

    def make(options: str) -> str:
        name = f"iracdb_test_role_{uuid.uuid4().hex[:10]}"
        with pg_server.admin.connect() as conn:
            login = "" if "NOLOGIN" in options else "LOGIN"
            conn.execute(text(f"CREATE ROLE {name} {login} {options}"))
        made.append(name)
        return name

    yield make
    with engine.connect() as conn:  # privileges create_reader granted in the test's database
        for name in made:
            conn.execute(text(f"DROP OWNED BY {name}"))
        conn.commit()
    with pg_server.admin.connect() as conn:
        for name in reversed(made):
            conn.execute(text(f"DROP ROLE IF EXISTS {name}"))


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize(("options", "reason"), [
    ("SUPERUSER", "it is a superuser"),
    ("CREATEROLE", "it has CREATEROLE"),
    ("BYPASSRLS", "it has BYPASSRLS"),
    ("REPLICATION", "it has REPLICATION"),
    ("IN ROLE pg_read_server_files", "it is a member of 'pg_read_server_files', which reads server files"),
    ("IN ROLE pg_write_server_files", "member of 'pg_write_server_files', which writes server files"),
    ("IN ROLE pg_execute_server_program", "member of 'pg_execute_server_program', which runs programs"),
    ("IN ROLE pg_read_all_data", "member of 'pg_read_all_data', which reads every table, pg_authid"),
    ("IN ROLE {admin}", "it is a member of '{admin}', which is a superuser"),  # may SET ROLE back to it
    ("IN ROLE {powerful}", "it is a member of '{powerful}', which has CREATEROLE"),  # indirectly, through a group
])
def test_privileged_roles_are_refused(reduced: Engine, reader_url: str, make_role: Callable[[str], str],
                                      options: str, reason: str) -> None:
    admin = reduced.url.username or ""
    powerful = make_role("NOLOGIN CREATEROLE")
    group = make_role(f"NOLOGIN IN ROLE {powerful}")
    names = {"admin": admin, "powerful": group if "powerful" in options else powerful}
    role = make_role(options.format(**names))
    engine = make_engine(make_url(reader_url).set(username=role).render_as_string(hide_password=False))
    try:
        with pytest.raises(PrivilegedRole, match=re.escape(reason.format(admin=admin, powerful=powerful))):
            run_read_only(engine, "SELECT count(*) FROM runs")
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql"])
def test_an_ordinary_role_is_not_refused(reduced: Engine, reader_url: str, make_role: Callable[[str], str]) -> None:
    """Not only the role create-reader makes: any role that cannot get round a read-only transaction (here a member
    of an ordinary group, with CREATEDB) may run iracdb sql; what it may read is the database's business."""
    group = make_role("NOLOGIN")
    role = make_role(f"CREATEDB IN ROLE {group}")
    with reduced.connect() as conn:
        conn.execute(text(f"GRANT SELECT ON runs TO {group}"))
        conn.commit()
    engine = make_engine(make_url(reader_url).set(username=role).render_as_string(hide_password=False))
    try:
        assert run_read_only(engine, "SELECT count(*) FROM runs").rows == [(1,)]
        denied = f"role '{role}' may only read .* permission denied for (table|view)"
        with pytest.raises(ReadOnlyViolation, match=denied):
            run_read_only(engine, "SELECT count(*) FROM measurements")
    finally:
        engine.dispose()
        with reduced.connect() as conn:
            conn.execute(text(f"REVOKE ALL ON runs FROM {group}"))
            conn.commit()


# --- iracdb db create-reader ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql"])
def test_create_reader_makes_a_role_that_can_only_read(reduced: Engine, make_role: Callable[[str], str]) -> None:
    name = make_role("NOLOGIN")  # an existing plain role (dropped at the end) is taken over
    reader = create_reader(reduced, name, password="pw-never-shown")
    assert (reader.name, reader.created, reader.schema) == (name, False, "public")
    assert reader.url == reduced.url.set(username=name, password="x").render_as_string(hide_password=True)
    assert "pw-never-shown" not in repr(reader)
    n_views = len(inspect(reduced).get_view_names())
    assert reader.n_relations == len(inspect(reduced).get_table_names()) + n_views
    with reduced.connect() as conn:
        attributes = conn.execute(text(
            "SELECT a.rolcanlogin, a.rolsuper, a.rolcreatedb, a.rolcreaterole, a.rolreplication, a.rolbypassrls, "
            "left(a.rolpassword, 14), r.rolconfig FROM pg_authid a JOIN pg_roles r ON r.oid = a.oid "
            "WHERE a.rolname = :name"), {"name": name}).one()
        memberships = conn.execute(text("SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
                                        "WHERE r.rolname = :name"), {"name": name}).scalar_one()
    assert tuple(attributes) == (True, False, False, False, False, False, "SCRAM-SHA-256$",
                                 ["default_transaction_read_only=on"])
    assert memberships == 0
    # The database itself, not iracdb sql, refuses everything but reading the archive; even read-write.
    as_reader = make_engine(reduced.url.set(username=name).render_as_string(hide_password=False))
    try:
        with as_reader.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM runs")).scalar_one() == 1
            assert conn.execute(text("SELECT count(*) FROM aor_photometry")).scalar_one() == 2
            assert conn.execute(text("SELECT count(*) FROM image_photometry")).scalar_one() == 4
            conn.execute(text("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"))
            conn.commit()
            for statement in ("INSERT INTO run_targets (run_id, target_index, name) SELECT run_id, target_index + 10, "
                              "name FROM run_targets", "DELETE FROM runs", "CREATE TABLE public.scratch (x int)",
                              "SELECT rolpassword FROM pg_authid", "SELECT pg_read_file('/etc/passwd')",
                              f"SET ROLE {reduced.url.username}"):
                with pytest.raises(ProgrammingError, match="permission denied"):
                    conn.execute(text(statement))
                conn.rollback()
    finally:
        as_reader.dispose()


@pytest.mark.parametrize("backend", ["postgresql"])
def test_create_reader_again_updates_and_covers_new_tables(reduced: Engine, reader_url: str) -> None:
    """Run again (after a migration): the same role, still a reader; a table the owner adds later is readable."""
    name = make_url(reader_url).username or ""
    again = create_reader(reduced, name)
    assert (again.name, again.created) == (name, False)
    assert again.url == reduced.url.set(username=name).render_as_string(hide_password=True)  # no password shown
    with reduced.connect() as conn:  # what a later `iracdb db upgrade` by the same owner does
        conn.execute(text("CREATE TABLE later_table (x integer)"))
        conn.execute(text("INSERT INTO later_table VALUES (7)"))
        conn.execute(text("CREATE VIEW later_view AS SELECT x * 2 AS y FROM later_table"))
        conn.commit()
    reader = make_engine(reader_url)
    try:
        assert run_read_only(reader, "SELECT x, (SELECT y FROM later_view) FROM later_table").rows == [(7, 14)]
    finally:
        reader.dispose()


@pytest.mark.parametrize("backend", ["postgresql"])
def test_create_reader_never_takes_over_a_privileged_role(reduced: Engine, make_role: Callable[[str], str]) -> None:
    admin = reduced.url.username or ""
    member = make_role("IN ROLE pg_read_server_files")
    for name, why in ((admin, "a superuser"), (make_role("CREATEROLE"), "CREATEROLE"),
                      (member, "a member of pg_read_server_files")):
        with pytest.raises(ReaderSetupError, match=f"role '{name}' exists and is not a plain reader .*{why}"):
            create_reader(reduced, name)
    with reduced.connect() as conn:
        assert conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = :n"), {"n": admin}).scalar_one()
        assert conn.execute(text("SELECT has_table_privilege(:n, 'runs', 'SELECT')"), {"n": member}).scalar_one() \
            is False


@pytest.mark.parametrize("name", ["Reader", "pg_reader", "1reader", "reader; DROP TABLE runs", "r" * 64, ""])
def test_create_reader_refuses_names_that_are_not_plain_identifiers(reduced: Engine, name: str) -> None:
    if is_sqlite(reduced):
        with pytest.raises(ReaderSetupError, match="SQLite has no roles"):
            create_reader(reduced, name)
        return
    with pytest.raises(BadOption, match="use lower-case letters"):
        create_reader(reduced, name)
    assert "runs" in inspect(reduced).get_table_names()


# --- streaming and the time limit -----------------------------------------------------------------------------------

#: Rows without end, for all practical purposes (50 million), streamed by both databases as they are produced.
HUGE = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 50000000) SELECT x, x * 2 AS y FROM r"
#: A statement that never ends.
RUNAWAY = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT count(*) FROM r"
#: 25,000 rows of 4 kB: 100 MB that nothing may hold at once.
WIDE = {
    "sqlite": "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 25000) "
              "SELECT x, replace(hex(zeroblob(2000)), '0', 'x') AS pad FROM r",
    "postgresql": "SELECT x, repeat('x', 4000) AS pad FROM generate_series(1, 25000) AS x",
}


def test_a_huge_result_is_streamed_and_cut_at_max_rows(reader: Engine) -> None:
    result = run_read_only(reader, HUGE, max_rows=5)
    assert result == QueryResult(columns=("x", "y"), rows=[(i, 2 * i) for i in range(1, 6)], truncated=True)
    with stream_read_only(reader, HUGE) as stream:  # no limit: rows come as they are asked for, not all first
        assert stream.columns == ("x", "y")
        assert list(itertools.islice(stream, 3)) == [(1, 2), (2, 4), (3, 6)]
    assert run_read_only(reader, "SELECT count(*) FROM runs").rows == [(1,)]  # the connection was released


def test_an_empty_result_still_has_its_columns(reader: Engine) -> None:
    for limit in (None, 0, 3):
        result = run_read_only(reader, "SELECT aorkey, expid AS exposure FROM image_photometry WHERE false",
                               max_rows=limit)
        assert result == QueryResult(columns=("aorkey", "exposure"), rows=[], truncated=False)


def test_an_error_while_rows_stream_is_one_line(reader: Engine) -> None:
    """PostgreSQL runs into the error after it sent rows; the stream raises it as a QueryError."""
    statement = "SELECT x, 1 / (3 - x) AS y FROM (SELECT 1 AS x UNION ALL SELECT 2 UNION ALL SELECT 3) AS t ORDER BY x"
    if is_sqlite(reader):  # SQLite's 1 / 0 is NULL
        statement = "SELECT x, abs(-9223372036854775807 - x) FROM (SELECT 0 AS x UNION ALL SELECT 1) AS t ORDER BY x"
    with pytest.raises(QueryError, match=r"(division by zero|integer overflow)") as error:
        run_read_only(reader, statement)
    assert "\n" not in str(error.value)


def test_a_runaway_statement_is_cancelled(reduced: Engine, reader: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readonly, "STATEMENT_TIMEOUT_S", 0.5)
    with pytest.raises(QueryError, match=r"^statement cancelled after 0.5 s \(the time limit of iracdb sql\)"):
        run_read_only(reader, RUNAWAY)
    # The time limit, like the authorizer, is not left on a pooled connection. On SQLite its deadline has passed:
    # left behind, the handler would interrupt the next statement of more than a few thousand steps.
    conns = [reader.connect() for _ in range(max(1, reader.pool.checkedin()))]  # type: ignore[attr-defined]
    try:
        for conn in conns:
            assert conn.exec_driver_sql("WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r "
                                        "WHERE x < 100000) SELECT count(*) FROM r").scalar_one() == 100000
    finally:
        for conn in conns:
            conn.close()
    monkeypatch.setattr(readonly, "STATEMENT_TIMEOUT_S", 300)
    reduce(reduced, "after", AUTO)
    assert run_read_only(reader, "SELECT count(*) FROM aor_photometry WHERE run = 'after'").rows == [(2,)]


#: Runs `iracdb` in a child process and writes its exit status and peak resident memory [kB] into argv[1].
_PEAK_RSS = """
import resource, sys
from iracdb.cli import app
try:
    app(sys.argv[2:], prog_name="iracdb")
except SystemExit as stop:
    status = stop.code
with open(sys.argv[1], "w") as out:
    out.write(f"{status} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
"""


def _peak_rss_mb(tmp_path: Path, *args: str) -> float:
    """Peak resident memory [MB] of `iracdb ARGS` in a child process, its output sent to /dev/null."""
    report = tmp_path / f"peak_{uuid.uuid4().hex}.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", _PEAK_RSS, str(report), *args], env=env, stdout=subprocess.DEVNULL,
                   check=True, timeout=300)
    status, peak_kb = report.read_text().split()
    assert status in ("0", "None"), status
    return int(peak_kb) / 1024


#: Peak memory [MB] of `iracdb sql "SELECT 1"` per backend: what the child costs before any row.
_BASE_RSS_MB: dict[str, float] = {}


@pytest.mark.parametrize("args", [("--format", "json"), ("--format", "csv"), ("--max-rows", "5")])
def test_output_is_streamed_in_little_memory(backend: str, reader_url: str, tmp_path: Path,
                                             args: tuple[str, ...]) -> None:
    """csv and json of 100 MB of rows, and the first rows of 50 million: a child's peak memory stays near that of
    `SELECT 1` (holding the rows would take well over 100 MB)."""
    if backend not in _BASE_RSS_MB:
        _BASE_RSS_MB[backend] = _peak_rss_mb(tmp_path, "sql", "SELECT 1", "--format", "json", "--db", reader_url)
    statement = HUGE if args[0] == "--max-rows" else WIDE[backend]
    peak = _peak_rss_mb(tmp_path, "sql", statement, *args, "--db", reader_url)
    assert peak - _BASE_RSS_MB[backend] < 40, (_BASE_RSS_MB[backend], peak)
