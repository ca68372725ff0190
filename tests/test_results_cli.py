"""The result commands on the command line, on both backends: `runs`, `show`, `summary`, `export`, `sql`, `plot`,
`compare`, `db create-reader`; one-line errors with their exit statuses; no password anywhere; the README's SQL
examples run. `sql` on PostgreSQL connects as a read-only role (a superuser is refused)."""

from __future__ import annotations

import csv
import importlib
import io
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import text as sql_text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from iracdb.cli import SUMMARY_TABLE_COLUMNS, app
from iracdb.config import resolve_db_url
from iracdb.db import queries
from iracdb.db.engine import make_engine
from iracdb.db.readonly import run_read_only
from iracdb.errors import BadOption
from iracdb.ingest import ingest
from iracdb.reduce import ReduceOptions, Target, reduce
from iracdb.synth import AorSpec, SynthArchive, write_archive

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
SUB = AorSpec(aorkey=73000064, channels=(2,), read_mode="SUB", n_exposures=2, mission="warm",
              object_name="EPSILON sub", ra_deg=120.3, dec_deg=33.3, flux_mjy=70.0)
FULL = AorSpec(aorkey=73000320, channels=(1,), read_mode="FULL", n_exposures=4, mission="warm",
               object_name="ZETA", ra_deg=300.2, dec_deg=-5.1, flux_mjy=30.0)


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    return write_archive(tmp_path_factory.mktemp("results") / "archive", [SUB, FULL], seed=9, truth_csv=False)


@pytest.fixture
def reduced(db_url: str, archive: SynthArchive) -> str:
    """A database with two runs of the same archive, 'a' (aperture correction 1.0) and 'b' (1.1)."""
    engine = make_engine(db_url)
    assert ingest(engine, [str(archive.root)]).n_rejected == 0
    for name, factor in (("a", "1.0"), ("b", "1.1")):
        reduce(engine, name, ReduceOptions(targets=(Target(name="auto"),), aperture_correction=factor))
    engine.dispose()
    return db_url


@pytest.fixture
def reader(reduced: str, reader_url: str) -> str:
    """URL of ``reduced`` for `iracdb sql`: a read-only role on PostgreSQL, the same file on SQLite."""
    return reader_url


def test_runs_lists_both_runs(reduced: str) -> None:
    result = run("runs", "--format", "json", "--db", reduced)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["name"], r["status"], r["aors"], r["ap_corr"]) for r in rows] == [
        ("a", "complete", 2, "1.0"), ("b", "complete", 2, "1.1")]
    assert rows[0]["images"] == 2 * 64 + 4
    table = run("runs", "--db", reduced).stdout
    assert "name" in table and "complete" in table and "3-7" in table


def test_show_prints_parameters_and_provenance(reduced: str) -> None:
    result = run("show", "a", "--db", reduced)
    assert result.exit_code == 0, result.output
    for text in ("radius_px", "aperture_correction", "1.0", "numpy", "astropy", "params_hash", "complete"):
        assert text in result.stdout, text
    as_json = json.loads(run("show", "a", "--format", "json", "--db", reduced).stdout)
    assert as_json["parameters"]["aperture_correction"] == "1.0"


def test_show_leaves_the_column_catalogue_out_and_labels_the_applied_correction(reduced: str) -> None:
    shown = run("show", "a", "--db", reduced).stdout
    assert "description" not in shown and "flux_err_mjy" not in shown  # the export's columns: README or --columns
    assert "photometry.aperture_correction" not in shown  # the core's 'none', beside the applied values
    assert "parameters, as given" in shown and "parameters, as resolved" in shown
    assert re.search(r"applied to warm ch[12]", shown) and "provenance" in shown and "params_hash" in shown
    assert len(shown.splitlines()) < 150
    with_columns = run("show", "a", "--columns", "--db", reduced).stdout
    assert "columns of RUN_aor_data" in with_columns and "flux_err_mjy" in with_columns


def test_show_on_an_80_column_terminal_keeps_the_hash_whole(reduced: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    cli_app = importlib.import_module("iracdb.cli.app")  # the module: `iracdb.cli.app` is also the typer app
    buffer = io.StringIO()
    monkeypatch.setattr(cli_app, "stdout", Console(file=buffer, width=80, force_terminal=True, color_system=None))
    assert run("show", "a", "--db", reduced).exit_code == 0
    params_hash = json.loads(run("show", "a", "--format", "json", "--db", reduced).stdout)["params_hash"]
    lines = buffer.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert any("params_hash" in line and params_hash in line for line in lines)


def test_columns_picks_any_column_and_refuses_an_unknown_one(reduced: str) -> None:
    picked = run("summary", "b", "--columns", "bmjd,aorkey", "--format", "csv", "--db", reduced)
    assert picked.exit_code == 0 and picked.stdout.splitlines()[0] == "bmjd,aorkey"
    table = run("runs", "--columns", "name,reject", "--db", reduced).stdout
    assert "reject" in table and "radius_px" not in table
    wrong = run("summary", "b", "--columns", "aorkey,nope", "--db", reduced)
    assert wrong.exit_code == 2 and "unknown column 'nope'" in wrong.stderr


@pytest.mark.parametrize("width", [80, 100, 160])
def test_summary_on_a_terminal_never_splits_a_number(
    reduced: str, width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    cli_app = importlib.import_module("iracdb.cli.app")  # the module: `iracdb.cli.app` is also the typer app
    engine = make_engine(reduced)
    rows = queries.run_summary(engine, "b")
    engine.dispose()
    buffer = io.StringIO()
    monkeypatch.setattr(cli_app, "stdout", Console(file=buffer, width=width, force_terminal=True, color_system=None))
    assert run("summary", "b", "--db", reduced).exit_code == 0
    lines = buffer.getvalue().splitlines()
    assert all(len(line) <= width for line in lines)
    for row in rows:
        line = next(line for line in lines if str(row["aorkey"]) in line)
        assert cli_app._cell(row["channel"]) in line
        if "flux_mjy" in lines[1]:
            assert cli_app._cell(row["flux_mjy"]) in line


def test_summary_table_csv_and_json_agree(reduced: str) -> None:
    engine = make_engine(reduced)
    expected = queries.run_summary(engine, "b")
    engine.dispose()
    as_json = json.loads(run("summary", "b", "--format", "json", "--db", reduced).stdout)
    assert [r["flux_mjy"] for r in as_json] == [r["flux_mjy"] for r in expected]
    assert list(as_json[0]) == list(queries.RUN_SUMMARY_COLUMNS)
    as_csv = list(csv.DictReader(io.StringIO(run("summary", "b", "--format", "csv", "--db", reduced).stdout)))
    assert [float(r["flux_mjy"]) for r in as_csv] == [r["flux_mjy"] for r in expected]  # full precision
    table = run("summary", "b", "--aor", str(SUB.aorkey), "--db", reduced)
    assert table.exit_code == 0 and str(SUB.aorkey) in table.stdout and str(FULL.aorkey) not in table.stdout
    assert all(column in table.stdout for column in SUMMARY_TABLE_COLUMNS)


@pytest.mark.parametrize(
    ("args", "message", "status"),
    [
        (("summary", "nope"), r"no run named 'nope'; recent runs: b, a \(see `iracdb runs`\)", 2),
        (("summary", "a", "--aor", "1"), r"AOR 1 is not in run 'a' \(its AORs: 73000064, 73000320\)", 2),
        (("show", "nope"), "no run named 'nope'", 2),
        (("export", "nope"), "no run named 'nope'", 2),
        (("plot", "nope"), "no run named 'nope'", 2),
        (("plot", "a", "--aor", "1"), "AOR 1", 2),
        (("compare", "a", "nope"), "no run named 'nope'", 2),
        (("sql", "DELETE FROM runs"), "read-only", 2),
        (("sql", "SELEKT 1"), "", 2),
        (("sql", "SELECT 1", "--max-rows", "0"), "--max-rows must be at least 1", 2),
        (("export", "a", "--format", "xlsx"), "xlsx", 2),
    ],
)
def test_errors_are_one_line(reduced: str, tmp_path: Path, args: tuple[str, ...], message: str, status: int,
                             request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("reader") if args[0] == "sql" else reduced
    result = runner.invoke(app, [*args, "--db", url], catch_exceptions=False)
    assert result.exit_code == status, result.output
    lines = result.stderr.strip().splitlines()
    if args[-2:] != ("--format", "xlsx"):  # typer's own usage error for an unknown choice is a box of lines
        assert len(lines) == 1 and lines[0].startswith("iracdb: error:"), result.stderr
    assert re.search(message, result.stderr), result.stderr
    engine = make_engine(reduced)
    assert [r["name"] for r in queries.list_runs(engine)] == ["a", "b"]  # nothing changed
    engine.dispose()


def test_export_writes_the_files(reduced: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("export", "a", "--out", str(out), "--db", reduced)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a_aor_data.csv", "a_img_data.csv", "a_log.txt", "a_provenance.json"]
    assert f"wrote {out / 'a_img_data.csv'}" in result.stdout
    with (out / "a_img_data.csv").open() as handle:
        assert sum(1 for _ in csv.DictReader(handle)) == 2 * 64 + 4
    # the log and provenance exist: replaced only with --overwrite
    log = (out / "a_log.txt").read_bytes()
    refused = run("export", "a", "--out", str(out), "--format", "parquet", "--db", reduced)
    assert refused.exit_code == 2 and refused.stderr == (
        f"iracdb: error: {out / 'a_log.txt'} and 1 more output file(s) already exist (--overwrite replaces them)\n")
    assert (out / "a_log.txt").read_bytes() == log and not (out / "a_img_data.parquet").exists()
    parquet = run("export", "a", "--out", str(out), "--format", "parquet", "--overwrite", "--db", reduced)
    assert parquet.exit_code == 0 and (out / "a_img_data.parquet").stat().st_size > 0


def test_sql_prints_rows_and_refuses_writes(reduced: str, reader: str) -> None:
    query = "SELECT aorkey, channel, flux_mjy FROM aor_photometry WHERE run = 'a' ORDER BY aorkey"
    as_json = json.loads(run("sql", query, "--format", "json", "--db", reader).stdout)
    assert [r["aorkey"] for r in as_json] == [SUB.aorkey, FULL.aorkey]
    table = run("sql", query, "--db", reader)
    assert table.exit_code == 0 and str(SUB.aorkey) in table.stdout
    truncated = run("sql", "SELECT * FROM image_photometry", "--max-rows", "5", "--format", "csv", "--db", reader)
    assert len(truncated.stdout.strip().splitlines()) == 6 and "only the first 5 rows" in truncated.stderr
    for statement in ("UPDATE runs SET name = 'x'", "DROP TABLE measurements", "INSERT INTO runs (name) VALUES ('x')"):
        refused = runner.invoke(app, ["sql", statement, "--db", reader], catch_exceptions=False)
        assert refused.exit_code == 2 and "read-only" in refused.stderr, refused.stderr
    assert len(json.loads(run("runs", "--format", "json", "--db", reduced).stdout)) == 2


def test_plot_writes_png_files(reduced: str, tmp_path: Path) -> None:
    overview = tmp_path / "figs" / "overview.png"
    result = run("plot", "a", "--out", str(overview), "--db", reduced)
    assert result.exit_code == 0, result.output
    assert overview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {overview}" in result.stdout
    one = tmp_path / "aor.pdf"
    assert run("plot", "a", "--aor", str(SUB.aorkey), "--out", str(one), "--db", reduced).exit_code == 0
    assert one.read_bytes()[:5] == b"%PDF-" and one.stat().st_size > 10_000
    again = run("plot", "a", "--out", str(overview), "--overwrite", "--db", reduced)
    assert again.exit_code == 0 and f"wrote {overview}" in again.stdout


def test_output_mistakes_are_one_line_errors(reduced: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each: one line, exit status 2, nothing written or replaced; a run name of 300 characters exports and plots."""
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("keep")
    Path("mine.png").write_bytes(b"my figure")
    assert run("export", "a", "--out", "done", "--db", reduced).exit_code == 0
    long_dir = "x" * 300
    cases = [
        (("export", "a", "--out", "afile"), "cannot write into afile: it exists and is not a folder"),
        (("export", "a", "--out", "/proc/nope"), "cannot create folder /proc/nope: No such file or directory"),
        (("export", "a", "--out", "/sys/nope"), "cannot create folder /sys/nope: Operation not permitted"),
        (("export", "a", "--out", long_dir), f"cannot create folder {long_dir}: File name too long"),
        (("export", "a", "--out", "done"), "done/a_aor_data.csv and 3 more output file(s) already exist "
                                           "(--overwrite replaces them)"),
        (("plot", "a", "--out", "afile/x.png"), "cannot write into afile: it exists and is not a folder"),
        (("plot", "a", "--out", "mine.png"), "mine.png already exists (--overwrite replaces it)"),
        (("plot", "a", "--out", "x.jpg"), "cannot plot to x.jpg: the file name must end in .png, .pdf or .svg"),
        (("plot", "a", "--out", "/sys/x.png"), "cannot write /sys/x.png: Permission denied"),
        (("plot", "a", "--out", "done", "--overwrite"), "cannot plot to done: the file name must end in"),
    ]
    if reduced.startswith("sqlite"):  # the database is never an output, even with --overwrite
        database = make_url(reduced).database
        Path("db.png").symlink_to(database)
        cases += [
            (("plot", "a", "--out", database, "--overwrite"), f"cannot plot to {database}: the file name must end"),
            (("plot", "a", "--out", "db.png", "--overwrite"), f"cannot write db.png: it is the database being read "
                                                              f"({database}); choose another file name"),
        ]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()}
    for args, message in cases:
        result = runner.invoke(app, [*args, "--db", reduced], catch_exceptions=False)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith(f"iracdb: error: {message}"), (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1 and result.stdout == "", (args, result.output)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()}
    assert after == before  # nothing written, nothing replaced (the database neither)
    engine = make_engine(reduced)
    assert [r["name"] for r in queries.list_runs(engine)] == ["a", "b"]
    with engine.begin() as conn:
        conn.execute(sql_text("UPDATE runs SET name = :long WHERE name = 'a'"), {"long": "r" * 300})
    engine.dispose()
    assert run("export", "r" * 300, "--out", "long", "--db", reduced).exit_code == 0
    assert run("plot", "r" * 300, "--db", reduced).exit_code == 0
    assert len(list(Path("long").iterdir())) == 4 and len(list(Path(".").glob("r*~*_overview.png"))) == 1


def test_compare_shows_the_known_difference(reduced: str) -> None:
    result = run("compare", "a", "b", "--db", reduced)
    assert result.exit_code == 0, result.output
    assert "parameter aperture_correction: '1.0' (A) -> '1.1' (B)" in result.stdout
    assert "median difference: +10.0000 %" in result.stdout
    rows = json.loads(run("compare", "a", "b", "--format", "json", "--db", reduced).stdout)
    assert len(rows) == 2 and all(abs(r["diff_pct"] - 10.0) < 1e-9 for r in rows)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # a SQLite URL has no password
def test_password_never_appears(reduced: str, reader: str, tmp_path: Path) -> None:
    url = make_url(reduced).set(password="s3cretPW")  # trust authentication ignores it
    secret_url = url.render_as_string(hide_password=False)
    reader_secret = make_url(reader).set(password="s3cretPW").render_as_string(hide_password=False)
    out = tmp_path / "out"
    outputs = [
        run("runs", "--db", secret_url), run("show", "a", "--db", secret_url),
        run("show", "a", "--format", "json", "--db", secret_url), run("summary", "a", "--db", secret_url),
        run("export", "a", "--out", str(out), "--db", secret_url),
        run("export", "a", "--out", str(out), "--format", "votable", "--overwrite", "--db", secret_url),
        run("sql", "SELECT * FROM runs", "--db", secret_url), run("compare", "a", "b", "--db", secret_url),
        runner.invoke(app, ["sql", "DELETE FROM runs", "--db", secret_url]),
        runner.invoke(app, ["summary", "nope", "--db", secret_url]),
        run("sql", "SELECT * FROM runs", "--db", reader_secret),
        runner.invoke(app, ["sql", "DELETE FROM runs", "--db", reader_secret]),
        runner.invoke(app, ["sql", "SELECT * FROM pg_authid", "--db", reader_secret]),
    ]
    for result in outputs:
        assert "s3cretPW" not in result.stdout + result.stderr
    assert outputs[0].exit_code == 0 and outputs[4].exit_code == 0
    assert outputs[6].exit_code == 2 and "create-reader" in outputs[6].stderr  # the superuser, refused
    assert outputs[10].exit_code == 0 and outputs[11].exit_code == 2
    assert outputs[12].exit_code == 2 and "permission denied for table pg_authid" in outputs[12].stderr
    files = list(out.iterdir())
    assert len(files) >= 6 and all(b"s3cretPW" not in path.read_bytes() for path in files)


def test_sql_json_and_csv_are_streamed_in_the_usual_format(reader: str) -> None:
    """Written a row at a time, json is still exactly ``json.dumps(rows, indent=1)`` and csv the csv module's."""
    query = "SELECT run, aorkey, channel, flux_mjy, target, NULL AS missing FROM aor_photometry ORDER BY run, aorkey"
    engine = make_engine(reader)
    try:
        expected = run_read_only(engine, query)
    finally:
        engine.dispose()
    rows = [dict(zip(expected.columns, row, strict=True)) for row in expected.rows]
    assert len(rows) == 4
    assert run("sql", query, "--format", "json", "--db", reader).stdout == json.dumps(rows, indent=1) + "\n"
    as_csv = run("sql", query, "--format", "csv", "--db", reader).stdout
    assert as_csv.splitlines()[0] == ",".join(expected.columns)
    assert [r["flux_mjy"] for r in csv.DictReader(io.StringIO(as_csv))] == [repr(r["flux_mjy"]) for r in rows]
    many = "SELECT i.aorkey, i.expid, i.flux_mjy, r.name FROM image_photometry i, runs r, runs s ORDER BY 1, 2, 3, 4"
    engine = make_engine(reader)
    try:
        expected = run_read_only(engine, many)
    finally:
        engine.dispose()
    assert len(expected.rows) > 1000
    as_json = json.dumps([dict(zip(expected.columns, row, strict=True)) for row in expected.rows], indent=1)
    assert run("sql", many, "--format", "json", "--db", reader).stdout == as_json + "\n"
    empty = "SELECT aorkey, channel FROM aor_photometry WHERE false"
    assert run("sql", empty, "--format", "json", "--db", reader).stdout == "[]\n"
    assert run("sql", empty, "--format", "csv", "--db", reader).stdout == "aorkey,channel\n"


def test_sql_stops_quietly_when_the_pipe_closes(reader: str) -> None:
    """`iracdb sql ... | head`: the query stops when head has read enough, with no traceback and status 0."""
    endless = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 50000000) SELECT x FROM r"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-m", "iracdb", "sql", endless, "--format", "csv", "--db", reader],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert child.stdout is not None and child.stderr is not None
    assert [child.stdout.readline() for _ in range(3)] == [b"x\n", b"1\n", b"2\n"]
    child.stdout.close()
    assert child.wait(timeout=120) == 0
    with child.stderr:
        assert child.stderr.read() == b""


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_sql_refuses_a_superuser_in_one_line(reduced: str) -> None:
    secret = make_url(reduced).set(password="s3cretPW").render_as_string(hide_password=False)
    for args, env in ((["--db", secret], {}), ([], {"IRACDB_DB_URL": secret, "IRACDB_READER_URL": ""})):
        result = runner.invoke(app, ["sql", "SELECT set_config('role', 'postgres', true), current_user", *args],
                               env=env, catch_exceptions=False)
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and "s3cretPW" not in result.stderr
        assert result.stderr.startswith(f"iracdb: error: iracdb sql will not run as PostgreSQL role "
                                        f"{make_url(reduced).username!r}: it is a superuser; connect as a read-only "
                                        "login role instead: create one with `iracdb db create-reader NAME --db "
                                        "ADMIN_URL`, then give its URL with --db or $IRACDB_READER_URL")


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_db_create_reader_then_sql_through_the_environment(reduced: str) -> None:
    name = f"iracdb_test_cli_reader_{uuid.uuid4().hex[:8]}"
    env = {"IRACDB_TEST_READER_PW": "pw-not-shown"}
    try:
        made = runner.invoke(app, ["db", "create-reader", name, "--password-env", "IRACDB_TEST_READER_PW",
                                   "--db", reduced], env=env, catch_exceptions=False)
        assert made.exit_code == 0, made.output
        reader_url = make_url(reduced).set(username=name, password="pw-not-shown")
        shown = reader_url.render_as_string(hide_password=True)
        assert made.stdout.splitlines() == [
            f"created read-only role '{name}': SELECT on 18 tables and views in schema 'public'",
            f"iracdb sql URL: {shown}  (--db URL, or export IRACDB_READER_URL=URL)"]
        assert "pw-not-shown" not in made.output
        again = runner.invoke(app, ["db", "create-reader", name, "--no-password", "--db", reduced])
        assert again.exit_code == 0 and again.stdout.startswith(f"updated read-only role '{name}'")
        # $IRACDB_READER_URL before $IRACDB_DB_URL, for sql only; --db before both.
        both = {"IRACDB_READER_URL": reader_url.render_as_string(hide_password=False), "IRACDB_DB_URL": reduced}
        result = runner.invoke(app, ["sql", "SELECT current_user AS who, count(*) AS n FROM runs", "--format", "csv"],
                               env=both, catch_exceptions=False)
        assert (result.exit_code, result.stdout) == (0, f"who,n\n{name},2\n"), result.output
        assert runner.invoke(app, ["runs", "--format", "json"], env=both).exit_code == 0  # the owner's URL
        refused = runner.invoke(app, ["sql", "SELECT 1", "--db", reduced], env=both)
        assert refused.exit_code == 2 and "it is a superuser" in refused.stderr
    finally:
        engine = make_engine(reduced)
        with engine.connect() as conn:
            conn.execute(sa.text(f"DROP OWNED BY {name}"))
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {name}"))
            conn.commit()
        engine.dispose()


def test_reader_url_comes_first_for_sql_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRACDB_DB_URL", "postgresql://owner@h/d")
    monkeypatch.setenv("IRACDB_READER_URL", "postgresql://reader@h/d")
    assert resolve_db_url(None, reader=True) == "postgresql+psycopg://reader@h/d"
    assert resolve_db_url(None) == "postgresql+psycopg://owner@h/d"
    assert resolve_db_url("other.sqlite", reader=True) == "sqlite:///other.sqlite"
    monkeypatch.setenv("IRACDB_READER_URL", "")
    assert resolve_db_url(None, reader=True) == "postgresql+psycopg://owner@h/d"
    monkeypatch.setenv("IRACDB_READER_URL", "postgresql+psycopg:/reader:pw@h/d")
    with pytest.raises(BadOption, match=r"^\$IRACDB_READER_URL looks like a database URL") as error:
        resolve_db_url(None, reader=True)
    assert "pw" not in str(error.value)


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--password-env", "V", "--no-password"], {"V": "x"}, "not both"),
    (["--password-env", "IRACDB_TEST_UNSET"], {"IRACDB_TEST_UNSET": ""}, "not set or empty"),
    ([], {}, "no terminal to ask for the password on: give --password-env VAR or --no-password"),
    (["--no-password"], {}, None),  # SQLite: no roles; PostgreSQL: 'pg_x' is PostgreSQL's
])
def test_db_create_reader_errors_are_one_line(db_url: str, backend: str, args: list[str], env: dict[str, str],
                                              message: str | None) -> None:
    if message is None:
        message = "SQLite has no roles: iracdb sql already reads" if backend == "sqlite" else "use lower-case letters"
    result = runner.invoke(app, ["db", "create-reader", "pg_x", *args, "--db", db_url], env=env, input="")
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_sql_never_creates_a_schema(backend: str, empty_db_url: str, request: pytest.FixtureRequest) -> None:
    """A read-only command does not create (or migrate) the schema of an empty database, unlike the others."""
    url = empty_db_url if backend == "sqlite" else request.getfixturevalue("pg_server").reader_url(empty_db_url)
    result = runner.invoke(app, ["sql", "SELECT * FROM runs", "--db", url])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert re.search(r"(no such table: runs|relation \"runs\" does not exist); the views", result.stderr)
    engine = make_engine(empty_db_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_sql_on_a_database_it_cannot_open_is_one_line(backend: str, db_url: str, tmp_path: Path) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/no/such/folder/x.sqlite"
    else:
        url = make_url(db_url).set(username="iracdb_no_such_role", password="s3cretPW").render_as_string(
            hide_password=False)
    result = runner.invoke(app, ["sql", "SELECT 1", "--db", url])
    # A SQLite file that does not exist is a mistyped --db (exit 2); a role the server refuses, a database error.
    expected = ((2, "iracdb: error: no database at ") if backend == "sqlite"
                else (3, "iracdb: error: cannot open database "))
    assert result.exit_code == expected[0], result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(expected[1])
    assert "s3cretPW" not in result.stderr


def _readme_sql() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text, flags=re.S)
    statements = [s.strip() for block in blocks for s in re.sub(r"--[^\n]*", "", block).split(";")]
    return [s for s in statements if s]


def test_readme_sql_examples_run(reader: str) -> None:
    statements = _readme_sql()
    assert len(statements) >= 5
    engine = make_engine(reader)
    try:
        for statement in statements:
            run_read_only(engine, statement.replace("'xo3'", "'a'").replace("46466816", str(SUB.aorkey)))
    finally:
        engine.dispose()


def test_reduce_records_its_command_line_when_called_in_process(reduced: str) -> None:
    args = ["reduce", "--run-name", "inproc", "--auto", "--radius", "3", "--db", reduced]
    assert run(*args).exit_code == 0
    shown = json.loads(run("show", "inproc", "--format", "json", "--db", reduced).stdout)
    assert shown["command_line"].startswith("iracdb reduce --run-name inproc --auto --radius 3 --db ")


def test_readme_documents_every_export_column() -> None:
    from iracdb.columns import AOR_COLUMNS, IMAGE_COLUMNS

    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Export columns and units"):]
    section = section[:section.index("\n## ", 5)]
    aor_part, image_part = section.split("**`RUN_img_data` / `image_photometry`**")
    for part, columns in ((aor_part, AOR_COLUMNS), (image_part, IMAGE_COLUMNS)):
        for column in columns:
            if column.exported and column.name != "run" and not column.name.startswith("flag_"):
                unit = column.unit.replace("pix2", "pix²")
                assert f"| `{column.name}` | {unit} | {column.description} |" in part, column.name
