"""Shared fixtures: a fresh, migrated database per test on each backend (SQLite always, PostgreSQL for real).

PostgreSQL comes from ``IRACDB_TEST_PG_URL`` (a URL of a database the tests may connect to in order to create and
drop their own ``iracdb_test_*`` databases). With ``IRACDB_REQUIRE_PG=1`` (set by ``make test`` and ``.ci/run``)
a PostgreSQL test that cannot reach the server fails instead of skipping, and the run fails if no PostgreSQL test
passed.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from iracdb.db import migrate
from iracdb.db.engine import make_engine

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data"
SUBARRAY_AOR_DIR = SHARED_DATA / "irac" / "r46466816"
FULL_ARRAY_AOR_DIR = SHARED_DATA / "irac" / "r46987776"

PG_URL_ENV = "IRACDB_TEST_PG_URL"
REQUIRE_PG = os.environ.get("IRACDB_REQUIRE_PG") == "1"
_RUN_ID = uuid.uuid4().hex[:8]
_pg_passed = 0


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _pg_passed
    if report.when == "call" and report.passed and "postgres" in report.keywords:
        _pg_passed += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if REQUIRE_PG and exitstatus == 0 and session.testscollected and _pg_passed == 0:
        print(f"\nIRACDB_REQUIRE_PG=1 but no PostgreSQL test passed (is {PG_URL_ENV} set and the server up?)")
        session.exitstatus = 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("backend") == "postgresql":
            item.add_marker(pytest.mark.postgres)


class PostgresServer:
    """Creates and drops this test run's databases on the server named by IRACDB_TEST_PG_URL."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url).set(drivername="postgresql+psycopg")
        self.admin = create_engine(self.url, isolation_level="AUTOCOMMIT", pool_size=2)
        self.created: list[str] = []
        # A test's database is dropped by this thread once the test ends, while the next test runs (a DROP
        # DATABASE takes ~0.15 s of the server's time; ~300 of them at the end of the run took ~45 s).
        self._dropper = ThreadPoolExecutor(1, thread_name_prefix="drop-test-database")
        self._drops: list[Future[None]] = []
        self.template: str | None = None
        # Roles are cluster-wide: this run's read-only role has a unique name, and is dropped after the databases.
        self.reader = f"iracdb_reader_{_RUN_ID}"
        self.reader_password = uuid.uuid4().hex
        self.reader_made = False

    def url_for(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    def create(self, template: str | None = None) -> str:
        name = f"iracdb_test_{_RUN_ID}_{len(self.created)}"
        clause = f" TEMPLATE {template} STRATEGY FILE_COPY" if template else ""
        with self.admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}{clause}"))
        self.created.append(name)
        return self.url_for(name)

    def reader_url(self, url: str) -> str:
        """URL of this run's read-only role (made by ``iracdb db create-reader``'s function) on the database at
        ``url``."""
        from iracdb.db.reader import create_reader

        engine = make_engine(url)
        try:
            self.reader_made = True
            create_reader(engine, self.reader, password=self.reader_password)
        finally:
            engine.dispose()
        return make_url(url).set(username=self.reader, password=self.reader_password).render_as_string(
            hide_password=False)

    def drop_soon(self, url: str) -> None:
        """Drop the database at ``url`` (one this server created) in the background."""
        self._drops.append(self._dropper.submit(self._drop, make_url(url).database or ""))

    def _drop(self, name: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))

    def drop_all(self) -> None:
        self._dropper.shutdown(wait=True)
        for drop in self._drops:
            drop.result()  # a failed drop is an error of the run
        with self.admin.connect() as conn:
            for name in reversed(self.created):
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            if self.reader_made:  # its grants went with the databases
                conn.execute(text(f"DROP ROLE IF EXISTS {self.reader}"))
        self.admin.dispose()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    url = os.environ.get(PG_URL_ENV)
    if not url:
        message = f"{PG_URL_ENV} is not set"
        if REQUIRE_PG:
            pytest.fail(message)
        pytest.skip(message)
    server = PostgresServer(url)
    try:
        with server.admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        message = f"PostgreSQL at {server.url.render_as_string(hide_password=True)} unreachable: {exc}"
        if REQUIRE_PG:
            pytest.fail(message)
        pytest.skip(message)
    yield server
    server.drop_all()


@pytest.fixture(scope="session")
def pg_template(pg_server: PostgresServer) -> str:
    """A database migrated to head, copied for each test (CREATE DATABASE ... TEMPLATE is much faster)."""
    url = pg_server.create()
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return make_url(url).database or ""


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh database with the newest schema, on the test's backend (on PostgreSQL dropped after the
    test)."""
    if backend == "sqlite":
        path = tmp_path / "iracdb.sqlite"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    url = server.create(template=request.getfixturevalue("pg_template"))
    yield url
    server.drop_soon(url)


@pytest.fixture
def reader_url(backend: str, db_url: str, request: pytest.FixtureRequest) -> str:
    """URL of the test's database for ``iracdb sql``: on PostgreSQL as a read-only login role (``iracdb sql``
    refuses a superuser), on SQLite ``db_url`` itself (no roles; the authorizer makes it read-only)."""
    if backend == "sqlite":
        return db_url
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.reader_url(db_url)


@pytest.fixture
def empty_db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of a brand-new database with no schema at all, on the test's backend (for SQLite an empty file: like
    PostgreSQL's CREATE DATABASE, it exists, so that commands that only read may open it)."""
    if backend == "sqlite":
        path = tmp_path / "empty.sqlite"
        path.touch()
        return f"sqlite:///{path}"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def real_archive(tmp_path: Path) -> Path:
    """A private copy of the real IRAC files (tests that modify, move or add files must not touch ../shared)."""
    if not SUBARRAY_AOR_DIR.is_dir():
        pytest.fail(f"the real IRAC test data is missing: {SUBARRAY_AOR_DIR}")
    root = tmp_path / "archive"
    shutil.copytree(SUBARRAY_AOR_DIR, root / SUBARRAY_AOR_DIR.name)
    shutil.copytree(FULL_ARRAY_AOR_DIR, root / FULL_ARRAY_AOR_DIR.name)
    return root


@pytest.fixture
def newer_migrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The real migrations plus one more revision, as a newer iracdb would ship: databases at today's head are then
    behind it."""
    folder = tmp_path / "migrations"
    shutil.copytree(migrate.migrations_dir(), folder)
    head = migrate.head_revision(make_engine("sqlite://"))
    (folder / "versions" / "9000_test_next.py").write_text(
        f"""
import sqlalchemy as sa
from alembic import op

revision = "9000_test_next"
down_revision = "{head}"


def upgrade():
    with op.batch_alter_table("aors") as batch:
        batch.add_column(sa.Column("note", sa.Text()))


def downgrade():
    with op.batch_alter_table("aors") as batch:
        batch.drop_column("note")
"""
    )
    monkeypatch.setattr(migrate, "migrations_dir", lambda: folder)
    return folder
