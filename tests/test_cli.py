"""The command line: exit statuses, output formats, one-line errors, no passwords, on both backends."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from iracdb import __version__
from iracdb.cli import EXIT_SOME_REJECTED, app
from iracdb.cli import catalogue as catalogue_cli
from iracdb.config import default_workers
from iracdb.db import migrate
from iracdb.db.engine import make_engine, safe_url

runner = CliRunner()
README = Path(__file__).resolve().parents[1] / "README.md"


def run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def test_version_and_module_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "iracdb", "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"iracdb {__version__}"
    help_text = run("--help").output
    for command in ("ingest", "aors", "exposures", "db"):
        assert command in help_text


def test_ingest_then_list(db_url: str, real_archive: Path) -> None:
    result = run("ingest", str(real_archive), "--db", db_url)
    assert result.exit_code == 0, result.output
    assert "80 files seen: 80 new, 0 updated, 0 moved, 0 unchanged, 0 rejected" in result.output

    table = run("aors", "--db", db_url)
    assert table.exit_code == 0 and "XO-3 ch2 peak-up" in table.output and "46466816" in table.output

    rows = list(csv.DictReader(io.StringIO(run("aors", "--format", "csv", "--db", db_url).stdout)))
    assert [(r["aorkey"], r["channel"], r["n_exposures"]) for r in rows] == [
        ("46987776", "2", "1"),
        ("46466816", "2", "11"),
    ]
    assert {"aorkey", "channel", "object", "read_mode", "mission", "date_obs", "n_exposures", "n_files"} <= set(rows[0])
    assert rows[1]["n_files"] == "77" and rows[1]["n_images"] == "704"

    data = json.loads(run("aors", "--format", "json", "--object", "xo-3", "--db", db_url).stdout)
    assert [(d["aorkey"], d["read_mode"], d["mission"]) for d in data] == [(46466816, "SUB", "warm")]
    assert json.loads(run("aors", "-f", "json", "--mission", "cryo", "--db", db_url).stdout) == []
    assert len(json.loads(run("aors", "-f", "json", "--program", "90015", "--db", db_url).stdout)) == 1
    assert len(json.loads(run("aors", "-f", "json", "--channel", "2", "--db", db_url).stdout)) == 2
    # OBJECT is matched as a substring: LIKE's wildcards in it are taken literally.
    for literal, n in (("XO_3", 0), ("%", 0), ("xo-3 ch2 peak", 1), ("/", 0)):
        assert len(json.loads(run("aors", "-f", "json", "--object", literal, "--db", db_url).stdout)) == n, literal
    assert len(json.loads(run("aors", "-f", "json", "--object", "xo", "--channel", "2", "--mission", "warm",
                              "--db", db_url).stdout)) == 1

    exposures = list(csv.DictReader(io.StringIO(run("exposures", "46466816", "-f", "csv", "--db", db_url).stdout)))
    assert [int(r["expid"]) for r in exposures] == list(range(11))
    assert exposures[0]["kinds"] == "bcd,bunc,bimsk,sub2d,unc2d,cov2d,msk2d"
    assert exposures[0]["n_planes"] == "64"


def test_ingest_workers_default_to_the_cores_this_process_may_use(
    db_url: str, real_archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert default_workers() == len(os.sched_getaffinity(0)) >= 1
    assert "default: the CPU cores this process may use" in " ".join(run("ingest", "--help").stdout.split())
    monkeypatch.setattr(catalogue_cli, "default_workers", lambda: 3)
    assert run("ingest", str(real_archive), "--db", db_url).exit_code == 0
    assert run("ingest", str(real_archive), "--workers", "1", "--db", db_url).exit_code == 0
    engine = make_engine(db_url)
    with engine.connect() as conn:
        recorded = conn.execute(text("SELECT workers FROM ingest_events ORDER BY id")).scalars().all()
    engine.dispose()
    assert recorded == [3, 1]


def test_ingest_with_rejections_exits_4_and_names_them(db_url: str, real_archive: Path) -> None:
    (real_archive / "junk.fits").write_text("not fits")
    result = run("ingest", str(real_archive), "--db", db_url)
    assert result.exit_code == EXIT_SOME_REJECTED == 4  # not 1, the status of an uncaught exception
    assert f"rejected: {(real_archive / 'junk.fits').resolve()}: not a FITS file" in result.stderr
    assert "80 new" in result.stdout and "1 rejected" in result.stdout
    listed = run("rejected", "-f", "csv", "--db", db_url).stdout
    assert "junk.fits" in listed


def test_user_errors_are_one_line_with_status_2(db_url: str, tmp_path: Path) -> None:
    for args, words in [
        (("exposures", "12345", "--db", db_url), "AOR 12345 is not in the catalogue"),
        (("ingest", str(tmp_path / "nowhere"), "--db", db_url), "no such file or folder"),
        (("aors", "--mission", "lukewarm", "--db", db_url), "--mission must be 'cryo' or 'warm'"),
        (("aors", "--channel", "7", "--db", db_url), "--channel must be 1, 2, 3 or 4"),
        (("exposures", "46466816", "--channel", "7", "--db", db_url), "--channel must be 1, 2, 3 or 4"),
        (("db", "upgrade", "nosuchrev", "--db", db_url), "cannot migrate to revision 'nosuchrev'"),
        (("db", "downgrade", "-9", "--db", db_url), "cannot migrate to revision '-9'"),
        (("ingest", str(tmp_path), "--workers", "0", "--db", db_url), "--workers must be at least 1"),
    ]:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("iracdb: error: ") and words in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--bogus",), "No such option: --bogus (see 'iracdb --help')"),
        (("aros",), "No such command 'aros'. Did you mean 'aors'? (see 'iracdb --help')"),
        (("ingest", ".", "--wrokers", "2"), "No such option: --wrokers (Possible options: --workers)"),
        (("ingest", ".", "--workers", "two"), "Invalid value for '--workers'"),
        (("aors", "--format", "xml"), "'xml' is not one of 'table', 'csv', 'json'"),
        (("exposures",), "Missing argument 'AORKEY'. (see 'iracdb exposures --help')"),
        (("db", "nosuch"), "No such command 'nosuch'. (see 'iracdb db --help')"),
        (("db", "upgrade", "--bogus"), "No such option: --bogus (see 'iracdb db upgrade --help')"),
    ],
)
def test_option_parser_errors_are_one_line_with_status_2(args: tuple[str, ...], words: str) -> None:
    # The README's exit-status paragraph promises this shape; click's own is three lines (Usage, Try, Error).
    result = run(*args)
    assert result.exit_code == 2, (args, result.output)
    assert result.stderr.startswith("iracdb: error: ") and words in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert "Usage:" not in result.output and "Try '" not in result.output


def test_readme_quotes_the_option_parser_error() -> None:
    result = run("ingest", ".", "--wrokers", "2")
    assert f"`{result.stderr.strip()}`" in " ".join(README.read_text().split()), result.stderr


def test_bare_command_still_shows_the_help() -> None:
    for args in ((), ("db",)):
        result = run(*args)
        assert "Usage: iracdb" in result.output and "Commands:" in result.output, (args, result.output)


def test_outdated_database_is_refused_with_instructions(db_url: str, newer_migrations: Path) -> None:
    result = run("aors", "--db", db_url)
    assert result.exit_code == 3
    assert "run `iracdb db upgrade`" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    # README quotes this message word for word (with an example URL and revisions)
    message = re.escape(result.stderr.strip())
    message = message.replace(re.escape(safe_url(db_url)), r"\S+").replace("9000_test_next", r"\w+")
    engine = make_engine(db_url)
    current = migrate.current_revision(engine)
    engine.dispose()
    message = message.replace(re.escape(f"revision {current}"), r"revision \w+")
    assert re.search(message, README.read_text()), result.stderr
    assert run("db", "upgrade", "--db", db_url).exit_code == 0
    assert run("aors", "--db", db_url).exit_code == 0


def test_database_from_a_newer_iracdb_is_refused(db_url: str) -> None:
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()
    result = run("aors", "--db", db_url)
    assert result.exit_code == 3 and "newer than this iracdb knows" in result.stderr


def test_db_commands(empty_db_url: str) -> None:
    assert "(empty)" in run("db", "current", "--db", empty_db_url).stdout
    assert run("db", "upgrade", "--db", empty_db_url).exit_code == 0
    assert "up to date" in run("db", "current", "--db", empty_db_url).stdout
    check = run("db", "check", "--db", empty_db_url)
    assert check.exit_code == 0 and "models and migrations agree" in check.stdout
    assert run("db", "downgrade", "-1", "--db", empty_db_url).exit_code == 0
    assert "iracdb db upgrade" in run("db", "current", "--db", empty_db_url).stdout


def test_database_url_precedence(tmp_path: Path, real_archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env_db = tmp_path / "from_env.sqlite"
    run("ingest", str(real_archive / "r46987776"), env={"IRACDB_DB_URL": f"sqlite:///{env_db}"})
    assert env_db.exists() and not (tmp_path / "iracdb.sqlite").exists()
    cli_db = tmp_path / "from_option.sqlite"
    run("ingest", str(real_archive / "r46987776"), "--db", str(cli_db), env={"IRACDB_DB_URL": f"sqlite:///{env_db}"})
    assert cli_db.exists()
    run("ingest", str(real_archive / "r46987776"), env={"IRACDB_DB_URL": ""})
    assert (tmp_path / "iracdb.sqlite").exists()


def test_password_never_shown() -> None:
    url = "postgresql+psycopg://alice:hunter2secret@127.0.0.1:1/nothing"
    for args in (("aors", "--db", url), ("db", "current", "--db", url)):
        result = run(*args)
        assert result.exit_code == 3
        assert "hunter2secret" not in result.output
        assert "alice:***@" in result.stderr


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("postgresql+psycopg://alice:hunter2secret@host:notaport/db", "not a database URL (expected sqlite:///FILE"),
        ("postgresql://alice:hunter2secret@host:notaport/db", "not a database URL (expected sqlite:///FILE"),
        ("postgresql+psycopg:/alice:hunter2secret@host/db", "looks like a database URL with a malformed scheme"),
        ("postgresql+psycopg:alice:hunter2secret@host/db", "looks like a database URL with a malformed scheme"),
    ],
)
@pytest.mark.parametrize("via", ["option", "env"])
def test_malformed_url_is_a_usage_error_that_never_shows_it(url: str, words: str, via: str) -> None:
    for command in (("aors",), ("db", "current"), ("ingest", ".")):
        args, env = ((*command, "--db", url), None) if via == "option" else (command, {"IRACDB_DB_URL": url})
        result = run(*args, env=env)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("iracdb: error: ") and words in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "hunter2secret" not in result.output and "alice" not in result.output


def test_help_shows_readable_metavars() -> None:
    usage = {
        ("ingest",): "Usage: iracdb ingest [OPTIONS] PATH...",
        ("aors",): "Usage: iracdb aors [OPTIONS]",
        ("exposures",): "Usage: iracdb exposures [OPTIONS] AORKEY",
        ("db", "upgrade"): "Usage: iracdb db upgrade [OPTIONS] [REVISION]",
        ("db", "downgrade"): "Usage: iracdb db downgrade [OPTIONS] REVISION",
        ("synth",): "Usage: iracdb synth [OPTIONS] OUT_DIR",
        ("demo",): "Usage: iracdb demo [OPTIONS] [DIR]",
    }
    for command, first_line in usage.items():
        text = run(*command, "--help").stdout
        assert text.splitlines()[0] == first_line, text
        for typer_default in ("{", "<list", "<str>", "<int>", "<path>", "<Path>", "<table|csv|json>"):
            assert typer_default not in text, (command, typer_default, text)
    ingest_help = run("ingest", "--help").stdout
    assert "  PATH...  Folders" in ingest_help
    assert "-j, --workers N" in ingest_help and "--db URL" in ingest_help and "exit status is then 4" in ingest_help
    aors_help = run("aors", "--help").stdout
    for shown in ("--object TEXT", "--channel N", "--program PROGID", "--mission cryo|warm", "-f, --format table|csv"):
        assert shown in aors_help


def test_downgrade_to_empty_then_any_command_creates_the_schema(db_url: str) -> None:
    assert run("db", "downgrade", "base", "--db", db_url).exit_code == 0
    engine = make_engine(db_url)
    assert migrate.current_revision(engine) is None  # Alembic leaves an empty alembic_version table behind
    engine.dispose()
    result = run("aors", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert "up to date" in run("db", "current", "--db", db_url).stdout


def test_demo_with_rejections_exits_4(tmp_path: Path) -> None:
    # A file in the demo's archive folder that is not FITS: rejected, and everything else still runs.
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "notes.fits").write_text("not a FITS file\n")
    result = run("demo", str(tmp_path))
    assert result.exit_code == EXIT_SOME_REJECTED == 4, result.output
    assert "117 new, 0 unchanged, 1 rejected" in result.stdout
    assert "5. plotted it:" in result.stdout and (tmp_path / "export" / "demo_img_data.csv").is_file()
