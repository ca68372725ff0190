"""Ctrl-C outside a reduction (issue 10): `iracdb sql` and `iracdb ingest` stop promptly with one line and exit
status 130, not click's "Aborted!" (exit 1) or a traceback; nothing committed is lost. (Stopping a reduction:
tests/test_stopping.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

#: A statement that runs until cancelled (SQLite: a recursive CTE with no end; PostgreSQL: a long sleep).
ENDLESS = {
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    "postgresql": "SELECT pg_sleep(120)",
}


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "iracdb", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "COLUMNS": "200"})


def test_ctrl_c_stops_a_long_sql_statement(backend: str, reader_url: str) -> None:
    process = _start(["sql", ENDLESS[backend], "--db", reader_url])
    time.sleep(3.0)  # imported, connected, the statement running
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=30)  # a bound that catches a hang, not a speed test
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["iracdb: interrupted (Ctrl-C); what was already committed is kept"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_statement_cut_at_its_time_limit_is_still_a_timeout(reader_url: str, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    from iracdb.db import readonly
    from iracdb.db.engine import make_engine

    monkeypatch.setattr(readonly, "STATEMENT_TIMEOUT_S", 0.5)
    engine = make_engine(reader_url)
    try:
        with pytest.raises(readonly.QueryError, match=r"cancelled after 0\.5 s"):
            readonly.run_read_only(engine, ENDLESS["sqlite"])
    finally:
        engine.dispose()


def test_ctrl_c_stops_an_ingest_and_keeps_what_it_committed(tmp_path: Path) -> None:
    from iracdb.synth import default_aors, write_archive

    archive = write_archive(tmp_path / "archive", default_aors() * 1, seed=1, truth_csv=False).root
    db = tmp_path / "x.sqlite"
    process = _start(["ingest", str(archive), "--db", str(db)])
    deadline = time.monotonic() + 30
    while not db.exists() and time.monotonic() < deadline:  # the database is being written
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    try:
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    if process.returncode == 0:  # finished before the signal landed: nothing to check but that it succeeded
        pytest.skip("the ingest finished before Ctrl-C arrived")
    assert process.returncode == 130, stdout + stderr
    assert stderr.strip().splitlines()[-1] == "iracdb: interrupted (Ctrl-C); what was already committed is kept"
    again = _start(["ingest", str(archive), "--db", str(db)])
    stdout, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stdout + stderr  # the database is sound and the rest is catalogued
