"""`iracdb demo` end to end, and `iracdb synth`, as a newcomer would run them."""

from __future__ import annotations

import csv
import re
import subprocess
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

    # reduced, exported and plotted
    assert "3. reduced it as run 'demo'" in first.output and "342 image rows" in first.output
    export = folder / "export"
    assert sorted(p.name for p in export.iterdir()) == [
        "demo_aor_data.csv", "demo_img_data.csv", "demo_log.txt", "demo_provenance.json"]
    with (export / "demo_img_data.csv").open() as handle:
        assert sum(1 for _ in csv.DictReader(handle)) == 342
    plots = sorted((folder / "plots").iterdir())
    assert [p.name for p in plots] == ["demo_aor_24000640.png", "demo_overview.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size > 20_000 for p in plots)
    # the measured fluxes against the injected ones (aperture correction divided out: Gaussian stars have no wings)
    ratio = re.search(r"ratio (\d\.\d+) to (\d\.\d+) over 7 AOR rows", first.output)
    assert ratio and 0.98 < float(ratio[1]) <= float(ratio[2]) < 1.02, first.output

    # the "Next:" commands run as printed, in a shell, from the folder the demo ran in (no virtualenv activated)
    lines = first.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Next: "))
    commands = [lines[start].removeprefix("Next: "), lines[start + 1].strip()]
    for command in commands:
        printed = subprocess.run(command, shell=True, capture_output=True, text=True)
        assert printed.returncode == 0, (command, printed.stderr)
        assert "24000640" in printed.stdout, (command, printed.stdout)

    again = runner.invoke(app, ["demo", str(folder)], catch_exceptions=False)
    assert again.exit_code == 0 and f"0 new, {n_files} unchanged, 0 rejected" in again.output
    assert "3. reduced it as run 'demo' (brightest source near each pointing, 3 px aperture, 3-7 px annulus): " \
           "already complete" in again.output


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


def test_synth_refuses_to_write_over_existing_files(tmp_path: Path) -> None:
    out = tmp_path / "arch"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    refused = runner.invoke(app, ["synth", str(out)], catch_exceptions=False)
    assert refused.exit_code == 2 and refused.stderr.startswith("iracdb: error:"), refused.output
    assert "not empty" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["mine.txt"]  # nothing written
    truth = tmp_path / "t.csv"
    truth.write_text("my table")
    fresh = tmp_path / "fresh"
    refused = runner.invoke(app, ["synth", str(fresh), "--truth", str(truth)], catch_exceptions=False)
    assert refused.exit_code == 2 and "already exists" in refused.stderr and not fresh.exists()
    assert truth.read_text() == "my table"
    allowed = runner.invoke(app, ["synth", str(out), "--truth", str(truth), "--overwrite"], catch_exceptions=False)
    assert allowed.exit_code == 0, allowed.output
    assert (out / "mine.txt").read_text() == "keep me" and truth.read_text().startswith("aorkey")


def test_readme_quick_start_says_how_to_reach_iracdb() -> None:
    # `make demo` installs into .venv without activating it: the README must say so before its first `iracdb` example
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    quick_start = text[text.index("## Quick start") : text.index("$ iracdb ")]
    assert "source .venv/bin/activate" in quick_start and ".venv/bin/iracdb" in quick_start
    assert "Next: .venv/bin/iracdb summary demo --db sqlite:///" in quick_start
