"""The schema: built only by Alembic, models and migrations in agreement, constraints on both backends."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, inspect, text
from sqlalchemy.exc import IntegrityError

from iracdb.config import resolve_db_url
from iracdb.db import migrate
from iracdb.db.engine import make_engine, safe_url
from iracdb.db.models import Aor, Base, Exposure
from iracdb.errors import BadOption, DatabaseError, SchemaOutOfDate

TABLES = {"aors", "exposures", "files", "rejected_files", "ingest_events"}


def test_upgrade_from_empty_creates_every_table(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision(engine)
    assert TABLES <= set(inspect(engine).get_table_names())
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


def test_metadata_has_only_the_migrated_tables() -> None:
    assert set(Base.metadata.tables) == TABLES


def test_db_url_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IRACDB_DB_URL", raising=False)
    assert resolve_db_url(None) == "sqlite:///iracdb.sqlite"
    monkeypatch.setenv("IRACDB_DB_URL", "postgresql://u@h/d")
    assert resolve_db_url(None) == "postgresql+psycopg://u@h/d"
    assert resolve_db_url("/tmp/x.sqlite") == "sqlite:////tmp/x.sqlite"


def test_passwords_are_hidden() -> None:
    shown = safe_url("postgresql+psycopg://alice:s3cret@db.example/iracdb")
    assert "s3cret" not in shown and "alice" in shown


def test_unsupported_database_is_a_clear_error() -> None:
    with pytest.raises(BadOption, match="SQLite and PostgreSQL"):
        make_engine("mysql://u:pw@h/d")
