"""The benchmark scripts run (at tiny sizes); their figures are printed, never asserted on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.mark.slow
def test_bench_reduce_quick(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    command = [sys.executable, str(SCRIPTS / "bench_reduce.py"), "--quick", "--backend", backend, "--workers", "1,2"]
    server = None
    if backend == "postgresql":
        server = request.getfixturevalue("pg_server")
        command += ["--pg-url", server.url.render_as_string(hide_password=False)]
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the script's temporary directory, to check it is removed
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stdout + stderr
    table = stdout[stdout.index("images/s") :]
    for mode in ("sub", "full"):
        assert any(line.split()[:3] == [mode, "seed", "loop"] for line in table.splitlines())
        # one row per worker count on 2 AORs, plus the memory run on 4 AORs
        rows = [line.split() for line in table.splitlines() if line.startswith(mode) and "iracdb reduce" in line]
        assert [(r[3], r[4], r[5]) for r in rows] == [(backend, "1", "2"), (backend, "2", "2"), (backend, "2", "4")]
        assert all(r[-1] != "-" for r in rows)  # a flux was measured
    assert stdout.rstrip().splitlines()[-1].startswith("command: ")
    assert list(tmp_path.iterdir()) == []  # no data left behind
    if server is not None:  # the scratch databases are dropped
        with server.admin.connect() as conn:
            left = conn.execute(
                text("SELECT datname FROM pg_database WHERE datname LIKE :name"),
                {"name": f"bench_reduce_{process.pid}_%"},
            ).scalars().all()
        assert left == []


@pytest.mark.slow
def test_bench_export_quick(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    command = [sys.executable, str(SCRIPTS / "bench_export.py"), "--quick"]
    if backend == "postgresql":
        command += ["--db", request.getfixturevalue("db_url")]
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the script's temporary directory, to check it is removed
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()
            if line.split()[:1] in (["csv"], ["parquet"])}
    assert rows["csv"][1] == rows["parquet"][1] == "20,000"
    assert "aim: >= 200,000 rows/s to CSV with peak memory < 500 MB" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("command: ")
    assert list(tmp_path.iterdir()) == []  # no data left behind


def test_bench_startup_prints_the_help_figure(tmp_path: Path) -> None:
    command = [sys.executable, str(SCRIPTS / "bench_startup.py"), "--repeat", "1"]
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the script's temporary directory, to check it is removed
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ('python -c "import typer, rich"', "iracdb --help", "iracdb runs (empty SQLite)"):
        assert any(line.startswith(name) for line in result.stdout.splitlines()), (name, result.stdout)
    assert "x the typer + rich import (best of each); aim: <= 3x" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("command: ")
    assert list(tmp_path.iterdir()) == []  # no data left behind


def test_bench_overlap_prints_every_case() -> None:
    command = [sys.executable, str(SCRIPTS / "bench_overlap.py"), "--planes", "8", "--frames", "2", "--repeat", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for case in ("r=3, 9x9 window (measure)", "r=3, whole 32x32 plane", "annulus 3-7, 17x17 window",
                 "r=3, 9x9 window, to_mask", "r=3, whole 256x256 frame", "r=3, 256x256, 9x9 window"):
        row = next((line for line in lines if line.startswith(case)), None)
        assert row is not None, (case, result.stdout)
        planes, *_, diff, area_diff = row[len(case) :].split()  # planes, two rates, ratio, differences
        assert planes == ("2" if "256" in case else "8")
        assert float(diff) < 1e-6 and float(area_diff) < 1e-6  # the same weights; no timing asserted
    assert lines[-1].startswith("command: ")
