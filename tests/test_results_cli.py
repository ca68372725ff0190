"""The result commands on the command line, on both backends: `runs`, `show`, `summary`, `export`, `sql`, `plot`,
`compare`; one-line errors with their exit statuses; no password anywhere; the README's SQL examples run."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from sqlalchemy import text as sql_text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from iracdb.cli import SUMMARY_TABLE_COLUMNS, app
from iracdb.db import queries
from iracdb.db.engine import make_engine
from iracdb.db.readonly import run_read_only
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
def test_errors_are_one_line(reduced: str, tmp_path: Path, args: tuple[str, ...], message: str, status: int) -> None:
    result = runner.invoke(app, [*args, "--db", reduced], catch_exceptions=False)
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


def test_sql_prints_rows_and_refuses_writes(reduced: str) -> None:
    query = "SELECT aorkey, channel, flux_mjy FROM aor_photometry WHERE run = 'a' ORDER BY aorkey"
    as_json = json.loads(run("sql", query, "--format", "json", "--db", reduced).stdout)
    assert [r["aorkey"] for r in as_json] == [SUB.aorkey, FULL.aorkey]
    table = run("sql", query, "--db", reduced)
    assert table.exit_code == 0 and str(SUB.aorkey) in table.stdout
    truncated = run("sql", "SELECT * FROM image_photometry", "--max-rows", "5", "--format", "csv", "--db", reduced)
    assert len(truncated.stdout.strip().splitlines()) == 6 and "only the first 5 rows" in truncated.stderr
    for statement in ("UPDATE runs SET name = 'x'", "DROP TABLE measurements", "INSERT INTO runs (name) VALUES ('x')"):
        refused = runner.invoke(app, ["sql", statement, "--db", reduced], catch_exceptions=False)
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
def test_password_never_appears(reduced: str, tmp_path: Path) -> None:
    url = make_url(reduced).set(password="s3cretPW")  # trust authentication ignores it
    secret_url = url.render_as_string(hide_password=False)
    out = tmp_path / "out"
    outputs = [
        run("runs", "--db", secret_url), run("show", "a", "--db", secret_url),
        run("show", "a", "--format", "json", "--db", secret_url), run("summary", "a", "--db", secret_url),
        run("export", "a", "--out", str(out), "--db", secret_url),
        run("export", "a", "--out", str(out), "--format", "votable", "--overwrite", "--db", secret_url),
        run("sql", "SELECT * FROM runs", "--db", secret_url), run("compare", "a", "b", "--db", secret_url),
        runner.invoke(app, ["sql", "DELETE FROM runs", "--db", secret_url]),
        runner.invoke(app, ["summary", "nope", "--db", secret_url]),
    ]
    for result in outputs:
        assert "s3cretPW" not in result.stdout + result.stderr
    assert outputs[0].exit_code == 0 and outputs[4].exit_code == 0
    files = list(out.iterdir())
    assert len(files) >= 6 and all(b"s3cretPW" not in path.read_bytes() for path in files)


def _readme_sql() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text, flags=re.S)
    statements = [s.strip() for block in blocks for s in re.sub(r"--[^\n]*", "", block).split(";")]
    return [s for s in statements if s]


def test_readme_sql_examples_run(reduced: str) -> None:
    statements = _readme_sql()
    assert len(statements) >= 5
    engine = make_engine(reduced)
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
    from iracdb.db.views import AOR_COLUMNS, IMAGE_COLUMNS

    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Export columns and units"):]
    section = section[:section.index("\n## ", 5)]
    aor_part, image_part = section.split("**`RUN_img_data` / `image_photometry`**")
    for part, columns in ((aor_part, AOR_COLUMNS), (image_part, IMAGE_COLUMNS)):
        for column in columns:
            if column.name != "run" and not column.name.startswith("flag_"):
                unit = column.unit.replace("pix2", "pix²")
                assert f"| `{column.name}` | {unit} | {column.description} |" in part, column.name
