"""Text from the database is data, never markup: run names, OBJECT values, file paths and SQL results that look like
rich markup (``[/y]``, ``[/bold]``, ``[``, ``[link=...]...[/link]``) or emoji codes print literally in every table,
on both backends (issue 10, case 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iracdb.cli import app
from iracdb.db.engine import make_engine
from iracdb.ingest import ingest
from iracdb.reduce import ReduceOptions, Target, reduce
from iracdb.synth import AorSpec, write_archive

runner = CliRunner()
HOSTILE_OBJECT = "[/bold] [link=https://example.invalid]shown[/link] :smile:"
SPEC = AorSpec(aorkey=73100064, channels=(2,), read_mode="FULL", n_exposures=2, mission="warm",
               object_name=HOSTILE_OBJECT, ra_deg=120.3, dec_deg=33.3, flux_mjy=70.0)
#: Run names that crashed every table view (a closing tag with no opening one) or hid the stored value (a link).
RUN_NAMES = ("[/y]", "[link=https://example.invalid]hidden[/link]")


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def hostile(db_url: str, tmp_path: Path) -> tuple[str, Path]:
    """A database whose archive folder is named ``[``, with an OBJECT, run names and a rejected file that look like
    rich markup."""
    root = tmp_path / "["
    write_archive(root, [SPEC], seed=3, truth_csv=False)
    (root / "[").mkdir()
    (root / "[" / "[red]x[_].fits").write_bytes(b"not a FITS file")
    engine = make_engine(db_url)
    assert ingest(engine, [str(root)]).n_rejected == 1
    for name in RUN_NAMES:
        reduce(engine, name, ReduceOptions(targets=(Target(name="auto"),)))
    engine.dispose()
    return db_url, root


def test_tables_print_database_text_literally(hostile: tuple[str, Path]) -> None:
    db_url, _ = hostile
    outputs = {
        "runs": run("runs", "--db", db_url),
        "aors": run("aors", "--db", db_url),
        "exposures": run("exposures", str(SPEC.aorkey), "--db", db_url),
        "rejected": run("rejected", "--db", db_url),
        "compare": run("compare", *RUN_NAMES, "--db", db_url),
    }
    for name in RUN_NAMES:
        outputs[f"show {name}"] = run("show", name, "--db", db_url)
        outputs[f"summary {name}"] = run("summary", name, "--db", db_url)
    for what, result in outputs.items():
        assert result.exit_code == 0, (what, result.output)
    for name in RUN_NAMES:
        assert name in outputs["runs"].stdout and name in outputs[f"show {name}"].stdout
        assert f"run {name}: per-AOR photometry" in outputs[f"summary {name}"].stdout
    for what in ("aors", "summary [/y]"):
        assert "[/bold]" in outputs[what].stdout and "[/link]" in outputs[what].stdout, what
        assert ":smile:" in outputs[what].stdout, what  # not turned into an emoji
    assert "[red]x[_].fits" in outputs["rejected"].stdout


def test_reduce_prints_its_summary_literally(hostile: tuple[str, Path]) -> None:
    db_url, _ = hostile
    result = run("reduce", "--run-name", "[/z]", "--auto", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert "run [/z]: per-AOR summary" in result.stdout and "[/bold]" in result.stdout


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # iracdb sql on PostgreSQL: tests/test_readonly.py
def test_sql_results_print_literally(hostile: tuple[str, Path]) -> None:
    db_url, _ = hostile
    query = "SELECT '[/x]' AS \"[/h]\", '[link=https://example.invalid]t[/link]' AS l, object FROM aors"
    table = run("sql", query, "--db", db_url)
    assert table.exit_code == 0, table.output
    for text in ("[/x]", "[/h]", "[link=https://example.invalid]t[/link]", "[/bold]"):
        assert text in table.stdout, text
    assert run("runs", "--db", db_url).exit_code == 0  # later table views still work
    rows = json.loads(run("sql", query, "--format", "json", "--db", db_url).stdout)
    assert rows[0]["[/h]"] == "[/x]" and rows[0]["object"] == HOSTILE_OBJECT
