"""`iracdb demo` end to end, and `iracdb synth`, as a newcomer would run them."""

from __future__ import annotations

import csv
from pathlib import Path

from sqlalchemy import text
from typer.testing import CliRunner

from iracdb.cli import app
from iracdb.db.engine import make_engine

runner = CliRunner()


def test_demo_runs_twice(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    first = runner.invoke(app, ["demo", str(folder)], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "0 rejected" in first.output and "SYNTH-A ch2 sub" in first.output
    engine = make_engine(f"sqlite:///{folder / 'iracdb.sqlite'}")
    with engine.connect() as conn:
        n_files = conn.execute(text("SELECT count(*) FROM files")).scalar_one()
        channels = conn.execute(text("SELECT count(DISTINCT channel) FROM exposures")).scalar_one()
    engine.dispose()
    assert n_files == len(list((folder / "archive").rglob("*.fits"))) and channels == 4
    assert (folder / "truth.csv").is_file()

    again = runner.invoke(app, ["demo", str(folder)], catch_exceptions=False)
    assert again.exit_code == 0 and f"0 new, {n_files} unchanged, 0 rejected" in again.output


def test_synth_command_writes_truth_beside_the_archive(tmp_path: Path) -> None:
    out = tmp_path / "arch"
    result = runner.invoke(app, ["synth", str(out), "--seed", "3", "--inject-response"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    truth = tmp_path / "arch_truth.csv"
    with truth.open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(float(r["response_factor"]) != 1.0 for r in rows if r["channel"] in ("1", "2"))
    assert not list(out.rglob("*.csv"))
    ingest = runner.invoke(app, ["ingest", str(out), "--db", str(tmp_path / "x.sqlite")], catch_exceptions=False)
    assert ingest.exit_code == 0 and "0 rejected" in ingest.output
