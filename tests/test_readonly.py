"""`iracdb sql`'s library function: one read-only statement, refused by the database itself when it would write,
on both backends. Every refused statement must leave every table's rows and the schema as they were, and the
engine must go on writing normally afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, text

from iracdb.db import views
from iracdb.db.engine import is_sqlite, make_engine
from iracdb.db.readonly import QueryError, QueryResult, ReadOnlyViolation, run_read_only
from iracdb.errors import BadOption
from iracdb.ingest import ingest
from iracdb.reduce import ReduceOptions, Target, reduce
from iracdb.synth import AorSpec, SynthArchive, write_archive

GAMMA = AorSpec(aorkey=72000000, channels=(1,), read_mode="FULL", n_exposures=2, mission="warm",
                object_name="GAMMA", ra_deg=65.4695, dec_deg=57.8172, flux_mjy=100.0)
DELTA = AorSpec(aorkey=72000256, channels=(2,), read_mode="FULL", n_exposures=2, mission="warm",
                object_name="DELTA", ra_deg=277.1303, dec_deg=26.8440, flux_mjy=50.0)
AUTO = ReduceOptions(targets=(Target(name="auto"),))

#: Writes and tricks refused on both backends (or, where the database reads them as bad syntax, QueryError).
WRITES = [
    "INSERT INTO run_targets (run_id, target_index, name) SELECT run_id, target_index + 10, name FROM run_targets",
    "UPDATE aor_summaries SET mean_flux_mjy = 0",
    "DELETE FROM measurements",
    "DELETE FROM runs",
    "CREATE TABLE scratch (x integer)",
    "CREATE TEMP TABLE scratch (x integer)",
    "CREATE VIEW scratch AS SELECT 1 AS x",
    "DROP TABLE measurements",
    "DROP VIEW aor_photometry",
    "ALTER TABLE runs ADD COLUMN note text",
    "CREATE INDEX ix_scratch ON runs (host)",
    "WITH gone AS (DELETE FROM runs RETURNING id) SELECT count(*) FROM gone",
    "SELECT 1; DELETE FROM runs",
    "SELECT 1;\nDROP TABLE measurements;",
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
            "fluxes": conn.execute(text("SELECT sum(mean_flux_mjy) FROM aor_summaries")).scalar_one(),
        }
        if is_sqlite(engine):
            for pragma in ("user_version", "journal_mode", "foreign_keys", "query_only"):
                state[pragma] = conn.exec_driver_sql(f"PRAGMA {pragma}").scalar_one()
    return state


def assert_refused(engine: Engine, statement: str) -> None:
    before = snapshot(engine)
    with pytest.raises((ReadOnlyViolation, QueryError)) as refused:
        run_read_only(engine, statement)
    assert "\n" not in str(refused.value)
    assert snapshot(engine) == before
    # The pool is not poisoned: the library still writes through the same engine, and reads normally.
    reduce(engine, "after", AUTO)
    assert run_read_only(engine, "SELECT count(*) FROM aor_photometry WHERE run = 'after'").rows == [(2,)]


def test_views_have_their_documented_columns(reduced: Engine) -> None:
    image = run_read_only(reduced, "SELECT * FROM image_photometry ORDER BY aorkey, expid")
    assert image.columns == views.IMAGE_COLUMN_NAMES
    assert len(image.rows) == 4 and not image.truncated
    aor = run_read_only(reduced, "SELECT * FROM aor_photometry ORDER BY aorkey;")
    assert aor.columns == views.AOR_COLUMN_NAMES
    assert [(row[1], row[2]) for row in aor.rows] == [(GAMMA.aorkey, 1), (DELTA.aorkey, 2)]
    assert all(isinstance(v, int | float | str | bool | None) for row in image.rows + aor.rows for v in row)


@pytest.mark.parametrize("statement", WRITES)
def test_writes_are_refused(reduced: Engine, statement: str) -> None:
    assert_refused(reduced, statement)


@pytest.mark.parametrize("statement", PLAIN_WRITES)
def test_plain_writes_are_read_only_violations(reduced: Engine, statement: str) -> None:
    with pytest.raises(ReadOnlyViolation, match="refused: iracdb sql is read-only"):
        run_read_only(reduced, statement)


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize("statement", POSTGRESQL_TRICKS)
def test_postgresql_tricks_are_refused(reduced: Engine, statement: str) -> None:
    assert_refused(reduced, statement)


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("statement", SQLITE_TRICKS)
def test_sqlite_tricks_are_refused(reduced: Engine, statement: str, tmp_path: Path) -> None:
    assert_refused(reduced, statement.format(tmp=tmp_path))
    assert list(tmp_path.glob("other*")) == [] and list(tmp_path.glob("copy*")) == []


def test_statement_prepared_before_by_the_library_is_still_refused(reduced: Engine) -> None:
    """SQLite caches prepared statements per connection: one compiled before the authorizer must not slip by."""
    statement = "DELETE FROM runs WHERE name = 'no such run'"
    with reduced.begin() as conn:
        conn.exec_driver_sql(statement)
    with pytest.raises(ReadOnlyViolation):
        run_read_only(reduced, statement)


def test_session_state_does_not_outlive_the_call(reduced: Engine) -> None:
    """Whatever a permitted statement does to its session (here a PostgreSQL session lock, which a read-only
    transaction allows) is gone afterwards, and pooled connections are writable again."""
    if not is_sqlite(reduced):
        run_read_only(reduced, "SELECT pg_advisory_lock(4242)")
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
    reduce(reduced, "after", AUTO)


@pytest.mark.parametrize(("max_rows", "n_rows", "truncated"), [(None, 4, False), (5, 4, False), (4, 4, False),
                                                               (3, 3, True), (0, 0, True)])
def test_max_rows(reduced: Engine, max_rows: int | None, n_rows: int, truncated: bool) -> None:
    result = run_read_only(reduced, "SELECT aorkey, expid FROM image_photometry ORDER BY aorkey, expid",
                           max_rows=max_rows)
    assert (len(result.rows), result.truncated) == (n_rows, truncated)
    assert result.rows == run_read_only(reduced, "SELECT aorkey, expid FROM image_photometry ORDER BY aorkey, expid"
                                        ).rows[:n_rows]


def test_negative_max_rows_is_refused(reduced: Engine) -> None:
    with pytest.raises(BadOption, match="0 or more"):
        run_read_only(reduced, "SELECT 1", max_rows=-1)


def test_values_are_plain_python(reduced: Engine) -> None:
    result = run_read_only(
        reduced,
        "SELECT NULL AS missing, dither_scale, n_used, flux_mjy, target, avg(n_used) OVER () AS mean_used "
        "FROM aor_photometry ORDER BY aorkey",
    )
    assert result == QueryResult(columns=("missing", "dither_scale", "n_used", "flux_mjy", "target", "mean_used"),
                                 rows=result.rows, truncated=False)
    for missing, dither_scale, n_used, flux, target, mean_used in result.rows:
        assert missing is None and dither_scale is None
        assert type(n_used) is int and type(flux) is float and target == "auto"
        assert mean_used == 2 and type(mean_used) in (int, float)  # PostgreSQL's numeric is not a Decimal here
    used = run_read_only(reduced, "SELECT used, flag_outlier FROM image_photometry").rows
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
def test_bad_queries(reduced: Engine, statement: str, match: str) -> None:
    with pytest.raises(QueryError, match=match) as error:
        run_read_only(reduced, statement)
    assert "\n" not in str(error.value)


def test_refusals_are_user_errors_with_exit_status_2() -> None:
    assert ReadOnlyViolation("x").exit_code == 2 and QueryError("x").exit_code == 2
