"""Database URLs and their secrets, and opening databases (issue 10, cases 3, 12 and the last item of 13).

No password in any form of URL (userinfo, ``?password=``/``?sslpassword=``/``?passfile=``, an unencoded ``@``, a
malformed URL, ``--db=URL``) appears in any output, error line, stored value or written file; a malformed value is
refused without being echoed; a recorded command line runs again; a command that only reads refuses a SQLite file
that does not exist instead of creating an empty archive.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from iracdb.cli import app
from iracdb.config import resolve_db_url
from iracdb.db import migrate
from iracdb.db.engine import make_engine, mask_secrets, safe_url
from iracdb.errors import BadOption, NoSuchDatabase
from iracdb.ingest import ingest
from iracdb.reduce import Execution, ReduceOptions, Target, mask_command_line, reduce
from iracdb.synth import AorSpec, SynthArchive, write_archive

runner = CliRunner()

# One small full-array AOR: a reduction of it takes well under a second.
STAR = AorSpec(aorkey=74000064, channels=(1,), read_mode="FULL", n_exposures=2, mission="warm",
               object_name="SECRETS TEST", ra_deg=150.1, dec_deg=2.2, flux_mjy=50.0)


def run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    return write_archive(tmp_path_factory.mktemp("secrets") / "archive", [STAR], seed=5, truth_csv=False)


@pytest.fixture
def catalogued(db_url: str, archive: SynthArchive) -> str:
    engine = make_engine(db_url)
    assert ingest(engine, [str(archive.root)]).n_rejected == 0
    engine.dispose()
    return db_url


# --- masking, on text ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secrets", "shown"),
    [
        ("postgresql+psycopg://alice:S3cret@db.example:5432/iracdb", ["S3cret"],
         "postgresql+psycopg://alice:***@db.example:5432/iracdb"),
        ("postgresql+psycopg://alice@db.example/iracdb?password=S3cret&sslmode=require", ["S3cret"],
         "postgresql+psycopg://alice@db.example/iracdb?password=***&sslmode=require"),
        ("postgresql://alice:S3cret@h/d?SSLPassword=K3y&PassFile=/home/alice/pgpass", ["S3cret", "K3y", "pgpass"],
         "postgresql://alice:***@h/d?SSLPassword=***&PassFile=***"),
        # an unencoded "@" in the password: everything up to the last "@" is userinfo
        ("postgresql+psycopg://alice:pa@ss@word@db.example/iracdb", ["pa@ss", "ss@word", "word@"],
         "postgresql+psycopg://alice:***@db.example/iracdb"),
        # a "@" in a secret parameter's value is not userinfo's end
        ("postgresql://alice@h/d?password=S3c@ret", ["S3c", "ret"], "postgresql://alice@h/d?password=***"),
        # malformed separators, "--db=URL"
        ("postgresql+psycopg//alice:S3cret@h/d", ["S3cret"], "postgresql+psycopg//alice:***@h/d"),
        ("postgresql+psycopg:/alice:S3cret@h/d", ["S3cret"], "postgresql+psycopg:/alice:***@h/d"),
        ("--db=postgresql://alice:S3cret@h/d", ["S3cret"], "--db=postgresql://alice:***@h/d"),
        ("sqlite://u:S3cret@/x.sqlite", ["S3cret"], "sqlite://u:***@/x.sqlite"),
        # nothing secret: unchanged
        ("sqlite:////data/iracdb.sqlite", [], "sqlite:////data/iracdb.sqlite"),
        ("postgresql+psycopg://alice@corp@db.example/iracdb", [], "postgresql+psycopg://alice@corp@db.example/iracdb"),
        ("C:/data/a@b.sqlite", [], "C:/data/a@b.sqlite"),
    ],
)
def test_every_secret_looking_part_is_masked(text: str, secrets: list[str], shown: str) -> None:
    # in free text a URL ends at white space or a quote (a password with spaces is masked as one value, below)
    for masked in (safe_url(text), mask_secrets(text), mask_secrets(f"error: database '{text}' refused")):
        assert all(secret not in masked for secret in secrets), masked
    assert safe_url(text) == shown
    assert mask_secrets(f"error: database {text} refused") == f"error: database {shown} refused"
    # masking twice changes nothing, and a masked value keeps the punctuation after it
    assert safe_url(shown) == shown and mask_secrets(f"database {shown}: refused") == f"database {shown}: refused"


def test_a_parsed_url_is_masked_too() -> None:
    url = make_url("postgresql+psycopg://alice:S3cret@h:5432/d?sslpassword=K3y")
    assert safe_url(url) == "postgresql+psycopg://alice:***@h:5432/d?sslpassword=***"


def test_a_password_with_spaces_is_masked_in_one_argument() -> None:
    assert mask_command_line(["iracdb", "runs", "--db=postgresql://alice:my S3cret@h/d"]) == (
        "iracdb runs '--db=postgresql://alice:***@h/d'")


def test_recorded_command_line_parses_back() -> None:
    argv = ["iracdb", "reduce", "--run-name", "it's a run", "--db=postgresql+psycopg://alice:S3cret@h:5433/d?"
            "sslpassword=K3y&sslmode=require", "--target", "10 20", "--db", "sqlite:////tmp/a b.sqlite"]
    recorded = mask_command_line(argv)
    assert "S3cret" not in recorded and "K3y" not in recorded
    back = shlex.split(recorded)
    assert back[:4] + back[5:] == argv[:4] + argv[5:]
    option, url = back[4].split("=", 1)
    parsed, original = make_url(url), make_url(argv[4].split("=", 1)[1])
    assert option == "--db" and parsed.password == "***" and parsed.query["sslpassword"] == "***"
    assert parsed.set(password="S3cret").update_query_dict({"sslpassword": "K3y"}) == original


# --- malformed values: refused in one line, never echoed ------------------------------------------------------------


MALFORMED = [
    ("postgresql+psycopg//alice:S3cret@host/db", "malformed scheme separator"),
    ("postgresql+psycopg/alice:S3cret@host/db", "database URL without its scheme"),
    ("alice:S3cret@host/db", "looks like a database URL"),  # "alice:" may be a scheme: either message will do
    ("host=db.example password=S3cret", "libpq connection string"),
    ("sqlite://alice:S3cret@/x.sqlite", "a SQLite URL has no user, password or host"),
    ("sqlite://S3cret.sqlite", "a SQLite URL has no user, password or host"),
    # an unencoded "@" would make SQLAlchemy and libpq look up "S3cret@127.0.0.1" as a host name
    ("postgresql+psycopg://postgres:pa@S3cret@127.0.0.1:5432/postgres", "unencoded '@' in its password"),
]


@pytest.mark.parametrize(("value", "words"), MALFORMED)
@pytest.mark.parametrize("via", ["option", "env"])
def test_malformed_value_is_refused_without_echo(
    value: str, words: str, via: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for command in (("db", "current"), ("db", "upgrade"), ("runs",), ("ingest", str(tmp_path))):
        args, env = ((*command, "--db", value), None) if via == "option" else (command, {"IRACDB_DB_URL": value})
        result = run(*args, env=env)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("iracdb: error: ") and words in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
        assert "S3cret" not in result.output
    assert list(tmp_path.iterdir()) == []  # no file was created for the value


def test_sqlite_url_with_a_password_is_a_one_line_error() -> None:
    with pytest.raises(BadOption, match="a SQLite URL has no user, password or host") as info:
        make_engine("sqlite://u:S3cret@/x.sqlite")
    assert "S3cret" not in str(info.value) and info.value.__cause__ is None


def test_malformed_values_are_not_files() -> None:
    for value, _ in MALFORMED[:4]:
        with pytest.raises(BadOption) as info:
            resolve_db_url(value)
        assert "S3cret" not in str(info.value)
    # a path that starts with "." or "/" is a path, whatever it holds
    assert resolve_db_url("./a:b@c.sqlite") == "sqlite:///./a:b@c.sqlite"
    assert resolve_db_url("/data/a:b@c.sqlite") == "sqlite:////data/a:b@c.sqlite"


# --- real commands with a password in every form: nothing shown, stored or written ------------------------------------


def _secret_urls(db_url: str) -> list[tuple[str, list[str]]]:
    """URLs of the test's PostgreSQL database holding secrets (trust authentication ignores them)."""
    url = make_url(db_url)
    base = url.set(password=None).render_as_string(hide_password=False)
    return [
        (url.set(password="S3cretPW").render_as_string(hide_password=False) + "?sslpassword=S3cretKEY",
         ["S3cretPW", "S3cretKEY"]),
        (base + "?password=S3cretQ", ["S3cretQ"]),
        (base + "?passfile=/nonexistent/S3cretPASSFILE", ["S3cretPASSFILE"]),
        (url.set(password="p@S3cret").render_as_string(hide_password=False), ["S3cret"]),  # "@" written as %40
    ]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # a SQLite URL has no password
def test_no_secret_anywhere(catalogued: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # iracdb sql refuses a superuser: it runs as the read-only role, with the same secrets in its URL.
    reader = make_url(request.getfixturevalue("pg_server").reader_url(catalogued)).username
    for index, (url, secrets) in enumerate(_secret_urls(catalogued)):
        reader_url = url.replace(f"://{make_url(catalogued).username}", f"://{reader}", 1)
        assert reader_url != url
        out = tmp_path / f"export{index}"
        unreachable = url.replace(f":{make_url(catalogued).port}/", ":1/", 1)  # refused on this machine
        assert unreachable != url
        outputs = [
            run("db", "current", "--db", url), run("db", "upgrade", "--db", url), run("db", "current", f"--db={url}"),
            run("reduce", "--run-name", f"eq{index}", "--auto", f"--db={url}"),
            run("reduce", "--run-name", f"sp{index}", "--auto", "--db", url),
            run("reduce", "--run-name", f"sp{index}", "--auto", "--radius", "4", "--db", url),  # refused
            run("runs", "-f", "json", "--db", url), run("show", f"eq{index}", "--db", url),
            run("show", f"sp{index}", "-f", "json", "--db", url),
            run("export", f"eq{index}", "--out", str(out), "--db", url),
            run("sql", "SELECT * FROM runs", "-f", "csv", "--db", reader_url),
            run("runs", "--db", unreachable),
        ]
        assert [r.exit_code for r in outputs] == [0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 3], [r.output for r in outputs]
        assert "database postgresql+psycopg://" in outputs[-1].stderr  # the error line names the URL
        texts = [r.stdout + r.stderr for r in outputs]
        texts += [path.read_text(errors="replace") for path in out.iterdir()]
        engine = make_engine(catalogued)
        with engine.connect() as conn:
            texts += [json.dumps([dict(r._mapping) for r in conn.exec_driver_sql("SELECT * FROM runs")], default=str)]
        engine.dispose()
        assert len(list(out.iterdir())) == 4
        for secret in secrets:
            assert not [text for text in texts if secret in text], secret


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_recorded_db_equals_url_runs_again(catalogued: str, tmp_path: Path) -> None:
    url = catalogued
    if make_url(url).get_backend_name() == "postgresql":
        url = make_url(url).set(password="S3cretPW").render_as_string(hide_password=False) + "?sslpassword=K3y"
    assert run("reduce", "--run-name", "again", "--auto", f"--db={url}").exit_code == 0
    shown = json.loads(run("show", "again", "-f", "json", "--db", url).stdout)
    recorded = shown["command_line"]
    assert "unparseable" not in recorded and "S3cret" not in recorded and "K3y" not in recorded
    argv = shlex.split(recorded)
    assert argv[:2] == ["iracdb", "reduce"]
    [db_arg] = [arg for arg in argv if arg.startswith("--db=")]
    masked = make_url(db_arg.removeprefix("--db="))
    original = make_url(url)
    assert (masked.drivername, masked.host, masked.port, masked.database, masked.username) == (
        original.drivername, original.host, original.port, original.database, original.username)
    # fill the secrets back in and run the recorded command again: the run is already complete
    if masked.password is not None:
        masked = masked.set(password="S3cretPW").update_query_dict({"sslpassword": "K3y"})
    argv[argv.index(db_arg)] = "--db=" + masked.render_as_string(hide_password=False)
    again = run(*argv[1:])
    assert again.exit_code == 0, again.output
    assert "already complete" in again.stdout


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_secret_recorded_by_an_older_iracdb_is_masked_on_the_way_out(catalogued: str, tmp_path: Path) -> None:
    engine = make_engine(catalogued)
    old_line = "iracdb reduce --run-name old --auto --db 'postgresql://alice@h/d?password=S3cretOLD'"
    reduce(engine, "old", ReduceOptions(targets=(Target(name="auto"),)), Execution(command_line=old_line))
    engine.dispose()
    out = tmp_path / "out"
    outputs = [run("show", "old", "--db", catalogued), run("show", "old", "-f", "json", "--db", catalogued),
               run("export", "old", "--out", str(out), "--db", catalogued)]
    assert [r.exit_code for r in outputs] == [0, 0, 0]
    assert json.loads(outputs[1].stdout)["command_line"] == old_line.replace("S3cretOLD", "***")
    assert all("S3cretOLD" not in r.output for r in outputs)
    assert all("S3cretOLD" not in path.read_text(errors="replace") for path in out.iterdir())


def test_upgrading_masks_secrets_recorded_by_an_older_iracdb(catalogued: str) -> None:
    """Migration 0008 masks what an older iracdb stored unmasked, so that `iracdb sql` and reader roles never see it."""
    engine = make_engine(catalogued)
    try:
        reduce(engine, "old", ReduceOptions(targets=(Target(name="auto"),)))
        line = "iracdb reduce --run-name old --auto --db 'postgresql://alice:Pw0LD@h/d?sslpassword=Pw1&x=1'"
        message = "failed: connection to postgresql://bob:Pw2@host/db?password=Pw3 refused"
        migrate.downgrade(engine, "0007")
        with engine.begin() as conn:
            conn.execute(text("UPDATE runs SET command_line = :c, message = :m"), {"c": line, "m": message})
        migrate.upgrade(engine)
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT command_line, message FROM runs")).one()
        assert stored == (
            "iracdb reduce --run-name old --auto --db 'postgresql://alice:***@h/d?sslpassword=***&x=1'",
            "failed: connection to postgresql://bob:***@host/db?password=*** refused")
    finally:
        engine.dispose()


# --- case 12: a command that only reads never creates a SQLite file ------------------------------------------------


READING_COMMANDS = [
    ("runs",), ("aors",), ("exposures", "74000064"), ("rejected",), ("summary", "r"), ("show", "r"),
    ("export", "r", "--out", "exported"), ("sql", "SELECT 1"), ("plot", "r"), ("compare", "r", "s"),
    ("reduce", "--run-name", "r", "--auto"), ("db", "current"), ("db", "downgrade", "-1"), ("db", "check"),
]


@pytest.mark.parametrize("command", READING_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_reading_command_refuses_a_missing_sqlite_file(
    command: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for given, env in [("typo.sqlite", None), (f"sqlite:///{tmp_path}/typo.sqlite", None),
                       (None, {"IRACDB_DB_URL": "typo.sqlite"}), (None, {"IRACDB_DB_URL": ""})]:
        args = (*command, "--db", given) if given else command
        result = run(*args, env=env)
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("iracdb: error: no database at ")
        assert ("typo.sqlite" if given or env["IRACDB_DB_URL"] else "iracdb.sqlite") in lines[0]
        assert list(tmp_path.iterdir()) == [], args  # nothing created: no database, no -wal, no export folder


def test_creating_commands_and_memory_still_work(tmp_path: Path, archive: SynthArchive) -> None:
    upgraded, ingested = tmp_path / "upgraded.sqlite", tmp_path / "ingested.sqlite"
    assert run("db", "upgrade", "--db", str(upgraded)).exit_code == 0 and upgraded.exists()
    assert run("ingest", str(archive.root), "--db", str(ingested)).exit_code == 0 and ingested.exists()
    assert [row["aorkey"] for row in json.loads(run("aors", "-f", "json", "--db", str(ingested)).stdout)] == [
        STAR.aorkey]
    memory = run("runs", "--db", "sqlite://")
    assert memory.exit_code == 0 and "(no rows)" in memory.stdout
    assert run("db", "current", "--db", str(upgraded)).exit_code == 0


def test_missing_file_is_its_own_error() -> None:
    with pytest.raises(NoSuchDatabase, match=re.escape("no database at /nonexistent/x.sqlite")) as info:
        make_engine("sqlite:////nonexistent/x.sqlite", create=False)
    assert isinstance(info.value, FileNotFoundError) and info.value.exit_code == 2
    make_engine("sqlite:///:memory:", create=False).dispose()


def test_readme_quotes_the_missing_file_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    line = run("runs", "--db", "typo.sqlite").stderr.strip()
    assert line in (Path(__file__).resolve().parents[1] / "README.md").read_text()
