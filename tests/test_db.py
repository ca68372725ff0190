"""The schema: built only by Alembic, models and migrations in agreement, constraints on both backends."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, inspect, text
from sqlalchemy.exc import IntegrityError

from iracdb.config import resolve_db_url
from iracdb.db import migrate
from iracdb.db.engine import make_engine, safe_url
from iracdb.db.models import Aor, Base, Exposure, File, IngestEvent, RejectedFile
from iracdb.errors import BadOption, DatabaseError, SchemaOutOfDate

TABLES = {
    "aors", "exposures", "files", "rejected_files", "ingest_events",
    "runs", "run_targets", "run_units", "run_inputs", "measured_images", "aperture_fluxes", "aor_summaries",
    "run_apertures",
}
VIEWS = {"measurements", "image_photometry", "aor_photometry", "best_photometry"}


def test_upgrade_from_empty_creates_every_table(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision(engine)
    assert TABLES <= set(inspect(engine).get_table_names())
    assert VIEWS <= set(inspect(engine).get_view_names())
    engine.dispose()


def test_models_and_migrations_agree(engine) -> None:
    migrate.check(engine)  # raises DatabaseError on any difference


def test_check_detects_a_model_change(engine) -> None:
    from sqlalchemy import Column, Integer

    column = Column("not_in_migrations", Integer)
    Exposure.__table__.append_column(column)
    try:
        with pytest.raises(DatabaseError, match="models and migrations differ"):
            migrate.check(engine)
    finally:
        Exposure.__table__._columns.remove(column)
    migrate.check(engine)


def test_downgrade_one_step_and_back(engine) -> None:
    head = migrate.head_revision(engine)
    migrate.downgrade(engine, "-1")
    previous = migrate.current_revision(engine)
    assert previous != head
    if previous is None:  # the first revision: downgrading it removes the catalogue
        assert not TABLES & set(inspect(engine).get_table_names())
    else:
        with pytest.raises(SchemaOutOfDate, match="iracdb db upgrade"):
            migrate.ensure_schema(engine)
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == head
    assert TABLES <= set(inspect(engine).get_table_names())
    migrate.check(engine)


def test_brand_new_database_gets_the_schema(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    migrate.ensure_schema(engine)
    assert migrate.current_revision(engine) == migrate.head_revision(engine)
    engine.dispose()


def test_outdated_database_is_never_migrated_silently(engine, newer_migrations) -> None:
    before = migrate.current_revision(engine)
    with pytest.raises(SchemaOutOfDate, match="run `iracdb db upgrade`"):
        migrate.ensure_schema(engine)
    assert migrate.current_revision(engine) == before  # untouched
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == "9000_test_next"
    migrate.ensure_schema(engine)


def test_the_scripts_head_read_from_their_text_is_alembics(newer_migrations: Path) -> None:
    """ensure_schema's quick check (no Alembic import) reads the head from the scripts' text: the same as Alembic's,
    also with a newer script added."""
    assert migrate.scripts_head() == migrate.head_revision(make_engine("sqlite://")) == "9000_test_next"
    (newer_migrations / "versions" / "9001_branch.py").write_text('revision = "9001_branch"\ndown_revision = "0001"\n')
    migrate._scripts_head.cache_clear()
    assert migrate.scripts_head() is None  # two heads: Alembic decides


def test_database_of_a_newer_iracdb_is_refused(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(SchemaOutOfDate, match="newer than this iracdb knows"):
        migrate.ensure_schema(engine)


def test_foreign_database_is_refused(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE somebody_elses (x INTEGER)"))
    with pytest.raises(DatabaseError, match="not an iracdb database"):
        migrate.ensure_schema(engine)
    engine.dispose()


def _aor(aorkey: int) -> dict:
    return {"aorkey": aorkey, "updated_at": datetime.now(UTC)}


def _exposure(aorkey: int, expid: int = 0) -> dict:
    return {
        "aorkey": aorkey,
        "channel": 1,
        "expid": expid,
        "dcenum": 0,
        "mission": "warm",
        "mjd_obs": 56000.0,
        "n_planes": 1,
        "header_source_kind": "bcd",
    }


def test_duplicate_exposure_is_impossible(engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Aor), [_aor(1)])
        conn.execute(insert(Exposure), [_exposure(1)])
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(Exposure), [_exposure(1)])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM exposures")).scalar_one() == 1


def test_foreign_keys_are_enforced(engine) -> None:
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(Exposure), [_exposure(999)])


def _file(exposure_id: int, kind: str = "bcd") -> dict:
    return {
        "exposure_id": exposure_id,
        "path": f"/archive/{exposure_id}_{kind}.fits",
        "kind": kind,
        "size_bytes": 1,
        "mtime_ns": 1,
        "sha256": "0" * 64,
        "header_text": "",
        "n_header_cards": 0,
        "ingested_at": datetime.now(UTC),
    }


@pytest.mark.parametrize(
    ("table", "values"),
    [
        (Exposure, {"channel": 7}),
        (Exposure, {"channel": 0}),
        (Exposure, {"mission": "lukewarm"}),
        (Aor, {"mission": "lukewarm"}),
        (File, {"kind": "bcdx"}),
        (File, {"kind": "BCD"}),
    ],
)
def test_check_constraints_refuse_values_outside_their_sets(engine, table, values: dict) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Aor), [_aor(1)])
        exposure_id = conn.execute(insert(Exposure).returning(Exposure.id), [_exposure(1)]).scalar_one()
    row = {Aor: _aor(2), Exposure: _exposure(1, expid=1), File: _file(exposure_id)}[table] | values
    with pytest.raises(IntegrityError, match=r"(?i)check"), engine.begin() as conn:
        conn.execute(insert(table), [row])
    with engine.begin() as conn:  # the same rows with allowed values go in
        good = {Aor: {"mission": "cryo"}, Exposure: {"channel": 4, "mission": "cryo"}, File: {"kind": "msk2d"}}[table]
        conn.execute(insert(table), [row | good])


def test_header_strings_and_paths_have_no_length_limit(engine) -> None:
    long = "X" * 5000  # longer than any VARCHAR(n) guess; PostgreSQL would refuse it in a VARCHAR(200)
    with engine.begin() as conn:
        conn.execute(insert(Aor), [_aor(1) | {"object": long, "aor_label": long, "aot_type": long, "read_mode": long}])
        header = dict.fromkeys(("creator", "object", "fovname", "read_mode", "hdr_frame", "dither_scale"), long)
        exposure = _exposure(1) | header | {"bunit": long, "date_obs": long}
        exposure_id = conn.execute(insert(Exposure).returning(Exposure.id), [exposure]).scalar_one()
        conn.execute(insert(File), [_file(exposure_id) | {"path": "/" + "p" * 2000}])
        conn.execute(
            insert(RejectedFile),
            [
                {
                    "path": "/" + "r" * 2000,
                    "reason": long,
                    "size_bytes": 0,
                    "mtime_ns": 0,
                    "rejected_at": datetime.now(UTC),
                }
            ],
        )
    with engine.connect() as conn:
        assert conn.execute(text("SELECT length(object) FROM aors")).scalar_one() == 5000


def test_indexes_serve_the_foreign_keys_without_redundancy(engine) -> None:
    inspector = inspect(engine)
    files = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes("files")}
    rejected = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes("rejected_files")}
    assert files.get("ix_files_ingest_id") == ["ingest_id"]
    assert rejected.get("ix_rejected_files_ingest_id") == ["ingest_id"]
    assert "ix_files_exposure_id" not in files  # the unique (exposure_id, kind) constraint's index covers it
    unique = {tuple(uq["column_names"]) for uq in inspector.get_unique_constraints("files")}
    assert ("exposure_id", "kind") in unique


def test_deleting_an_ingest_event_keeps_its_files(engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Aor), [_aor(1)])
        exposure_id = conn.execute(insert(Exposure).returning(Exposure.id), [_exposure(1)]).scalar_one()
        event = {"started_at": datetime.now(UTC), "roots": "[]", "software_version": "test"}
        ingest_id = conn.execute(insert(IngestEvent).returning(IngestEvent.id), [event]).scalar_one()
        conn.execute(insert(File), [_file(exposure_id) | {"ingest_id": ingest_id}])
        conn.execute(text("DELETE FROM ingest_events"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT ingest_id FROM files")).all() == [(None,)]


def test_downgraded_to_empty_is_empty_again(engine) -> None:
    migrate.downgrade(engine, "base")
    assert "alembic_version" in inspect(engine).get_table_names()  # what Alembic leaves behind
    migrate.ensure_schema(engine)  # not "not an iracdb database": the schema is created again
    assert migrate.current_revision(engine) == migrate.head_revision(engine)
    migrate.check(engine)


@pytest.mark.parametrize(
    ("direction", "revision"),
    [("upgrade", "nosuchrev"), ("upgrade", "+3"), ("downgrade", "nosuchrev"), ("downgrade", "-9")],
)
def test_unknown_revision_is_a_bad_option(engine, direction: str, revision: str) -> None:
    before = migrate.current_revision(engine)
    with pytest.raises(BadOption, match=f"cannot migrate to revision '{re.escape(revision)}'"):
        getattr(migrate, direction)(engine, revision)
    assert migrate.current_revision(engine) == before


def test_metadata_has_only_the_migrated_tables() -> None:
    assert set(Base.metadata.tables) == TABLES


def test_db_url_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IRACDB_DB_URL", raising=False)
    assert resolve_db_url(None) == "sqlite:///iracdb.sqlite"
    monkeypatch.setenv("IRACDB_DB_URL", "postgresql://u@h/d")
    assert resolve_db_url(None) == "postgresql+psycopg://u@h/d"
    assert resolve_db_url("/tmp/x.sqlite") == "sqlite:////tmp/x.sqlite"
    assert resolve_db_url("C:/data/x.sqlite") == "sqlite:///C:/data/x.sqlite"  # a Windows drive, not a scheme


@pytest.mark.parametrize("value", ["postgresql+psycopg:/alice:s3cret@host/db", "sqlite:/x.sqlite", "postgres:s3cret@h"])
def test_mistyped_url_is_not_taken_as_a_file(value: str) -> None:
    with pytest.raises(BadOption, match="malformed scheme separator; expected scheme://") as info:
        resolve_db_url(value)
    assert "s3cret" not in str(info.value) and value not in str(info.value)


@pytest.mark.parametrize(
    "url", ["postgresql+psycopg://alice:s3cret@host:notaport/db", "postgresql+psycopg//alice:s3cret@host/db"]
)
def test_unparseable_url_is_never_repeated(url: str) -> None:
    with pytest.raises(BadOption, match="not a database URL") as info:
        make_engine(url)
    assert "s3cret" not in str(info.value) and info.value.__cause__ is None and info.value.__suppress_context__
    assert "s3cret" not in safe_url(url)


def test_passwords_are_hidden() -> None:
    shown = safe_url("postgresql+psycopg://alice:s3cret@db.example/iracdb")
    assert "s3cret" not in shown and "alice" in shown


def test_unsupported_database_is_a_clear_error() -> None:
    with pytest.raises(BadOption, match="SQLite and PostgreSQL"):
        make_engine("mysql://u:pw@h/d")
